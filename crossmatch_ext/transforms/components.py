"""Largest-connected-component post-processing on SciPy (MONAI's version needs scikit-image on the CPU)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scipy import ndimage

__all__ = ["KeepLargestComponentd", "keep_largest_component"]


def keep_largest_component(labels: np.ndarray, applied_labels: Sequence[int]) -> np.ndarray:
    """Keep, for each label of ``applied_labels``, only its largest connected component (full connectivity).

    Args:
        labels: an integer label map (any number of spatial dimensions, no channel axis).
        applied_labels: the labels filtered; voxels of removed components become background (0).

    Returns:
        The filtered label map (a new array).
    """
    out = np.array(labels, copy=True)
    structure = ndimage.generate_binary_structure(out.ndim, out.ndim)
    for label in applied_labels:
        components, count = ndimage.label(out == label, structure=structure)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        out[(components != 0) & (components != int(np.argmax(sizes)))] = 0
    return out


class KeepLargestComponentd(MapTransform):
    """Dictionary transform applying :func:`keep_largest_component` to channel-first label maps (channel 1).

    Args:
        keys: keys of the label maps.
        applied_labels: the labels filtered.
        allow_missing_keys: do not fail on missing keys.
    """

    def __init__(self, keys: KeysCollection, applied_labels: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.applied_labels = [int(label) for label in applied_labels]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            if array.shape[0] != 1:
                raise ValueError(
                    f"KeepLargestComponentd expects a one-channel label map for '{key}', got {array.shape}."
                )
            filtered = keep_largest_component(array[0], self.applied_labels)[None]
            if isinstance(value, torch.Tensor):
                value = value.clone()
                value[...] = torch.as_tensor(filtered, dtype=value.dtype)
                d[key] = value
            else:
                d[key] = filtered
        return d
