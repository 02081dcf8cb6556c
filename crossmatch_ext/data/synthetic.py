"""Synthetic cardiac MRI datasets in the layouts of the LA and ACDC semi-supervised benchmarks.

Two generators produce MRI-like cases with exact ground truth, deterministically from a seed:

- :func:`make_la_case`: a 3D LGE-MRI-like crop around a left atrium, ``(x, y, z)`` with the slice axis last,
  z-score normalised (``float32``) with a binary label (``uint8`` 0/1). The atrium is an irregular bright chamber
  with one to three pulmonary vein stubs and a thin, unlabeled wall, surrounded by textured tissue, dark air-like
  regions and bright unlabeled distractors (an aorta-like tube, neighbouring blood pools, small vessels), under a
  smooth multiplicative bias field and Rician noise.
- :func:`make_acdc_case`: a cine-MRI-like short-axis stack ``(slices, height, width)`` scaled to ``[0, 1]``
  (``float32``) with labels ``uint8`` 0 background, 1 right ventricle, 2 myocardium, 3 left ventricle. The left
  ventricle (bright disc with papillary muscles) is enclosed by the dark myocardial ring, the right ventricle is a
  bright crescent against the septum; all shrink from base to apex, with an open ring and an unlabeled atrium at
  the base. Body, fat, lungs, liver, aorta and small vessels make the background, with bias field and noise.

The writers lay the cases out exactly like the files the semi-supervised segmentation community distributes
(UA-MT / SSL4MIS / CrossMatch), optionally with NIfTI copies and MONAI datalists, or the raw challenge layouts:

- :func:`write_la_dataset`: ``<out>/<CASE_ID>/mri_norm2.h5`` (``image``, ``label``), ``train.list``,
  ``val.list``, ``train_<N>_label.list``; ``<out>/nifti/{imagesTr,labelsTr}/<CASE_ID>.nii.gz`` and
  ``<out>/nifti/datalist.json``; ``<out>/raw/<CASE_ID>/{lgemri,laendo}.nrrd`` and the same lists in ``<out>/raw``.
- :func:`write_acdc_dataset`: ``<out>/volumes/patientNNN_frame0{1,2}.h5``, ``train.list``, ``val.list``,
  ``train_<N>_label.list``; ``<out>/raw/patientNNN/patientNNN_frameMM[_gt].nii.gz``, ``Info.cfg`` and
  ``<out>/raw/datalist.json``.

Run ``python -m crossmatch_ext.data.synthetic --help`` for the command line.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import h5py
import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

__all__ = [
    "LA_SPACING_MM",
    "ACDC_SLICE_SPACING_MM",
    "make_la_case",
    "make_acdc_case",
    "make_acdc_patient",
    "write_la_dataset",
    "write_acdc_dataset",
    "main",
]

#: Voxel size of the LA benchmark volumes (isotropic, millimetres).
LA_SPACING_MM = 0.625
#: Distance between short-axis slices of the generated ACDC stacks (millimetres).
ACDC_SLICE_SPACING_MM = 10.0

SeedLike = Union[int, np.integer, np.random.Generator, np.random.SeedSequence]

_ID_ALPHABET = np.array(list(string.ascii_uppercase + string.digits))
_STREAM_LA_IDS = 11
_STREAM_LA_CASE = 12
_STREAM_ACDC_IDS = 21
_STREAM_ACDC_PATIENT = 22


# ----------------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------------


def _as_generator(rng_or_seed: SeedLike) -> np.random.Generator:
    """Return ``rng_or_seed`` if it is a Generator, else a new Generator seeded with it."""
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, (int, np.integer, np.random.SeedSequence)) and not isinstance(rng_or_seed, bool):
        return np.random.default_rng(rng_or_seed)
    raise TypeError(
        f"rng_or_seed: expected an int seed, a numpy SeedSequence or a numpy Generator, found {type(rng_or_seed)!r}."
    )


def _stream(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    """An independent Generator for one stream (IDs, a case) of a dataset seed."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream, int(index)]))


def _gaussian_field(rng: np.random.Generator, shape: Sequence[int], sigma: float | Sequence[float]) -> np.ndarray:
    """Smooth random field with zero mean and unit standard deviation (white noise low-passed in Fourier space).

    Args:
        rng: the generator that draws the white noise.
        shape: output shape.
        sigma: Gaussian smoothing width in voxels, one value or one per axis (0 leaves an axis unsmoothed).

    Returns:
        ``float32`` array of ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    sigmas = [float(sigma)] * len(shape) if np.isscalar(sigma) else [float(s) for s in sigma]  # type: ignore[arg-type]
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


def _rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    """A rotation matrix composed of three rotations of at most ``max_angle`` radians about x, y and z."""
    a, b, c = rng.uniform(-max_angle, max_angle, size=3)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _unit_vector(rng: np.random.Generator, bias: Sequence[float] | None = None, bias_weight: float = 0.0) -> np.ndarray:
    """A random unit vector in 3D, optionally pulled towards ``bias``."""
    v = rng.standard_normal(3)
    v /= np.linalg.norm(v) + 1e-12
    if bias is not None:
        v = v + bias_weight * np.asarray(bias, dtype=float)
        v /= np.linalg.norm(v) + 1e-12
    return v


def _grid(shape: Sequence[int]) -> list[np.ndarray]:
    """Open (broadcastable) voxel coordinate grids, ``float32``."""
    return [g.astype(np.float32) for g in np.ogrid[tuple(slice(0, int(s)) for s in shape)]]


def _ellipsoid_sdf(
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


def _tube_sdf(grids: Sequence[np.ndarray], points: Sequence[np.ndarray], radii: Sequence[float]) -> np.ndarray:
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


def _polynomial_bias(rng: np.random.Generator, shape: Sequence[int], strength: float) -> np.ndarray:
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


def _rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of standard deviation ``sigma``."""
    real = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.sqrt(real * real + imag * imag)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a binary mask (the mask itself when it has at most one)."""
    labelled, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))


def _check_shape(name: str, value: Sequence[int], ndim: int, minimum: int) -> tuple[int, ...]:
    """Validate a shape argument and return it as a tuple of ints."""
    try:
        shape = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {ndim} integers, found {value!r}.") from None
    if len(shape) != ndim or any(s < minimum for s in shape):
        raise ValueError(f"{name}: expected {ndim} integers each >= {minimum}, found {value!r}.")
    return shape


def _shape_range(
    name: str, value: Any, ndim: int, minimum: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Parse a fixed shape (``ndim`` ints) or a range (a pair of shapes) into ``(low, high)`` inclusive."""
    if isinstance(value, (int, np.integer)) and ndim == 2:
        value = (int(value), int(value))
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, Sequence) for v in value):
        low = _check_shape(f"{name}[0]", value[0], ndim, minimum)
        high = _check_shape(f"{name}[1]", value[1], ndim, minimum)
        if any(h < lo for lo, h in zip(low, high)):
            raise ValueError(f"{name}: the upper shape {high} is smaller than the lower shape {low} on some axis.")
        return low, high
    shape = _check_shape(name, value, ndim, minimum)
    return shape, shape


def _draw_shape(rng: np.random.Generator, low: Sequence[int], high: Sequence[int]) -> tuple[int, ...]:
    """A shape drawn uniformly between ``low`` and ``high`` (inclusive), or ``low`` when they are equal."""
    if tuple(low) == tuple(high):
        return tuple(int(v) for v in low)
    return tuple(int(rng.integers(lo, h + 1)) for lo, h in zip(low, high))


def _write_list(path: Path, names: Sequence[str]) -> None:
    """Write one name per line, newline-terminated, like the benchmark's list files."""
    path.write_text("".join(f"{n}\n" for n in names))


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    """Write ``image`` and ``label`` gzip-compressed into a new HDF5 file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image, compression="gzip", chunks=True)
        f.create_dataset("label", data=label, compression="gzip", chunks=True)


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Write an array with a scanner-space affine (qform and sform) and millimetre units."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))


def _check_counts(**counts: int) -> None:
    """Reject negative counts with a message naming the argument."""
    for name, value in counts.items():
        if int(value) < 0:
            raise ValueError(f"{name}: expected a non-negative number, found {value}.")


def _labeled_counts(name: str, counts: int | Sequence[int], available: int) -> list[int]:
    """Normalise the labeled-count argument and check each count against the training pool."""
    values = [int(counts)] if isinstance(counts, (int, np.integer)) else [int(c) for c in counts]
    for c in values:
        if c < 1 or c > available:
            raise ValueError(
                f"{name}: each labeled count must be between 1 and the number of training "
                f"{'patients' if 'patients' in name else 'cases'} ({available}), found {c}."
            )
    return sorted(set(values))


# ----------------------------------------------------------------------------------------------------------------
# LA-like 3D cases
# ----------------------------------------------------------------------------------------------------------------


def _la_case(rng: np.random.Generator, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate one LA-like case; returns ``(normalised image, label, raw uint8 scan)``, all ``(x, y, z)``."""
    shape = _check_shape("shape", shape, 3, 16)
    dims = np.asarray(shape, dtype=float)
    m = float(dims.min())
    grids = _grid(shape)

    # --- chamber: a deformed union of ellipsoids, an appendage and pulmonary vein stubs ------------------------
    center = dims / 2.0 + rng.uniform(-0.05, 0.05, 3) * dims
    radii = dims * rng.uniform([0.24, 0.19, 0.19], [0.31, 0.25, 0.26])
    sdf = _ellipsoid_sdf(grids, center, radii, _rotation(rng, 0.35))
    for _ in range(int(rng.integers(1, 4))):
        direction = _unit_vector(rng)
        lobe_radii = radii * rng.uniform(0.35, 0.6, 3)
        lobe_center = center + direction * radii * rng.uniform(0.55, 0.8)
        sdf = np.minimum(sdf, _ellipsoid_sdf(grids, lobe_center, lobe_radii, _rotation(rng, 0.6)))
    # appendage: a short, curved, tapering finger towards +y (anterior)
    direction = _unit_vector(rng, bias=(0.3, 1.0, 0.2), bias_weight=1.5)
    start = center + direction * radii * 0.7
    length = m * rng.uniform(0.15, 0.25)
    bend = _unit_vector(rng) * length * 0.4
    appendage = [start, start + direction * length * 0.6 + bend * 0.5, start + direction * length + bend]
    sdf = np.minimum(sdf, _tube_sdf(grids, appendage, [m * 0.07, m * 0.055, m * 0.03]))
    for _ in range(int(rng.integers(1, 4))):
        # veins leave the back and top of the atrium: pull towards -y and +z
        direction = _unit_vector(rng, bias=(0.0, -1.0, 0.6), bias_weight=1.2)
        start = center + direction * radii * 0.6
        length = m * rng.uniform(0.25, 0.4)
        bend = _unit_vector(rng) * length * 0.2
        middle = start + direction * length * 0.5 + bend
        end = start + direction * length + 1.5 * bend
        r_ostium, r_vein = m * rng.uniform(0.06, 0.08), m * rng.uniform(0.03, 0.045)
        sdf = np.minimum(sdf, _tube_sdf(grids, [start, middle, end], [r_ostium, 0.6 * (r_ostium + r_vein), r_vein]))
    sdf += np.float32(m * rng.uniform(0.035, 0.055)) * _gaussian_field(rng, shape, m * 0.09)
    sdf += np.float32(m * rng.uniform(0.01, 0.02)) * _gaussian_field(rng, shape, m * 0.035)
    label = _largest_component(sdf < 0)

    wall_thickness = max(1.2, 0.025 * m) * rng.uniform(0.8, 1.2)
    near = ndimage.binary_dilation(label, iterations=int(np.ceil(wall_thickness)) + 1)
    wall = near & ~label & (sdf < wall_thickness)

    # --- unlabeled bright distractors: aorta-like tube, neighbouring blood pools, small vessels -----------------
    distractor_sdf = np.full(shape, np.inf, dtype=np.float32)
    distractor_level = np.ones(shape, dtype=np.float32)
    pieces: list[tuple[np.ndarray, float]] = []
    phi = rng.uniform(0, 2 * np.pi)
    aorta_r = m * rng.uniform(0.11, 0.17)
    offset = np.array([np.cos(phi), np.sin(phi), 0.0]) * (radii[:2].max() * 1.05 + aorta_r)
    aorta_points = [
        np.array([center[0], center[1], -0.15 * dims[2]]) + offset + rng.normal(0, 0.05, 3) * dims,
        center + offset * 1.1 + rng.normal(0, 0.05, 3) * dims,
        np.array([center[0], center[1], 1.15 * dims[2]])
        + offset * rng.uniform(0.6, 1.4)
        + rng.normal(0, 0.05, 3) * dims,
    ]
    pieces.append((_tube_sdf(grids, aorta_points, [aorta_r, aorta_r * 1.05, aorta_r * 0.95]), rng.uniform(0.85, 1.1)))
    for _ in range(int(rng.integers(2, 5))):
        direction = _unit_vector(rng)
        blob_radii = m * rng.uniform(0.15, 0.3, 3)
        blob_center = center + direction * (radii * 1.0 + blob_radii * 0.8)
        pieces.append((_ellipsoid_sdf(grids, blob_center, blob_radii, _rotation(rng, 0.8)), rng.uniform(0.75, 1.1)))
    for _ in range(int(rng.integers(3, 8))):
        a = rng.uniform(0, 1, 3) * dims
        b = a + _unit_vector(rng) * m * rng.uniform(0.3, 0.8)
        r = m * rng.uniform(0.015, 0.035)
        pieces.append((_tube_sdf(grids, [a, b], [r, r * 0.8]), rng.uniform(0.8, 1.2)))
    for piece_sdf, level in pieces:
        closer = piece_sdf < distractor_sdf
        distractor_sdf = np.where(closer, piece_sdf, distractor_sdf)
        distractor_level = np.where(closer, np.float32(level), distractor_level)
    distractor = (distractor_sdf < 0) & ~label & ~wall & (sdf > wall_thickness + 1.0)

    # --- intensities -----------------------------------------------------------------------------------------
    texture = 0.6 * _gaussian_field(rng, shape, 1.0) + 0.8 * _gaussian_field(rng, shape, 3.5)
    compartments = _gaussian_field(rng, shape, m * 0.08)
    soft = 1.0 / (1.0 + np.exp(-compartments / np.float32(0.25)))
    tissue = np.float32(rng.uniform(0.3, 0.4)) + np.float32(rng.uniform(0.1, 0.25)) * soft + np.float32(0.09) * texture
    air = _gaussian_field(rng, shape, m * 0.1)
    threshold = np.float32(rng.uniform(-1.4, -0.5))
    dark_weight = 1.0 / (1.0 + np.exp((air - threshold) / np.float32(0.12)))
    air_intensity = np.float32(rng.uniform(0.04, 0.12)) + np.float32(0.04) * texture
    tissue = tissue * (1 - dark_weight) + dark_weight * air_intensity
    fat = (_gaussian_field(rng, shape, 1.5) > np.float32(rng.uniform(1.8, 2.3))) & (dark_weight < 0.5)
    tissue = np.where(fat, np.float32(rng.uniform(0.65, 0.9)), tissue)

    blood = np.float32(1.0) + np.float32(0.07) * _gaussian_field(rng, shape, m * 0.12) + np.float32(0.05) * texture
    wall_patch = _gaussian_field(rng, shape, 2.5)
    if rng.uniform() < 0.5:  # dark (unenhanced) wall, else patchy enhancement (fibrosis)
        wall_intensity = np.float32(rng.uniform(0.35, 0.55)) + np.float32(0.08) * wall_patch
    else:
        enhanced = wall_patch > np.float32(rng.uniform(-0.3, 0.6))
        wall_intensity = np.where(enhanced, np.float32(rng.uniform(1.1, 1.3)), tissue)

    image = np.where(distractor, blood * distractor_level, tissue)
    image = np.where(wall, wall_intensity, image)
    image = np.where(label, blood, image).astype(np.float32)
    image = ndimage.gaussian_filter(image, sigma=0.6)
    image *= _polynomial_bias(rng, shape, rng.uniform(0.2, 0.4))
    image *= np.float32(1.0) + np.float32(rng.uniform(0.04, 0.08)) * rng.standard_normal(shape, dtype=np.float32)
    image = _rician(rng, image, rng.uniform(0.06, 0.11))

    # --- scanner range, then the benchmark's z-score over the (larger, darker) uncropped scan ------------------
    gain = rng.uniform(150.0, 200.0) / max(float(np.percentile(image, 99.5)), 1e-6)
    raw = np.clip(np.rint(image * gain), 0, 255).astype(np.uint8)
    values = raw.astype(np.float64)
    crop_mean, crop_var = float(values.mean()), float(values.var())
    margin = rng.uniform(0.7, 0.88)  # fraction of the uncropped scan outside the crop
    margin_mean = crop_mean * rng.uniform(0.2, 0.45)
    margin_var = crop_var * rng.uniform(0.3, 0.8)
    scan_mean = (1 - margin) * crop_mean + margin * margin_mean
    scan_var = (1 - margin) * (crop_var + (crop_mean - scan_mean) ** 2) + margin * (
        margin_var + (margin_mean - scan_mean) ** 2
    )
    normalised = ((values - scan_mean) / np.sqrt(scan_var)).astype(np.float32)
    return normalised, label.astype(np.uint8), raw


def make_la_case(rng_or_seed: SeedLike, shape: Sequence[int] = (112, 112, 80)) -> tuple[np.ndarray, np.ndarray]:
    """Generate one LA-like 3D LGE-MRI crop around a left atrium.

    Args:
        rng_or_seed: a numpy Generator (advanced in place) or a seed; the same seed gives identical arrays.
        shape: ``(x, y, z)`` size in voxels, the slice axis last, each at least 16.

    Returns:
        ``(image, label)``: ``image`` ``float32`` z-score normalised as over an uncropped scan (so its own mean is
        not 0), ``label`` ``uint8`` with 0 background and 1 left atrium (chamber and pulmonary vein stubs; the wall
        and all distractors are background). Both have shape ``shape``.

    Raises:
        ValueError: if ``shape`` is not three integers each at least 16.
        TypeError: if ``rng_or_seed`` is neither a seed nor a Generator.
    """
    image, label, _ = _la_case(_as_generator(rng_or_seed), shape)
    return image, label


def _la_case_ids(seed: int, count: int) -> list[str]:
    """``count`` distinct 20-character uppercase alphanumeric case IDs; the first k do not depend on ``count``."""
    rng = _stream(seed, _STREAM_LA_IDS)
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        case_id = "".join(rng.choice(_ID_ALPHABET, size=20))
        if case_id not in seen:
            seen.add(case_id)
            ids.append(case_id)
    return ids


def _la_affine(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    """RAS affine with the benchmark's isotropic spacing and a plausible, non-zero scanner origin."""
    affine = np.diag([LA_SPACING_MM] * 3 + [1.0])
    extent = np.asarray(shape, dtype=float) * LA_SPACING_MM
    affine[:3, 3] = np.round(-extent / 2.0 + rng.uniform(-40.0, 40.0, 3) + np.array([10.0, -20.0, 30.0]), 3)
    return affine


def write_la_dataset(
    out_dir: str | Path,
    num_train: int = 16,
    num_val: int = 4,
    num_labeled: int | Sequence[int] = (4, 8),
    seed: int = 0,
    shape: Sequence[int] | Sequence[Sequence[int]] = (112, 112, 80),
    nifti: bool = True,
    nrrd: bool = False,
) -> Path:
    """Write a synthetic dataset in the LA benchmark's HDF5 layout (and optionally NIfTI and raw NRRD copies).

    Layout under ``out_dir``:

    - ``<CASE_ID>/mri_norm2.h5`` with datasets ``image`` (``float32``, ``(x, y, z)``) and ``label`` (``uint8``);
      case IDs are 20 uppercase alphanumerics.
    - ``train.list`` and ``val.list`` (sorted IDs, disjoint) and ``train_<N>_label.list`` for each labeled count N
      (the first N lines of ``train.list``; the other training cases are the unlabeled pool).
    - with ``nifti``: ``nifti/imagesTr/<CASE_ID>.nii.gz`` (the normalised image), ``nifti/labelsTr/<CASE_ID>.nii.gz``
      (0.625 mm isotropic RAS affine with a non-zero origin), ``nifti/datalist_<N>_label.json`` for each N and
      ``nifti/datalist.json`` (the largest N): MONAI datalists whose ``training`` entries, in ``train.list`` order,
      carry a ``label`` for the labeled cases only (so the first n labeled entries of ``datalist.json`` are the
      ``train_<n>_label.list`` cases for every smaller n), ``validation`` entries always; paths relative to the
      JSON file.
    - with ``nrrd``: the 2018 challenge layout ``raw/<CASE_ID>/lgemri.nrrd`` (unnormalised ``uint8`` scan) and
      ``raw/<CASE_ID>/laendo.nrrd`` (label as 0/255 ``uint8``), 0.625 mm spacing, plus the same list files in ``raw``.

    Each case depends only on ``seed`` and its position in the generation order, so the same arguments give
    byte-identical arrays.

    Args:
        out_dir: output folder (created; existing files of the same names are overwritten).
        num_train: number of training cases.
        num_val: number of validation cases.
        num_labeled: labeled count(s) N for the ``train_<N>_label.list`` files, each in ``1..num_train``.
        seed: dataset seed.
        shape: ``(x, y, z)`` of every case, or a pair ``((x0, y0, z0), (x1, y1, z1))`` to draw each case's size
            uniformly in that inclusive range.
        nifti: also write the NIfTI copies and MONAI datalists.
        nrrd: also write the raw challenge layout (needs ``itk``).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: if a count or shape is invalid.
    """
    _check_counts(num_train=num_train, num_val=num_val)
    if num_train + num_val == 0:
        raise ValueError("num_train, num_val: expected at least one case in total, found 0.")
    labeled_counts = _labeled_counts("num_labeled", num_labeled, num_train) if num_train else []
    low, high = _shape_range("shape", shape, 3, 16)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    ids = _la_case_ids(seed, num_train + num_val)
    train_ids, val_ids = sorted(ids[:num_train]), sorted(ids[num_train:])
    lists = {"train.list": train_ids, "val.list": val_ids}
    lists.update({f"train_{n}_label.list": train_ids[:n] for n in labeled_counts})

    writer = None
    if nrrd:
        import itk

        writer = itk
    for index, case_id in enumerate(ids):
        rng = _stream(seed, _STREAM_LA_CASE, index)
        case_shape = _draw_shape(rng, low, high)
        image, label, raw = _la_case(rng, case_shape)
        _write_h5(out / case_id / "mri_norm2.h5", image, label)
        affine = _la_affine(rng, case_shape)
        if nifti:
            _write_nifti(out / "nifti" / "imagesTr" / f"{case_id}.nii.gz", image, affine)
            _write_nifti(out / "nifti" / "labelsTr" / f"{case_id}.nii.gz", label, affine)
        if writer is not None:
            raw_dir = out / "raw" / case_id
            raw_dir.mkdir(parents=True, exist_ok=True)
            # ITK arrays are (z, y, x); the origin goes from RAS to ITK's LPS
            origin = [float(-affine[0, 3]), float(-affine[1, 3]), float(affine[2, 3])]
            for name, array in (("lgemri.nrrd", raw), ("laendo.nrrd", (label * 255).astype(np.uint8))):
                itk_image = writer.image_from_array(np.ascontiguousarray(array.transpose(2, 1, 0)))
                itk_image.SetSpacing([LA_SPACING_MM] * 3)
                itk_image.SetOrigin(origin)
                writer.imwrite(itk_image, str(raw_dir / name), compression=True)

    for name, names in lists.items():
        _write_list(out / name, names)
        if nrrd:
            _write_list(out / "raw" / name, names)
    if nifti:
        labels = {"0": "background", "1": "left atrium"}
        for n in labeled_counts or [0]:
            labeled = set(train_ids[:n])
            training = [
                {"image": f"imagesTr/{i}.nii.gz", "label": f"labelsTr/{i}.nii.gz"}
                if i in labeled
                else {"image": f"imagesTr/{i}.nii.gz"}
                for i in train_ids
            ]
            validation = [{"image": f"imagesTr/{i}.nii.gz", "label": f"labelsTr/{i}.nii.gz"} for i in val_ids]
            datalist = {
                "name": "synthetic left atrium (LGE-MRI-like)",
                "tensorImageSize": "3D",
                "labels": labels,
                "numLabeled": n,
                "numTraining": len(training),
                "numValidation": len(validation),
                "training": training,
                "validation": validation,
            }
            text = json.dumps(datalist, indent=2) + "\n"
            (out / "nifti").mkdir(parents=True, exist_ok=True)
            if n:
                (out / "nifti" / f"datalist_{n}_label.json").write_text(text)
            if n == (labeled_counts[-1] if labeled_counts else 0):
                (out / "nifti" / "datalist.json").write_text(text)
    return out


# ----------------------------------------------------------------------------------------------------------------
# ACDC-like short-axis stacks
# ----------------------------------------------------------------------------------------------------------------


def _profile(t: np.ndarray, t_equator: float, t_end: float) -> np.ndarray:
    """Half-ellipsoid radius profile along the long axis: 1 up to ``t_equator``, 0 from ``t_end`` on."""
    s = np.clip((t - t_equator) / max(t_end - t_equator, 1e-6), 0.0, None)
    return np.sqrt(np.clip(1.0 - s * s, 0.0, 1.0))


def _harmonics(rng: np.random.Generator, num_slices: int, amplitude: float) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Per-slice Fourier perturbations ``(order, amplitude[s], phase[s])`` varying smoothly along the slices."""
    out = []
    for order in (2, 3, 4):
        amp = rng.uniform(0.2, 1.0) * amplitude / (order - 1) * (1 + 0.3 * np.sin(np.linspace(0, 3, num_slices)))
        phase = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.25, num_slices))
        out.append((order, amp, phase))
    return out


def _radial_factor(theta: np.ndarray, harmonics: list[tuple[int, np.ndarray, np.ndarray]]) -> np.ndarray:
    """``1 + sum a_k cos(k theta + phi_k)`` with per-slice ``a_k`` and ``phi_k`` broadcast over ``(S, H, W)``."""
    factor = np.ones_like(theta)
    for order, amp, phase in harmonics:
        factor += (amp[:, None, None] * np.cos(order * theta + phase[:, None, None])).astype(np.float32)
    return factor


def _acdc_patient(
    rng: np.random.Generator, num_slices: int, size: Sequence[int]
) -> dict[str, Any]:
    """Generate both frames (end-diastole, end-systole) of one ACDC-like patient.

    Returns:
        dict with ``frames`` (two ``(image01, label, raw_int16)`` tuples, ``(S, H, W)``), ``pixel_mm`` (in-plane
        spacing), ``es_frame`` (challenge frame number of the second frame) and ``num_frames``.
    """
    if int(num_slices) < 3:
        raise ValueError(f"num_slices: expected at least 3 slices, found {num_slices}.")
    height, width = _check_shape("size", size, 2, 32)
    s_count = int(num_slices)
    shape3 = (s_count, height, width)
    fov = rng.uniform(270.0, 330.0)
    pixel = fov / height
    yy = ((np.arange(height, dtype=np.float32) - height / 2.0) * pixel)[None, :, None]
    xx = ((np.arange(width, dtype=np.float32) - width / 2.0) * pixel)[None, None, :]

    # --- long-axis geometry (t = 0 at the base, 1 at the apex) ----------------------------------------------
    t = np.linspace(rng.uniform(-0.08, 0.04), rng.uniform(0.86, 1.0), s_count)
    t_equator = rng.uniform(0.1, 0.3)
    t_endo = rng.uniform(0.9, 1.02)
    t_epi = t_endo + rng.uniform(0.06, 0.14)
    t_rv = rng.uniform(0.72, 0.92)
    r_endo_max = rng.uniform(20.0, 27.0)
    thickness = rng.uniform(7.0, 10.0)
    heart_y = rng.uniform(-0.12, 0.02) * fov
    heart_x = rng.uniform(-0.05, 0.1) * fov
    drift = rng.uniform(-9.0, 9.0, 2)
    cy = (heart_y + drift[0] * t + rng.normal(0, 1.0, s_count)).astype(np.float32)[:, None, None]
    cx = (heart_x + drift[1] * t + rng.normal(0, 1.0, s_count)).astype(np.float32)[:, None, None]
    dy, dx = yy - cy, xx - cx
    rho = np.sqrt(dy * dy + dx * dx)
    theta = np.arctan2(dy, dx)
    theta_rv = np.pi + rng.uniform(-0.45, 0.35)  # right ventricle on the image's left, as in the benchmark
    endo_shape = _radial_factor(theta, _harmonics(rng, s_count, 0.06))
    epi_shape = _radial_factor(theta, _harmonics(rng, s_count, 0.035))
    rv_shape = _radial_factor(theta, _harmonics(rng, s_count, 0.05))

    r_endo_ed = r_endo_max * _profile(t, t_equator, t_endo)
    r_epi_ed = (r_endo_max + thickness) * _profile(t, t_equator, t_epi)
    contraction = rng.uniform(0.6, 0.8)
    rv_contraction = rng.uniform(0.65, 0.85)
    rv_offset, rv_radial, rv_tangential = rng.uniform(0.55, 0.8), rng.uniform(0.8, 1.05), rng.uniform(1.25, 1.6)
    rv_wall = rng.uniform(2.0, 3.5)
    rv_profile = _profile(t, 0.0, t_rv)
    papillary = [(theta_rv + np.pi + sign * rng.uniform(0.5, 0.9), rng.uniform(2.5, 4.0)) for sign in (-1, 1)]
    open_base = rng.uniform() < 0.7 and t[0] < 0.05
    gap_angle, gap_width = theta_rv + rng.uniform(0.6, 1.2), rng.uniform(0.7, 1.3)
    atrium_angle = theta_rv + np.pi + rng.uniform(-0.5, 0.5)
    atrium_r = rng.uniform(12.0, 18.0)

    # --- background anatomy, shared by both frames -------------------------------------------------------------
    plane = (1, height, width)
    px_per_10mm = 10.0 / pixel
    body_center = (rng.uniform(-0.05, 0.05) * fov, rng.uniform(-0.05, 0.05) * fov)
    body_a, body_b = fov * rng.uniform(0.3, 0.37), fov * rng.uniform(0.38, 0.46)
    by, bx = yy - np.float32(body_center[0]), xx - np.float32(body_center[1])
    body_q = np.sqrt((by / body_a) ** 2 + (bx / body_b) ** 2)
    body_q = body_q + np.float32(0.03) * _gaussian_field(rng, plane, 3.0 * px_per_10mm)
    body = body_q < 1.0
    fat_depth = rng.uniform(8.0, 16.0) * (1.0 + 0.45 * _gaussian_field(rng, plane, 2.0 * px_per_10mm))
    fat_layer = body & (body_q > 1.0 - fat_depth / body_a)
    muscle_depth = fat_depth + rng.uniform(10.0, 20.0) * (1.0 + 0.4 * _gaussian_field(rng, plane, 2.0 * px_per_10mm))
    muscle_layer = body & ~fat_layer & (body_q > 1.0 - muscle_depth / body_a)
    inner = body & ~fat_layer & ~muscle_layer
    texture = 0.7 * _gaussian_field(rng, shape3, (0.6, 0.8, 0.8)) + 0.7 * _gaussian_field(rng, shape3, (1.0, 3.0, 3.0))
    compartments = _gaussian_field(rng, shape3, (1.0, 1.2 * px_per_10mm, 1.2 * px_per_10mm))
    compartments = 1.0 / (1.0 + np.exp(-compartments / np.float32(0.3)))

    lungs = np.zeros(shape3, dtype=bool)
    lung_shape = _gaussian_field(rng, shape3, (1.0, 2.0 * px_per_10mm, 2.0 * px_per_10mm))
    for side, (dist, ly0, la_, lb_) in (
        (1.0, (rng.uniform(55.0, 75.0), rng.uniform(-10.0, 25.0), rng.uniform(45.0, 65.0), rng.uniform(28.0, 42.0))),
        (-1.0, (rng.uniform(70.0, 95.0), rng.uniform(-25.0, 10.0), rng.uniform(40.0, 60.0), rng.uniform(22.0, 38.0))),
    ):
        q = np.sqrt(((yy - cy - np.float32(ly0)) / la_) ** 2 + ((xx - cx - np.float32(side * dist)) / lb_) ** 2)
        lungs |= (q + np.float32(0.12) * lung_shape) < 1.0
    lungs &= inner
    liver_r = rng.uniform(55.0, 80.0) * (0.6 + 0.6 * t)[:, None, None]
    liver_q = np.sqrt(
        (yy - cy - np.float32(rng.uniform(70.0, 100.0))) ** 2 + (xx - cx + np.float32(rng.uniform(0, 40.0))) ** 2
    )
    liver = (liver_q + np.float32(6.0) * lung_shape < liver_r) & inner & ~lungs
    aorta_angle = theta_rv + np.pi + rng.uniform(-0.9, -0.2)
    aorta_d = r_endo_max + thickness + rng.uniform(22.0, 32.0)
    aorta_r = rng.uniform(9.0, 13.0)
    aorta = np.sqrt(
        (yy - cy - np.float32(aorta_d * np.sin(aorta_angle))) ** 2
        + (xx - cx - np.float32(aorta_d * np.cos(aorta_angle))) ** 2
    ) < aorta_r
    spine_d = aorta_d + aorta_r + rng.uniform(12.0, 20.0)
    spine = np.sqrt(
        (yy - cy - np.float32(spine_d * np.sin(aorta_angle + 0.35))) ** 2
        + (xx - cx - np.float32(spine_d * np.cos(aorta_angle + 0.35))) ** 2
    ) < rng.uniform(14.0, 19.0)
    vessels = np.zeros(shape3, dtype=bool)
    for _ in range(int(rng.integers(4, 10))):
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(45.0, 110.0)
        vy, vx = dist * np.sin(angle) + rng.normal(0, 2.0, s_count), dist * np.cos(angle) + rng.normal(0, 2.0, s_count)
        vy3, vx3 = vy.astype(np.float32)[:, None, None], vx.astype(np.float32)[:, None, None]
        vessels |= np.sqrt((yy - cy - vy3) ** 2 + (xx - cx - vx3) ** 2) < rng.uniform(2.0, 5.0)
    peri_fat_field = _gaussian_field(rng, shape3, (1.0, 1.5 * px_per_10mm, 1.5 * px_per_10mm))
    peri_fat_threshold = rng.uniform(0.3, 1.0)

    levels = {
        "tissue": rng.uniform(0.3, 0.42),
        "fat": rng.uniform(0.75, 1.0),
        "muscle": rng.uniform(0.22, 0.32),
        "lung": rng.uniform(0.02, 0.08),
        "liver": rng.uniform(0.3, 0.45),
        "aorta": rng.uniform(0.75, 1.05),
        "spine": rng.uniform(0.4, 0.55),
        "vessel": rng.uniform(0.7, 1.1),
        "lv": rng.uniform(0.75, 0.95),
        "rv": rng.uniform(0.7, 0.95),
        "myo": rng.uniform(0.18, 0.3),
    }
    flow = 1.0 + 0.06 * _gaussian_field(rng, shape3, (0.8, 3.0, 3.0))
    bias = _polynomial_bias(rng, (1, height, width), rng.uniform(0.25, 0.45))
    coil_angle = rng.uniform(-2.6, -0.5)  # a surface coil on the anterior chest wall
    coil_y = body_center[0] + body_a * np.sin(coil_angle)
    coil_x = body_center[1] + body_b * np.cos(coil_angle)
    coil = 1.0 + rng.uniform(0.3, 0.9) * np.exp(-np.sqrt((yy - coil_y) ** 2 + (xx - coil_x) ** 2) / (0.18 * fov))
    noise_sigma = rng.uniform(0.015, 0.035)
    raw_max = rng.uniform(300.0, 900.0)
    frame_seeds = rng.integers(0, 2**63 - 1, size=2)

    frames = []
    for phase in range(2):
        frame_rng = np.random.default_rng(int(frame_seeds[phase]))
        if phase == 0:
            r_endo, r_epi, rv_scale = r_endo_ed, r_epi_ed, 1.0
        else:
            r_endo = r_endo_ed * contraction
            r_epi = np.sqrt(r_endo**2 + r_epi_ed**2 - r_endo_ed**2)
            rv_scale = rv_contraction
        r_endo3 = (r_endo[:, None, None] * endo_shape).astype(np.float32)
        r_epi3 = (r_epi[:, None, None] * epi_shape).astype(np.float32)
        lv = rho < r_endo3
        epi = rho < r_epi3
        myo = epi & ~lv

        # right ventricle: an ellipse off the septum, minus the left ventricle's epicardium
        r_epi_slice = np.maximum(r_epi, 1e-3)[:, None, None]
        offset = rv_offset * r_epi_slice
        ry = cy + (offset * np.sin(theta_rv)).astype(np.float32)
        rx = cx + (offset * np.cos(theta_rv)).astype(np.float32)
        u = (yy - ry) * np.float32(np.sin(theta_rv)) + (xx - rx) * np.float32(np.cos(theta_rv))
        v = -(yy - ry) * np.float32(np.cos(theta_rv)) + (xx - rx) * np.float32(np.sin(theta_rv))
        a_rad = (rv_radial * r_epi_slice * rv_scale * rv_profile[:, None, None] + 1e-3).astype(np.float32)
        a_tan = (rv_tangential * r_epi_slice * rv_profile[:, None, None] + 1e-3).astype(np.float32)
        rv_q = np.sqrt((u / a_rad) ** 2 + (v / a_tan) ** 2) / rv_shape
        rv = (rv_q < 1.0) & ~epi & (rv_profile[:, None, None] > 0.15)
        rv_free_wall = (rv_q < 1.0 + rv_wall / np.maximum(a_rad, 1.0)) & ~rv & ~epi & (rv_profile[:, None, None] > 0.15)

        # papillary muscles: dark blobs inside the cavity, labelled as cavity
        papillary_mask = np.zeros(shape3, dtype=bool)
        mid = ((t > 0.25) & (t < 0.8))[:, None, None]
        for angle, radius in papillary:
            d = (r_endo3 - radius * 1.1)
            py, px = cy + d * np.float32(np.sin(angle)), cx + d * np.float32(np.cos(angle))
            papillary_mask |= (np.sqrt((yy - py) ** 2 + (xx - px) ** 2) < radius) & lv & mid

        # base: the ring opens towards the outflow tract and an unlabeled atrium appears
        unlabeled_blood = np.zeros(shape3, dtype=bool)
        if open_base:
            delta = np.angle(np.exp(1j * (theta - gap_angle)))
            gap = myo & (np.abs(delta) < gap_width / 2) & (np.arange(s_count) == 0)[:, None, None]
            myo = myo & ~gap
            unlabeled_blood |= gap
            d = r_epi_ed[0] + atrium_r * 0.7
            ay, ax = cy + np.float32(d * np.sin(atrium_angle)), cx + np.float32(d * np.cos(atrium_angle))
            atrium = np.sqrt((yy - ay) ** 2 + (xx - ax) ** 2) < atrium_r
            unlabeled_blood |= atrium & ~epi & ~rv & ~rv_free_wall & (np.arange(s_count) == 0)[:, None, None]

        label = np.zeros(shape3, dtype=np.uint8)
        label[rv] = 1
        label[myo] = 2
        label[lv] = 3

        heart = epi | rv | rv_free_wall | unlabeled_blood
        envelope = ndimage.binary_dilation(
            heart, structure=np.ones((1, 3, 3), bool), iterations=max(1, int(round(4.0 / pixel)))
        )
        peri_fat = envelope & ~heart & (peri_fat_field > peri_fat_threshold)

        image = np.full(shape3, np.float32(0.0))
        soft_tissue = (
            np.float32(levels["muscle"])
            + np.float32(levels["tissue"] - levels["muscle"] + 0.08) * compartments
            + np.float32(0.07) * texture
        )
        image = np.where(inner, soft_tissue, image)
        image = np.where(liver, np.float32(levels["liver"]) + np.float32(0.05) * texture, image)
        image = np.where(lungs & ~envelope, np.float32(levels["lung"]) + np.float32(0.02) * texture, image)
        image = np.where(muscle_layer, np.float32(levels["muscle"]) + np.float32(0.06) * texture, image)
        image = np.where(fat_layer, np.float32(levels["fat"]) + np.float32(0.08) * texture, image)
        image = np.where(spine & ~envelope, np.float32(levels["spine"]) + np.float32(0.06) * texture, image)
        image = np.where(aorta & ~envelope, np.float32(levels["aorta"]) * flow, image)
        image = np.where(vessels & body & ~envelope, np.float32(levels["vessel"]), image)
        image = np.where(peri_fat & body, np.float32(0.8 * levels["fat"]) + np.float32(0.06) * texture, image)
        image = np.where(rv_free_wall, np.float32(levels["myo"]) + np.float32(0.04) * texture, image)
        image = np.where(unlabeled_blood, np.float32(levels["lv"]) * flow, image)
        image = np.where(label == 1, np.float32(levels["rv"]) * flow, image)
        image = np.where(label == 2, np.float32(levels["myo"]) + np.float32(0.04) * texture, image)
        image = np.where(label == 3, np.float32(levels["lv"]) * flow, image)
        image = np.where(papillary_mask, np.float32(levels["myo"]) * np.float32(1.2), image).astype(np.float32)
        image = ndimage.gaussian_filter(image, sigma=(0.0, 0.7, 0.7))
        image *= (bias * coil).astype(np.float32)
        image = _rician(frame_rng, image, noise_sigma)
        raw = np.rint(image / max(float(image.max()), 1e-6) * raw_max).astype(np.int16)
        lo, hi = float(raw.min()), float(raw.max())
        scaled = ((raw.astype(np.float64) - lo) / max(hi - lo, 1.0)).astype(np.float32)
        frames.append((scaled, label, raw))
    return {
        "frames": frames,
        "pixel_mm": float(pixel),
        "es_frame": int(rng.integers(8, 17)),
        "num_frames": int(rng.integers(20, 31)),
    }


def make_acdc_patient(
    rng_or_seed: SeedLike, num_slices: int = 10, size: int | Sequence[int] = (192, 192)
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Generate the end-diastolic and end-systolic stacks of one ACDC-like patient (same anatomy, two phases).

    Args:
        rng_or_seed: a numpy Generator (advanced in place) or a seed.
        num_slices: number of short-axis slices (at least 3), base first.
        size: in-plane ``(height, width)`` in pixels (or one int for square slices), each at least 32.

    Returns:
        ``[(image_ed, label_ed), (image_es, label_es)]``: images ``float32`` in ``[0, 1]``, labels ``uint8`` with
        0 background, 1 right ventricle, 2 myocardium, 3 left ventricle, all of shape ``(num_slices, H, W)``.

    Raises:
        ValueError: if ``num_slices`` or ``size`` is invalid.
        TypeError: if ``rng_or_seed`` is neither a seed nor a Generator.
    """
    hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(size)
    patient = _acdc_patient(_as_generator(rng_or_seed), num_slices, hw)
    return [(image, label) for image, label, _ in patient["frames"]]


def make_acdc_case(
    rng_or_seed: SeedLike, num_slices: int = 10, size: int | Sequence[int] = (192, 192), phase: str = "ED"
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one ACDC-like short-axis cine-MRI stack.

    Args:
        rng_or_seed: a numpy Generator (advanced in place) or a seed; the same seed gives identical arrays.
        num_slices: number of short-axis slices (at least 3), the base first, the apex last.
        size: in-plane ``(height, width)`` in pixels (or one int for square slices), each at least 32.
        phase: ``"ED"`` (end-diastole) or ``"ES"`` (end-systole) of the same generated patient.

    Returns:
        ``(image, label)`` of shape ``(num_slices, H, W)``: ``image`` ``float32`` min-max scaled to ``[0, 1]``,
        ``label`` ``uint8`` with 0 background, 1 right ventricle, 2 myocardium, 3 left ventricle.

    Raises:
        ValueError: if ``num_slices``, ``size`` or ``phase`` is invalid.
        TypeError: if ``rng_or_seed`` is neither a seed nor a Generator.
    """
    phases = {"ED": 0, "ES": 1}
    if phase not in phases:
        raise ValueError(f"phase: expected 'ED' or 'ES', found {phase!r}.")
    return make_acdc_patient(rng_or_seed, num_slices, size)[phases[phase]]


def _acdc_patient_numbers(seed: int, count: int) -> list[int]:
    """``count`` distinct patient numbers in a shuffled order, like the benchmark's lists."""
    rng = _stream(seed, _STREAM_ACDC_IDS)
    pool = max(100, count)
    return [int(p) + 1 for p in rng.permutation(pool)[:count]]


def write_acdc_dataset(
    out_dir: str | Path,
    num_train_patients: int = 14,
    num_val_patients: int = 4,
    labeled_patients: int | Sequence[int] = (1, 3),
    seed: int = 0,
    size: int | Sequence[int] | Sequence[Sequence[int]] = (192, 192),
    num_slices: int | Sequence[int] = (6, 12),
    nifti: bool = True,
) -> Path:
    """Write a synthetic dataset in the ACDC benchmark's HDF5 layout (and optionally the raw challenge layout).

    Layout under ``out_dir``:

    - ``volumes/patientNNN_frame01.h5`` (end-diastole) and ``volumes/patientNNN_frame02.h5`` (end-systole) with
      datasets ``image`` (``float32`` in ``[0, 1]``, ``(S, H, W)``, slices first) and ``label`` (``uint8`` 0-3).
    - ``train.list`` / ``val.list``: ``patientNNN_frame01`` and ``patientNNN_frame02`` per patient, patients in a
      shuffled order; ``train_<N>_label.list``: both frames of the first N patients of ``train.list``, sorted by
      name as in the benchmark.
    - with ``nifti``: the challenge layout ``raw/patientNNN/patientNNN_frameMM.nii.gz`` and
      ``..._frameMM_gt.nii.gz`` (``frame01`` end-diastole, a later frame number end-systole, listed in
      ``raw/patientNNN/Info.cfg``), arrays ``(x, y, z)`` = ``(W, H, S)`` with the slice axis last, unnormalised
      ``int16`` intensities, an RAS affine with in-plane spacing ``FOV / H`` and 10 mm between slices;
      ``raw/train.list``, ``raw/val.list`` and ``raw/train_<N>_label.list`` naming those files;
      ``raw/datalist_<N>_label.json`` per labeled count and ``raw/datalist.json`` (the largest count), MONAI
      datalists in ``train.list`` order with a ``label`` for the labeled patients' volumes only; paths relative to
      the JSON file.

    Args:
        out_dir: output folder (created; existing files of the same names are overwritten).
        num_train_patients: number of training patients (two volumes each).
        num_val_patients: number of validation patients.
        labeled_patients: labeled patient count(s) N for ``train_<N>_label.list``, each in
            ``1..num_train_patients``.
        seed: dataset seed.
        size: ``(H, W)`` of every patient (or one int), or a pair ``((H0, W0), (H1, W1))`` to draw each patient's
            size in that inclusive range.
        num_slices: slices per patient, or an inclusive ``(min, max)`` range drawn per patient.
        nifti: also write the raw NIfTI layout and MONAI datalists.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: if a count, size or slice number is invalid.
    """
    _check_counts(num_train_patients=num_train_patients, num_val_patients=num_val_patients)
    if num_train_patients + num_val_patients == 0:
        raise ValueError("num_train_patients, num_val_patients: expected at least one patient in total, found 0.")
    labeled_counts = (
        _labeled_counts("labeled_patients", labeled_patients, num_train_patients) if num_train_patients else []
    )
    low, high = _shape_range("size", size, 2, 32)
    if isinstance(num_slices, (int, np.integer)):
        slices_low = slices_high = int(num_slices)
    else:
        bounds = [int(v) for v in num_slices]
        if len(bounds) != 2 or bounds[0] > bounds[1]:
            raise ValueError(f"num_slices: expected an int or an inclusive (min, max) pair, found {num_slices!r}.")
        slices_low, slices_high = bounds
    if slices_low < 3:
        raise ValueError(f"num_slices: expected at least 3 slices, found {num_slices!r}.")

    out = Path(out_dir)
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    numbers = _acdc_patient_numbers(seed, num_train_patients + num_val_patients)
    train_patients, val_patients = numbers[:num_train_patients], numbers[num_train_patients:]

    def frames_of(patients: Sequence[int]) -> list[str]:
        return [f"patient{p:03d}_frame{f:02d}" for p in patients for f in (1, 2)]

    lists = {"train.list": frames_of(train_patients), "val.list": frames_of(val_patients)}
    lists.update({f"train_{n}_label.list": sorted(frames_of(train_patients[:n])) for n in labeled_counts})
    raw_names: dict[str, str] = {}
    for number in numbers:
        rng = _stream(seed, _STREAM_ACDC_PATIENT, number)
        hw = _draw_shape(rng, low, high)
        s_count = int(rng.integers(slices_low, slices_high + 1))
        patient = _acdc_patient(rng, s_count, hw)
        name = f"patient{number:03d}"
        frame_numbers = (1, patient["es_frame"])
        for k, (image, label, raw) in enumerate(patient["frames"]):
            _write_h5(out / "volumes" / f"{name}_frame{k + 1:02d}.h5", image, label)
            raw_names[f"{name}_frame{k + 1:02d}"] = f"{name}/{name}_frame{frame_numbers[k]:02d}"
        if nifti:
            pixel = patient["pixel_mm"]
            affine = np.diag([pixel, pixel, ACDC_SLICE_SPACING_MM, 1.0])
            origin_x = -hw[1] * pixel / 2 + rng.uniform(-30, 30)
            origin_y = -hw[0] * pixel / 2 + rng.uniform(-30, 30)
            affine[:3, 3] = np.round([origin_x, origin_y, rng.uniform(-80, 20)], 3)
            patient_dir = out / "raw" / name
            for k, (_, label, raw) in enumerate(patient["frames"]):
                stem = f"{name}_frame{frame_numbers[k]:02d}"
                _write_nifti(patient_dir / f"{stem}.nii.gz", np.ascontiguousarray(raw.transpose(2, 1, 0)), affine)
                _write_nifti(patient_dir / f"{stem}_gt.nii.gz", np.ascontiguousarray(label.transpose(2, 1, 0)), affine)
            (patient_dir / "Info.cfg").write_text(
                f"ED: 1\nES: {patient['es_frame']}\nGroup: NOR\n"
                f"Height: {rng.uniform(155.0, 195.0):.1f}\nNbFrame: {patient['num_frames']}\n"
                f"Weight: {rng.uniform(55.0, 100.0):.1f}\n"
            )

    for list_name, names in lists.items():
        _write_list(out / list_name, names)
        if nifti:
            raw_list = [raw_names[v].split("/")[1] for v in names]
            _write_list(out / "raw" / list_name, sorted(raw_list) if "_label" in list_name else raw_list)
    if nifti:
        labels = {"0": "background", "1": "right ventricle", "2": "myocardium", "3": "left ventricle"}

        def entry(volume: str, with_label: bool) -> dict[str, str]:
            item = {"image": f"{raw_names[volume]}.nii.gz"}
            if with_label:
                item["label"] = f"{raw_names[volume]}_gt.nii.gz"
            return item

        for n in labeled_counts or [0]:
            labeled = set(frames_of(train_patients[:n]))
            training = [entry(v, v in labeled) for v in lists["train.list"]]
            validation = [entry(v, True) for v in lists["val.list"]]
            datalist = {
                "name": "synthetic ACDC (short-axis cine-MRI-like)",
                "tensorImageSize": "3D",
                "labels": labels,
                "numLabeledPatients": n,
                "numTraining": len(training),
                "numValidation": len(validation),
                "training": training,
                "validation": validation,
            }
            text = json.dumps(datalist, indent=2) + "\n"
            (out / "raw").mkdir(parents=True, exist_ok=True)
            if n:
                (out / "raw" / f"datalist_{n}_label.json").write_text(text)
            if n == (labeled_counts[-1] if labeled_counts else 0):
                (out / "raw" / "datalist.json").write_text(text)
    return out


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m crossmatch_ext.data.synthetic",
        description=(
            "Write a synthetic cardiac MRI dataset in the layout of the LA (3D LGE-MRI) or ACDC (2D cine-MRI) "
            "semi-supervised segmentation benchmarks: HDF5 volumes, train/val/labeled list files and, optionally, "
            "NIfTI (MONAI datalist) or raw challenge copies. The same seed gives identical files."
        ),
    )
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="{la,acdc}")

    la = sub.add_parser(
        "la",
        help="LA-like 3D volumes (<out>/<CASE_ID>/mri_norm2.h5)",
        description="Write LA-like 3D volumes: <out>/<CASE_ID>/mri_norm2.h5, train.list, val.list, "
        "train_<N>_label.list; --nifti adds <out>/nifti, --nrrd adds the raw challenge layout <out>/raw.",
    )
    la.add_argument("--out", required=True, type=Path, help="output folder")
    la.add_argument("--num-train", type=int, default=16, help="training cases (default: 16)")
    la.add_argument("--num-val", type=int, default=4, help="validation cases (default: 4)")
    la.add_argument(
        "--num-labeled", type=int, nargs="+", default=[4, 8], metavar="N", help="labeled counts N (default: 4 8)"
    )
    la.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    la.add_argument(
        "--shape", type=int, nargs=3, default=[112, 112, 80], metavar=("X", "Y", "Z"),
        help="volume size, slice axis last (default: 112 112 80)",
    )
    la.add_argument(
        "--max-shape", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
        help="draw each case's size between --shape and this (default: all cases --shape)",
    )
    la.add_argument("--nifti", action=argparse.BooleanOptionalAction, default=True,
                    help="also write NIfTI copies and MONAI datalists (default: on)")
    la.add_argument("--nrrd", action=argparse.BooleanOptionalAction, default=False,
                    help="also write the raw 2018 challenge NRRD layout (default: off)")

    acdc = sub.add_parser(
        "acdc",
        help="ACDC-like short-axis stacks (<out>/volumes/patientNNN_frameMM.h5)",
        description="Write ACDC-like short-axis stacks: <out>/volumes/patientNNN_frame0{1,2}.h5, train.list, "
        "val.list, train_<N>_label.list; --nifti adds the raw challenge layout <out>/raw.",
    )
    acdc.add_argument("--out", required=True, type=Path, help="output folder")
    acdc.add_argument("--num-train", type=int, default=14, help="training patients, two volumes each (default: 14)")
    acdc.add_argument("--num-val", type=int, default=4, help="validation patients (default: 4)")
    acdc.add_argument(
        "--num-labeled", "--labeled-patients", type=int, nargs="+", default=[1, 3], metavar="N",
        help="labeled patient counts N (default: 1 3)",
    )
    acdc.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    acdc.add_argument(
        "--shape", "--size", type=int, nargs=2, default=[192, 192], metavar=("H", "W"),
        help="slice size (default: 192 192)",
    )
    acdc.add_argument(
        "--max-shape", "--max-size", type=int, nargs=2, default=None, metavar=("H", "W"),
        help="draw each patient's slice size between --shape and this (default: all --shape)",
    )
    acdc.add_argument(
        "--num-slices", type=int, nargs=2, default=[6, 12], metavar=("MIN", "MAX"),
        help="inclusive range of slices per patient (default: 6 12)",
    )
    acdc.add_argument("--nifti", action=argparse.BooleanOptionalAction, default=True,
                      help="also write the raw NIfTI layout and MONAI datalists (default: on)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on invalid arguments.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    shape: Any = args.shape if args.max_shape is None else (args.shape, args.max_shape)
    start = time.perf_counter()
    try:
        if args.dataset == "la":
            out = write_la_dataset(
                args.out, num_train=args.num_train, num_val=args.num_val, num_labeled=args.num_labeled,
                seed=args.seed, shape=shape, nifti=args.nifti, nrrd=args.nrrd,
            )
            volumes = sorted(out.glob("*/mri_norm2.h5"))
            kind = f"{args.num_train} train + {args.num_val} val LA cases"
        else:
            out = write_acdc_dataset(
                args.out, num_train_patients=args.num_train, num_val_patients=args.num_val,
                labeled_patients=args.num_labeled, seed=args.seed, size=shape,
                num_slices=tuple(args.num_slices), nifti=args.nifti,
            )
            volumes = sorted((out / "volumes").glob("*.h5"))
            volumes_written = 2 * (args.num_train + args.num_val)
            kind = f"{args.num_train} train + {args.num_val} val ACDC patients ({volumes_written} volumes)"
    except ValueError as err:
        parser.error(str(err))
    elapsed = time.perf_counter() - start
    print(f"wrote {kind} (seed {args.seed}) to {out} in {elapsed:.2f} s")
    print(f"  {len(volumes)} HDF5 volumes, e.g. {volumes[0]}")
    for list_file in sorted(out.glob("*.list")):
        print(f"  {list_file} ({len(list_file.read_text().split())} entries)")
    for extra in ("nifti", "raw"):
        folder = out / extra
        if folder.is_dir():
            count = sum(1 for p in folder.rglob("*") if p.suffix in (".gz", ".nrrd"))
            datalists = sorted(folder.glob("datalist*.json"))
            names = ", ".join(p.name for p in datalists) if datalists else "no datalist"
            print(f"  {folder}: {count} image files; {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
