"""Intensity transforms of the authors' unlabeled pipelines that MONAI has no exact counterpart for."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import convert_to_tensor

__all__ = ["QuantizeIntensity", "QuantizeIntensityd", "RandIsotropicGaussianSmooth", "RandSignedGamma"]


def _as_tensor(img: Any) -> tuple[torch.Tensor, bool]:
    if isinstance(img, torch.Tensor):
        return img, True
    return torch.as_tensor(np.asarray(img)), False


class QuantizeIntensity(Transform):
    """Quantise ``[0, 1]`` intensities to ``levels + 1`` grey levels by truncation: ``floor(x * levels) / levels``.

    The authors' ACDC unlabeled pipeline turns each slice into an 8-bit image (``uint8(x * 255)``, which truncates)
    before its colour jitter and blur, and divides by 255 afterwards, so every weak and strong view lies on the
    1/255 lattice. ``levels=255`` reproduces that; values are clipped to ``[0, 1]`` first, as ``uint8`` conversion
    of a ``[0, 1]`` image would do. PIL's own operations on 8-bit images (colour jitter, blur) round their results
    instead: ``rounding="round"``.

    Args:
        levels: number of steps between 0 and 1 (255 for 8-bit images); 0 disables the transform.
        rounding: ``"floor"`` (NumPy's ``astype(uint8)``) or ``"round"`` (PIL's image operations).
    """

    def __init__(self, levels: int = 255, rounding: str = "floor") -> None:
        if int(levels) < 0:
            raise ValueError(f"levels must be >= 0 (0 disables quantisation), got {levels}.")
        if rounding not in ("floor", "round"):
            raise ValueError(f"rounding must be 'floor' or 'round', got {rounding!r}.")
        self.levels = int(levels)
        self.rounding = rounding

    def __call__(self, img: Any) -> Any:
        if self.levels == 0:
            return img
        tensor, was_tensor = _as_tensor(img)
        scaled = tensor.clamp(0.0, 1.0) * self.levels
        out = (torch.floor(scaled) if self.rounding == "floor" else torch.round(scaled)) / self.levels
        out = out.to(tensor.dtype) if tensor.is_floating_point() else out
        if was_tensor:  # one output type (MetaTensor when MONAI tracks metadata), whatever branch came before
            return convert_to_tensor(out, track_meta=get_track_meta())
        return out.numpy()


class QuantizeIntensityd(MapTransform):
    """Dictionary version of :class:`QuantizeIntensity`.

    Args:
        keys: keys of the images.
        levels: number of steps between 0 and 1 (0 disables the transform).
        rounding: ``"floor"`` or ``"round"`` (see :class:`QuantizeIntensity`).
        allow_missing_keys: do not fail on missing keys.
    """

    def __init__(
        self, keys: KeysCollection, levels: int = 255, rounding: str = "floor", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.quantize = QuantizeIntensity(levels, rounding)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.quantize(d[key])
        return d


class RandSignedGamma(RandomizableTransform):
    """Gamma transform of signed intensities, ``x -> sign(x) |x| ** gamma`` with ``log(gamma) ~ U(log_gamma)``.

    This is TorchIO's ``RandomGamma`` as the authors' LA pipeline uses it on z-scored volumes (which have negative
    values): the power acts on each voxel's magnitude about 0. MONAI's ``RandAdjustContrast`` instead rescales the
    image to ``[0, 1]`` by its minimum and range before the power, which changes intensities in a different way
    (its background moves, the authors' does not).

    Args:
        prob: probability of applying the transform.
        log_gamma: range of ``log(gamma)`` (TorchIO's default ``(-0.3, 0.3)``; the authors use ``(-0.5, 0.5)``).
    """

    def __init__(self, prob: float = 1.0, log_gamma: Sequence[float] = (-0.5, 0.5)) -> None:
        RandomizableTransform.__init__(self, prob)
        if len(log_gamma) != 2 or float(log_gamma[0]) > float(log_gamma[1]):
            raise ValueError(f"log_gamma must be a (low, high) range, got {tuple(log_gamma)}.")
        self.log_gamma = (float(log_gamma[0]), float(log_gamma[1]))
        self.gamma = 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.gamma = float(np.exp(self.R.uniform(*self.log_gamma)))

    def __call__(self, img: Any, randomize: bool = True) -> Any:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        tensor, was_tensor = _as_tensor(img)
        out = torch.sign(tensor) * tensor.abs() ** self.gamma
        if was_tensor:
            return convert_to_tensor(out, track_meta=get_track_meta())
        return out.numpy()


class RandIsotropicGaussianSmooth(RandomizableTransform):
    """Gaussian blur with ONE standard deviation for every spatial axis, ``sigma ~ U(sigma_range)`` (in pixels).

    The authors' ACDC strong views use PIL's ``GaussianBlur(radius=sigma)``, which blurs both axes with the same
    sigma. MONAI's ``RandGaussianSmooth`` draws a sigma per axis (TorchIO's ``RandomBlur``, used for LA, does too).

    Args:
        sigma_range: range of the standard deviation.
        prob: probability of applying the blur.
    """

    def __init__(self, sigma_range: Sequence[float] = (0.1, 2.0), prob: float = 0.5) -> None:
        RandomizableTransform.__init__(self, prob)
        if len(sigma_range) != 2 or not 0 < float(sigma_range[0]) <= float(sigma_range[1]):
            raise ValueError(f"sigma_range must be a positive (low, high) range, got {tuple(sigma_range)}.")
        self.sigma_range = (float(sigma_range[0]), float(sigma_range[1]))
        self.sigma = self.sigma_range[0]

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.sigma = float(self.R.uniform(*self.sigma_range))

    def __call__(self, img: Any, randomize: bool = True) -> Any:
        from monai.transforms import GaussianSmooth

        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        return GaussianSmooth(sigma=self.sigma)(img)
