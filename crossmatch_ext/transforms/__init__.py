"""Transforms MONAI lacks for CrossMatch: CutMix boxes and independent strong views of one crop."""

from __future__ import annotations

from .components import KeepLargestComponentd, keep_largest_component
from .cutmix import RandCutMixBoxd, StrongViewsd, sample_cutmix_box

__all__ = [
    "KeepLargestComponentd",
    "RandCutMixBoxd",
    "StrongViewsd",
    "keep_largest_component",
    "sample_cutmix_box",
]
