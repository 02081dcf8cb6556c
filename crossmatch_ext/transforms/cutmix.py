"""Transforms MONAI lacks for CrossMatch: CutMix boxes and independent strong views of one crop."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

__all__ = ["RandCutMixBoxd", "StrongViewsd", "sample_cutmix_box"]


def sample_cutmix_box(
    rng: np.random.RandomState,
    spatial_shape: Sequence[int],
    prob: float = 0.5,
    area_range: tuple[float, float] = (0.02, 0.4),
    aspect_range: tuple[float, float] = (0.3, 1.0 / 0.3),
    legacy_axis_order: bool = False,
) -> np.ndarray:
    """One CutMix box mask (1 inside) for an image of ``spatial_shape`` (2D or 3D).

    2D (UniMatch / the authors' ACDC code): area ``A ~ U(area_range) * H * W``, ratio ``r ~ U(aspect_range)``,
    ``h = sqrt(A r)`` rows along the first axis and ``w = sqrt(A / r)`` columns, redrawn until the box fits.
    3D (the authors' LA code): volume ``V ~ U(area_range) * prod(shape)``, ``r ~ U(aspect_range)``, extents
    ``((V / r)^(1/3), (V r)^(1/3), V^(1/3))`` along axes 0, 1, 2, each clipped to the image, with a start that keeps
    the box inside. ``legacy_axis_order=True`` reproduces the authors' LA bug, which writes the box reversed
    (the last axis gets the first axis' range and is clipped): 17 % mean box volume instead of 20 %.

    Args:
        rng: the random state.
        spatial_shape: the image's spatial shape.
        prob: probability that the box is not empty.
        area_range: box area (volume) as a fraction of the image.
        aspect_range: range of the aspect ratio ``r``.
        legacy_axis_order: reproduce the authors' 3D axis bug.

    Returns:
        A float32 array of ``spatial_shape`` with ones inside the box.
    """
    shape = tuple(int(s) for s in spatial_shape)
    mask = np.zeros(shape, dtype=np.float32)
    if rng.random_sample() > prob:
        return mask
    if len(shape) == 2:
        area = rng.uniform(*area_range) * shape[0] * shape[1]
        for _ in range(1000):
            ratio = rng.uniform(*aspect_range)
            h, w = int(np.sqrt(area * ratio)), int(np.sqrt(area / ratio))
            y, x = rng.randint(0, shape[0]), rng.randint(0, shape[1])
            if y + h <= shape[0] and x + w <= shape[1]:
                mask[y : y + h, x : x + w] = 1.0
                return mask
        return mask
    if len(shape) != 3:
        raise ValueError(f"CutMix boxes are defined for 2D and 3D images, got spatial shape {shape}.")
    volume = rng.uniform(*area_range) * float(np.prod(shape))
    ratio = rng.uniform(*aspect_range)
    extents = [int((volume / ratio) ** (1 / 3)), int((volume * ratio) ** (1 / 3)), int(volume ** (1 / 3))]
    if legacy_axis_order:
        # authors' code: sizes/starts drawn against axes (0, 1, 2) but written as mask[z-range, y-range, x-range]
        extents = [min(e, s) for e, s in zip(extents, shape)]
        starts = [rng.randint(0, max(s - e, 0) + 1) for e, s in zip(extents, shape)]
        (x, y, z), (w, h, d) = starts, extents
        mask[z : z + d, y : y + h, x : x + w] = 1.0
        return mask
    extents = [max(1, min(e, s)) for e, s in zip(extents, shape)]
    starts = [rng.randint(0, s - e + 1) for e, s in zip(extents, shape)]
    mask[tuple(slice(a, a + e) for a, e in zip(starts, extents))] = 1.0
    return mask


class RandCutMixBoxd(Randomizable, MapTransform):
    """Adds one independent CutMix box per key, shaped ``(1, *spatial)`` like the reference image.

    Args:
        keys: the output keys, one box each (e.g. ``["cutmix_box_s1", "cutmix_box_s2"]``).
        reference_key: the (channel-first) image whose spatial shape the boxes take.
        prob: probability that a box is not empty (0.5 in the authors' code).
        area_range: box area (volume) as a fraction of the image.
        aspect_range: range of the aspect ratio.
        legacy_axis_order: reproduce the authors' 3D axis bug (see :func:`sample_cutmix_box`).
        deferred: add nothing to the item: the boxes are drawn later, batched on the training device (see
            :class:`crossmatch_ext.transforms.BatchedUnlabeledViews`, which sets it). Default ``False``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str = "image",
        prob: float = 0.5,
        area_range: Sequence[float] = (0.02, 0.4),
        aspect_range: Sequence[float] = (0.3, 1.0 / 0.3),
        legacy_axis_order: bool = False,
        deferred: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys=False)
        self.reference_key = reference_key
        self.prob = float(prob)
        self.area_range = (float(area_range[0]), float(area_range[1]))
        self.aspect_range = (float(aspect_range[0]), float(aspect_range[1]))
        self.legacy_axis_order = bool(legacy_axis_order)
        self.deferred = bool(deferred)

    def randomize(self, data: Any = None) -> None:  # boxes are drawn in __call__, one per key
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.deferred:
            return d
        if self.reference_key not in d:
            raise KeyError(f"RandCutMixBoxd: reference key '{self.reference_key}' not in the item (keys: {list(d)}).")
        spatial_shape = tuple(d[self.reference_key].shape[1:])
        for key in self.keys:
            box = sample_cutmix_box(
                self.R, spatial_shape, self.prob, self.area_range, self.aspect_range, self.legacy_axis_order
            )
            d[key] = torch.from_numpy(box[None])
        return d


class StrongViewsd(Randomizable, MapTransform):
    """Makes independently augmented copies ("strong views") of one image.

    The copies share everything done before this transform (the weak view's flip and crop), as in the authors'
    code; ``transform`` (an array transform, e.g. a MONAI ``Compose`` of intensity transforms) is drawn anew for
    every view.

    Args:
        keys: the source image key (one key).
        view_keys: the output keys, one per view (e.g. ``["image_s1", "image_s2"]``).
        transform: the array-level augmentation applied to each copy.
        deferred: add nothing to the item: the views are made later, batched on the training device (see
            :class:`crossmatch_ext.transforms.BatchedUnlabeledViews`, which sets it). Default ``False``.
    """

    def __init__(
        self, keys: KeysCollection, view_keys: Sequence[str], transform: Callable, deferred: bool = False
    ) -> None:
        MapTransform.__init__(self, keys)
        if len(self.keys) != 1:
            raise ValueError(f"StrongViewsd takes one source key, got {self.keys}.")
        self.view_keys = tuple(view_keys)
        self.transform = transform
        self.deferred = bool(deferred)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> StrongViewsd:
        super().set_random_state(seed, state)
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(seed=int(self.R.randint(0, 2**31 - 1)))
        return self

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.deferred:
            return d
        source = d[self.keys[0]]
        for key in self.view_keys:
            view = source.clone() if isinstance(source, torch.Tensor) else np.copy(source)
            d[key] = self.transform(view)
        return d
