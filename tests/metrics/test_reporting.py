"""Summaries and the per-case / summary / protocol files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from crossmatch_ext.metrics import (
    format_comparison,
    format_summary,
    metric_columns,
    read_summary,
    summarize,
    summarize_by_class,
    write_metrics_csv,
)


def rows_multiclass() -> list[dict]:
    return [
        {"case": "a", "class": 1, "dice": 0.8, "jaccard": 0.6, "hd95": 2.0, "asd": 1.0},
        {"case": "a", "class": 2, "dice": 0.6, "jaccard": 0.4, "hd95": float("nan"), "asd": float("nan")},
        {"case": "b", "class": 1, "dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0},
        {"case": "b", "class": 2, "dice": 0.4, "jaccard": 0.3, "hd95": 4.0, "asd": 3.0},
    ]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_summarize_mean_std_and_nan() -> None:
    summary = summarize(rows_multiclass())
    assert list(summary) == ["dice", "jaccard", "hd95", "asd"]
    assert summary["dice"]["mean"] == pytest.approx(0.7)
    assert summary["dice"]["std"] == pytest.approx(np.std([0.8, 0.6, 1.0, 0.4]))
    assert summary["dice"]["n"] == 4
    assert summary["hd95"]["mean"] == pytest.approx(2.0) and summary["hd95"]["n"] == 3
    by_class = summarize_by_class(rows_multiclass())
    assert list(by_class) == [1, 2]
    assert by_class[1]["dice"]["mean"] == pytest.approx(0.9)
    assert by_class[2]["asd"] == {"mean": 3.0, "std": 0.0, "n": 1}
    with pytest.raises(ValueError, match="no rows"):
        summarize([])
    with pytest.raises(ValueError, match="missing"):
        summarize([{"case": "a", "dice": 1.0}], metrics=["hd95"])


def test_metric_columns_order() -> None:
    assert metric_columns([{"case": "x", "asd": 1, "custom": 2, "dice": 3}]) == ["dice", "asd", "custom"]


def test_write_metrics_csv_multiclass(tmp_path: Path) -> None:
    protocol = {"split": "val", "inferer": "SliceInferer 256x256", "units": "voxel", "empty_policy": "nan"}
    files = write_metrics_csv(tmp_path / "out" / "metrics", rows_multiclass(), protocol=protocol)
    assert files["cases"] == tmp_path / "out" / "metrics.csv"
    cases = read_csv(files["cases"])
    assert list(cases[0]) == ["case", "class", "dice", "jaccard", "hd95", "asd"]
    assert [(r["case"], r["class"]) for r in cases] == [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]
    assert float(cases[0]["dice"]) == pytest.approx(0.8)
    assert cases[1]["hd95"] == "nan"

    summary = read_csv(files["summary"])
    assert files["summary"].name == "metrics_summary.csv"
    scopes = {(r["scope"], r["metric"]): r for r in summary}
    assert float(scopes[("all", "dice")]["mean"]) == pytest.approx(0.7)
    assert float(scopes[("class_2", "dice")]["mean"]) == pytest.approx(0.5)
    assert scopes[("all", "hd95")]["n"] == "3"

    document = json.loads(files["protocol"].read_text())
    assert document["protocol"] == protocol
    assert document["num_cases"] == 2 and document["num_rows"] == 4
    assert "concatenated" in document["definitions"]["hd95"]
    assert document["summary"]["dice"]["mean"] == pytest.approx(0.7)
    assert document["summary_by_class"]["2"]["asd"]["mean"] == pytest.approx(3.0)


def test_write_metrics_csv_single_class_has_no_class_column(tmp_path: Path) -> None:
    rows = [{"case": "c1", "dice": 0.9, "hd95": 1.5}, {"case": "c2", "dice": 0.7, "hd95": 3.5}]
    files = write_metrics_csv(tmp_path / "la.csv", rows, summary=summarize(rows))
    cases = read_csv(files["cases"])
    assert list(cases[0]) == ["case", "dice", "hd95"]
    summary = read_csv(files["summary"])
    assert {r["scope"] for r in summary} == {"all"}
    assert float(next(r for r in summary if r["metric"] == "hd95")["mean"]) == pytest.approx(2.5)
    assert json.loads(files["protocol"].read_text())["protocol"] == {}
    with pytest.raises(ValueError, match="no metric rows"):
        write_metrics_csv(tmp_path / "empty.csv", [])
    with pytest.raises(ValueError, match="'case'"):
        write_metrics_csv(tmp_path / "nocase.csv", [{"dice": 1.0}])


def test_format_summary_table() -> None:
    rows = rows_multiclass()
    text = format_summary(summarize(rows), summarize_by_class(rows), title="ACDC val")
    lines = text.splitlines()
    assert lines[0] == "ACDC val"
    assert lines[1].split()[:3] == ["scope", "dice", "jaccard"]
    assert "0.7000 ± " in lines[2] and lines[2].startswith("all")
    assert lines[3].startswith("class 1") and lines[4].startswith("class 2")
    assert not math.isnan(summarize(rows)["asd"]["mean"])


def test_read_summary_from_file_or_folder(tmp_path: Path) -> None:
    rows = rows_multiclass()
    files = write_metrics_csv(tmp_path / "metrics.csv", rows)
    expected = summarize(rows)
    read = read_summary(files["summary"])
    assert list(read) == list(expected)
    for metric, stats in expected.items():
        assert read[metric] == pytest.approx(stats, abs=1e-6)   # the CSV keeps 6 decimals
    assert read_summary(tmp_path)["dice"]["mean"] == pytest.approx(0.7)
    assert read_summary(tmp_path, scope="class_2")["dice"]["mean"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="class_9"):
        read_summary(tmp_path, scope="class_9")
    with pytest.raises(FileNotFoundError, match=r"metrics_summary\.csv"):
        read_summary(tmp_path / "missing")


def test_format_comparison_gain_is_positive_when_better() -> None:
    baseline = {"dice": {"mean": 0.6, "std": 0.1, "n": 4}, "hd95": {"mean": 9.0, "std": 2.0, "n": 4}}
    method = {"dice": {"mean": 0.8, "std": 0.05, "n": 4}, "hd95": {"mean": 4.5, "std": 1.0, "n": 4}}
    text = format_comparison({"supervised": baseline, "CrossMatch": method}, baseline="supervised",
                             method="CrossMatch", headers={"hd95": "HD95"})
    lines = text.splitlines()
    assert lines[0].split() == ["dice", "HD95"]
    assert lines[1].split() == ["supervised", "0.600", "±", "0.100", "9.00", "±", "2.00"]
    assert lines[2].split()[0] == "CrossMatch" and set(lines[3]) == {"-"}
    assert lines[4].split() == ["gain", "of", "CrossMatch", "+0.200", "+4.50"]   # smaller HD95 is a gain
    worse = format_comparison({"a": method, "b": baseline}, baseline="a", method="b").splitlines()[-1]
    assert worse.split()[-2:] == ["-0.200", "-4.50"]
    with pytest.raises(KeyError, match="'c'"):
        format_comparison({"a": method}, baseline="a", method="c")
    with pytest.raises(KeyError, match="asd"):
        format_comparison({"a": method, "b": baseline}, baseline="a", method="b", metrics=("dice", "asd"))
