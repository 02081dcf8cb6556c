"""Inference at a coarser voxel size than the image's, with the prediction returned on the image's grid."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer

__all__ = ["ResampledInferer", "resampled_shape"]

_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


def resampled_shape(shape: Sequence[int], scale: float | Sequence[float]) -> tuple[int, ...]:
    """The spatial shape after scaling each axis by ``scale`` (rounded, at least 1).

    Args:
        shape: spatial shape.
        scale: one factor or one per axis (0.5 halves each axis).

    Returns:
        The scaled shape.
    """
    factors = [float(scale)] * len(shape) if isinstance(scale, (int, float)) else [float(s) for s in scale]
    if len(factors) != len(shape):
        raise ValueError(f"scale {tuple(factors)} needs one factor per spatial axis of shape {tuple(shape)}.")
    return tuple(max(1, int(round(int(s) * f))) for s, f in zip(shape, factors))


class ResampledInferer(Inferer):
    """Run ``inferer`` on the image resampled by ``scale`` and resample its output back to the image's grid.

    For networks trained on volumes resampled to a coarser voxel size (e.g. ``scale=0.5``: 0.625 mm LA volumes
    at 1.25 mm): the input is resized with (tri)linear interpolation, ``inferer`` (a sliding window, say) predicts,
    and the class scores are resized back with (tri)linear interpolation, so argmax and metrics are computed at the
    image's own resolution against the original label.

    Args:
        inferer: the inferer run at the coarse resolution.
        scale: one factor or one per spatial axis; ``1`` runs ``inferer`` unchanged.
        antialias: low-pass the input with ``area`` interpolation when shrinking (matches training data resampled
            with ``area``); otherwise (tri)linear.
    """

    def __init__(self, inferer: Inferer, scale: float | Sequence[float] = 1.0, antialias: bool = True) -> None:
        super().__init__()
        self.inferer = inferer
        self.scale = scale
        self.antialias = bool(antialias)

    def _identity(self) -> bool:
        factors = [self.scale] if isinstance(self.scale, (int, float)) else list(self.scale)
        return all(float(f) == 1.0 for f in factors)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._identity():
            return self.inferer(inputs, network, *args, **kwargs)
        spatial = tuple(inputs.shape[2:])
        if len(spatial) not in _INTERPOLATION:
            raise ValueError(
                f"ResampledInferer handles 1 to 3 spatial dimensions, got input shape {tuple(inputs.shape)}."
            )
        coarse = resampled_shape(spatial, self.scale)
        plain = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        shrinking = all(c <= s for c, s in zip(coarse, spatial))
        if self.antialias and shrinking:
            small = F.interpolate(plain.float(), size=coarse, mode="area")
        else:
            small = F.interpolate(plain.float(), size=coarse, mode=_INTERPOLATION[len(spatial)], align_corners=False)
        scores = self.inferer(small, network, *args, **kwargs)
        scores = scores.as_tensor() if hasattr(scores, "as_tensor") else scores
        out = F.interpolate(scores.float(), size=spatial, mode=_INTERPOLATION[len(spatial)], align_corners=False)
        if isinstance(inputs, MetaTensor):
            return MetaTensor(out, meta=inputs.meta)
        return out
