"""Overlap and surface-distance metrics with the definitions of the semi-supervised segmentation literature.

The papers this project follows (UA-MT, SSL4MIS, BCP, CrossMatch) report ``medpy.metric.binary`` values (medpy
0.5): Dice, Jaccard, HD95 and ASD of one binary prediction against its ground truth. The functions here reproduce
those definitions on MONAI's surface utilities (:func:`monai.metrics.utils.get_mask_edges`,
:func:`monai.metrics.utils.get_surface_distance`) without importing medpy:

* surface = the mask minus its erosion by the connectivity-1 structuring element (a one-voxel border);
* ``d(P->G)`` = for every surface voxel of ``P``, the Euclidean distance to the nearest surface voxel of ``G``;
* ``dice`` = 2|P & G| / (|P| + |G|), ``jaccard`` = |P & G| / |P | G|;
* ``hd95`` = 95th percentile of the *concatenation* of ``d(P->G)`` and ``d(G->P)`` (medpy ``hd95``; MONAI's
  ``percentile=95`` takes the maximum of the two directed percentiles instead, which is a different number);
* ``asd`` = mean of ``d(P->G)`` only (medpy ``asd``, directed: prediction to ground truth);
* ``assd`` = mean of the concatenation of both directions (medpy 0.5 ``assd``);
* ``hd`` = maximum of both directions (Hausdorff distance).

Distances are in voxel units when ``spacing`` is None (what the papers report) and in the units of ``spacing``
(usually mm) otherwise.

Empty masks, where medpy raises, follow an explicit policy (``empty_policy``):

* both masks empty: dice 1, jaccard 1, every distance 0 (a perfect answer), whatever the policy;
* exactly one mask empty: dice 0, jaccard 0, and distances set by the policy:

  - ``"zero"``: distances 0. This is the CrossMatch LA test convention, where a case with an empty prediction
    contributes (0, 0, 0, 0) and still counts in the mean; it flatters HD95/ASD, so state it when reporting;
  - ``"nan"``: distances NaN (undefined); summaries then average the defined cases only;
  - ``"max"``: distances equal the image diagonal ``sqrt(sum((shape_i * spacing_i) ** 2))``, an upper bound of any
    distance inside the image, in the same units as the other distances.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import get_mask_edges, get_surface_distance

__all__ = [
    "DEFAULT_METRICS",
    "DISTANCE_METRICS",
    "EMPTY_POLICIES",
    "METRIC_DEFINITIONS",
    "SUPPORTED_METRICS",
    "CaseMetrics",
    "compute_per_class_metrics",
    "compute_segmentation_metrics",
]

ArrayLike = Union[np.ndarray, torch.Tensor]

DEFAULT_METRICS: tuple[str, ...] = ("dice", "jaccard", "hd95", "asd")
"""The four numbers the semi-supervised segmentation papers report, in their order."""

DISTANCE_METRICS: tuple[str, ...] = ("hd95", "asd", "assd", "hd")
SUPPORTED_METRICS: tuple[str, ...] = ("dice", "jaccard", *DISTANCE_METRICS)
EMPTY_POLICIES: tuple[str, ...] = ("zero", "nan", "max")

METRIC_DEFINITIONS: dict[str, str] = {
    "dice": "2|P&G| / (|P|+|G|)",
    "jaccard": "|P&G| / |P|G|",
    "hd95": "95th percentile of the concatenated surface distances P->G and G->P (medpy 0.5 hd95)",
    "asd": "mean surface distance P->G, directed from prediction to ground truth (medpy 0.5 asd)",
    "assd": "mean of the concatenated surface distances P->G and G->P (medpy 0.5 assd)",
    "hd": "maximum of the surface distances in both directions (Hausdorff distance)",
    "surface": "mask XOR its erosion with the connectivity-1 structuring element; Euclidean distances",
}
"""Plain-text definitions, written next to evaluation results so that a reader knows what was computed."""


def _check_policy(empty_policy: str) -> str:
    if empty_policy not in EMPTY_POLICIES:
        raise ValueError(f"empty_policy must be one of {list(EMPTY_POLICIES)}, got {empty_policy!r}.")
    return empty_policy


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not names:
        raise ValueError(f"metrics must name at least one of {list(SUPPORTED_METRICS)}, got an empty sequence.")
    unknown = [m for m in names if m not in SUPPORTED_METRICS]
    if unknown:
        raise ValueError(f"unknown metric name(s) {unknown}; supported: {list(SUPPORTED_METRICS)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"metrics must not repeat a name, got {list(names)}.")
    return names


def _as_bool_numpy(mask: ArrayLike, name: str) -> np.ndarray:
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim == 0:
        raise ValueError(f"{name} must be an array with at least one dimension, got a scalar.")
    return array != 0


def _check_spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    if isinstance(spacing, (int, float, np.number)):
        values = (float(spacing),) * ndim
    else:
        values = tuple(float(s) for s in np.asarray(spacing, dtype=np.float64).ravel())
    if len(values) != ndim:
        raise ValueError(f"spacing must have one value per spatial dimension ({ndim}), got {list(values)}.")
    if any(not math.isfinite(s) or s <= 0 for s in values):
        raise ValueError(f"spacing values must be positive and finite, got {list(values)}.")
    return values


def _image_diagonal(shape: Sequence[int], spacing: Sequence[float] | None) -> float:
    sizes = np.asarray(shape, dtype=np.float64)
    if spacing is not None:
        sizes = sizes * np.asarray(spacing, dtype=np.float64)
    return float(np.sqrt(np.sum(sizes**2)))


def compute_segmentation_metrics(
    pred: ArrayLike,
    gt: ArrayLike,
    spacing: float | Sequence[float] | None = None,
    empty_policy: str = "zero",
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[str, float]:
    """Compute overlap and surface-distance metrics of one binary prediction against its ground truth.

    The definitions are medpy 0.5's (see the module docstring); the surface distances come from MONAI's
    ``get_mask_edges`` (erosion-based one-voxel border) and ``get_surface_distance``.

    Args:
        pred: binary prediction of any spatial dimensionality, no channel dimension; non-zero voxels are foreground.
        gt: binary ground truth with the shape of ``pred``.
        spacing: voxel size per spatial axis (or one number for all axes). None gives distances in voxel units,
            as the papers report them.
        empty_policy: what distances to report when exactly one of the masks is empty: ``"zero"``, ``"nan"`` or
            ``"max"`` (see the module docstring). Both masks empty always gives dice 1, jaccard 1, distances 0.
        metrics: names to compute, any of ``"dice"``, ``"jaccard"``, ``"hd95"``, ``"asd"``, ``"assd"``, ``"hd"``.

    Returns:
        A dict from metric name to value (Python floats), in the order of ``metrics``.

    Raises:
        ValueError: when the shapes differ, the spacing does not match the dimensionality, or a policy or metric
            name is unknown.
    """
    policy = _check_policy(empty_policy)
    names = _check_metrics(metrics)
    p = _as_bool_numpy(pred, "pred")
    g = _as_bool_numpy(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {tuple(p.shape)} and {tuple(g.shape)}.")
    sp = _check_spacing(spacing, p.ndim)

    n_pred = int(np.count_nonzero(p))
    n_gt = int(np.count_nonzero(g))
    values: dict[str, float] = {}
    if n_pred == 0 and n_gt == 0:
        overlap = {"dice": 1.0, "jaccard": 1.0}
        distances = dict.fromkeys(DISTANCE_METRICS, 0.0)
    elif n_pred == 0 or n_gt == 0:
        overlap = {"dice": 0.0, "jaccard": 0.0}
        fill = {"zero": 0.0, "nan": float("nan"), "max": _image_diagonal(p.shape, sp)}[policy]
        distances = dict.fromkeys(DISTANCE_METRICS, fill)
    else:
        intersection = int(np.count_nonzero(p & g))
        overlap = {
            "dice": 2.0 * intersection / (n_pred + n_gt),
            "jaccard": intersection / (n_pred + n_gt - intersection),
        }
        distances = {}
        if any(name in DISTANCE_METRICS for name in names):
            edges_pred, edges_gt = get_mask_edges(p, g, crop=True)
            pred_to_gt = np.asarray(get_surface_distance(edges_pred, edges_gt, spacing=sp), dtype=np.float64)
            gt_to_pred = np.asarray(get_surface_distance(edges_gt, edges_pred, spacing=sp), dtype=np.float64)
            both = np.concatenate([pred_to_gt, gt_to_pred])
            distances = {
                "hd95": float(np.percentile(both, 95)),
                "asd": float(pred_to_gt.mean()),
                "assd": float(both.mean()),
                "hd": float(both.max()),
            }
    for name in names:
        values[name] = float(overlap[name]) if name in overlap else float(distances[name])
    return values


def compute_per_class_metrics(
    pred_labels: ArrayLike,
    gt_labels: ArrayLike,
    class_ids: Sequence[int],
    spacing: float | Sequence[float] | None = None,
    empty_policy: str = "zero",
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[int, dict[str, float]]:
    """Compute :func:`compute_segmentation_metrics` for each class of two label maps (e.g. ACDC classes 1, 2, 3).

    Args:
        pred_labels: predicted label map (integer class per voxel), no channel dimension.
        gt_labels: ground-truth label map with the shape of ``pred_labels``.
        class_ids: the classes to evaluate; each one is compared as ``pred_labels == c`` vs ``gt_labels == c``.
        spacing: voxel size per spatial axis, or None for voxel units.
        empty_policy: see :func:`compute_segmentation_metrics`.
        metrics: see :func:`compute_segmentation_metrics`.

    Returns:
        ``{class_id: {metric: value}}`` in the order of ``class_ids``.

    Raises:
        ValueError: when ``class_ids`` is empty or repeats a class, or for the reasons of
            :func:`compute_segmentation_metrics`.
    """
    ids = [int(c) for c in class_ids]
    if not ids:
        raise ValueError("class_ids must name at least one class, got an empty sequence.")
    if len(set(ids)) != len(ids):
        raise ValueError(f"class_ids must not repeat a class, got {ids}.")
    p = pred_labels.detach().cpu().numpy() if isinstance(pred_labels, torch.Tensor) else np.asarray(pred_labels)
    g = gt_labels.detach().cpu().numpy() if isinstance(gt_labels, torch.Tensor) else np.asarray(gt_labels)
    if p.shape != g.shape:
        raise ValueError(
            f"pred_labels and gt_labels must have the same shape, got {tuple(p.shape)} and {tuple(g.shape)}."
        )
    return {
        c: compute_segmentation_metrics(p == c, g == c, spacing=spacing, empty_policy=empty_policy, metrics=metrics)
        for c in ids
    }


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    plain = tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor
    return plain.detach().cpu().numpy()


def _spacing_from_meta(tensor: Any, index: int, spatial_dims: int) -> tuple[float, ...] | None:
    """Voxel size of batch item ``index`` from a MetaTensor's affine; None when there is no affine."""
    if not isinstance(tensor, MetaTensor):
        return None
    affine = tensor.affine
    if affine is None:
        return None
    affine = torch.as_tensor(affine)
    if affine.ndim == 3:
        affine = affine[min(index, affine.shape[0] - 1)]
    spacing = affine_to_spacing(affine.detach().cpu().to(torch.float64), r=spatial_dims)
    return tuple(float(s) for s in np.asarray(spacing))


class CaseMetrics(CumulativeIterationMetric):
    """Per-case, per-class Dice / Jaccard / HD95 / ASD with the literature's definitions, accumulated over a run.

    Takes one-hot (binarised) ``y_pred`` and ``y`` of shape ``(B, C, *spatial)`` (or lists of channel-first
    tensors, as MONAI engines pass them after decollation), computes :func:`compute_segmentation_metrics` for every
    batch item and class, and buffers a ``(B, C', M)`` tensor (``C'`` classes kept, ``M`` metrics).

    Example::

        metric = CaseMetrics(include_background=False)
        for batch in loader:
            metric(y_pred=one_hot_pred, y=one_hot_label)
        metric.aggregate()   # {"dice": 0.91, "jaccard": 0.84, "hd95": 5.1, "asd": 1.6}
        metric.per_case()    # {"dice": tensor of shape (num_cases, num_classes), ...}

    Args:
        include_background: whether channel 0 is evaluated. With False the classes are channels ``1 .. C-1``.
        metrics: metric names, see :data:`SUPPORTED_METRICS`.
        empty_policy: see :func:`compute_segmentation_metrics`.
        use_spacing: read the voxel size of each item from the ``affine`` of ``y_pred`` (or ``y``) when it is a
            MetaTensor, so that distances are in mm. False gives voxel units (the papers' convention).
        spacing: a fixed voxel size for all items; it takes precedence over ``use_spacing``. A ``spacing`` keyword
            passed to ``__call__`` takes precedence over both.
    """

    def __init__(
        self,
        include_background: bool = False,
        metrics: Sequence[str] = DEFAULT_METRICS,
        empty_policy: str = "zero",
        use_spacing: bool = False,
        spacing: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.include_background = include_background
        self.metrics = _check_metrics(metrics)
        self.empty_policy = _check_policy(empty_policy)
        self.use_spacing = use_spacing
        self.spacing = spacing
        self.class_ids: list[int] | None = None

    @property
    def units(self) -> str:
        """``"voxel"`` or ``"spacing"`` (physical units of the image affine, usually mm)."""
        return "spacing" if (self.use_spacing or self.spacing is not None) else "voxel"

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """Compute the ``(B, C', M)`` metric values of one batch.

        Args:
            y_pred: one-hot prediction ``(B, C, *spatial)``.
            y: one-hot ground truth of the same shape.
            kwargs: ``spacing`` (one value, one per spatial axis, or one sequence per batch item) overrides the
                configured spacing.

        Returns:
            A float64 tensor of shape ``(B, C', M)``.

        Raises:
            ValueError: when ``y`` is missing, the shapes differ or there is no channel dimension.
        """
        if y is None:
            raise ValueError("CaseMetrics needs the ground truth `y` as well as `y_pred`.")
        if y_pred.shape != y.shape:
            raise ValueError(
                f"y_pred and y must have the same one-hot shape (B, C, *spatial), got {tuple(y_pred.shape)} "
                f"and {tuple(y.shape)}."
            )
        if y_pred.ndim < 3:
            raise ValueError(
                f"y_pred must be (B, C, *spatial) with at least one spatial axis, got {tuple(y_pred.shape)}."
            )
        batch, channels = int(y_pred.shape[0]), int(y_pred.shape[1])
        spatial_dims = y_pred.ndim - 2
        first = 0 if self.include_background else 1
        if first >= channels:
            raise ValueError(f"y_pred has {channels} channel(s); with include_background=False at least 2 are needed.")
        class_ids = list(range(first, channels))
        if self.class_ids is None:
            self.class_ids = class_ids
        elif self.class_ids != class_ids:
            raise ValueError(
                f"the number of channels changed between calls: classes {self.class_ids} then {class_ids}."
            )

        explicit = kwargs.get("spacing", self.spacing)
        per_item = (
            explicit is not None
            and not isinstance(explicit, (int, float))
            and len(explicit) > 0
            and not isinstance(explicit[0], (int, float))
        )
        if per_item and explicit is not None and len(explicit) != batch:
            raise ValueError(f"spacing has {len(explicit)} per-item entries for a batch of {batch}.")
        pred_np = _to_numpy(y_pred)
        gt_np = _to_numpy(y)
        out = torch.full((batch, len(class_ids), len(self.metrics)), float("nan"), dtype=torch.float64)
        for b in range(batch):
            item_spacing: Any
            if explicit is not None:
                item_spacing = explicit[b] if per_item else explicit
            elif self.use_spacing:
                item_spacing = _spacing_from_meta(y_pred, b, spatial_dims) or _spacing_from_meta(y, b, spatial_dims)
            else:
                item_spacing = None
            for j, c in enumerate(class_ids):
                values = compute_segmentation_metrics(
                    pred_np[b, c],
                    gt_np[b, c],
                    spacing=item_spacing,
                    empty_policy=self.empty_policy,
                    metrics=self.metrics,
                )
                out[b, j] = torch.tensor([values[m] for m in self.metrics], dtype=torch.float64)
        return out

    def _buffer(self) -> torch.Tensor:
        buffer = self.get_buffer()
        if not isinstance(buffer, torch.Tensor) or buffer.numel() == 0:
            raise RuntimeError("CaseMetrics has no values to aggregate: call it on at least one batch first.")
        return buffer

    def per_case(self) -> dict[str, torch.Tensor]:
        """Return ``{metric: tensor (num_cases, num_classes)}`` of every buffered case."""
        buffer = self._buffer()
        return {m: buffer[..., k] for k, m in enumerate(self.metrics)}

    def aggregate(self, per_class: bool = False) -> Mapping[str, Any]:
        """Average the buffered values over cases and classes (NaN values are left out of the mean).

        Args:
            per_class: return, per metric, the list of per-class means instead of their overall mean.

        Returns:
            ``{metric: float}``, or ``{metric: [float per class]}`` when ``per_class`` is True.
        """
        buffer = self._buffer()
        if per_class:
            means = torch.nanmean(buffer, dim=0)  # (C', M)
            return {m: [float(v) for v in means[:, k]] for k, m in enumerate(self.metrics)}
        return {m: float(torch.nanmean(buffer[..., k])) for k, m in enumerate(self.metrics)}
