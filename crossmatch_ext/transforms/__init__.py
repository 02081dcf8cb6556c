"""Transforms MONAI lacks for CrossMatch: CutMix boxes and independent strong views of one crop."""

from __future__ import annotations

from .cutmix import RandCutMixBoxd, StrongViewsd, sample_cutmix_box

__all__ = ["RandCutMixBoxd", "StrongViewsd", "sample_cutmix_box"]
