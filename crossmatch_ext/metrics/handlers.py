"""Ignite handlers: literature-definition metrics inside MONAI evaluators, and the per-case evaluation report.

Typical evaluator configuration (YAML)::

    validate:
      key_metric:
        val_mean_dice:
          _target_: crossmatch_ext.metrics.CaseMetricsHandler
          metric_name: dice
          include_background: false
          output_transform: "$monai.handlers.from_engine(['pred', 'label'])"
      handlers:
        - _target_: crossmatch_ext.metrics.MetricsReport
          output_dir: "@output_dir"
          metric_name: val_mean_dice
          protocol: {split: val, inferer: "SlidingWindowInferer 112x112x80"}

After a run, ``engine.state.metrics`` holds ``val_mean_dice`` (mean Dice over cases and classes) and
``val_mean_dice_dice``, ``val_mean_dice_jaccard``, ``val_mean_dice_hd95``, ``val_mean_dice_asd`` (and, for several
classes, ``val_mean_dice_<metric>_class<k>``); ``engine.state.metric_details`` holds the per-case tensors
``(num_cases, num_classes)`` under ``val_mean_dice`` and ``val_mean_dice_<metric>`` (the format MONAI's
``MetricsSaver`` also reads).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.handlers import IgniteMetricHandler
from monai.utils import string_list_all_gather

from ..data.datasets.common import case_id_from_path as _case_from_path
from .reporting import format_summary, summarize, summarize_by_class, write_metrics_csv
from .surface import DEFAULT_METRICS, CaseMetrics

__all__ = ["CaseMetricsHandler", "MetricsReport", "case_id_from_item"]


def case_id_from_item(item: Any, case_key: str = "case", image_key: str = "image") -> str | None:
    """Case identifier of one decollated batch item.

    Uses ``item[case_key]`` when present (the data lists of :mod:`crossmatch_ext.data` set it); otherwise the
    ``filename_or_obj`` of ``item[image_key]``'s metadata: the file name without extension, or the parent folder
    name for per-case folders with a generic file name (``<CASE>/mri_norm2.h5``, ``<CASE>/lgemri.nrrd``).

    Args:
        item: a dict of one case.
        case_key: key of the case identifier.
        image_key: key of the image whose metadata names the file.

    Returns:
        The identifier, or None when the item carries neither.
    """
    if not isinstance(item, Mapping):
        return None
    if item.get(case_key) is not None:
        return str(item[case_key])
    image = item.get(image_key)
    filename = None
    if isinstance(image, MetaTensor):
        filename = image.meta.get("filename_or_obj")
    elif isinstance(item.get(f"{image_key}_meta_dict"), Mapping):
        filename = item[f"{image_key}_meta_dict"].get("filename_or_obj")
    if filename is None:
        return None
    return _case_from_path(str(filename))


class CaseMetricsHandler(IgniteMetricHandler):
    """Ignite/MONAI metric handler computing Dice, Jaccard, HD95 and ASD per case and class (medpy definitions).

    Its value (``engine.state.metrics[name]``) is the mean of ``metric_name`` over cases and classes, so it can be
    a ``key_val_metric`` (best-model selection) or one of ``additional_metrics``. It also stores every metric's
    mean as ``<name>_<metric>``, per-class means as ``<name>_<metric>_class<k>`` (several classes only), and the
    per-case tensors in ``engine.state.metric_details`` (see the module docstring). Its settings are recorded in
    ``engine.state.case_metrics_info[name]`` for :class:`MetricsReport`.

    Args:
        metric_name: the metric whose mean is the handler's value; one of ``metrics``.
        include_background: whether channel 0 of the one-hot input is evaluated.
        metrics: metrics to compute, see :data:`crossmatch_ext.metrics.SUPPORTED_METRICS`.
        empty_policy: ``"zero"``, ``"nan"`` or ``"max"``; see
            :func:`crossmatch_ext.metrics.compute_segmentation_metrics`.
        use_spacing: read voxel sizes from the prediction's affine (distances in mm) instead of voxel units.
        spacing: fixed voxel size for every case (takes precedence over ``use_spacing``).
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``, one-hot, batch-first or lists of
            channel-first tensors, e.g. ``monai.handlers.from_engine(["pred", "label"])``.
        save_details: store the per-case tensors in ``engine.state.metric_details``.

    Raises:
        ValueError: when ``metric_name`` is not one of ``metrics``.
    """

    def __init__(
        self,
        metric_name: str = "dice",
        include_background: bool = False,
        metrics: Sequence[str] = DEFAULT_METRICS,
        empty_policy: str = "zero",
        use_spacing: bool = False,
        spacing: float | Sequence[float] | None = None,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = CaseMetrics(
            include_background=include_background,
            metrics=metrics,
            empty_policy=empty_policy,
            use_spacing=use_spacing,
            spacing=spacing,
        )
        if metric_name not in metric_fn.metrics:
            raise ValueError(
                f"metric_name {metric_name!r} must be one of the computed metrics {list(metric_fn.metrics)}."
            )
        self.metric_name = metric_name
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
        self.metric_fn: CaseMetrics

    def compute(self) -> float:
        """Aggregate the run, publish the extra values on the engine and return the mean of ``metric_name``.

        Returns:
            The mean of ``metric_name`` over cases and classes (NaN values left out).

        Raises:
            RuntimeError: when the handler is not attached to an engine, or nothing was computed.
        """
        if self._engine is None or self._name is None:
            raise RuntimeError("CaseMetricsHandler must be attached to an engine (attach(engine, name)) first.")
        engine, name = self._engine, self._name
        means = dict(self.metric_fn.aggregate())
        class_ids = list(self.metric_fn.class_ids or [])
        for metric, value in means.items():
            engine.state.metrics[f"{name}_{metric}"] = value
        if len(class_ids) > 1:
            per_class = self.metric_fn.aggregate(per_class=True)
            for metric, values in per_class.items():
                for cls, value in zip(class_ids, values):
                    engine.state.metrics[f"{name}_{metric}_class{cls}"] = value
        if self.save_details:
            details = self.metric_fn.per_case()
            store = engine.state.metric_details  # type: ignore[attr-defined]  # MONAI's evaluators add it to State
            store[name] = details[self.metric_name]
            for metric, values in details.items():
                store[f"{name}_{metric}"] = values
        info = getattr(engine.state, "case_metrics_info", None)
        if not isinstance(info, dict):
            info = {}
            setattr(engine.state, "case_metrics_info", info)  # noqa: B010 - an attribute ignite's State does not declare
        info[name] = {
            "metric_name": self.metric_name,
            "metrics": list(self.metric_fn.metrics),
            "class_ids": class_ids,
            "include_background": self.metric_fn.include_background,
            "empty_policy": self.metric_fn.empty_policy,
            "units": "voxel" if self.metric_fn.units == "voxel" else "image spacing (affine units, usually mm)",
        }
        self._is_reduced = True
        return float(means[self.metric_name])


class MetricsReport:
    """Write the per-case CSV, summary CSV and protocol JSON of an evaluation when the engine completes.

    Collects the case identifier of every item at each iteration (``item["case"]`` from the data lists, else the
    image's ``filename_or_obj``; see :func:`case_id_from_item`), and at ``Events.COMPLETED`` pairs them with the
    per-case values that a :class:`CaseMetricsHandler` attached under ``metric_name`` stored in
    ``engine.state.metric_details``. Writes ``<output_dir>/<filename>``, ``..._summary.csv`` and
    ``..._protocol.json`` (format in :mod:`crossmatch_ext.metrics.reporting`) and prints a ``mean ± std`` table.
    In multi-process runs the case identifiers are gathered from every rank and rank ``save_rank`` writes.

    Args:
        output_dir: folder for the files (created).
        metric_name: the name the :class:`CaseMetricsHandler` is attached under (the key in ``key_val_metric``).
        protocol: how the numbers were produced (split, inferer, checkpoint, ...); the handler's own settings
            (units, empty-mask policy, classes) are added under ``"metrics"``.
        class_ids: class identifiers of the metric columns; default: those recorded by the metric handler.
        filename: per-case CSV file name.
        case_key: key of the case identifier in the batch items.
        image_key: key of the image whose metadata names the file when there is no ``case_key``.
        print_summary: print the summary table to stdout.
        save_rank: the rank that writes the files.
    """

    def __init__(
        self,
        output_dir: str | Path,
        metric_name: str,
        protocol: Mapping[str, Any] | None = None,
        class_ids: Sequence[int] | None = None,
        filename: str = "metrics.csv",
        case_key: str = "case",
        image_key: str = "image",
        print_summary: bool = True,
        save_rank: int = 0,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.metric_name = metric_name
        self.protocol = dict(protocol or {})
        self.class_ids = None if class_ids is None else [int(c) for c in class_ids]
        self.filename = filename
        self.case_key = case_key
        self.image_key = image_key
        self.print_summary = print_summary
        self.save_rank = save_rank
        self.logger = logging.getLogger(__name__)
        self._cases: list[str] = []
        self.rows: list[dict[str, Any]] = []
        self.summary: dict[str, dict[str, float]] = {}
        self.files: dict[str, Path] = {}

    def attach(self, engine: Engine) -> None:
        """Register the collection and writing steps on ``engine``.

        Args:
            engine: the evaluator.
        """
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._cases = []

    def _collect(self, engine: Engine) -> None:
        batch = engine.state.batch
        if isinstance(batch, Mapping):  # not decollated: a dict of batched values
            cases = batch.get(self.case_key)
            if cases is not None:
                self._cases.extend(str(c) for c in cases)
                return
            image = batch.get(self.image_key)
            names = image.meta.get("filename_or_obj") if isinstance(image, MetaTensor) else None
            if names is not None:
                self._cases.extend(_case_from_path(str(n)) for n in names)
                return
            size = len(image) if isinstance(image, (torch.Tensor, Sequence)) else 1
            self._cases.extend([""] * size)
            return
        items: Sequence[Any] = batch if isinstance(batch, Sequence) else []
        for item in items:
            case = case_id_from_item(item, self.case_key, self.image_key)
            self._cases.append("" if case is None else case)

    def __call__(self, engine: Engine) -> None:
        """Write the report (called at ``Events.COMPLETED``).

        Args:
            engine: the evaluator.

        Raises:
            KeyError: when no per-case values for ``metric_name`` are in ``engine.state.metric_details``.
        """
        world = idist.get_world_size()
        cases = string_list_all_gather(self._cases) if world > 1 else list(self._cases)
        if idist.get_rank() != self.save_rank:
            return
        details = getattr(engine.state, "metric_details", {}) or {}
        info = (getattr(engine.state, "case_metrics_info", {}) or {}).get(self.metric_name, {})
        metrics = info.get("metrics") or [
            k[len(self.metric_name) + 1 :] for k in details if k.startswith(f"{self.metric_name}_")
        ]
        missing = [m for m in metrics if f"{self.metric_name}_{m}" not in details]
        if not metrics or missing:
            raise KeyError(
                f"MetricsReport found no per-case values for metric {self.metric_name!r} in "
                f"engine.state.metric_details (keys: {sorted(details)}); attach a CaseMetricsHandler under that "
                "name with save_details=True."
            )
        values: dict[str, torch.Tensor] = {}
        for m in metrics:
            tensor = torch.as_tensor(details[f"{self.metric_name}_{m}"]).detach().cpu()
            values[m] = tensor.reshape(tensor.shape[0], -1) if tensor.ndim > 0 else tensor.reshape(1, 1)
        num_cases, num_classes = next(iter(values.values())).shape
        class_ids = self.class_ids or info.get("class_ids") or list(range(1, num_classes + 1))
        if len(class_ids) != num_classes:
            raise ValueError(
                f"class_ids {class_ids} do not match the {num_classes} class column(s) of the metric values."
            )
        if len(cases) != num_cases:
            self.logger.warning(
                f"MetricsReport collected {len(cases)} case ids for {num_cases} metric rows; using row numbers."
            )
            cases = [str(i) for i in range(num_cases)]
        cases = [c if c else str(i) for i, c in enumerate(cases)]
        rows: list[dict[str, Any]] = []
        for i, case in enumerate(cases):
            for j, cls in enumerate(class_ids):
                row: dict[str, Any] = {"case": case}
                if num_classes > 1:
                    row["class"] = cls
                row.update({m: float(values[m][i, j]) for m in metrics})
                rows.append(row)
        protocol = dict(self.protocol)
        if info:
            protocol.setdefault("metrics", {k: v for k, v in info.items() if k != "metric_name"})
        self.rows = rows
        self.summary = summarize(rows, metrics)
        self.files = write_metrics_csv(self.output_dir / self.filename, rows, self.summary, protocol)
        by_class = summarize_by_class(rows, metrics) if num_classes > 1 else None
        table = format_summary(
            self.summary, by_class, title=f"{self.metric_name}: {num_cases} cases -> {self.files['cases']}"
        )
        if self.print_summary:
            print(table, flush=True)
        else:
            self.logger.info("\n" + table)
