"""LA-like 3D LGE-MRI crops around a left atrium, and the LA benchmark's file layout."""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from .common import (
    check_counts,
    check_shape,
    checked_labeled_counts,
    draw_shape,
    shape_range,
    write_datalists,
    write_h5,
    write_list,
    write_nifti,
)
from .fields import (
    SeedLike,
    as_generator,
    ellipsoid_sdf,
    gaussian_field,
    grid,
    largest_component,
    polynomial_bias,
    rician,
    rotation,
    stream,
    tube_sdf,
    unit_vector,
)

__all__ = ["LA_SPACING_MM", "make_la_case", "write_la_dataset"]

#: Voxel size of the LA benchmark volumes (isotropic, millimetres).
LA_SPACING_MM = 0.625

_ID_ALPHABET = np.array(list(string.ascii_uppercase + string.digits))
_STREAM_LA_IDS = 11
_STREAM_LA_CASE = 12


def _la_chamber(
    rng: np.random.Generator, grids: Sequence[np.ndarray], dims: np.ndarray, m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The atrium: a deformed union of ellipsoids, an appendage and pulmonary vein stubs.

    Returns:
        ``(sdf, label, center, radii)``: the chamber's signed distance (voxels), its largest component as the
        label, and the main body's centre and radii (voxels).
    """
    shape = tuple(int(d) for d in dims)
    center = dims / 2.0 + rng.uniform(-0.05, 0.05, 3) * dims
    radii = dims * rng.uniform([0.24, 0.19, 0.19], [0.31, 0.25, 0.26])
    sdf = ellipsoid_sdf(grids, center, radii, rotation(rng, 0.35))
    for _ in range(int(rng.integers(1, 4))):
        direction = unit_vector(rng)
        lobe_radii = radii * rng.uniform(0.35, 0.6, 3)
        lobe_center = center + direction * radii * rng.uniform(0.55, 0.8)
        sdf = np.minimum(sdf, ellipsoid_sdf(grids, lobe_center, lobe_radii, rotation(rng, 0.6)))
    # appendage: a short, curved, tapering finger towards +y (anterior)
    direction = unit_vector(rng, bias=(0.3, 1.0, 0.2), bias_weight=1.5)
    start = center + direction * radii * 0.7
    length = m * rng.uniform(0.15, 0.25)
    bend = unit_vector(rng) * length * 0.4
    appendage = [start, start + direction * length * 0.6 + bend * 0.5, start + direction * length + bend]
    sdf = np.minimum(sdf, tube_sdf(grids, appendage, [m * 0.07, m * 0.055, m * 0.03]))
    for _ in range(int(rng.integers(1, 4))):
        # veins leave the back and top of the atrium: pull towards -y and +z
        direction = unit_vector(rng, bias=(0.0, -1.0, 0.6), bias_weight=1.2)
        start = center + direction * radii * 0.6
        length = m * rng.uniform(0.25, 0.4)
        bend = unit_vector(rng) * length * 0.2
        middle = start + direction * length * 0.5 + bend
        end = start + direction * length + 1.5 * bend
        r_ostium, r_vein = m * rng.uniform(0.06, 0.08), m * rng.uniform(0.03, 0.045)
        sdf = np.minimum(sdf, tube_sdf(grids, [start, middle, end], [r_ostium, 0.6 * (r_ostium + r_vein), r_vein]))
    sdf += np.float32(m * rng.uniform(0.035, 0.055)) * gaussian_field(rng, shape, m * 0.09)
    sdf += np.float32(m * rng.uniform(0.01, 0.02)) * gaussian_field(rng, shape, m * 0.035)
    label = largest_component(sdf < 0)
    return sdf, label, center, radii


def _la_wall(rng: np.random.Generator, sdf: np.ndarray, label: np.ndarray, m: float) -> tuple[float, np.ndarray]:
    """The thin, unlabeled atrial wall around the label; returns ``(wall_thickness, wall mask)``."""
    wall_thickness = max(1.2, 0.025 * m) * rng.uniform(0.8, 1.2)
    near = ndimage.binary_dilation(label, iterations=int(np.ceil(wall_thickness)) + 1)
    wall = near & ~label & (sdf < wall_thickness)
    return wall_thickness, wall


def _la_distractors(
    rng: np.random.Generator,
    grids: Sequence[np.ndarray],
    dims: np.ndarray,
    chamber: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    wall: np.ndarray,
    wall_thickness: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Unlabeled bright distractors: an aorta-like tube, neighbouring blood pools, small vessels.

    Returns:
        ``(distractor mask, relative blood level per voxel)``.
    """
    sdf, label, center, radii = chamber
    shape = tuple(int(d) for d in dims)
    m = float(dims.min())
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
    pieces.append((tube_sdf(grids, aorta_points, [aorta_r, aorta_r * 1.05, aorta_r * 0.95]), rng.uniform(0.85, 1.1)))
    for _ in range(int(rng.integers(2, 5))):
        direction = unit_vector(rng)
        blob_radii = m * rng.uniform(0.15, 0.3, 3)
        blob_center = center + direction * (radii * 1.0 + blob_radii * 0.8)
        pieces.append((ellipsoid_sdf(grids, blob_center, blob_radii, rotation(rng, 0.8)), rng.uniform(0.75, 1.1)))
    for _ in range(int(rng.integers(3, 8))):
        a = rng.uniform(0, 1, 3) * dims
        b = a + unit_vector(rng) * m * rng.uniform(0.3, 0.8)
        r = m * rng.uniform(0.015, 0.035)
        pieces.append((tube_sdf(grids, [a, b], [r, r * 0.8]), rng.uniform(0.8, 1.2)))
    for piece_sdf, level in pieces:
        closer = piece_sdf < distractor_sdf
        distractor_sdf = np.where(closer, piece_sdf, distractor_sdf)
        distractor_level = np.where(closer, np.float32(level), distractor_level)
    distractor = (distractor_sdf < 0) & ~label & ~wall & (sdf > wall_thickness + 1.0)
    return distractor, distractor_level


def _la_image(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    m: float,
    label: np.ndarray,
    wall: np.ndarray,
    distractors: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Intensities: textured tissue, air and fat, blood, a dark or patchily enhanced wall, bias field and noise.

    The tissue levels (with the margins of :func:`_la_scanner_normalisation`) are calibrated on the 40 real crops of
    the LA benchmark (median over cases, 112x112x80, real in brackets): atrium mean 1.8 z (1.7), background mean
    0.7 z (0.8), atrium contrast (atrium - background mean) / background std 1.24 (1.20), negative voxels 19 %
    (25 %). A brighter atrium would make the signed gamma of the strong views (``|x| ** gamma``) far stronger than
    on real scans.
    """
    distractor, distractor_level = distractors
    texture = 0.6 * gaussian_field(rng, shape, 1.0) + 0.8 * gaussian_field(rng, shape, 3.5)
    compartments = gaussian_field(rng, shape, m * 0.08)
    soft = 1.0 / (1.0 + np.exp(-compartments / np.float32(0.25)))
    tissue_level, compartment_contrast = np.float32(rng.uniform(0.45, 0.75)), np.float32(rng.uniform(0.15, 0.35))
    tissue = tissue_level + compartment_contrast * soft + np.float32(0.09) * texture
    air = gaussian_field(rng, shape, m * 0.1)
    threshold = np.float32(rng.uniform(-1.4, -0.5))
    dark_weight = 1.0 / (1.0 + np.exp((air - threshold) / np.float32(0.12)))
    air_intensity = np.float32(rng.uniform(0.04, 0.12)) + np.float32(0.04) * texture
    tissue = tissue * (1 - dark_weight) + dark_weight * air_intensity
    fat = (gaussian_field(rng, shape, 1.5) > np.float32(rng.uniform(1.8, 2.3))) & (dark_weight < 0.5)
    tissue = np.where(fat, np.float32(rng.uniform(0.65, 0.9)), tissue)

    blood = np.float32(1.0) + np.float32(0.07) * gaussian_field(rng, shape, m * 0.12) + np.float32(0.05) * texture
    wall_patch = gaussian_field(rng, shape, 2.5)
    if rng.uniform() < 0.5:  # dark (unenhanced) wall, else patchy enhancement (fibrosis)
        wall_intensity = np.float32(rng.uniform(0.35, 0.55)) + np.float32(0.08) * wall_patch
    else:
        enhanced = wall_patch > np.float32(rng.uniform(-0.3, 0.6))
        wall_intensity = np.where(enhanced, np.float32(rng.uniform(1.1, 1.3)), tissue)

    image = np.where(distractor, blood * distractor_level, tissue)
    image = np.where(wall, wall_intensity, image)
    image = np.where(label, blood, image).astype(np.float32)
    image = ndimage.gaussian_filter(image, sigma=0.6)
    image *= polynomial_bias(rng, shape, rng.uniform(0.2, 0.4))
    image *= np.float32(1.0) + np.float32(rng.uniform(0.04, 0.08)) * rng.standard_normal(shape, dtype=np.float32)
    image = rician(rng, image, rng.uniform(0.06, 0.11))
    return image


def _la_scanner_normalisation(rng: np.random.Generator, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scanner range (``uint8``), then the benchmark's z-score over the (larger, darker) uncropped scan.

    Returns:
        ``(normalised float32 image, raw uint8 scan)``.
    """
    gain = rng.uniform(150.0, 200.0) / max(float(np.percentile(image, 99.5)), 1e-6)
    raw = np.clip(np.rint(image * gain), 0, 255).astype(np.uint8)
    values = raw.astype(np.float64)
    crop_mean, crop_var = float(values.mean()), float(values.var())
    margin = rng.uniform(0.7, 0.88)  # fraction of the uncropped scan outside the crop
    margin_mean = crop_mean * rng.uniform(0.4, 0.7)
    margin_var = crop_var * rng.uniform(0.5, 1.2)
    scan_mean = (1 - margin) * crop_mean + margin * margin_mean
    scan_var = (1 - margin) * (crop_var + (crop_mean - scan_mean) ** 2) + margin * (
        margin_var + (margin_mean - scan_mean) ** 2
    )
    normalised = ((values - scan_mean) / np.sqrt(scan_var)).astype(np.float32)
    return normalised, raw


def _la_case(rng: np.random.Generator, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate one LA-like case; returns ``(normalised image, label, raw uint8 scan)``, all ``(x, y, z)``."""
    size = check_shape("shape", shape, 3, 16)
    dims = np.asarray(size, dtype=float)
    m = float(dims.min())
    grids = grid(size)
    chamber = _la_chamber(rng, grids, dims, m)
    sdf, label = chamber[0], chamber[1]
    wall_thickness, wall = _la_wall(rng, sdf, label, m)
    distractors = _la_distractors(rng, grids, dims, chamber, wall, wall_thickness)
    image = _la_image(rng, size, m, label, wall, distractors)
    normalised, raw = _la_scanner_normalisation(rng, image)
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
    image, label, _ = _la_case(as_generator(rng_or_seed), shape)
    return image, label


def _la_case_ids(seed: int, count: int) -> list[str]:
    """``count`` distinct 20-character uppercase alphanumeric case IDs; the first k do not depend on ``count``."""
    rng = stream(seed, _STREAM_LA_IDS)
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
    check_counts(num_train=num_train, num_val=num_val)
    if num_train + num_val == 0:
        raise ValueError("num_train, num_val: expected at least one case in total, found 0.")
    labeled_counts = checked_labeled_counts("num_labeled", num_labeled, num_train) if num_train else []
    low, high = shape_range("shape", shape, 3, 16)
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
        rng = stream(seed, _STREAM_LA_CASE, index)
        case_shape = draw_shape(rng, low, high)
        image, label, raw = _la_case(rng, case_shape)
        write_h5(out / case_id / "mri_norm2.h5", image, label)
        affine = _la_affine(rng, case_shape)
        if nifti:
            write_nifti(out / "nifti" / "imagesTr" / f"{case_id}.nii.gz", image, affine)
            write_nifti(out / "nifti" / "labelsTr" / f"{case_id}.nii.gz", label, affine)
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
        write_list(out / name, names)
        if nrrd:
            write_list(out / "raw" / name, names)
    if nifti:

        def entries(n: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
            labeled = set(train_ids[:n])
            training = [
                {"image": f"imagesTr/{i}.nii.gz", "label": f"labelsTr/{i}.nii.gz"}
                if i in labeled
                else {"image": f"imagesTr/{i}.nii.gz"}
                for i in train_ids
            ]
            validation = [{"image": f"imagesTr/{i}.nii.gz", "label": f"labelsTr/{i}.nii.gz"} for i in val_ids]
            return training, validation

        write_datalists(
            out / "nifti", "synthetic left atrium (LGE-MRI-like)", {"0": "background", "1": "left atrium"},
            "numLabeled", labeled_counts, entries,
        )
    return out
