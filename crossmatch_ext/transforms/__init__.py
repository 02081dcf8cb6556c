"""Transforms MONAI lacks for CrossMatch: CutMix boxes, independent strong views of one crop, and the authors'
intensity and slice-resize operations where MONAI has no exact counterpart."""

from __future__ import annotations

from .batched import (
    SUPPORTED_TRANSFORMS,
    BatchedTransform,
    BatchedUnlabeledViews,
    device_views_from_dataset,
    sample_cutmix_boxes,
    translate_strong_augmentation,
)
from .components import KeepLargestComponentd, keep_largest_component
from .cutmix import RandCutMixBoxd, StrongViewsd, sample_cutmix_box
from .intensity import QuantizeIntensity, QuantizeIntensityd, RandIsotropicGaussianSmooth, RandSignedGamma
from .saving import SaveLabelMapd
from .spatial import ResizeSliced, Spacingd

__all__ = [
    "SUPPORTED_TRANSFORMS",
    "BatchedTransform",
    "BatchedUnlabeledViews",
    "KeepLargestComponentd",
    "QuantizeIntensity",
    "QuantizeIntensityd",
    "RandCutMixBoxd",
    "RandIsotropicGaussianSmooth",
    "RandSignedGamma",
    "ResizeSliced",
    "SaveLabelMapd",
    "Spacingd",
    "StrongViewsd",
    "device_views_from_dataset",
    "keep_largest_component",
    "sample_cutmix_box",
    "sample_cutmix_boxes",
    "translate_strong_augmentation",
]
