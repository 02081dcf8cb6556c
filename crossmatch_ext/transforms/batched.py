"""The unlabeled items' strong views and CutMix boxes, made for a whole batch at once on the training device.

The DataLoader workers then only produce (and copy to the device) the weak view; :class:`BatchedUnlabeledViews`
makes the two strong views and the two CutMix boxes from the weak-view batch, with every random draw per sample and
the same distributions as the per-sample pipeline (:class:`~crossmatch_ext.transforms.StrongViewsd` with its MONAI
``transform`` tree, :class:`~crossmatch_ext.transforms.RandCutMixBoxd`). It is built from those transform objects, so
a bundle's config keeps one description of its augmentation:

.. code-block:: python

    views = BatchedUnlabeledViews.from_transform(unlabeled_dataset.transform)  # or device_views_from_dataset(...)
    trainer = CrossMatchTrainer(..., device_views=views)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    Compose,
    Identity,
    OneOf,
    RandAdjustContrast,
    RandBiasField,
    RandGaussianSmooth,
    RandomOrder,
    RandScaleIntensity,
    RandScaleIntensityFixedMean,
    ScaleIntensityRange,
)

from .cutmix import RandCutMixBoxd, StrongViewsd
from .intensity import QuantizeIntensity, RandIsotropicGaussianSmooth, RandSignedGamma

__all__ = [
    "BatchedUnlabeledViews",
    "BatchedTransform",
    "device_views_from_dataset",
    "translate_strong_augmentation",
    "sample_cutmix_boxes",
    "SUPPORTED_TRANSFORMS",
]

Params = dict[str, torch.Tensor]

#: The transforms a strong augmentation may contain to be made on the device (by class name).
SUPPORTED_TRANSFORMS: tuple[str, ...] = (
    "Compose",
    "OneOf",
    "RandomOrder",
    "Identity",
    "RandScaleIntensity",
    "RandScaleIntensityFixedMean",
    "ScaleIntensityRange",
    "RandBiasField",
    "RandAdjustContrast",
    "RandGaussianSmooth",
    "RandIsotropicGaussianSmooth",
    "RandSignedGamma",
    "QuantizeIntensity",
)

# Rejection sampling of the 2D CutMix box: sample_cutmix_box redraws up to this many times.
_BOX_TRIES = 1000


def _draw_dtype(device: torch.device) -> torch.dtype:
    """Scalars are drawn in double precision, as NumPy's, where the device has it."""
    return torch.float32 if device.type == "mps" else torch.float64


def _uniform(
    generator: torch.Generator, size: Sequence[int], low: float, high: float, device: torch.device
) -> torch.Tensor:
    """``U(low, high)`` of ``size``, drawn with ``generator`` on ``device``."""
    u = torch.rand(tuple(size), generator=generator, device=device, dtype=_draw_dtype(device))
    return low + (high - low) * u


def _per_sample(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` or ``(B, C)`` values shaped to broadcast against ``x`` ``(B, C, *spatial)``, in ``x``'s dtype."""
    return value.to(x.dtype).reshape(value.shape + (1,) * (x.ndim - value.ndim))


def _sample_dims(x: torch.Tensor, channel_wise: bool = False) -> tuple[int, ...]:
    """The dimensions a per-sample (or per-channel) statistic reduces over."""
    return tuple(range(2 if channel_wise else 1, x.ndim))


def _all_active(x: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor:
    return torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if active is None else active


class BatchedTransform:
    """A batched counterpart of one per-sample transform: draws its parameters per sample, applies them batched.

    ``__call__(x, active, generator)`` takes a ``(B, C, *spatial)`` batch and a ``(B,)`` boolean ``active`` (the
    samples this transform is applied to, e.g. the branch a ``OneOf`` chose) and returns the batch with the other
    samples unchanged. On the CPU only the active samples are gathered and computed (indexing needs no device
    synchronisation there); on other devices the whole batch is computed and selected with ``torch.where``, which
    keeps the work free of host synchronisation. ``last_active`` and ``last_params`` keep the latest call's
    per-sample decisions and draws (``(B,)`` / ``(B, ...)`` tensors), for checks against the per-sample transform.

    Args:
        prob: probability that a sample is transformed (the per-sample transform's ``prob``).
    """

    name: str = "BatchedTransform"

    def __init__(self, prob: float = 1.0) -> None:
        self.prob = float(prob)
        self.last_active: torch.Tensor | None = None
        self.last_params: Params = {}

    def draw(self, x: torch.Tensor, generator: torch.Generator) -> Params:
        """The random parameters of every sample of ``x`` (none by default)."""
        return {}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """The transform of every sample of ``x`` with the per-sample ``params``."""
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, params: Params, active: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        """The transform of the ``active`` samples of ``x`` (``None``: all), the others unchanged."""
        out = self.apply(x, params)
        if active is None:
            return out
        return torch.where(active.reshape((-1,) + (1,) * (x.ndim - 1)), out, x)

    def __call__(self, x: torch.Tensor, active: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.prob < 1.0:  # MONAI's RandomizableTransform: transformed when R.rand() < prob
            draws = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=_draw_dtype(x.device))
            active = active & (draws < self.prob)
        params = self.draw(x, generator)
        self.last_active, self.last_params = active, params
        if x.device.type != "cpu":
            return self.forward(x, params, active, generator)
        if bool(active.all()):
            return self.forward(x, params, None, generator)
        index = active.nonzero().flatten()
        if index.numel() == 0:
            return x
        out = x.clone()
        out[index] = self.forward(x[index], {k: v[index] for k, v in params.items()}, None, generator)
        return out

    def children(self) -> Sequence[BatchedTransform]:
        """The nested transforms (combinators only)."""
        return ()

    def __repr__(self) -> str:
        inner = ", ".join(repr(c) for c in self.children())
        return f"{self.name}({inner})" if inner else self.name


# ------------------------------------------------------------------------------------------------------ combinators
class _Identity(BatchedTransform):
    name = "Identity"

    def __call__(self, x: torch.Tensor, active: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x


class _Compose(BatchedTransform):
    name = "Compose"

    def __init__(self, transforms: Sequence[BatchedTransform]) -> None:
        super().__init__()
        self.transforms = list(transforms)

    def children(self) -> Sequence[BatchedTransform]:
        return self.transforms

    def forward(
        self, x: torch.Tensor, params: Params, active: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        active = _all_active(x, active)
        for transform in self.transforms:
            x = transform(x, active, generator)
        return x


class _OneOf(_Compose):
    """MONAI's ``OneOf``: each sample takes branch ``i`` with probability ``weights[i]``."""

    name = "OneOf"

    def __init__(self, transforms: Sequence[BatchedTransform], weights: Sequence[float]) -> None:
        super().__init__(transforms)
        total = float(sum(weights))
        self.cumulative = np.cumsum([float(w) / total for w in weights]).tolist()

    def draw(self, x: torch.Tensor, generator: torch.Generator) -> Params:
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=_draw_dtype(x.device))
        edges = torch.tensor(self.cumulative[:-1], device=x.device, dtype=u.dtype)
        return {"choice": torch.searchsorted(edges, u, right=True)}

    def forward(
        self, x: torch.Tensor, params: Params, active: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        active = _all_active(x, active)
        for i, transform in enumerate(self.transforms):
            x = transform(x, active & (params["choice"] == i), generator)
        return x


class _RandomOrder(_Compose):
    """MONAI's ``RandomOrder``: each sample applies every transform once, in its own random order."""

    name = "RandomOrder"

    def draw(self, x: torch.Tensor, generator: torch.Generator) -> Params:
        keys = torch.rand((x.shape[0], len(self.transforms)), generator=generator, device=x.device)
        return {"order": keys.argsort(dim=1)}  # a uniform random permutation per sample

    def forward(
        self, x: torch.Tensor, params: Params, active: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        active = _all_active(x, active)
        order = params["order"]
        for position in range(len(self.transforms)):
            for i, transform in enumerate(self.transforms):
                x = transform(x, active & (order[:, position] == i), generator)
        return x


# ------------------------------------------------------------------------------------------------------ intensity
class _ScaleIntensity(BatchedTransform):
    """MONAI's ``RandScaleIntensity``: ``x * (1 + factor)``, ``factor ~ U(factors)`` (per channel if channel_wise)."""

    name = "RandScaleIntensity"

    def __init__(self, factors: Sequence[float], prob: float, channel_wise: bool) -> None:
        super().__init__(prob)
        self.factors = (float(factors[0]), float(factors[1]))
        self.channel_wise = bool(channel_wise)

    def draw(self, x: torch.Tensor, generator: torch.Generator) -> Params:
        size = x.shape[:2] if self.channel_wise else x.shape[:1]
        return {"factor": _uniform(generator, size, *self.factors, x.device)}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return x * _per_sample(1 + params["factor"], x)


class _ScaleIntensityFixedMean(_ScaleIntensity):
    """MONAI's ``RandScaleIntensityFixedMean``: ``(x - mean) * (1 + factor) + mean``, optionally clipped to the
    input's range."""

    name = "RandScaleIntensityFixedMean"

    def __init__(
        self, factors: Sequence[float], prob: float, channel_wise: bool, fixed_mean: bool, preserve_range: bool
    ) -> None:
        super().__init__(factors, prob, channel_wise)
        self.fixed_mean = bool(fixed_mean)
        self.preserve_range = bool(preserve_range)

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        dims = _sample_dims(x, self.channel_wise)
        scale = _per_sample(1 + params["factor"], x)
        if self.preserve_range:
            low, high = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
        if self.fixed_mean:
            mean = x.mean(dim=dims, keepdim=True)
            out = (x - mean) * scale + mean
        else:
            out = x * scale
        if self.preserve_range:
            out = torch.minimum(torch.maximum(out, low), high)
        return out


class _ScaleIntensityRange(BatchedTransform):
    """MONAI's ``ScaleIntensityRange`` (deterministic): ``[a_min, a_max] -> [b_min, b_max]``, optional clip."""

    name = "ScaleIntensityRange"

    def __init__(self, a_min: float, a_max: float, b_min: float | None, b_max: float | None, clip: bool) -> None:
        super().__init__()
        self.a_min, self.a_max = float(a_min), float(a_max)
        self.b_min = None if b_min is None else float(b_min)
        self.b_max = None if b_max is None else float(b_max)
        self.clip = bool(clip)

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        if self.a_max - self.a_min == 0.0:
            return x - self.a_min if self.b_min is None else x - self.a_min + self.b_min
        # MONAI's operations, each skipped where it is exactly the identity (x - 0, x / 1, x * 1, x + 0)
        out = x - self.a_min if self.a_min != 0.0 else x
        out = out / (self.a_max - self.a_min) if self.a_max - self.a_min != 1.0 else out
        if self.b_min is not None and self.b_max is not None:
            out = out * (self.b_max - self.b_min) if self.b_max - self.b_min != 1.0 else out
            out = out + self.b_min if self.b_min != 0.0 else out
        if self.clip:
            out = out.clamp(self.b_min, self.b_max)
        return out


class _Quantize(BatchedTransform):
    """Our ``QuantizeIntensity``: clip to ``[0, 1]``, ``floor`` or ``round`` of ``x * levels``, divided back."""

    name = "QuantizeIntensity"

    def __init__(self, levels: int, rounding: str) -> None:
        super().__init__()
        self.levels, self.rounding = int(levels), rounding

    def __call__(self, x: torch.Tensor, active: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.levels == 0:
            return x
        return super().__call__(x, active, generator)

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        scaled = x.clamp(0.0, 1.0) * self.levels
        return (torch.floor(scaled) if self.rounding == "floor" else torch.round(scaled)) / self.levels


class _SignedGamma(BatchedTransform):
    """Our ``RandSignedGamma``: ``sign(x) |x| ** gamma``, ``log(gamma) ~ U(log_gamma)``."""

    name = "RandSignedGamma"

    def __init__(self, log_gamma: Sequence[float], prob: float) -> None:
        super().__init__(prob)
        self.log_gamma = (float(log_gamma[0]), float(log_gamma[1]))

    def draw(self, x: torch.Tensor, generator: torch.Generator) -> Params:
        return {"gamma": torch.exp(_uniform(generator, x.shape[:1], *self.log_gamma, x.device))}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.sign(x) * x.abs() ** _per_sample(params["gamma"], x)


class _AdjustContrast(BatchedTransform):
    """MONAI's ``RandAdjustContrast``: ``((x - min) / (range + 1e-7)) ** gamma * range + min`` per sample, with
    ``gamma ~ U(gamma)`` and MONAI's ``invert_image`` / ``retain_stats`` options."""

    name = "RandAdjustContrast"

    def __init__(self, gamma: Sequence[float], prob: float, invert_image: bool, retain_stats: bool) -> None:
        super().__init__(prob)
        self.gamma = (float(gamma[0]), float(gamma[1]))
        self.invert_image, self.retain_stats = bool(invert_image), bool(retain_stats)

    def draw(self, x: torch.Tensor, generator: torch.Generator) -> Params:
        return {"gamma": _uniform(generator, x.shape[:1], *self.gamma, x.device)}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        dims = _sample_dims(x)
        if self.invert_image:
            x = -x
        if self.retain_stats:
            mean, std = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True)
        low = x.amin(dim=dims, keepdim=True)
        extent = x.amax(dim=dims, keepdim=True) - low
        out = ((x - low) / (extent + 1e-7)) ** _per_sample(params["gamma"], x) * extent + low
        if self.retain_stats:
            out = out - out.mean(dim=dims, keepdim=True)
            out = out / (out.std(dim=dims, keepdim=True) + 1e-8)
            out = std * out + mean
        return -out if self.invert_image else out


class _BiasField(BatchedTransform):
    """MONAI's ``RandBiasField``: ``x * exp(field)``, the field a Legendre polynomial series with coefficients
    ``~ U(coeff_range)``, in MONAI's coefficient layout (2D: the lower triangle of the ``(degree + 1)^2`` matrix,
    3D: the exponents with ``i + j + k <= degree``), on ``linspace(-1, 1)`` coordinates of every axis."""

    name = "RandBiasField"

    def __init__(self, degree: int, coeff_range: Sequence[float], prob: float) -> None:
        super().__init__(prob)
        self.degree = int(degree)
        self.coeff_range = (float(coeff_range[0]), float(coeff_range[1]))
        self._basis: dict[tuple[Any, ...], list[torch.Tensor]] = {}

    def _layout(self, rank: int) -> tuple[np.ndarray, ...]:
        """The coefficient matrix positions of MONAI's coefficient list, in its order."""
        if rank == 2:
            return tuple(np.tril_indices(self.degree + 1))
        if rank == 3:
            n = self.degree + 1
            pts = [(i, j, k) for i in range(n) for j in range(n - i) for k in range(n - i - j)]
            return tuple(np.asarray(p) for p in zip(*pts))
        raise ValueError(f"RandBiasField is defined for 2D and 3D images, got {rank} spatial dimensions.")

    def _legendre(self, shape: Sequence[int], x: torch.Tensor) -> list[torch.Tensor]:
        """``P_i(linspace(-1, 1, n))`` per axis, ``(n, degree + 1)``, cached per shape and device."""
        key = (tuple(shape), x.device, x.dtype)
        if key not in self._basis:
            self._basis[key] = [
                torch.as_tensor(
                    np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, n, dtype=np.float32), self.degree)
                ).to(device=x.device, dtype=x.dtype)
                for n in shape
            ]
        return self._basis[key]

    def draw(self, x: torch.Tensor, generator: torch.Generator) -> Params:
        rank = x.ndim - 2
        count = int(np.prod([(self.degree + k) / k for k in range(1, rank + 1)]))
        return {"coeff": _uniform(generator, (x.shape[0], count), *self.coeff_range, x.device)}

    def field(self, x: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
        """The bias field (before ``exp``) of each sample, ``(B, *spatial)``."""
        spatial = x.shape[2:]
        rank = len(spatial)
        layout = self._layout(rank)
        matrix = torch.zeros((coeff.shape[0],) + (self.degree + 1,) * rank, device=x.device, dtype=x.dtype)
        matrix[(slice(None),) + tuple(torch.as_tensor(a, device=x.device) for a in layout)] = coeff.to(x.dtype)
        basis = self._legendre(spatial, x)
        if rank == 2:
            return torch.einsum("xi,bij,yj->bxy", basis[0], matrix, basis[1])
        partial = torch.einsum("bijk,zk->bijz", matrix, basis[2])
        partial = torch.einsum("bijz,yj->biyz", partial, basis[1])
        return torch.einsum("biyz,xi->bxyz", partial, basis[0])

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return x * torch.exp(self.field(x, params["coeff"])).unsqueeze(1)


class _GaussianSmooth(BatchedTransform):
    """MONAI's ``GaussianFilter`` with per-sample sigmas: separable, zero-padded, MONAI's kernel (``erf`` or
    ``sampled``, not normalised) truncated at ``int(max(4 sigma, 0.5) + 0.5)`` taps from the centre.

    ``isotropic``: one sigma for every axis (our ``RandIsotropicGaussianSmooth``); otherwise one per axis drawn
    from ``sigma_ranges`` (MONAI's ``RandGaussianSmooth``: ``sigma_x``, ``sigma_y``, ``sigma_z``).
    """

    truncated = 4.0
    method = "auto"  # "matrix" (banded products, the CPU's), "conv" (grouped convolutions, other devices')

    def __init__(
        self, sigma_ranges: Sequence[Sequence[float]], prob: float, isotropic: bool, approx: str, name: str
    ) -> None:
        super().__init__(prob)
        if approx not in ("erf", "sampled"):
            raise ValueError(f"device views support the 'erf' and 'sampled' Gaussian kernels, got approx={approx!r}.")
        self.sigma_ranges = [(float(r[0]), float(r[1])) for r in sigma_ranges]
        self.isotropic, self.approx, self.name = bool(isotropic), approx, name

    def draw(self, x: torch.Tensor, generator: torch.Generator) -> Params:
        rank = x.ndim - 2
        if self.isotropic:
            sigma = _uniform(generator, x.shape[:1], *self.sigma_ranges[0], x.device)
            return {"sigma": sigma[:, None].expand(-1, rank)}
        if len(self.sigma_ranges) < rank:
            raise ValueError(f"{self.name} has {len(self.sigma_ranges)} sigma ranges for a {rank}D image.")
        draws = [_uniform(generator, x.shape[:1], *r, x.device) for r in self.sigma_ranges[:rank]]
        return {"sigma": torch.stack(draws, 1)}

    def _tail(self, sigma: torch.Tensor) -> torch.Tensor:
        """MONAI's ``int(max(float(sigma) * truncated, 0.5) + 0.5)`` (sigma in float32 first, as MONAI keeps it)."""
        return torch.floor(torch.clamp(sigma.double() * self.truncated, min=0.5) + 0.5)

    def kernels(self, sigma: torch.Tensor, device: torch.device, max_tail: int | None = None) -> torch.Tensor:
        """``(B, 2 T + 1)`` kernels of one axis (``T``: the largest tail), zero beyond each sample's own tail."""
        sigma32 = sigma.to(device=device, dtype=torch.float32)
        tail = self._tail(sigma32)
        if max_tail is None:
            max_tail = int(tail.max())
        taps = torch.arange(-max_tail, max_tail + 1, dtype=torch.float32, device=device)[None]
        s = sigma32.abs()[:, None]
        if self.approx == "erf":
            t = 0.70710678 / s
            kernel = (0.5 * ((t * (taps + 0.5)).erf() - (t * (taps - 0.5)).erf())).clamp(min=0)
        else:
            kernel = torch.exp(-0.5 / (s * s) * taps**2) / (2.5066282 * s)
        return torch.where(taps.abs().double() <= tail[:, None], kernel, torch.zeros_like(kernel))

    def _max_tail(self, sigma: torch.Tensor) -> int | None:
        """The kernels' common half-length: the batch's largest on the CPU (reading it costs nothing there), the
        range's largest elsewhere (no host synchronisation)."""
        if sigma.device.type == "cpu":
            return None
        upper = max(r[1] for r in self.sigma_ranges)
        return int(max(float(np.float32(upper)) * self.truncated, 0.5) + 0.5)

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        method = self.method if self.method != "auto" else ("matrix" if x.device.type == "cpu" else "conv")
        return self._by_matrix(x, params["sigma"]) if method == "matrix" else self._by_conv(x, params["sigma"])

    def _by_conv(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """One grouped convolution per axis, a kernel per sample (and channel); cuDNN without TF32."""
        batch, channels, *spatial = x.shape
        rank = len(spatial)
        conv = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
        out = x.reshape(1, batch * channels, *spatial)
        with torch.backends.cudnn.flags(
            enabled=torch.backends.cudnn.enabled,
            benchmark=torch.backends.cudnn.benchmark,
            deterministic=torch.backends.cudnn.deterministic,
            allow_tf32=False,
        ):
            for axis in range(rank):  # MONAI filters axis 0 first
                kernel = self.kernels(sigma[:, axis], x.device, self._max_tail(sigma)).to(x.dtype)
                size = kernel.shape[1]
                shape = [batch * channels, 1] + [1] * rank
                shape[2 + axis] = size
                weight = kernel.repeat_interleave(channels, dim=0).reshape(shape)
                padding = [0] * rank
                padding[axis] = (size - 1) // 2
                out = conv(out, weight, padding=tuple(padding), groups=batch * channels)
        return out.reshape(x.shape)

    def _by_matrix(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Per axis, a batched product with each sample's banded (Toeplitz) matrix of its kernel: zero padding,
        the same sums as the convolution (faster than a grouped convolution on the CPU)."""
        batch, spatial = x.shape[0], x.shape[2:]
        out = x
        for axis, size in enumerate(spatial):
            kernel = self.kernels(sigma[:, axis], x.device, self._max_tail(sigma)).to(x.dtype)
            tail = (kernel.shape[1] - 1) // 2
            offset = torch.arange(size, device=x.device)[None, :] - torch.arange(size, device=x.device)[:, None]
            band = offset.abs() <= tail
            matrix = kernel[:, (offset.clamp(-tail, tail) + tail)] * band  # (B, out index, in index)
            moved = out.movedim(2 + axis, -1)
            shape = moved.shape
            product = torch.bmm(moved.reshape(batch, -1, size), matrix.transpose(1, 2))
            out = product.reshape(shape).movedim(-1, 2 + axis)
        return out.contiguous()


# ------------------------------------------------------------------------------------------------------ translation
def _translate(transform: Any, path: str) -> BatchedTransform:
    kind = type(transform)
    if kind is Identity:
        return _Identity()
    if kind is OneOf:
        children = [_translate(t, f"{path} > OneOf[{i}]") for i, t in enumerate(transform.transforms)]
        return _OneOf(children, transform.weights)
    if kind is RandomOrder:
        return _RandomOrder([_translate(t, f"{path} > RandomOrder[{i}]") for i, t in enumerate(transform.transforms)])
    if kind is Compose:
        return _Compose([_translate(t, f"{path} > Compose[{i}]") for i, t in enumerate(transform.transforms)])
    if kind is RandScaleIntensity:
        return _ScaleIntensity(transform.factors, transform.prob, transform.channel_wise)
    if kind is RandScaleIntensityFixedMean:
        return _ScaleIntensityFixedMean(
            transform.factors, transform.prob, transform.channel_wise, transform.fixed_mean, transform.preserve_range
        )
    if kind is ScaleIntensityRange:
        t = transform
        return _ScaleIntensityRange(t.a_min, t.a_max, t.b_min, t.b_max, t.clip)
    if kind is QuantizeIntensity:
        return _Quantize(transform.levels, transform.rounding)
    if kind is RandSignedGamma:
        return _SignedGamma(transform.log_gamma, transform.prob)
    if kind is RandAdjustContrast:
        t = transform
        return _AdjustContrast(t.gamma, t.prob, t.invert_image, t.retain_stats)
    if kind is RandBiasField:
        return _BiasField(transform.degree, transform.coeff_range, transform.prob)
    if kind is RandIsotropicGaussianSmooth:
        return _GaussianSmooth([transform.sigma_range], transform.prob, True, "erf", "RandIsotropicGaussianSmooth")
    if kind is RandGaussianSmooth:
        t = transform
        ranges = [t.sigma_x, t.sigma_y, t.sigma_z]
        return _GaussianSmooth(ranges, t.prob, False, str(t.approx).lower(), "RandGaussianSmooth")
    raise ValueError(
        f"device views support only {', '.join(SUPPORTED_TRANSFORMS)} in the strong augmentation; found "
        f"{kind.__name__} at {path}. Make the strong views in the DataLoader workers (device_views off) or use "
        "the listed transforms."
    )


def translate_strong_augmentation(transform: Any) -> BatchedTransform:
    """The batched counterpart of a per-sample strong augmentation (a MONAI transform tree).

    Args:
        transform: a ``Compose`` / ``OneOf`` / ``RandomOrder`` tree of the transforms in :data:`SUPPORTED_TRANSFORMS`,
            e.g. a :class:`~crossmatch_ext.transforms.StrongViewsd`'s ``transform``.

    Returns:
        A :class:`BatchedTransform` with the same structure, parameters read from the objects.

    Raises:
        ValueError: for a transform that is not in :data:`SUPPORTED_TRANSFORMS` (its class and place are named).
    """
    return _translate(transform, "strong augmentation")


# ------------------------------------------------------------------------------------------------------ CutMix
def _randint(generator: torch.Generator, high: torch.Tensor) -> torch.Tensor:
    """``randint(0, high)`` per element of ``high`` (>= 1)."""
    u = torch.rand(high.shape, generator=generator, device=high.device, dtype=_draw_dtype(high.device))
    return torch.minimum(torch.floor(u * high), high - 1)


def _inside(low: torch.Tensor, extent: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, size)``: whether each index lies in ``[low, low + extent)`` (``(B,)`` each)."""
    index = torch.arange(size, device=low.device, dtype=low.dtype)[None]
    return (index >= low[:, None]) & (index < (low + extent)[:, None])


def sample_cutmix_boxes(
    batch: int,
    spatial_shape: Sequence[int],
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    prob: float = 0.5,
    area_range: Sequence[float] = (0.02, 0.4),
    aspect_range: Sequence[float] = (0.3, 1.0 / 0.3),
    legacy_axis_order: bool = False,
) -> torch.Tensor:
    """``batch`` independent CutMix boxes drawn on ``device``, by the rules of
    :func:`~crossmatch_ext.transforms.sample_cutmix_box` (2D: up to 1000 tries for a box that fits, all drawn at once
    and the first fitting one kept; 3D: clipped extents, legacy axis order optional).

    Args:
        batch: number of boxes.
        spatial_shape: the image's spatial shape (2D or 3D).
        generator: the random generator (on ``device``).
        device: where the boxes are made.
        prob: probability that a box is not empty.
        area_range: box area (volume) as a fraction of the image.
        aspect_range: range of the aspect ratio.
        legacy_axis_order: reproduce the authors' 3D axis bug.

    Returns:
        A float32 ``(batch, 1, *spatial_shape)`` tensor of 0 / 1.

    Raises:
        ValueError: for a spatial shape that is neither 2D nor 3D.
    """
    device = torch.device(device)
    shape = tuple(int(s) for s in spatial_shape)
    dtype = _draw_dtype(device)
    size = torch.tensor(shape, device=device, dtype=dtype)
    nonempty = torch.rand(batch, generator=generator, device=device, dtype=dtype) <= prob
    fraction = _uniform(generator, (batch,), float(area_range[0]), float(area_range[1]), device)
    if len(shape) == 2:
        area = fraction * shape[0] * shape[1]
        # the first of up to 1000 tries that fits; the CPU draws them in rounds until every box is placed, other
        # devices all at once (no host synchronisation); either way the first fitting try of the same sequence
        per_round = 16 if device.type == "cpu" else _BOX_TRIES
        placed = torch.zeros(batch, dtype=torch.bool, device=device)
        pick = torch.zeros((4, batch), dtype=dtype, device=device)
        for _ in range(0, _BOX_TRIES, per_round):
            tries = (batch, per_round)
            ratio = _uniform(generator, tries, float(aspect_range[0]), float(aspect_range[1]), device)
            h, w = torch.floor(torch.sqrt(area[:, None] * ratio)), torch.floor(torch.sqrt(area[:, None] / ratio))
            y, x = _randint(generator, size[0].expand(tries)), _randint(generator, size[1].expand(tries))
            fits = (y + h <= shape[0]) & (x + w <= shape[1])
            first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)
            new = fits.any(dim=1) & ~placed
            candidate = torch.stack([v.gather(1, first)[:, 0] for v in (y, h, x, w)])
            pick = torch.where(new[None], candidate, pick)
            placed = placed | new
            if device.type == "cpu" and bool(placed.all()):
                break
        nonempty = nonempty & placed
        rows = _inside(pick[0], pick[1], shape[0]) & nonempty[:, None]
        mask = rows.to(torch.float32)[:, :, None] * _inside(pick[2], pick[3], shape[1]).to(torch.float32)[:, None, :]
    elif len(shape) == 3:
        volume = fraction * float(np.prod(shape))
        ratio = _uniform(generator, (batch,), float(aspect_range[0]), float(aspect_range[1]), device)
        extents = torch.stack([(volume / ratio) ** (1 / 3), (volume * ratio) ** (1 / 3), volume ** (1 / 3)], 1)
        extents = torch.minimum(torch.floor(extents), size)
        if not legacy_axis_order:
            extents = extents.clamp(min=1)
        starts = _randint(generator, torch.clamp(size - extents, min=0) + 1)
        # legacy: written as mask[z-range, y-range, x-range], clipped by the image
        order = [2, 1, 0] if legacy_axis_order else [0, 1, 2]
        axes = [_inside(starts[:, a], extents[:, a], s).to(torch.float32) for a, s in zip(order, shape)]
        plane = (axes[0] * nonempty[:, None])[:, :, None] * axes[1][:, None, :]
        mask = plane[:, :, :, None] * axes[2][:, None, None, :]
    else:
        raise ValueError(f"CutMix boxes are defined for 2D and 3D images, got spatial shape {shape}.")
    return mask.unsqueeze(1)


# ------------------------------------------------------------------------------------------------------ the views
def _walk(transform: Any) -> Iterator[Any]:
    """``transform`` and, through ``Compose`` trees, every transform inside it."""
    yield transform
    if isinstance(transform, Compose):
        for child in transform.transforms:
            yield from _walk(child)


class BatchedUnlabeledViews:
    """Two strong views and two CutMix boxes of a batch of weak views, made batched on the weak views' device.

    ``views({image_key: weak})`` with ``weak`` a ``(B, C, *spatial)`` tensor returns that mapping with
    ``view_keys`` (each ``(B, C, *spatial)``, the strong augmentation drawn independently per sample and view) and
    ``box_keys`` (each ``(B, 1, *spatial)``, float 0 / 1, independent per sample and key) added; the same
    distributions as :class:`~crossmatch_ext.transforms.StrongViewsd` and
    :class:`~crossmatch_ext.transforms.RandCutMixBoxd` on every item. Random draws come from a ``torch.Generator``
    on that device (one per device), seeded by :meth:`set_random_state` (by default from PyTorch's global
    generator at the first call, so ``monai.utils.set_determinism`` makes runs repeatable). Channels-last inputs are
    accepted; the outputs are contiguous.

    Args:
        strong_augmentation: the per-sample strong augmentation (a MONAI transform tree of
            :data:`SUPPORTED_TRANSFORMS`), translated here.
        image_key: the weak view's key.
        view_keys: the strong views' keys.
        box_keys: the CutMix boxes' keys (empty: no boxes).
        cutmix_prob: probability that a box is not empty.
        area_range: box area (volume) as a fraction of the image.
        aspect_range: range of the box aspect ratio.
        legacy_axis_order: reproduce the authors' 3D CutMix axis bug.
        seed: the generators' seed (``None``: drawn from PyTorch's global generator at the first call).

    Raises:
        ValueError: for a transform in ``strong_augmentation`` that has no batched counterpart.
    """

    def __init__(
        self,
        strong_augmentation: Any,
        image_key: str = "image",
        view_keys: Sequence[str] = ("image_s1", "image_s2"),
        box_keys: Sequence[str] = ("cutmix_box_s1", "cutmix_box_s2"),
        cutmix_prob: float = 0.5,
        area_range: Sequence[float] = (0.02, 0.4),
        aspect_range: Sequence[float] = (0.3, 1.0 / 0.3),
        legacy_axis_order: bool = False,
        seed: int | None = None,
    ) -> None:
        self.strong_augmentation = translate_strong_augmentation(strong_augmentation)
        self.image_key = image_key
        self.view_keys = tuple(view_keys)
        self.box_keys = tuple(box_keys)
        self.cutmix_prob = float(cutmix_prob)
        self.area_range = (float(area_range[0]), float(area_range[1]))
        self.aspect_range = (float(aspect_range[0]), float(aspect_range[1]))
        self.legacy_axis_order = bool(legacy_axis_order)
        self._seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    @classmethod
    def from_transform(cls, transform: Any, defer: bool = True, seed: int | None = None) -> BatchedUnlabeledViews:
        """The device views of an unlabeled pipeline, e.g. a bundle's ``train::unlabeled_preprocessing``.

        Finds the (one) :class:`~crossmatch_ext.transforms.StrongViewsd` and the (at most one)
        :class:`~crossmatch_ext.transforms.RandCutMixBoxd` in ``transform`` (a MONAI ``Compose`` tree, or either
        transform itself), translates the strong augmentation and reads the keys and box settings from them.

        Args:
            transform: the unlabeled items' transform.
            defer: switch the two transforms to their deferred mode (they then add nothing to the items, so the
                loader workers only make and transfer the weak view). Do this before the loader's workers start.
            seed: the generators' seed (see the class).

        Returns:
            The batched views.

        Raises:
            ValueError: without exactly one ``StrongViewsd``, with more than one ``RandCutMixBoxd``, or for a strong
                augmentation transform that has no batched counterpart.
        """
        found = list(_walk(transform))
        strong = [t for t in found if isinstance(t, StrongViewsd)]
        boxes = [t for t in found if isinstance(t, RandCutMixBoxd)]
        if len(strong) != 1:
            raise ValueError(
                f"device views need exactly one StrongViewsd in the unlabeled transform, found {len(strong)} "
                f"(in {type(transform).__name__})."
            )
        if len(boxes) > 1:
            raise ValueError(f"device views take at most one RandCutMixBoxd, found {len(boxes)}.")
        views, box = strong[0], (boxes[0] if boxes else None)
        result = cls(
            views.transform,
            image_key=str(views.keys[0]),
            view_keys=views.view_keys,
            box_keys=[str(k) for k in box.keys] if box is not None else (),
            cutmix_prob=box.prob if box is not None else 0.5,
            area_range=box.area_range if box is not None else (0.02, 0.4),
            aspect_range=box.aspect_range if box is not None else (0.3, 1.0 / 0.3),
            legacy_axis_order=box.legacy_axis_order if box is not None else False,
            seed=seed,
        )
        if defer:
            views.deferred = True
            if box is not None:
                box.deferred = True
        return result

    def set_random_state(self, seed: int | None = None) -> BatchedUnlabeledViews:
        """Reseed: the next draws on every device start from ``seed`` (``None``: from PyTorch's global generator).

        Args:
            seed: the seed.

        Returns:
            This object.
        """
        self._seed = seed
        self._generators.clear()
        return self

    def state_dict(self) -> dict[str, Any]:
        """The seed and each device's generator state (for a resumable checkpoint)."""
        return {"seed": self._seed, "generators": {str(d): g.get_state() for d, g in self._generators.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s draws."""
        self._seed = state["seed"]
        self._generators.clear()
        for name, generator_state in state.get("generators", {}).items():
            device = torch.device(name)
            generator = torch.Generator(device=device)
            generator.set_state(torch.as_tensor(generator_state, dtype=torch.uint8).cpu())
            self._generators[device] = generator

    def generator(self, device: torch.device) -> torch.Generator:
        """The generator of ``device`` (made and seeded at its first use)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._generators:
            if self._seed is None:
                self._seed = int(torch.randint(0, 2**62, (1,)).item())
            self._generators[device] = torch.Generator(device=device).manual_seed(self._seed)
        return self._generators[device]

    @torch.no_grad()
    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        if self.image_key not in data:
            raise KeyError(f"BatchedUnlabeledViews: key '{self.image_key}' not in the batch (keys: {list(data)}).")
        weak = data[self.image_key]
        if hasattr(weak, "as_tensor"):
            weak = weak.as_tensor()
        weak = torch.as_tensor(weak)
        if weak.ndim not in (4, 5):
            raise ValueError(f"the weak views must be a (B, C, H, W[, D]) batch, got shape {tuple(weak.shape)}.")
        x = weak if weak.is_floating_point() else weak.float()
        batch, count = x.shape[0], len(self.view_keys)
        generator = self.generator(x.device)
        out = dict(data)
        if count:  # every view of every sample in one batch: 2 B independent draws
            stacked = x.contiguous().repeat((count,) + (1,) * (x.ndim - 1))
            active = torch.ones(stacked.shape[0], dtype=torch.bool, device=x.device)
            strong = self.strong_augmentation(stacked, active, generator)
            for key, view in zip(self.view_keys, strong.split(batch)):
                out[key] = view
        for key in self.box_keys:
            out[key] = sample_cutmix_boxes(
                batch,
                x.shape[2:],
                generator,
                x.device,
                self.cutmix_prob,
                self.area_range,
                self.aspect_range,
                self.legacy_axis_order,
            )
        return out

    def __repr__(self) -> str:
        return (
            f"BatchedUnlabeledViews({self.image_key!r} -> {list(self.view_keys)}: {self.strong_augmentation!r}; "
            f"boxes {list(self.box_keys)}, prob {self.cutmix_prob})"
        )


def device_views_from_dataset(dataset: Any, defer: bool = True, seed: int | None = None) -> BatchedUnlabeledViews:
    """:meth:`BatchedUnlabeledViews.from_transform` of a dataset's transform.

    Works with MONAI's ``Dataset`` / ``CacheDataset`` (``transform``), :class:`crossmatch_ext.data.VolumeSliceDataset`
    (``transform``, the per-slice augmentation) and wrappers with a ``dataset`` attribute (``Subset``).

    Args:
        dataset: the unlabeled dataset.
        defer: switch its ``StrongViewsd`` / ``RandCutMixBoxd`` to their deferred mode.
        seed: the generators' seed.

    Returns:
        The batched views.

    Raises:
        ValueError: when the dataset has no transform, or see :meth:`BatchedUnlabeledViews.from_transform`.
    """
    current = dataset
    for _ in range(8):
        transform = getattr(current, "transform", None)
        if transform is not None:
            return BatchedUnlabeledViews.from_transform(transform, defer=defer, seed=seed)
        if not hasattr(current, "dataset"):
            break
        current = current.dataset
    raise ValueError(
        f"device views need the unlabeled dataset's transform (a `transform` attribute), {type(dataset).__name__} "
        "has none."
    )
