"""Random fields, shapes and noise that both generators draw their anatomy and image formation from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

__all__ = [
    "SeedLike",
    "as_generator",
    "stream",
    "gaussian_field",
    "rotation",
    "unit_vector",
    "grid",
    "ellipsoid_sdf",
    "tube_sdf",
    "polynomial_bias",
    "rician",
    "largest_component",
]

SeedLike = Union[int, np.integer, np.random.Generator, np.random.SeedSequence]


def as_generator(rng_or_seed: SeedLike) -> np.random.Generator:
    """Return ``rng_or_seed`` if it is a Generator, else a new Generator seeded with it."""
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, (int, np.integer, np.random.SeedSequence)) and not isinstance(rng_or_seed, bool):
        return np.random.default_rng(rng_or_seed)
    raise TypeError(
        f"rng_or_seed: expected an int seed, a numpy SeedSequence or a numpy Generator, found {type(rng_or_seed)!r}."
    )


def stream(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    """An independent Generator for one stream (IDs, a case) of a dataset seed."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream, int(index)]))


def gaussian_field(rng: np.random.Generator, shape: Sequence[int], sigma: float | Sequence[float]) -> np.ndarray:
    """Smooth random field with zero mean and unit standard deviation (white noise low-passed in Fourier space).

    Args:
        rng: the generator that draws the white noise.
        shape: output shape.
        sigma: Gaussian smoothing width in voxels, one value or one per axis (0 leaves an axis unsmoothed).

    Returns:
        ``float32`` array of ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    sigmas = [float(s) for s in sigma] if isinstance(sigma, Sequence) else [float(sigma)] * len(shape)
    white = rng.standard_normal(shape, dtype=np.float32)
    spectrum = sp_fft.rfftn(white)
    for axis, (size, width) in enumerate(zip(shape, sigmas)):
        freqs = sp_fft.rfftfreq(size) if axis == len(shape) - 1 else sp_fft.fftfreq(size)
        gain = np.exp(-2.0 * (np.pi * freqs * width) ** 2).astype(np.float32)
        view = [1] * len(shape)
        view[axis] = -1
        spectrum *= gain.reshape(view)
    field = sp_fft.irfftn(spectrum, s=shape).astype(np.float32, copy=False)
    field -= field.mean()
    std = float(field.std())
    return field / std if std > 0 else field


def rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    """A rotation matrix composed of three rotations of at most ``max_angle`` radians about x, y and z."""
    a, b, c = rng.uniform(-max_angle, max_angle, size=3)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def unit_vector(rng: np.random.Generator, bias: Sequence[float] | None = None, bias_weight: float = 0.0) -> np.ndarray:
    """A random unit vector in 3D, optionally pulled towards ``bias``."""
    v = rng.standard_normal(3)
    v /= np.linalg.norm(v) + 1e-12
    if bias is not None:
        v = v + bias_weight * np.asarray(bias, dtype=float)
        v /= np.linalg.norm(v) + 1e-12
    return v


def grid(shape: Sequence[int]) -> list[np.ndarray]:
    """Open (broadcastable) voxel coordinate grids, ``float32``."""
    return [g.astype(np.float32) for g in np.ogrid[tuple(slice(0, int(s)) for s in shape)]]


def ellipsoid_sdf(
    grids: Sequence[np.ndarray], center: np.ndarray, radii: np.ndarray, rotation: np.ndarray
) -> np.ndarray:
    """Approximate signed distance (voxels, negative inside) to a rotated ellipsoid.

    Uses the first-order estimate ``(q - 1) / |grad q|`` of the normalised radius ``q``, accurate near the surface.
    """
    d = [g - np.float32(c) for g, c in zip(grids, center)]
    u = [sum(np.float32(rotation[i, j]) * d[j] for j in range(3)) for i in range(3)]
    q = np.sqrt(sum((u[i] / np.float32(radii[i])) ** 2 for i in range(3)))
    grad = np.sqrt(sum((u[i] / np.float32(radii[i] ** 2)) ** 2 for i in range(3))) / np.maximum(q, 1e-6)
    return (q - 1.0) / np.maximum(grad, 1e-6)


def tube_sdf(grids: Sequence[np.ndarray], points: Sequence[np.ndarray], radii: Sequence[float]) -> np.ndarray:
    """Signed distance (voxels) to a tube along a polyline, the radius varying linearly between its points."""
    out: np.ndarray | None = None
    for k in range(len(points) - 1):
        a, b = np.asarray(points[k], dtype=np.float32), np.asarray(points[k + 1], dtype=np.float32)
        ab = b - a
        length2 = float(ab @ ab) + 1e-6
        d = [g - a[i] for i, g in enumerate(grids)]
        t = np.clip(sum(d[i] * ab[i] for i in range(3)) / np.float32(length2), 0.0, 1.0)
        dist = np.sqrt(sum((d[i] - t * ab[i]) ** 2 for i in range(3)))
        sdf = dist - (np.float32(radii[k]) + t * np.float32(radii[k + 1] - radii[k]))
        out = sdf if out is None else np.minimum(out, sdf)
    assert out is not None
    return out


def polynomial_bias(rng: np.random.Generator, shape: Sequence[int], strength: float) -> np.ndarray:
    """A smooth multiplicative bias field ``exp(p(x))`` with ``p`` a random polynomial of degree 2."""
    coords = [np.linspace(-1.0, 1.0, int(s), dtype=np.float32) for s in shape]
    views = []
    for axis, c in enumerate(coords):
        view = [1] * len(shape)
        view[axis] = -1
        views.append(c.reshape(view))
    log_field = np.zeros([1] * len(shape), dtype=np.float32)
    for i in range(len(shape)):
        log_field = log_field + np.float32(rng.normal(0, 1)) * views[i]
        log_field = log_field + np.float32(rng.normal(0, 0.6)) * views[i] ** 2
        for j in range(i + 1, len(shape)):
            log_field = log_field + np.float32(rng.normal(0, 0.5)) * views[i] * views[j]
    log_field = np.broadcast_to(log_field, tuple(int(s) for s in shape))
    spread = float(log_field.max() - log_field.min()) + 1e-6
    return np.exp(np.float32(strength) * (log_field - log_field.mean()) / np.float32(spread / 2.0))


def rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of standard deviation ``sigma``."""
    real = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.sqrt(real * real + imag * imag)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a binary mask (the mask itself when it has at most one)."""
    labelled, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))
