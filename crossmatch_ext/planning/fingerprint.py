"""The data fingerprint a plan is made from: MONAI's ``DataAnalyzer`` over the checked cases, summarised.

:func:`fingerprint` checks the folder (:func:`crossmatch_ext.planning.check_decathlon_folder`; ``DataAnalyzer``
would skip a bad case with a log line only), then runs :class:`monai.apps.auto3dseg.DataAnalyzer` twice: over the
labeled and validation cases with their labels (shapes, spacings, intensities, intensities inside the foreground,
classes), and over the unlabeled cases without labels (shapes, spacings, intensities). Shapes and spacings are those
``DataAnalyzer`` reports, i.e. after its ``Orientationd(axcodes="RAS")``: a pipeline that uses a plan made from them
should orient its images to RAS as well.

Summaries computed here from ``DataAnalyzer``'s per-case statistics (each case weighs the same):

* ``median_spacing`` / ``median_shape``: medians over all cases, per axis (nnU-Net's fingerprint);
* ``foreground_intensity``: ``mean`` the mean of the cases' foreground means, ``std`` the pooled standard deviation
  ``sqrt(mean(std_i^2) + var(mean_i))``, ``percentile_00_5`` / ``percentile_99_5`` the mean of the cases' percentiles,
  ``min`` / ``max`` over cases (first image channel);
* ``image_intensity``: the same over whole images, all cases;
* ``class_fractions``: the mean fraction of voxels of each label value in the labeled cases.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.config import PathLike

from ..data.datasets.common import Item
from ..data.decathlon import DecathlonDataset
from ..errors import InputValueError
from .checks import FolderSummary, check_decathlon_folder

__all__ = ["FINGERPRINT_VERSION", "Fingerprint", "compact_json", "fingerprint"]

logger = logging.getLogger(__name__)

#: Version of :meth:`Fingerprint.to_dict`'s layout.
FINGERPRINT_VERSION = 1

_DIGITS = 6


def _round(value: Any) -> float:
    number = float(value)
    return round(number, _DIGITS) if math.isfinite(number) else number


_NUMBER_LIST = re.compile(r"\[\s*((?:-?[0-9.eE+-]+|null|true|false)(?:,\s*(?:-?[0-9.eE+-]+|null|true|false))*)\s*\]")


def compact_json(content: Any) -> str:
    """Indented JSON with every list of numbers on one line (``[112, 112, 80]``), newline-terminated."""
    text = json.dumps(content, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


def _plain(value: Any) -> Any:
    """``DataAnalyzer``'s result as plain Python (enum keys to text, tensors and arrays to numbers and lists)."""
    if isinstance(value, Mapping):
        return {str(getattr(k, "value", k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _plain(value.tolist())
    return value


def _first_channel(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value and not isinstance(value[0], (int, float)) else value


@dataclass(frozen=True)
class Fingerprint:
    """What a plan needs to know about a dataset (see the module docstring for how each value is computed).

    Attributes:
        source: the dataset's JSON file.
        name: the dataset's name.
        modality: input channel -> modality, from ``dataset.json`` (empty when not given).
        classes: label value -> class name, from ``dataset.json`` (else the values found, named ``"class <v>"``).
        spacing_known: False when the JSON says the files' voxel size is not real (converted HDF5 data).
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_labeled, num_unlabeled, num_validation, num_test: the cases of each list.
        validation_source: where the validation cases are named, or None.
        spacings, shapes: per analysed case (labeled, validation, then unlabeled), in RAS axis order.
        image_intensity, foreground_intensity: intensity summaries (first channel).
        class_fractions: label value -> mean fraction of voxels in the labeled cases.
        analyzer: the tool and version that computed the statistics.
        version: :data:`FINGERPRINT_VERSION`.
    """

    source: str
    name: str
    modality: dict[int, str]
    classes: dict[int, str]
    spacing_known: bool
    spatial_dims: int
    in_channels: int
    num_labeled: int
    num_unlabeled: int
    num_validation: int
    num_test: int
    validation_source: str | None
    spacings: list[list[float]]
    shapes: list[list[int]]
    image_intensity: dict[str, float]
    foreground_intensity: dict[str, float]
    class_fractions: dict[int, float] = field(default_factory=dict)
    analyzer: str = ""
    version: int = FINGERPRINT_VERSION

    @property
    def median_spacing(self) -> list[float]:
        """Median voxel size per axis (mm; 1 where the spacing is not known)."""
        return [_round(statistics.median(axis)) for axis in zip(*self.spacings)]

    @property
    def median_shape(self) -> list[float]:
        """Median image shape per axis (voxels)."""
        return [_round(statistics.median(axis)) for axis in zip(*self.shapes)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (integer keys as text)."""
        out = asdict(self)
        for key in ("modality", "classes", "class_fractions"):
            out[key] = {str(k): v for k, v in out[key].items()}
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON text, newline-terminated."""
        return compact_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fingerprint:
        """Rebuild a fingerprint from :meth:`to_dict`'s output.

        Raises:
            InputValueError: for another layout version or missing keys.
        """
        if data.get("version") != FINGERPRINT_VERSION:
            raise InputValueError(f"fingerprint version {data.get('version')!r} is not {FINGERPRINT_VERSION}: make "
                                  "the fingerprint again.")
        try:
            values = dict(data)
            for key, kind in (("modality", str), ("classes", str), ("class_fractions", float)):
                values[key] = {int(k): kind(v) for k, v in values.get(key, {}).items()}
            return cls(**values)
        except TypeError as e:
            raise InputValueError(f"not a fingerprint ({e}): make the fingerprint again.") from e


def _analyze(items: Sequence[Item], with_labels: bool, device: torch.device, workers: int,
             output: Path | None) -> list[dict[str, Any]]:
    from monai.apps.auto3dseg import DataAnalyzer

    if not items:
        return []
    datalist = {"training": [{"image": item["image"], **({"label": item["label"]} if with_labels else {})}
                             for item in items]}
    analyzer = DataAnalyzer(
        datalist,
        dataroot="",
        output_path=str(output) if output is not None else "",
        device=device,
        worker=workers,
        label_key="label" if with_labels else None,
        allowed_shape_difference=0,  # the checks already require identical grids
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Orientationd.*")  # MONAI's notice of a changed default
        result = _plain(analyzer.get_all_case_stats())
    cases: list[dict[str, Any]] = result.get("stats_by_cases", [])
    if len(cases) != len(items):
        analysed = {str(case.get("image_filepath")) for case in cases}
        skipped = [str(item["image"]) for item in items if str(item["image"]) not in analysed]
        raise InputValueError(f"MONAI's DataAnalyzer could not analyse {len(skipped)} case(s): {skipped[:5]} (its log "
                              "says why): fix or remove these files.")
    return cases


def _intensity_summary(stats: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    if not stats:
        return {}
    means = [float(s["mean"]) for s in stats]
    variances = [float(s["stdev"]) ** 2 for s in stats]
    spread = statistics.pvariance(means) if len(means) > 1 else 0.0
    return {
        "mean": _round(statistics.fmean(means)),
        "std": _round(math.sqrt(statistics.fmean(variances) + spread)),
        "percentile_00_5": _round(statistics.fmean(float(s["percentile_00_5"]) for s in stats)),
        "percentile_99_5": _round(statistics.fmean(float(s["percentile_99_5"]) for s in stats)),
        "min": _round(min(float(s["min"]) for s in stats)),
        "max": _round(max(float(s["max"]) for s in stats)),
    }


def fingerprint(
    source: PathLike | DecathlonDataset | FolderSummary,
    *,
    val_list: str | None = "val.list",
    stats_dir: PathLike | None = None,
    device: str | torch.device | None = None,
    workers: int = 2,
    include_unlabeled: bool = True,
) -> Fingerprint:
    """Check a Decathlon folder and compute its fingerprint with MONAI's ``DataAnalyzer``.

    Args:
        source: the folder (or JSON), a dataset already read, or a summary of :func:`check_decathlon_folder` (the
            check is then not repeated).
        val_list: see :func:`crossmatch_ext.data.decathlon.read_decathlon`.
        stats_dir: a folder for ``DataAnalyzer``'s own statistics files (``datastats.yaml`` and its by-case file for
            the labeled cases, ``datastats_unlabeled.yaml`` for the others); None writes nothing.
        device: where ``DataAnalyzer`` computes (default: CUDA when available, else CPU).
        workers: data loader workers of ``DataAnalyzer``.
        include_unlabeled: also analyse the unlabeled images (their shapes and spacings count in the medians).

    Returns:
        The fingerprint.

    Raises:
        InputError: from the folder checks, or when ``DataAnalyzer`` cannot analyse a case.
    """
    summary = source if isinstance(source, FolderSummary) else check_decathlon_folder(source, val_list=val_list)
    dataset = summary.dataset
    compute = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    output = Path(stats_dir).expanduser() if stats_dir is not None else None
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
    labeled_items = dataset.labeled + dataset.validation
    labeled_cases = _analyze(labeled_items, True, compute, workers,
                             output / "datastats.yaml" if output is not None else None)
    unlabeled_cases = _analyze(dataset.unlabeled if include_unlabeled else [], False, compute, workers,
                               output / "datastats_unlabeled.yaml" if output is not None else None)
    every = labeled_cases + unlabeled_cases
    spacings = [[_round(s) for s in case["image_stats"]["spacing"]] for case in every]
    shapes = [[int(s) for s in _first_channel(case["image_stats"]["shape"])] for case in every]
    image_stats = [_first_channel(case["image_stats"]["intensity"]) for case in every]
    foreground = [_first_channel(case["image_foreground_stats"]["intensity"]) for case in labeled_cases]
    fractions: dict[int, list[float]] = {}
    for case in labeled_cases:
        label_stats = case.get("label_stats", {})
        for value, stats in zip(label_stats.get("labels", []), label_stats.get("label", [])):
            fractions.setdefault(int(value), []).append(float(stats["foreground_percentage"]))
    classes = dict(dataset.classes) or {v: f"class {v}" for v in sorted(set(summary.label_values) | set(fractions))}
    from monai import __version__ as monai_version

    result = Fingerprint(
        source=str(dataset.json_path),
        name=dataset.name,
        modality=dict(dataset.modality),
        classes=classes,
        spacing_known=dataset.spacing_known,
        spatial_dims=len(shapes[0]) if shapes else summary.spatial_dims,
        in_channels=summary.in_channels,
        num_labeled=len(dataset.labeled),
        num_unlabeled=len(dataset.unlabeled),
        num_validation=len(dataset.validation),
        num_test=len(dataset.test),
        validation_source=(os.path.relpath(dataset.validation_source, dataset.root)
                           if dataset.validation_source and os.path.isabs(dataset.validation_source)
                           else dataset.validation_source),
        spacings=spacings,
        shapes=shapes,
        image_intensity=_intensity_summary(image_stats),
        foreground_intensity=_intensity_summary(foreground),
        class_fractions={v: _round(statistics.fmean(f)) for v, f in sorted(fractions.items())},
        analyzer=f"monai.apps.auto3dseg.DataAnalyzer (MONAI {monai_version})",
    )
    logger.info(f"fingerprint of {result.source}: {len(every)} case(s) analysed, median spacing "
                f"{result.median_spacing}, median shape {result.median_shape}")
    return result
