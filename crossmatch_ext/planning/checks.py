"""The checks of a Decathlon folder before any planning or training: every problem, one line each.

:func:`check_decathlon_folder` first reads the folder (:func:`crossmatch_ext.data.decathlon.read_decathlon`, which
reports listed files that do not exist, validation cases without a label and a folder without any labeled case),
then reads every training and validation image and label once and reports, one line each, naming the file and what
to do:

* an image or label that cannot be read;
* an image with NaN or infinite voxels;
* images of different dimensionality in one folder;
* a label whose voxel grid differs from its image's (shape, or geometry: spacing, origin, direction);
* a label with several channels, non-integer values, or values that are not classes of ``dataset.json``'s
  ``labels``.

Nothing is written. MONAI's ``DataAnalyzer`` skips a case it cannot read with a log line only, so the fingerprint
(:func:`crossmatch_ext.planning.fingerprint`) runs these checks first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike

from ..data.datasets.common import Item
from ..data.decathlon import DecathlonDataset, raise_problems, read_decathlon
from ..errors import InputError, InputValueError

__all__ = ["AFFINE_TOLERANCE_MM", "FolderSummary", "check_decathlon_folder"]

logger = logging.getLogger(__name__)

#: Largest difference (mm) between an image's and its label's affine entries that still counts as the same grid.
AFFINE_TOLERANCE_MM = 1e-3

Problems = list[tuple[type[InputError], str]]


@dataclass(frozen=True)
class FolderSummary:
    """What :func:`check_decathlon_folder` found in a folder that passed.

    Attributes:
        dataset: the folder's lists (:class:`~crossmatch_ext.data.decathlon.DecathlonDataset`).
        spatial_dims: 2 or 3.
        in_channels: image channels (modalities).
        label_values: the label values found in the labeled and validation cases.
        cases_read: number of training and validation images read.
    """

    dataset: DecathlonDataset
    spatial_dims: int
    in_channels: int
    label_values: tuple[int, ...]
    cases_read: int

    def __str__(self) -> str:
        classes = self.dataset.classes or dict.fromkeys(self.label_values, "?")
        return (f"data check passed: {self.dataset.describe()}; {self.cases_read} images read, {self.spatial_dims}D, "
                f"{self.in_channels} channel(s), classes {classes}")


def _load(path: str, what: str, case: str, problems: Problems) -> Any:
    from monai.transforms import LoadImage

    try:
        return LoadImage(image_only=True)(path)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        problems.append((InputValueError, f"cannot read the {what} of case {case!r}: {path} ({first[:200]}): export "
                         "the file again (NIfTI, NRRD or MHA)."))
        return None


def _spatial_shape(image: Any) -> tuple[int, ...]:
    meta = getattr(image, "meta", {}) or {}
    shape = meta.get("spatial_shape")
    if shape is not None:
        return tuple(int(s) for s in np.asarray(shape).tolist())
    return tuple(int(s) for s in image.shape)


def _channels(image: Any) -> int:
    meta = getattr(image, "meta", {}) or {}
    channel_dim = meta.get("original_channel_dim")
    if isinstance(channel_dim, (int, np.integer)) and not isinstance(channel_dim, bool):
        return int(image.shape[int(channel_dim)])
    return 1


def _check_image(item: Item, problems: Problems) -> tuple[Any, tuple[int, ...]] | None:
    image = _load(str(item["image"]), "image", item["case"], problems)
    if image is None:
        return None
    array = np.asarray(image)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(finite.size - int(finite.sum()))
            problems.append((InputValueError, f"image {item['image']} (case {item['case']!r}) holds {bad} NaN or "
                             "infinite voxel(s): fix the export, or replace them (e.g. with the image's minimum)."))
    return image, _spatial_shape(image)


def _check_label(item: Item, image: Any, shape: tuple[int, ...], classes: dict[int, str], problems: Problems,
                 values_found: set[int]) -> None:
    label = _load(str(item["label"]), "label", item["case"], problems)
    if label is None:
        return
    case, image_path, label_path = item["case"], item["image"], item["label"]
    if _channels(label) != 1:
        problems.append((InputValueError, f"label {label_path} (case {case!r}) has {_channels(label)} channels: "
                         "store one label map with a class number per voxel (not one-hot)."))
        return
    label_shape = _spatial_shape(label)
    if label_shape != shape:
        problems.append((InputValueError, f"label {label_path} has shape {list(label_shape)} but its image "
                         f"{image_path} has {list(shape)}: resample the label onto the image's voxel grid."))
        return
    image_affine = np.asarray(getattr(image, "affine", np.eye(len(shape) + 1)), dtype=np.float64)
    label_affine = np.asarray(getattr(label, "affine", np.eye(len(shape) + 1)), dtype=np.float64)
    if image_affine.shape != label_affine.shape or not np.allclose(image_affine, label_affine, rtol=1e-5,
                                                                   atol=AFFINE_TOLERANCE_MM):
        difference = (float(np.abs(image_affine - label_affine).max()) if image_affine.shape == label_affine.shape
                      else float("nan"))
        problems.append((InputValueError, f"label {label_path} and image {image_path} have different geometry "
                         f"(spacing, origin or direction; affines differ by up to {difference:.4g}): resample the "
                         "label onto the image, or fix the header that is wrong."))
        return
    values = np.unique(np.asarray(label))
    non_integer = [v for v in values.tolist() if not float(v).is_integer()]
    if non_integer:
        problems.append((InputValueError, f"label {label_path} (case {case!r}) holds non-integer values "
                         f"{non_integer[:5]}: a label stores class numbers; export it with nearest-neighbour "
                         "interpolation."))
        return
    found = {int(v) for v in values.tolist()}
    values_found.update(found)
    if classes:
        outside = sorted(found - set(classes))
        if outside:
            problems.append((InputValueError, f"label {label_path} (case {case!r}) holds values {outside[:10]} that "
                             f"are not classes of dataset.json's labels {sorted(classes)}: fix the label, or add the "
                             "classes to \"labels\"."))


def check_decathlon_folder(path: PathLike | DecathlonDataset, *, val_list: str | None = "val.list") -> FolderSummary:
    """Check a Decathlon folder (or MONAI datalist) before planning or training (see the module docstring).

    Args:
        path: the folder, its JSON, or a dataset already read.
        val_list: see :func:`crossmatch_ext.data.decathlon.read_decathlon`.

    Returns:
        The summary of a folder without problems.

    Raises:
        InputFileNotFoundError: when files are missing (see :func:`~crossmatch_ext.data.decathlon.read_decathlon`).
        InputValueError: for any other problem; every problem found is listed, one line each.
    """
    dataset = path if isinstance(path, DecathlonDataset) else read_decathlon(path, val_list=val_list)
    problems: Problems = []
    dims: dict[int, list[str]] = {}
    channels: set[int] = set()
    values_found: set[int] = set()
    cases = 0
    for items, with_label in ((dataset.labeled, True), (dataset.validation, True), (dataset.unlabeled, False)):
        for item in items:
            checked = _check_image(item, problems)
            cases += 1
            if checked is None:
                continue
            image, shape = checked
            dims.setdefault(len(shape), []).append(str(item["image"]))
            channels.add(_channels(image))
            if with_label:
                _check_label(item, image, shape, dataset.classes, problems, values_found)
    if len(dims) > 1:
        kinds = ", ".join(f"{len(files)} {d}D (e.g. {Path(files[0]).name})" for d, files in sorted(dims.items()))
        problems.append((InputValueError, f"the images of {dataset.json_path} do not all have the same number of "
                         f"axes: {kinds}; give 2D or 3D images, not both."))
    if len(channels) > 1:
        problems.append((InputValueError, f"the images of {dataset.json_path} have different channel counts "
                         f"{sorted(channels)}: give every case the same modalities."))
    raise_problems(problems, dataset.json_path)
    summary = FolderSummary(
        dataset=dataset,
        spatial_dims=next(iter(dims)) if dims else 3,
        in_channels=next(iter(channels)) if channels else 1,
        label_values=tuple(sorted(values_found)),
        cases_read=cases,
    )
    logger.info(str(summary))
    return summary
