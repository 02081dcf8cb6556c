"""A MONAI image reader for the HDF5 files that the semi-supervised segmentation community distributes.

The preprocessed LA (``<CASE>/mri_norm2.h5``) and ACDC (``patientNNN_frameMM.h5``) files hold the image and the
label as two datasets of one file (``image`` and ``label``) and store no geometry. :class:`H5Reader` plugs them
into MONAI's ``LoadImage`` / ``LoadImaged``: one reader instance reads one dataset, so a dictionary pipeline loads
the image and the label of the same path with two ``LoadImaged`` transforms::

    LoadImaged(keys="image", reader=H5Reader(dataset="image"))
    LoadImaged(keys="label", reader=H5Reader(dataset="label"))

or, in a bundle config::

    - {_target_: LoadImaged, keys: image, reader: {_target_: crossmatch_ext.data.H5Reader, dataset: image}}
    - {_target_: LoadImaged, keys: label, reader: {_target_: crossmatch_ext.data.H5Reader, dataset: label}}

When a reader is given, ``LoadImage`` keeps MONAI's default readers as fall-backs, so the same two transforms
also load ``.nii.gz`` / ``.nrrd`` paths (the raw challenge layouts) through Nibabel / ITK.

The array is returned as stored (no axis reordering, no channel dimension: ``original_channel_dim`` is NaN);
``EnsureChannelFirstd`` adds the channel. The affine is ``diag(spacing)`` (identity when ``spacing`` is None;
the LA files are 0.625 mm isotropic, but the files do not say so).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from monai.config import PathLike
from monai.data import ImageReader
from monai.data.image_reader import _copy_compatible_dict, _stack_images
from monai.data.utils import is_supported_format
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

__all__ = ["H5Reader", "hide_reader_fallback_notices", "list_h5_datasets"]


class _ReaderFallbackFilter(logging.Filter):
    """Drops ``LoadImage``'s INFO notice ``"<Reader>: unable to load <file>"``.

    ``LoadImage`` with a user reader tries every reader in turn and logs that notice for each one that fails before
    another succeeds: with :class:`H5Reader` configured, every NIfTI / NRRD input would print
    ``H5Reader: unable to load ...`` although it loads correctly. When no reader succeeds, ``LoadImage`` raises a
    ``RuntimeError`` that carries every reader's traceback, so hiding the notice loses nothing. DEBUG records
    (with the exception) are kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and "unable to load" in str(record.msg))


_FALLBACK_FILTER = _ReaderFallbackFilter()


def hide_reader_fallback_notices(logger_name: str = "LoadImage") -> None:
    """Stop ``LoadImage`` from logging a reader that failed before a fall-back reader loaded the file.

    Called when this module is imported (the bundles import it), so inference logs show no
    ``H5Reader: unable to load`` line for NIfTI inputs. Idempotent.

    Args:
        logger_name: the logger ``LoadImage`` writes to (its class name).
    """
    logger = logging.getLogger(logger_name)
    if _FALLBACK_FILTER not in logger.filters:
        logger.addFilter(_FALLBACK_FILTER)


hide_reader_fallback_notices()


def list_h5_datasets(path: PathLike) -> list[str]:
    """Return the names of all datasets in an HDF5 file (nested ones as ``group/name``).

    Args:
        path: the HDF5 file.

    Returns:
        The dataset names, in file order.

    Raises:
        FileNotFoundError: when the file does not exist.
        OSError: when the file is not a readable HDF5 file.
    """
    names: list[str] = []
    with _open(path) as handle:
        handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _open(path: PathLike) -> h5py.File:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"HDF5 file not found: {file}")
    try:
        return h5py.File(file, "r")
    except OSError as e:
        raise OSError(f"cannot read {file} as an HDF5 file: {e}") from e


class H5Reader(ImageReader):
    """Read one dataset of HDF5 files (``.h5`` / ``.hdf5``) as an image with MONAI metadata.

    Args:
        dataset: name of the dataset to read (``"image"`` or ``"label"`` in the community files).
        spacing: voxel size for the affine, one number (isotropic) or one per axis; None gives an identity affine.
        dtype: optional numpy dtype to cast the array to (``LoadImage`` casts to its own ``dtype`` as well).

    Raises:
        ValueError: when ``spacing`` has non-positive values.
    """

    def __init__(
        self, dataset: str = "image", spacing: float | Sequence[float] | None = None, dtype: Any = None
    ) -> None:
        super().__init__()
        if not isinstance(dataset, str) or not dataset:
            raise ValueError(f"dataset must be a non-empty dataset name, got {dataset!r}.")
        if spacing is not None:
            values = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
            if values.ndim != 1 or np.any(~np.isfinite(values)) or np.any(values <= 0):
                raise ValueError(f"spacing must be positive numbers, got {spacing!r}.")
        self.dataset = dataset
        self.spacing = spacing
        self.dtype = dtype

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Return True when every file name ends with ``.h5`` or ``.hdf5``.

        Args:
            filename: one file name or several.
        """
        return is_supported_format(filename, ["h5", "hdf5"])

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> list[tuple[str, Any]]:
        """Read the configured dataset of each file into memory.

        Files with an HDF5 suffix are owned by this reader: a problem with one of them (missing file, unreadable
        file, missing dataset) is recorded and raised by :meth:`get_data`, because ``LoadImage`` would otherwise
        hide the message behind its fall-back readers (Pillow claims ``.h5`` files and then fails obscurely).
        Other files raise here, so that ``LoadImage`` falls back to MONAI's readers for them.

        Args:
            data: one file name or several (several are stacked as channels by :meth:`get_data`).
            kwargs: ignored (kept for the ``ImageReader`` interface).

        Returns:
            A list of ``(file name, array or the error to raise)`` pairs.

        Raises:
            ValueError: when a file name does not end with ``.h5`` / ``.hdf5``.
        """
        loaded: list[tuple[str, Any]] = []
        for name in ensure_tuple(data):
            if not self.verify_suffix(name):
                raise ValueError(f"H5Reader reads .h5/.hdf5 files only, got {name}.")
            try:
                loaded.append((str(name), self._read_one(name)))
            except (OSError, KeyError) as e:
                loaded.append((str(name), e))
        return loaded

    def _read_one(self, name: PathLike) -> np.ndarray:
        with _open(name) as handle:
            node = handle.get(self.dataset)
            if not isinstance(node, h5py.Dataset):
                present: list[str] = []
                handle.visititems(lambda key, obj: present.append(key) if isinstance(obj, h5py.Dataset) else None)
                raise KeyError(f"HDF5 file {name} has no dataset {self.dataset!r}; datasets present: {present}.")
            array = np.asarray(node[()])
        if self.dtype is not None:
            array = array.astype(self.dtype, copy=False)
        return array

    def _affine(self, ndim: int, filename: str) -> np.ndarray:
        affine = np.eye(ndim + 1, dtype=np.float64)
        if self.spacing is None:
            return affine
        values = np.atleast_1d(np.asarray(self.spacing, dtype=np.float64))
        if values.size == 1:
            values = np.repeat(values, ndim)
        if values.size != ndim:
            raise ValueError(
                f"spacing {list(values)} has {values.size} values but dataset {self.dataset!r} of {filename} has "
                f"{ndim} axes."
            )
        affine[:ndim, :ndim] = np.diag(values)
        return affine

    def get_data(self, img: Sequence[tuple[str, Any]]) -> tuple[np.ndarray, dict]:
        """Return the array (as stored) and its metadata.

        Args:
            img: the output of :meth:`read`.

        Raises:
            FileNotFoundError: when a file does not exist.
            OSError: when a file cannot be opened as HDF5.
            KeyError: when a file has no dataset named ``dataset``; the message lists the datasets present.

        Returns:
            ``(array, meta)``; meta holds ``spatial_shape``, ``original_channel_dim`` (NaN: no channel),
            ``affine`` and ``original_affine`` (``diag(spacing)``), ``space`` (RAS) and ``filename_or_obj``.
            Several files are stacked along a new first (channel) axis.
        """
        arrays: list[np.ndarray] = []
        compatible_meta: dict = {}
        for filename, array in img:
            if isinstance(array, BaseException):
                raise array
            affine = self._affine(array.ndim, filename)
            header = {
                MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape),
                MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
                MetaKeys.AFFINE: affine,
                MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                MetaKeys.SPACE: SpaceKeys.RAS,
                "filename_or_obj": filename,
                "h5_dataset": self.dataset,
            }
            arrays.append(array)
            _copy_compatible_dict(header, compatible_meta)
        return _stack_images(arrays, compatible_meta), compatible_meta
