"""Metrics with the semi-supervised segmentation literature's definitions (medpy 0.5) on MONAI's surface utilities."""

from __future__ import annotations

from .handlers import CaseMetricsHandler, MetricsReport, case_id_from_item
from .reporting import (
    LOWER_IS_BETTER,
    format_comparison,
    format_summary,
    metric_columns,
    read_summary,
    summarize,
    summarize_by_class,
    write_metrics_csv,
)
from .surface import (
    DEFAULT_METRICS,
    DISTANCE_METRICS,
    EMPTY_POLICIES,
    METRIC_DEFINITIONS,
    SUPPORTED_METRICS,
    CaseMetrics,
    compute_per_class_metrics,
    compute_segmentation_metrics,
)

__all__ = [
    "DEFAULT_METRICS",
    "DISTANCE_METRICS",
    "EMPTY_POLICIES",
    "LOWER_IS_BETTER",
    "METRIC_DEFINITIONS",
    "SUPPORTED_METRICS",
    "CaseMetrics",
    "CaseMetricsHandler",
    "MetricsReport",
    "case_id_from_item",
    "compute_per_class_metrics",
    "compute_segmentation_metrics",
    "format_comparison",
    "format_summary",
    "metric_columns",
    "read_summary",
    "summarize",
    "summarize_by_class",
    "write_metrics_csv",
]
