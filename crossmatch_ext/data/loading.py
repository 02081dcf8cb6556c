"""The deterministic loading transforms for each supported data layout, shared by both bundles."""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import (
    AsDiscreted,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    ScaleIntensityd,
)

from .readers import H5Reader

__all__ = ["LAYOUTS", "load_transforms"]

#: Layouts understood by :func:`load_transforms` (see :mod:`crossmatch_ext.data.datalists`).
LAYOUTS = ("h5", "nrrd", "nifti", "json", "studies")


def load_transforms(
    layout: str,
    image_key: str = "image",
    label_key: str = "label",
    h5_spacing: float | Sequence[float] | None = None,
    intensity: str | None = "zscore",
    binarize_label: bool = False,
) -> list[MapTransform]:
    """Load an item of ``layout`` into channel-first ``image`` / ``label`` MetaTensors with normalised intensities.

    * ``"h5"``: the community HDF5 files (datasets ``image`` and ``label`` of one file); the intensities are
      already normalised there, so ``intensity`` is not applied.
    * ``"nrrd"``: the raw LA challenge volumes (``lgemri.nrrd`` / ``laendo.nrrd``) read through ITK.
    * ``"nifti"`` / ``"json"`` / ``"studies"``: the raw ACDC layout, a MONAI datalist JSON or a MONAI Label studies
      folder, read by MONAI's default readers
      (NIfTI through nibabel, NRRD / MHA through ITK).

    For the raw layouts ``intensity`` reproduces the community preprocessing: ``"zscore"`` (LA: mean 0 and std 1
    over the whole volume) or ``"minmax"`` (ACDC: scaled to [0, 1]); ``binarize_label`` maps a 0/255 label to 0/1.
    A missing label (unlabeled or inference items) is allowed.

    Args:
        layout: one of :data:`LAYOUTS`.
        image_key: key of the image path.
        label_key: key of the label path.
        h5_spacing: voxel size to put in the affine of HDF5 data (the files store none).
        intensity: ``"zscore"``, ``"minmax"`` or None, for the raw layouts.
        binarize_label: threshold the label at half its range (0/255 -> 0/1).

    Returns:
        The list of transforms.

    Raises:
        ValueError: for an unknown layout or intensity mode.
    """
    keys = [image_key, label_key]
    if layout == "h5":
        return [
            LoadImaged(keys=image_key, reader=H5Reader(dataset="image", spacing=h5_spacing), image_only=True),
            LoadImaged(
                keys=label_key, reader=H5Reader(dataset="label", spacing=h5_spacing), image_only=True,
                allow_missing_keys=True,
            ),
            EnsureChannelFirstd(keys=keys, channel_dim="no_channel", allow_missing_keys=True),
            EnsureTyped(keys=image_key, dtype="float32", track_meta=True),
        ]
    if layout not in LAYOUTS:
        raise ValueError(f"data layout must be one of {LAYOUTS}, got {layout!r}.")
    transforms: list[MapTransform] = [
        LoadImaged(keys=keys, reader="ITKReader" if layout == "nrrd" else None, image_only=True,
                   allow_missing_keys=True),
        EnsureChannelFirstd(keys=keys, allow_missing_keys=True),
        EnsureTyped(keys=image_key, dtype="float32", track_meta=True),
    ]
    if intensity == "zscore":
        transforms.append(NormalizeIntensityd(keys=image_key))
    elif intensity == "minmax":
        transforms.append(ScaleIntensityd(keys=image_key, minv=0.0, maxv=1.0))
    elif intensity is not None:
        raise ValueError(f"intensity must be 'zscore', 'minmax' or None, got {intensity!r}.")
    if binarize_label:
        transforms.append(AsDiscreted(keys=label_key, threshold=0.5, allow_missing_keys=True))
    return transforms
