"""Inferers implementing the evaluation protocols of the CrossMatch literature on MONAI's inferers."""

from __future__ import annotations

from .resampled import ResampledInferer, resampled_shape
from .slices import RESIZE_MODES, ResizedSliceInferer, resize_slices, zoom_nearest_indices
from .sliding import StridedSlidingWindowInferer

__all__ = [
    "RESIZE_MODES",
    "ResampledInferer",
    "ResizedSliceInferer",
    "StridedSlidingWindowInferer",
    "resampled_shape",
    "resize_slices",
    "zoom_nearest_indices",
]
