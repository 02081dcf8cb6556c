"""Per-case metric tables, mean ± std summaries and the files an evaluation writes.

An evaluation writes three files next to each other (``<stem>`` is the per-case CSV name without ``.csv``):

* ``<stem>.csv`` — one row per case (and per class for multi-class data): ``case``, [``class``], then one
  column per metric (``dice``, ``jaccard``, ``hd95``, ``asd``, ...). Undefined values are written as ``nan``.
* ``<stem>_summary.csv`` — columns ``scope``, ``metric``, ``mean``, ``std``, ``n``: ``scope`` is ``all`` (every
  row) and, for multi-class rows, ``class_<id>``. Means and standard deviations (population, ``ddof=0``) leave
  NaN values out; ``n`` is the number of values used.
* ``<stem>_protocol.json`` — the evaluation protocol as given (split, inferer, units, empty-mask policy, ...),
  the metric definitions, the number of cases and the summaries. A sidecar JSON keeps both CSVs plain tables
  that any CSV reader loads without skipping comment lines.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_open
from .surface import METRIC_DEFINITIONS, SUPPORTED_METRICS

__all__ = [
    "format_comparison",
    "format_summary",
    "metric_columns",
    "read_summary",
    "summarize",
    "summarize_by_class",
    "write_metrics_csv",
]

_ID_COLUMNS = ("case", "class")


def metric_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Return the metric columns of ``rows``: known metrics in their canonical order, then any others.

    Args:
        rows: per-case rows (dicts); ``case`` and ``class`` are identifier columns, every other key a metric.

    Returns:
        The metric names found in any row.
    """
    found: list[str] = []
    for row in rows:
        for key in row:
            if key not in _ID_COLUMNS and key not in found:
                found.append(key)
    known = [m for m in SUPPORTED_METRICS if m in found]
    return known + [m for m in found if m not in known]


def _stats(values: Sequence[Any]) -> dict[str, float]:
    array = np.asarray([float(v) for v in values], dtype=np.float64)
    finite = array[~np.isnan(array)]
    if finite.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "n": int(finite.size)}


def summarize(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Mean ± standard deviation of each metric over all rows (cases, and classes when present).

    Args:
        rows: per-case rows as written by :func:`write_metrics_csv`.
        metrics: metric columns to summarise; default: every metric column found.

    Returns:
        ``{metric: {"mean": float, "std": float, "n": int}}``; NaN values are left out (``n`` counts the rest),
        ``std`` is the population standard deviation (``ddof=0``).

    Raises:
        ValueError: when ``rows`` is empty or a requested metric is missing from a row.
    """
    if not rows:
        raise ValueError("cannot summarise metrics: no rows were given.")
    names = list(metrics) if metrics is not None else metric_columns(rows)
    summary: dict[str, dict[str, float]] = {}
    for name in names:
        missing = [i for i, row in enumerate(rows) if name not in row]
        if missing:
            raise ValueError(f"metric {name!r} is missing from row(s) {missing[:5]} of {len(rows)}.")
        summary[name] = _stats([row[name] for row in rows])
    return summary


def summarize_by_class(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None = None
) -> dict[Any, dict[str, dict[str, float]]]:
    """Like :func:`summarize`, separately for each value of the ``class`` column (in order of appearance).

    Args:
        rows: per-case rows with a ``class`` key.
        metrics: metric columns to summarise; default: every metric column found.

    Returns:
        ``{class_id: {metric: {"mean", "std", "n"}}}``; empty when no row has a ``class`` key.
    """
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for row in rows:
        if "class" in row:
            groups.setdefault(row["class"], []).append(row)
    return {cls: summarize(group, metrics) for cls, group in groups.items()}


def format_summary(
    summary: Mapping[str, Mapping[str, float]],
    by_class: Mapping[Any, Mapping[str, Mapping[str, float]]] | None = None,
    title: str | None = None,
    precision: int = 4,
) -> str:
    """Format summaries as a plain-text table: one line per scope, ``mean ± std`` per metric.

    Args:
        summary: output of :func:`summarize`.
        by_class: optional output of :func:`summarize_by_class`, printed below the overall line.
        title: optional first line.
        precision: decimals.

    Returns:
        The table as one string.
    """
    names = list(summary)
    scopes: list[tuple[str, Mapping[str, Mapping[str, float]]]] = [("all", summary)]
    for cls, values in (by_class or {}).items():
        scopes.append((f"class {cls}", values))

    def cell(stats: Mapping[str, float] | None) -> str:
        if stats is None:
            return "-"
        return f"{stats['mean']:.{precision}f} ± {stats['std']:.{precision}f}"

    header = ["scope", *names, "n"]
    body = [
        [scope, *[cell(values.get(n)) for n in names], str(max((int(v["n"]) for v in values.values()), default=0))]
        for scope, values in scopes
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [title] if title else []
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body)
    return "\n".join(lines)


#: Metrics where a smaller value is better: :func:`format_comparison` flips the sign of their difference, so that a
#: positive gain is an improvement in every column.
LOWER_IS_BETTER = frozenset({"hd95", "asd", "hd"})


def read_summary(path: str | Path, scope: str = "all") -> dict[str, dict[str, float]]:
    """Read one scope of a ``<stem>_summary.csv`` written by :func:`write_metrics_csv`.

    Args:
        path: the summary CSV, or the folder holding ``metrics_summary.csv`` (a bundle's evaluation output).
        scope: ``all`` or ``class_<id>``.

    Returns:
        ``{metric: {"mean": float, "std": float, "n": int}}`` as :func:`summarize` returns it.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file has no row of ``scope`` or lacks the summary columns.
    """
    file = Path(path)
    if file.is_dir() or file.suffix.lower() != ".csv":
        file = file / "metrics_summary.csv"
    if not file.is_file():
        raise FileNotFoundError(f"no metrics summary at {file} (an evaluation writes metrics_summary.csv).")
    with open(file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        required = {"scope", "metric", "mean", "std", "n"}
        if not required.issubset(reader.fieldnames or []):
            raise ValueError(f"{file}: expected the columns {sorted(required)}, found {reader.fieldnames}.")
        summary = {
            row["metric"]: {"mean": float(row["mean"]), "std": float(row["std"]), "n": int(row["n"])}
            for row in reader
            if row["scope"] == scope
        }
    if not summary:
        raise ValueError(f"{file}: no rows of scope {scope!r}.")
    return summary


def format_comparison(
    summaries: Mapping[str, Mapping[str, Mapping[str, float]]],
    baseline: str,
    method: str,
    metrics: Sequence[str] = ("dice", "hd95"),
    headers: Mapping[str, str] | None = None,
    precision: Mapping[str, int] | None = None,
) -> str:
    """A plain-text table of two or more runs (``mean ± std`` per metric) and a last line with the method's gain.

    The gain is ``method - baseline`` of the means, sign-flipped for metrics where smaller is better
    (:data:`LOWER_IS_BETTER`), so a positive gain is an improvement for every column.

    Args:
        summaries: ``{run name: summary}`` (outputs of :func:`summarize` / :func:`read_summary`), in display order.
        baseline: the name of the reference run.
        method: the name of the run whose gain is reported.
        metrics: the columns.
        headers: column titles (default: the metric names).
        precision: decimals per metric (default 3 for Dice-like metrics, 2 for distances).

    Returns:
        The table as one string.

    Raises:
        KeyError: when ``baseline`` or ``method`` is not in ``summaries`` or a metric is missing from a summary.
    """
    for name in (baseline, method):
        if name not in summaries:
            raise KeyError(f"run {name!r} is not among the summaries {list(summaries)}.")
    for name, summary in summaries.items():
        missing = [m for m in metrics if m not in summary]
        if missing:
            raise KeyError(f"run {name!r}: no {missing} in its summary (it has {list(summary)}).")
    titles = {m: (headers or {}).get(m, m) for m in metrics}
    digits = {m: (precision or {}).get(m, 2 if m in LOWER_IS_BETTER else 3) for m in metrics}

    def cell(stats: Mapping[str, float], metric: str) -> str:
        return f"{stats['mean']:.{digits[metric]}f} ± {stats['std']:.{digits[metric]}f}"

    def gain(metric: str) -> str:
        difference = summaries[method][metric]["mean"] - summaries[baseline][metric]["mean"]
        if metric in LOWER_IS_BETTER:
            difference = -difference
        return f"{difference:+.{digits[metric]}f}"

    gain_name = f"gain of {method}"
    header = ["", *[titles[m] for m in metrics]]
    body = [[name, *[cell(summary[m], m) for m in metrics]] for name, summary in summaries.items()]
    body.append([gain_name, *[gain(m) for m in metrics]])
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in [header, *body]]
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def _format_value(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{float(value):.6f}"
    return value


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def write_metrics_csv(
    path: str | Path,
    rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Mapping[str, float]] | None = None,
    protocol: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the per-case CSV, the summary CSV and the protocol JSON (see the module docstring for the format).

    Args:
        path: per-case CSV path (``.csv`` is appended when missing); parent folders are created.
        rows: per-case rows: ``case``, optionally ``class``, then metric values.
        summary: overall summary as returned by :func:`summarize`; computed from ``rows`` when None.
            Per-class summaries are always computed from ``rows`` when they have a ``class`` column.
        protocol: how the numbers were produced, e.g. ``{"split": "val", "inferer": "SlidingWindowInferer
            112x112x80", "units": "voxel", "empty_policy": "zero"}``; written to the sidecar JSON.

    Returns:
        ``{"cases": Path, "summary": Path, "protocol": Path}``.

    Raises:
        ValueError: when ``rows`` is empty or a row has no ``case``.
    """
    if not rows:
        raise ValueError(f"no metric rows to write to {path}.")
    missing_case = [i for i, row in enumerate(rows) if "case" not in row]
    if missing_case:
        raise ValueError(f"every metric row needs a 'case' entry; row(s) {missing_case[:5]} have none ({path}).")
    cases_path = Path(path)
    if cases_path.suffix.lower() != ".csv":
        cases_path = cases_path.with_name(cases_path.name + ".csv")
    cases_path.parent.mkdir(parents=True, exist_ok=True)
    stem = cases_path.with_suffix("")
    summary_path = stem.with_name(stem.name + "_summary.csv")
    protocol_path = stem.with_name(stem.name + "_protocol.json")

    names = metric_columns(rows)
    has_class = any("class" in row for row in rows)
    columns = ["case", *(["class"] if has_class else []), *names]
    with atomic_open(cases_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_format_value(row.get(c, float("nan"))) for c in columns])

    overall = dict(summary) if summary is not None else summarize(rows, names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_class = summarize_by_class(rows, names) if has_class else {}
    with atomic_open(summary_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["scope", "metric", "mean", "std", "n"])
        scopes: list[tuple[str, Mapping[str, Mapping[str, float]]]] = [("all", overall)]
        scopes += [(f"class_{cls}", values) for cls, values in per_class.items()]
        for scope, values in scopes:
            for metric, stats in values.items():
                writer.writerow(
                    [
                        scope,
                        metric,
                        _format_value(float(stats["mean"])),
                        _format_value(float(stats["std"])),
                        int(stats["n"]),
                    ]
                )

    cases = list(dict.fromkeys(str(row["case"]) for row in rows))
    document = {
        "protocol": dict(protocol or {}),
        "definitions": {k: v for k, v in METRIC_DEFINITIONS.items() if k in names or k == "surface"},
        "num_cases": len(cases),
        "num_rows": len(rows),
        "summary": overall,
        "summary_by_class": per_class,
        "files": {"cases": cases_path.name, "summary": summary_path.name},
    }
    with atomic_open(protocol_path, "w") as f:
        json.dump(_json_safe(document), f, indent=2)
        f.write("\n")
    return {"cases": cases_path, "summary": summary_path, "protocol": protocol_path}
