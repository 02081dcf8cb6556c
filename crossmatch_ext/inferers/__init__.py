"""Inferers implementing the evaluation protocols of the CrossMatch literature on MONAI's inferers."""

from __future__ import annotations

from .sliding import StridedSlidingWindowInferer

__all__ = ["StridedSlidingWindowInferer"]
