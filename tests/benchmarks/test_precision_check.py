"""The precision benchmark on a tiny configuration: the JSON fields and the table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from crossmatch_ext.engines import PRECISION_CACHE_ENV, clear_verdict_cache

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "precision_check.py"
_spec = importlib.util.spec_from_file_location("precision_check", _PATH)
precision_check = importlib.util.module_from_spec(_spec)
sys.modules["precision_check"] = precision_check
assert _spec.loader is not None
_spec.loader.exec_module(precision_check)

ERRORS = ("output_error", "input_grad_error", "weight_grad_error", "bias_grad_error")


def test_the_benchmark_writes_the_op_table_and_the_network_verdicts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(PRECISION_CACHE_ENV, str(tmp_path / "verdicts.json"))
    # the LA V-Net at its smallest patch (bottleneck 1x1x1: batch norm needs 2 rows): the bundles' networks are the
    # same code at larger shapes
    monkeypatch.setitem(precision_check.NETWORKS, "tiny_vnet", ("vnet", (16, 16, 16), 2))
    output = tmp_path / "precision.json"
    precision_check.main(["--shapes3d", "2x4x4", "4x4x3", "--shapes2d", "4x4", "--channels", "16", "--repeats", "2",
                          "--networks", "tiny_vnet", "--output", str(output), "--table"])
    result = json.loads(output.read_text())
    assert result["dtype"] == "bfloat16" and result["repeats"] == 2 and result["tolerance"] == 0.05
    assert "torch" in result["environment"]["key"] and result["environment"]["threads"] >= 1
    ops = result["ops"]
    assert [(row["kind"], row["input_shape"], row["memory_format"]) for row in ops] == [
        ("Conv3d", [1, 16, 2, 4, 4], "contiguous"), ("Conv3d", [1, 16, 2, 4, 4], "channels_last_3d"),
        ("Conv3d", [1, 16, 4, 4, 3], "contiguous"), ("Conv3d", [1, 16, 4, 4, 3], "channels_last_3d"),
        ("Conv2d", [1, 16, 4, 4], "contiguous"), ("Conv2d", [1, 16, 4, 4], "channels_last"),
    ]
    for row in ops:
        assert set(row) >= {"op", "channels", "depth", "nonfinite", "flagged", "repeats", "seconds", *ERRORS}
        assert row["repeats"] == 2 and 0 <= row["flagged"] <= 2
        for name in ERRORS:
            assert set(row[name]) == {"max", "median"}
        if not row["flagged"]:
            assert float(row["output_error"]["max"]) < 0.05 and row["nonfinite"] == 0
    (network,) = result["networks"]
    assert network["network"] == "tiny_vnet" and network["patch"] == [16, 16, 16] and network["batch"] == 2
    assert network["distinct_configurations"] == len(network["layers"]) == network["checks_run"]
    modules = [name for layer in network["layers"] for name in layer["modules"]]
    assert "network.encoder.0.block.0.conv" in modules and "network.out_conv" in modules
    for layer in network["layers"]:
        assert isinstance(layer["float32"], bool) and layer["dtype"] == "bfloat16"
        if layer["float32"]:
            assert set(layer["modules"]) <= set(network["float32_layers"])
    assert {row["input_shape"][0] for row in network["layers"]} == {2, 4, 8}  # plain pass, encoder 2B, decoder 4B
    assert result["summary"]["ops"] == 6 and result["summary"]["network_float32_layers"] == {
        "tiny_vnet": network["float32_layers"]}
    table = capsys.readouterr().err
    assert "Conv3d      16 1x16x2x4x4" in table and "## tiny_vnet: patch 16x16x16" in table
    clear_verdict_cache()


def test_a_shape_of_the_wrong_rank_is_refused():
    with pytest.raises(SystemExit, match="takes 3 sizes"):
        precision_check.main(["--shapes3d", "4x4", "--shapes2d", "--networks", "--channels", "4", "--repeats", "1"])
