"""Resizing of 2D slices exactly as the authors' ACDC pipeline does it (SciPy ``zoom`` with ``order=0``), and MONAI's
resampling made safe for the data dictionaries MONAI Label passes."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform
from monai.transforms import Spacingd as MonaiSpacingd
from monai.utils import convert_to_tensor, ensure_tuple_rep

from crossmatch_ext.inferers.slices import RESIZE_MODES, resize_slices

__all__ = ["ResizeSliced", "Spacingd"]


class Spacingd(MonaiSpacingd):
    """MONAI's ``Spacingd``, safe beside ``<key>_*`` entries of the data that are not metadata dictionaries.

    For an image read from NIfTI, MONAI's ``Spacingd`` updates every ``<key>_*`` entry of the data as a metadata
    dictionary; MONAI Label puts the study's path in ``image_path`` (a string), on which that fails with
    ``AttributeError: 'str' object has no attribute 'update'``. Such entries are set aside for the call and put back
    unchanged; everything else (arguments, resampling, inversion) is MONAI's.
    """

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        d = dict(data)
        prefixes = tuple(f"{key}_" for key in self.keys)
        aside = {k: d.pop(k) for k in list(d)
                 if isinstance(k, str) and k.startswith(prefixes) and not isinstance(d[k], dict)}
        out = super().__call__(d, lazy=lazy)
        out.update(aside)
        return out


class ResizeSliced(MapTransform):
    """Resize channel-first 2D slices ``(C, H, W)`` to ``spatial_size``.

    The resize is :func:`~crossmatch_ext.inferers.resize_slices`.

    ``mode="nearest"`` is SciPy ``zoom(order=0)`` to the sample (corners aligned, the authors' training resize of
    images and labels and their test-time resize), so training and the ACDC evaluation protocol see slices resized
    the same way. MONAI's ``Resized`` with ``mode="nearest"`` uses ``torch.nn.functional.interpolate``, which
    samples ``floor(j * in / out)`` instead: a shift of up to one input pixel against the evaluation resize.

    Args:
        keys: keys of the slices (image and label).
        spatial_size: ``(height, width)`` of the output.
        mode: one mode for all keys or one per key (see :data:`~crossmatch_ext.inferers.RESIZE_MODES`); labels
            must use ``"nearest"``.
        dtype: the output type (float32 like MONAI's ``Resized``, so that slices that took different random
            branches before the resize collate into one batch); ``None`` keeps each input's type.
        allow_missing_keys: do not fail on missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        mode: str | Sequence[str] = "nearest",
        dtype: torch.dtype | None = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.dtype = dtype
        self.spatial_size = tuple(int(s) for s in spatial_size)
        if len(self.spatial_size) != 2 or min(self.spatial_size) < 1:
            raise ValueError(f"spatial_size must be two positive integers, got {tuple(spatial_size)}.")
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        for m in self.mode:
            if m not in RESIZE_MODES:
                raise ValueError(f"resize mode must be one of {list(RESIZE_MODES)}, got {m!r}.")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, mode in self.key_iterator(d, self.mode):
            value = d[key]
            tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
            if tensor.ndim != 3:
                raise ValueError(f"ResizeSliced expects a channel-first 2D slice (C, H, W) for '{key}', got shape "
                                 f"{tuple(tensor.shape)}.")
            dtype = tensor.dtype if self.dtype is None else self.dtype
            work = tensor if tensor.is_floating_point() or mode == "nearest" else tensor.float()
            out = resize_slices(work[None], self.spatial_size, mode=mode)[0]
            # a MetaTensor whatever the input (as MONAI's Resized), so that every item of a batch has one type
            d[key] = convert_to_tensor(out.to(dtype), track_meta=get_track_meta())
        return d
