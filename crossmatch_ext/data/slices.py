"""2D training on slices of cached 3D volumes, and the axis order of slice stacks from every source.

The ACDC benchmark trains a 2D network on short-axis slices and evaluates it per volume. Two pieces make that work
with MONAI pipelines:

* :class:`ReorderHDF5Stackd` brings the community HDF5 stacks, stored ``(slices, H, W)``, to the axis order of the
  NIfTI files they were converted from, ``(x, y, slices)`` = ``(W, H, slices)`` (the files were written from
  SimpleITK arrays, whose axes are the reverse of NIfTI's). After it, a volume has the same layout whatever its
  source (HDF5, raw challenge NIfTI, datalist JSON): channel first, the slice axis last. It is invertible, so
  ``Invertd`` restores the stored order of a prediction.
* :class:`VolumeSliceDataset` caches every volume once, after the deterministic load transforms (a MONAI
  ``CacheDataset`` over volumes), and exposes one item per ``(volume, slice)`` pair. The random 2D transforms run
  on the extracted slice in ``__getitem__``, i.e. in the DataLoader workers. One epoch visits every slice of every
  volume once, as the authors' slice lists do.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import CacheDataset, MetaTensor
from monai.transforms import Compose, InvertibleTransform, MapTransform, apply_transform
from torch.utils.data import Dataset

__all__ = ["HDF5_SUFFIXES", "ReorderHDF5Stackd", "VolumeSliceDataset", "is_hdf5_source"]

#: File suffixes recognised as community HDF5 files.
HDF5_SUFFIXES: tuple[str, ...] = (".h5", ".hdf5")


def is_hdf5_source(image: Any, meta: Mapping | None = None) -> bool:
    """Whether an image was read from an HDF5 file (by :class:`crossmatch_ext.data.H5Reader`).

    Args:
        image: a loaded image; its ``meta`` is used when it is a MetaTensor.
        meta: an explicit metadata dict (``<key>_meta_dict`` of pipelines without MetaTensors).

    Returns:
        True when the metadata names an ``.h5`` / ``.hdf5`` file or an HDF5 dataset.
    """
    info: Mapping | None = image.meta if isinstance(image, MetaTensor) else meta
    if not info:
        return False
    if info.get("h5_dataset") is not None:
        return True
    filename = info.get("filename_or_obj")
    if isinstance(filename, (list, tuple)):
        filename = filename[0] if filename else None
    return filename is not None and str(filename).lower().endswith(HDF5_SUFFIXES)


def _permutation_affine(order: Sequence[int]) -> torch.Tensor:
    """The (n+1)x(n+1) matrix mapping voxel indices of the permuted array to indices of the original one."""
    n = len(order)
    matrix = torch.zeros((n + 1, n + 1), dtype=torch.float64)
    for new_axis, old_axis in enumerate(order):
        matrix[old_axis, new_axis] = 1.0
    matrix[n, n] = 1.0
    return matrix


class ReorderHDF5Stackd(MapTransform, InvertibleTransform):
    """Reorder the spatial axes of images read from HDF5 files; images from other files pass unchanged.

    The default ``order=(2, 1, 0)`` turns the community ACDC stacks ``(slices, H, W)`` into ``(W, H, slices)``,
    the ``(x, y, z)`` order of the challenge's NIfTI files, so that a model sees the same slice orientation
    whatever the source and the slice axis is the last one. The affine is permuted with the array (a voxel keeps
    its world position), and the operation is recorded so that ``Invertd`` restores the stored order.

    Args:
        keys: keys of channel-first images (``(C, *spatial)``).
        order: the new order of the spatial axes (a permutation of ``range(spatial dims)``).
        allow_missing_keys: do not raise for a missing key (e.g. the label of unlabeled items).

    Raises:
        ValueError: when ``order`` is not a permutation.
    """

    def __init__(
        self, keys: KeysCollection, order: Sequence[int] = (2, 1, 0), allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        order = tuple(int(a) for a in order)
        if sorted(order) != list(range(len(order))):
            raise ValueError(f"ReorderHDF5Stackd: `order` must be a permutation of 0..{len(order) - 1}, got {order}.")
        self.order = order

    def _permute(self, image: Any, order: Sequence[int]) -> Any:
        if len(order) != image.ndim - 1:
            raise ValueError(
                f"ReorderHDF5Stackd: `order` {tuple(order)} has {len(order)} axes but the image has shape "
                f"{tuple(image.shape)} (channel first, {image.ndim - 1} spatial axes)."
            )
        dims = (0, *(a + 1 for a in order))
        if isinstance(image, np.ndarray):
            return np.ascontiguousarray(image.transpose(dims))
        return image.permute(dims).contiguous()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Reorder every HDF5-sourced image of ``data`` and record the operation.

        Args:
            data: an item with channel-first images under ``keys``.

        Returns:
            The item with reordered images (others unchanged, but still recorded for ``Invertd``).

        Raises:
            ValueError: when an HDF5 image does not have as many spatial axes as ``order``.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            from_hdf5 = is_hdf5_source(image, d.get(f"{key}_meta_dict"))
            order = self.order if from_hdf5 else tuple(range(image.ndim - 1))  # others: recorded as identity
            d[key] = self._permute(image, order)
            self.push_transform(d, key, affine=_permutation_affine(order), extra_info={"order": list(order)})
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Restore the stored axis order (and affine) of every key.

        Args:
            data: an item carrying the operation recorded by :meth:`__call__`.

        Returns:
            The item in the stored axis order.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            record = self.get_most_recent_transform(d, key)
            order = [int(a) for a in record["extra_info"]["order"]]
            inverse_order = [int(a) for a in np.argsort(order)]
            d[key] = self._permute(d[key], inverse_order)
            if isinstance(d[key], MetaTensor):
                with self.trace_transform(False):
                    d = self.push_transform(d, key, affine=_permutation_affine(inverse_order))
            self.pop_transform(d, key)
        return d


def _as_compose(transform: Callable | Sequence[Callable] | None) -> Compose:
    if transform is None:
        return Compose([])
    if isinstance(transform, Compose):
        return transform
    if isinstance(transform, Sequence):
        return Compose(list(transform))
    return Compose([transform])


class VolumeSliceDataset(Dataset):
    """One item per slice of 3D volumes, each volume loaded and cached once.

    The volumes go through ``load_transform`` (deterministic: load, channel first, axis order, intensity scaling)
    into a MONAI ``CacheDataset`` (``cache_rate`` of them in memory, the rest loaded on access). Item ``i`` is
    slice ``k`` of volume ``v`` for the ``i``-th ``(v, k)`` pair, volumes in data-list order and slices in order:
    ``{key: (C, H, W) tensor for key in slice_keys, "case": ..., slice_key: k}`` plus every other string or number
    of the volume's item. ``transform`` (the random 2D augmentation) is applied to that slice in
    :meth:`__getitem__`, so it runs in the DataLoader workers. The cached volumes are never copied: a slice is
    cloned out of the cache and only the clone is transformed.

    Args:
        data: volume items (``{"image": path, "label": path, "case": id}``; ``label`` optional).
        load_transform: deterministic transforms giving channel-first volumes (a list, a ``Compose`` or a callable).
        transform: random transforms applied to each extracted 2D slice.
        slice_keys: keys of the volumes to slice (missing keys are skipped, e.g. the label of unlabeled items).
        slice_axis: spatial axis of the slices (``-1``: the last one, the layout of the bundles).
        slice_key: key of the slice index in the items.
        cache_rate: fraction of volumes cached in memory.
        cache_num_workers: threads used to fill the cache.
        progress: show a progress bar while caching.

    Raises:
        ValueError: for a slice axis outside the volumes, or volumes whose sliced keys disagree in slice count.
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, Any]],
        load_transform: Callable | Sequence[Callable] | None,
        transform: Callable | Sequence[Callable] | None = None,
        slice_keys: Sequence[str] = ("image", "label"),
        slice_axis: int = -1,
        slice_key: str = "slice",
        cache_rate: float = 1.0,
        cache_num_workers: int | None = 1,
        progress: bool = True,
    ) -> None:
        self.data = list(data)
        self.slice_keys = tuple(slice_keys)
        if not self.slice_keys:
            raise ValueError("VolumeSliceDataset: `slice_keys` must name at least one key, got an empty sequence.")
        self.slice_axis = int(slice_axis)
        self.slice_key = slice_key
        self.transform = None if transform is None else _as_compose(transform)
        self.volumes = CacheDataset(
            self.data,
            transform=_as_compose(load_transform),
            cache_rate=cache_rate,
            num_workers=cache_num_workers,
            progress=progress,
            copy_cache=False,
        )
        counts = [self._count_slices(v) for v in range(len(self.volumes))]
        self.num_slices: list[int] = counts
        self.index = np.asarray([(v, k) for v, n in enumerate(counts) for k in range(n)], dtype=np.int64).reshape(-1, 2)

    def _case(self, volume: int) -> str:
        item = self.data[volume]
        return str(item.get("case", item.get(self.slice_keys[0], volume)))

    def _axis(self, tensor: Any, volume: int, key: str) -> int:
        spatial = tensor.ndim - 1
        if not -spatial <= self.slice_axis < spatial:
            raise ValueError(
                f"VolumeSliceDataset: slice_axis={self.slice_axis} is outside the {spatial} spatial axes of "
                f"'{key}' of case {self._case(volume)!r} (shape {tuple(tensor.shape)}, channel first)."
            )
        return 1 + (self.slice_axis % spatial)

    def _count_slices(self, volume: int) -> int:
        item = self.volumes[volume]
        counts = {}
        for key in self.slice_keys:
            if key in item:
                tensor = item[key]
                counts[key] = int(tensor.shape[self._axis(tensor, volume, key)])
        if not counts:
            raise ValueError(
                f"VolumeSliceDataset: case {self._case(volume)!r} has none of the keys {list(self.slice_keys)} "
                f"after loading (keys: {sorted(map(str, item))})."
            )
        if len(set(counts.values())) > 1:
            raise ValueError(
                f"VolumeSliceDataset: the keys of case {self._case(volume)!r} have different slice counts along "
                f"axis {self.slice_axis}: {counts}."
            )
        return next(iter(counts.values()))

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def slice_item(self, index: int) -> dict[str, Any]:
        """Item ``index`` before the random transforms (the slices cloned out of the cached volume).

        Args:
            index: item number in ``[-len, len)``.

        Returns:
            ``{key: (C, H, W) tensor, ..., slice_key: k}`` with the volume's string and number entries.

        Raises:
            IndexError: for an index out of range.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"VolumeSliceDataset index {index} out of range for {len(self)} slices.")
        volume, k = (int(v) for v in self.index[index])
        item = self.volumes[volume]
        out: dict[str, Any] = {}
        for key, value in item.items():
            if key in self.slice_keys:
                tensor = value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)
                plane = tensor.select(self._axis(tensor, volume, key), k)
                out[key] = plane.clone(memory_format=torch.contiguous_format)
            elif isinstance(value, (str, int, float, bool, Path)) or value is None:
                out[key] = value
        out[self.slice_key] = k
        return out

    def __getitem__(self, index: int) -> Any:
        item = self.slice_item(int(index))
        return item if self.transform is None else apply_transform(self.transform, item)
