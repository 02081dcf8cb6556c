"""Argument checks and file writers shared by the LA and ACDC generators."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = [
    "check_shape",
    "shape_range",
    "draw_shape",
    "write_list",
    "write_h5",
    "write_nifti",
    "check_counts",
    "checked_labeled_counts",
    "write_datalists",
]


def check_shape(name: str, value: Sequence[int], ndim: int, minimum: int) -> tuple[int, ...]:
    """Validate a shape argument and return it as a tuple of ints."""
    try:
        shape = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected {ndim} integers, found {value!r}.") from None
    if len(shape) != ndim or any(s < minimum for s in shape):
        raise ValueError(f"{name}: expected {ndim} integers each >= {minimum}, found {value!r}.")
    return shape


def shape_range(
    name: str, value: Any, ndim: int, minimum: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Parse a fixed shape (``ndim`` ints) or a range (a pair of shapes) into ``(low, high)`` inclusive."""
    if isinstance(value, (int, np.integer)) and ndim == 2:
        value = (int(value), int(value))
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, Sequence) for v in value):
        low = check_shape(f"{name}[0]", value[0], ndim, minimum)
        high = check_shape(f"{name}[1]", value[1], ndim, minimum)
        if any(h < lo for lo, h in zip(low, high)):
            raise ValueError(f"{name}: the upper shape {high} is smaller than the lower shape {low} on some axis.")
        return low, high
    shape = check_shape(name, value, ndim, minimum)
    return shape, shape


def draw_shape(rng: np.random.Generator, low: Sequence[int], high: Sequence[int]) -> tuple[int, ...]:
    """A shape drawn uniformly between ``low`` and ``high`` (inclusive), or ``low`` when they are equal."""
    if tuple(low) == tuple(high):
        return tuple(int(v) for v in low)
    return tuple(int(rng.integers(lo, h + 1)) for lo, h in zip(low, high))


def write_list(path: Path, names: Sequence[str]) -> None:
    """Write one name per line, newline-terminated, like the benchmark's list files."""
    path.write_text("".join(f"{n}\n" for n in names))


def write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    """Write ``image`` and ``label`` gzip-compressed into a new HDF5 file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image, compression="gzip", chunks=True)
        f.create_dataset("label", data=label, compression="gzip", chunks=True)


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Write an array with a scanner-space affine (qform and sform) and millimetre units."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))


def check_counts(**counts: int) -> None:
    """Reject negative counts with a message naming the argument."""
    for name, value in counts.items():
        if int(value) < 0:
            raise ValueError(f"{name}: expected a non-negative number, found {value}.")


def checked_labeled_counts(name: str, counts: int | Sequence[int], available: int) -> list[int]:
    """Normalise the labeled-count argument and check each count against the training pool."""
    values = [int(counts)] if isinstance(counts, (int, np.integer)) else [int(c) for c in counts]
    for c in values:
        if c < 1 or c > available:
            raise ValueError(
                f"{name}: each labeled count must be between 1 and the number of training "
                f"{'patients' if 'patients' in name else 'cases'} ({available}), found {c}."
            )
    return sorted(set(values))


def write_datalists(
    folder: Path,
    name: str,
    labels: dict[str, str],
    count_key: str,
    labeled_counts: Sequence[int],
    entries: Callable[[int], tuple[list[dict[str, str]], list[dict[str, str]]]],
) -> None:
    """Write ``datalist_<N>_label.json`` for each labeled count N and ``datalist.json`` (the largest N).

    Args:
        folder: output folder of the JSON files (created).
        name: the datalist's ``name``.
        labels: label values to names.
        count_key: key recording N (``numLabeled`` / ``numLabeledPatients``).
        labeled_counts: the sorted labeled counts (empty: one ``datalist.json`` without labeled training entries).
        entries: callable ``N -> (training entries, validation entries)``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for n in labeled_counts or [0]:
        training, validation = entries(n)
        datalist = {
            "name": name,
            "tensorImageSize": "3D",
            "labels": labels,
            count_key: n,
            "numTraining": len(training),
            "numValidation": len(validation),
            "training": training,
            "validation": validation,
        }
        text = json.dumps(datalist, indent=2) + "\n"
        if n:
            (folder / f"datalist_{n}_label.json").write_text(text)
        if n == (labeled_counts[-1] if labeled_counts else 0):
            (folder / "datalist.json").write_text(text)
