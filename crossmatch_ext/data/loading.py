"""The deterministic loading transforms for each supported data layout, shared by both bundles."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Union

import torch
from monai.config import KeysCollection
from monai.transforms import (
    EnsureChannelFirstd,
    EnsureTyped,
    Lambdad,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Randomizable,
    ScaleIntensityd,
)

from ..errors import InputValueError, SettingError
from .readers import H5Reader

__all__ = [
    "LAYOUTS",
    "LA_RAW_LABEL_MAP",
    "CheckChannelCountd",
    "Intensity",
    "MapLabelValuesStrictd",
    "intensity_transforms",
    "load_transforms",
]

#: The ``intensity`` setting: a named mode, None, or MONAI transforms (see :func:`intensity_transforms`).
Intensity = Union[str, None, Callable[..., Any], Sequence[Callable[..., Any]]]

#: The built-in layouts (see :mod:`crossmatch_ext.data.datasets`); :func:`load_transforms` also reads a dataset
#: module's own layouts, through MONAI's default readers.
LAYOUTS = ("h5", "nrrd", "nifti", "json", "studies")

#: The LA challenge's label files store the atrium as 255.
LA_RAW_LABEL_MAP: dict[int, int] = {0: 0, 255: 1}


class MapLabelValuesStrictd(MapTransform):
    """Map raw label values to classes with an explicit table; any value not in the table is an error.

    Values that are already classes (the table's targets) are kept, so a label exported as 0/1 loads as well as a
    0/255 one. Unlike thresholding, a label holding e.g. 0/1/2/255 is rejected with the file's name instead of
    being silently merged into one class.

    Args:
        keys: the label keys.
        mapping: ``{raw value: class}``, e.g. :data:`LA_RAW_LABEL_MAP`.
        allow_missing_keys: skip items without the key (unlabeled cases).
    """

    def __init__(self, keys: KeysCollection, mapping: Mapping[int, int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mapping = {int(k): int(v) for k, v in mapping.items()}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            values = torch.unique(torch.as_tensor(label)).tolist()
            allowed = set(self.mapping) | set(self.mapping.values())
            unexpected = [int(v) if float(v).is_integer() else v for v in values
                          if not float(v).is_integer() or int(v) not in allowed]
            if unexpected:
                meta = getattr(label, "meta", {}) or {}
                name = meta.get("filename_or_obj", key)
                raise InputValueError(
                    f"label {name} holds values {unexpected[:10]}; expected only {sorted(self.mapping)} (mapped to "
                    f"classes {sorted(set(self.mapping.values()))}): fix the label file."
                )
            out = label.clone() if isinstance(label, torch.Tensor) else torch.as_tensor(label).clone()
            for raw, target in self.mapping.items():
                out[label == raw] = target
            d[key] = out
        return d


class CheckChannelCountd(MapTransform):
    """Fail with the file's name when a channel-first image has not the number of channels the model takes.

    A multi-modal or RGB export given to a single-channel model would otherwise fail inside the network's first
    convolution (or, worse, be silently reduced) with no mention of the file.

    Args:
        keys: the image keys (channel first, after ``EnsureChannelFirstd``).
        channels: the model's ``in_channels``.
        allow_missing_keys: skip items without the key.
    """

    def __init__(self, keys: KeysCollection, channels: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels = int(channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if int(image.shape[0]) != self.channels:
                meta = getattr(image, "meta", {}) or {}
                name = meta.get("filename_or_obj", key)
                raise InputValueError(
                    f"image {name} has {int(image.shape[0])} channels (shape {list(image.shape)}, channel first), but "
                    f"the model takes {self.channels} (network_def::in_channels): give one modality per file."
                )
        return d


def _describe(value: Any) -> str:
    return f"the text {value!r}" if isinstance(value, str) else f"{value!r} ({type(value).__name__})"


def intensity_transforms(intensity: Intensity, image_key: str = "image") -> list[MapTransform]:
    """The intensity step of the loading transforms.

    Args:
        intensity: ``"zscore"`` (mean 0 and std 1 over the whole volume), ``"minmax"`` (scaled to [0, 1]), None or
            ``"none"`` (no step), or MONAI transforms (one, or a list) run in order: dictionary transforms
            (``MapTransform``, e.g. ``ScaleIntensityRanged(keys="image", a_min=-200, a_max=300, b_min=0, b_max=1,
            clip=True)`` for a CT window) as given, array transforms (``ScaleIntensityRange(...)``) on
            ``image_key``. They run once per case, before caching, so they must not be random.
        image_key: the image key the array transforms are applied to.

    Returns:
        The dictionary transforms.

    Raises:
        SettingError: for another value, a class instead of an instance, or a random transform; the message names
            the config key ``intensity``.
    """
    if intensity is None or (isinstance(intensity, str) and intensity.lower() == "none"):
        return []
    if intensity == "zscore":
        return [NormalizeIntensityd(keys=image_key)]
    if intensity == "minmax":
        return [ScaleIntensityd(keys=image_key, minv=0.0, maxv=1.0)]
    expected = "'zscore', 'minmax', None or a list of MONAI transforms"
    if isinstance(intensity, (str, bytes, Mapping)):
        raise SettingError(f"config key 'intensity' must be {expected}, got {_describe(intensity)}.")
    items = list(intensity) if isinstance(intensity, Sequence) else [intensity]
    transforms: list[MapTransform] = []
    for i, item in enumerate(items):
        if isinstance(item, type) or not callable(item):
            what = "a class, not a transform (instantiate it)" if isinstance(item, type) else "not a transform"
            raise SettingError(
                f"config key 'intensity': item {i}, {_describe(item)}, is {what}; expected {expected}."
            )
        if isinstance(item, Randomizable):
            raise SettingError(
                f"config key 'intensity': item {i}, {type(item).__name__}, is random; the intensity step runs once per "
                "case before caching, so put random transforms with the augmentations."
            )
        transforms.append(item if isinstance(item, MapTransform) else Lambdad(keys=image_key, func=item))
    return transforms


def load_transforms(
    layout: str,
    image_key: str = "image",
    label_key: str = "label",
    h5_spacing: float | Sequence[float] | None = None,
    intensity: Intensity = "zscore",
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
    over the whole volume) or ``"minmax"`` (ACDC: scaled to [0, 1]), or is a list of MONAI transforms for other
    data (:func:`intensity_transforms`); ``binarize_label`` maps a 0/255 label to 0/1
    explicitly (:data:`LA_RAW_LABEL_MAP`; any other value is an error).
    A missing label (unlabeled or inference items) is allowed.

    Args:
        layout: the resolved layout (the dataset module checks the name): ``"h5"`` reads the community HDF5
            files, ``"nrrd"`` reads through ITK, any other layout (``"nifti"``, ``"json"``, ``"studies"``, or a
            dataset module's own, e.g. ``"msd"``) through MONAI's default readers by file type.
        image_key: key of the image path.
        label_key: key of the label path.
        h5_spacing: voxel size to put in the affine of HDF5 data (the files store none).
        intensity: ``"zscore"``, ``"minmax"``, None or MONAI transforms (:func:`intensity_transforms`), for the raw
            layouts.
        binarize_label: map the LA challenge's 0/255 label to 0/1 (other values raise).

    Returns:
        The list of transforms.

    Raises:
        ValueError: for an unknown layout.
        SettingError: for an unknown intensity setting.
    """
    keys = [image_key, label_key]
    intensity_steps = intensity_transforms(intensity, image_key)
    if layout == "h5":
        return [
            LoadImaged(  # MONAI takes a reader instance, though its annotation names reader classes only
                keys=image_key, reader=H5Reader(dataset="image", spacing=h5_spacing), image_only=True,  # type: ignore[arg-type]
            ),
            LoadImaged(
                keys=label_key, reader=H5Reader(dataset="label", spacing=h5_spacing), image_only=True,  # type: ignore[arg-type]
                allow_missing_keys=True,
            ),
            EnsureChannelFirstd(keys=keys, channel_dim="no_channel", allow_missing_keys=True),
            EnsureTyped(keys=image_key, dtype="float32", track_meta=True),
        ]
    if not isinstance(layout, str) or not layout or layout == "auto":
        raise ValueError(f"data layout must be a resolved layout name such as {LAYOUTS}, got {layout!r}.")
    transforms: list[MapTransform] = [
        LoadImaged(keys=keys, reader="ITKReader" if layout == "nrrd" else None, image_only=True,
                   allow_missing_keys=True),
        EnsureChannelFirstd(keys=keys, allow_missing_keys=True),
        EnsureTyped(keys=image_key, dtype="float32", track_meta=True),
    ]
    transforms.extend(intensity_steps)
    if binarize_label:
        transforms.append(MapLabelValuesStrictd(keys=label_key, mapping=LA_RAW_LABEL_MAP, allow_missing_keys=True))
    return transforms
