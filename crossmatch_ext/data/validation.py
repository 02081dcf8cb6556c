"""A quick pass over the data lists before training: every problem found here would otherwise surface as an
obscure error from h5py, ITK or torch, possibly hours into a run.

Checked per case: the files exist and can be read (HDF5: the ``image`` and ``label`` datasets are present), the image
is a single-channel volume of the expected dimensionality, image and label shapes agree, the label values are
classes of the bundle (after the raw label mapping, e.g. LA ``0/255 -> 0/1``), and the image holds no NaN or Inf.
Across lists: at least one labeled case, no case both labeled and unlabeled (unless allowed), unlabeled cases for
CrossMatch. Volumes smaller than the training patch are reported (they are zero-padded by the pipeline).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputFileNotFoundError, InputValueError
from .slices import HDF5_SUFFIXES

__all__ = ["validate_datalists", "validate_item"]

logger = logging.getLogger(__name__)


def _read_h5(path: Path, dataset: str, case: str) -> np.ndarray:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as e:
        raise InputValueError(
            f"case {case!r}: cannot read {path} as an HDF5 file ({e}); the file is truncated or corrupt: copy or "
            "export it again."
        ) from e
    with handle:
        node = handle.get(dataset)
        if not hasattr(node, "shape") or not hasattr(node, "dtype"):
            present: list[str] = []
            handle.visititems(lambda key, obj: present.append(key) if hasattr(obj, "shape") else None)
            raise InputValueError(
                f"case {case!r}: HDF5 file {path} has no dataset {dataset!r} (expected 'image' and 'label'; found "
                f"{present}): export the file with both datasets."
            )
        try:
            return np.asarray(node[()])
        except OSError as e:
            raise InputValueError(
                f"case {case!r}: cannot read dataset {dataset!r} of {path} ({e}); the file is truncated or corrupt: "
                "copy or export it again."
            ) from e


def _read_other(path: Path, case: str) -> np.ndarray:
    from monai.transforms import LoadImage

    try:
        return np.asarray(LoadImage(image_only=True)(str(path)))
    except Exception as e:
        raise InputValueError(
            f"case {case!r}: cannot read {path} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "the file is damaged or not an image MONAI can load: export it again."
        ) from e


def _read(path_like: Any, dataset: str, case: str, key: str, source: str) -> np.ndarray:
    path = Path(str(path_like))
    if not path.is_file():
        raise InputFileNotFoundError(
            f"case {case!r}: {key} file not found: {path} (listed in {source}): add the file or remove the case."
        )
    if path.name.lower().endswith(tuple(HDF5_SUFFIXES)):
        return _read_h5(path, dataset, case)
    return _read_other(path, case)


def validate_item(
    item: Mapping[str, Any],
    *,
    spatial_dims: int,
    label_values: Sequence[int] | None = None,
    raw_label_map: Mapping[int, int] | None = None,
    source: str = "the data list",
) -> dict[str, Any]:
    """Check one data-list item (see the module docstring).

    Args:
        item: ``{"image": path, "label": path (optional), "case": id}``.
        spatial_dims: 3 for LA volumes; 2 or 3 for ACDC (a stack of slices is a 3D volume).
        label_values: the classes of the bundle (label values allowed after ``raw_label_map``).
        raw_label_map: explicit mapping of raw label values (LA challenge files: ``{0: 0, 255: 1}``); values not in it
            and not in ``label_values`` are errors.
        source: where the item comes from, for messages.

    Returns:
        ``{"case", "shape"}`` (the image's spatial shape as stored).

    Raises:
        InputFileNotFoundError: a file is missing.
        InputValueError: a file is unreadable, lacks a dataset, or its content is wrong.
    """
    case = str(item.get("case", item.get("image")))
    image = _read(item["image"], "image", case, "image", source)
    shape = tuple(int(s) for s in image.shape)
    if image.ndim != spatial_dims:
        raise InputValueError(
            f"case {case!r}: the image {item['image']} has shape {list(shape)}, expected a single-channel "
            f"{spatial_dims}D volume ({spatial_dims} axes; found {image.ndim}): give one modality per file."
        )
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        bad = int(np.size(image) - np.isfinite(image).sum())
        raise InputValueError(
            f"case {case!r}: the image {item['image']} holds {bad} NaN or Inf voxel(s); expected finite intensities: "
            "fix the export (or replace them, e.g. with numpy.nan_to_num)."
        )
    if "label" in item and item["label"] is not None:
        label = _read(item["label"], "label", case, "label", source)
        if tuple(label.shape) != shape:
            raise InputValueError(
                f"case {case!r}: image and label shapes differ: image {list(shape)} ({item['image']}), label "
                f"{list(label.shape)} ({item['label']}); expected the same voxel grid."
            )
        if label_values is not None:
            values = np.unique(label)
            if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
                raise InputValueError(f"case {case!r}: the label {item['label']} holds NaN or Inf values.")
            mapping = dict(raw_label_map or {})
            allowed = {int(v) for v in label_values} | {int(k) for k in mapping}
            unexpected = [int(v) if float(v).is_integer() else v for v in values.tolist()
                          if not float(v).is_integer() or int(v) not in allowed]
            if unexpected:
                raw = f" or the raw values {sorted(mapping)}" if mapping else ""
                raise InputValueError(
                    f"case {case!r}: the label {item['label']} holds values {unexpected[:10]} outside the classes "
                    f"{sorted(int(v) for v in label_values)}{raw} of this bundle: fix the label map (or the bundle's "
                    "number of classes)."
                )
    return {"case": case, "shape": shape}


def validate_datalists(
    datalists: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    spatial_dims: int = 3,
    label_values: Sequence[int] | None = None,
    raw_label_map: Mapping[int, int] | None = None,
    patch_size: Sequence[int] | None = None,
    mode: str = "crossmatch",
    allow_overlap: bool = False,
) -> dict[str, Any]:
    """Check the labeled / unlabeled / validation lists and every file they name, before training starts.

    Args:
        datalists: ``{"labeled": [...], "unlabeled": [...], "validation": [...]}`` as built by
            :func:`crossmatch_ext.data.dataset_datalists`.
        spatial_dims: dimensionality of an image as stored (3 for both bundles' volumes).
        label_values: the bundle's classes, e.g. ``[0, 1]``.
        raw_label_map: raw label values mapped explicitly by the pipeline (LA challenge files: ``{0: 0, 255: 1}``).
        patch_size: the training patch; smaller volumes are reported (the pipeline zero-pads them).
        mode: ``"crossmatch"`` (needs unlabeled cases) or ``"supervised"``.
        allow_overlap: accept cases that are both labeled and unlabeled.

    Returns:
        ``{"cases": n, "padded": [case ids smaller than the patch], "shapes": {case: shape}}``.

    Raises:
        InputValueError, InputFileNotFoundError: on the first problem found; the message names the case, the file,
            what was expected and what was found.
    """
    for key in ("labeled", "unlabeled"):
        if key not in datalists:
            raise InputValueError(f"the data lists have no {key!r} list (found {sorted(datalists)}).")
    labeled, unlabeled = list(datalists["labeled"]), list(datalists["unlabeled"])
    validation = list(datalists.get("validation", []))
    if not labeled:
        raise InputValueError("no labeled cases: the labeled list is empty; raise --num_labeled or add labeled cases.")
    if mode == "crossmatch" and not unlabeled:
        raise InputValueError(
            f"no unlabeled cases: all {len(labeled)} training cases are labeled, but CrossMatch trains on unlabeled "
            "ones too: lower --num_labeled, or use --mode supervised."
        )

    def ids(items: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        return {str(Path(str(i["image"])).resolve()): str(i.get("case", i["image"])) for i in items}

    both = sorted(set(ids(labeled)) & set(ids(unlabeled)))
    if both and not allow_overlap:
        names = [ids(labeled)[p] for p in both]
        raise InputValueError(
            f"{len(both)} case(s) are both labeled and unlabeled: {names[:5]}; remove them from one list, or set "
            "--allow_overlap True to train on them both ways."
        )
    shapes: dict[str, tuple[int, ...]] = {}
    for name, items, with_label in (("labeled", labeled, True), ("unlabeled", unlabeled, False),
                                    ("validation", validation, True)):
        for item in items:
            if with_label and "label" not in item:
                raise InputValueError(f"{name} case {item.get('case', item.get('image'))!r} has no 'label' entry.")
            checked = validate_item(item, spatial_dims=spatial_dims, label_values=label_values,
                                    raw_label_map=raw_label_map, source=f"the {name} list")
            shapes[checked["case"]] = checked["shape"]
    padded: list[str] = []
    if patch_size is not None:
        patch = [int(p) for p in patch_size]
        for case, shape in shapes.items():
            if any(s < p for s, p in zip(shape[-len(patch):], patch)):
                padded.append(case)
        if padded:
            logger.warning(
                f"{len(padded)} volume(s) are smaller than the patch {patch} along some axis and are zero-padded: "
                f"{padded[:5]}"
            )
    logger.info(f"data check passed: {len(shapes)} case(s) read ({len(labeled)} labeled, {len(unlabeled)} unlabeled, "
                f"{len(validation)} validation)")
    return {"cases": len(shapes), "padded": padded, "shapes": shapes}
