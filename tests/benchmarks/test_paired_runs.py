"""The paired comparison of two real-data benchmark outputs (no training: results files written here)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "paired_runs.py"
_spec = importlib.util.spec_from_file_location("paired_runs", _PATH)
paired_runs = importlib.util.module_from_spec(_spec)
sys.modules["paired_runs"] = paired_runs
assert _spec.loader is not None
_spec.loader.exec_module(paired_runs)


def _results(folder: Path, dice_by_seed: dict[int, float]) -> Path:
    folder.mkdir()
    runs = []
    for seed, dice in dice_by_seed.items():
        summary = {"dice": {"mean": dice}, "hd95": {"mean": 10.0 - dice}, "asd": {"mean": 1.0}}
        runs.append({"mode": "crossmatch", "seed": seed, "summary": summary, "train_wall_s": 100.0,
                     "by_class": {"RV": {"dice": {"mean": dice}}, "Myo": {"dice": {"mean": dice / 2}}}})
    (folder / "results.json").write_text(json.dumps({"runs": runs}))
    return folder


def test_pairs_by_seed_and_the_paired_difference(tmp_path: Path, capsys):
    a = _results(tmp_path / "a", {0: 0.60, 1: 0.70, 2: 0.65})
    b = _results(tmp_path / "b", {0: 0.62, 1: 0.71, 3: 0.9})  # seed 3 has no partner
    out = tmp_path / "pairs.json"
    assert paired_runs.main([str(a), str(b), "--names", "float32", "bf16", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert [(p["seed"], round(p["difference"]["dice"], 6)) for p in written["pairs"]] == [(0, 0.02), (1, 0.01)]
    dice = written["summary"]["crossmatch"]["dice"]
    assert math.isclose(dice["mean"], 0.015) and dice["n"] == 2
    assert math.isclose(written["summary"]["crossmatch"]["dice_Myo"]["mean"], 0.0075)
    assert dice["verdict"] in ("within noise", "outside noise")
    printed = capsys.readouterr().out
    assert "| crossmatch | 0 | 60.0 | 62.0 | +2.0 |" in printed and "bf16 - float32 = +1.5" in printed


def test_one_pair_gives_no_verdict(tmp_path: Path):
    rows = paired_runs.pair_runs(paired_runs.load_runs(_results(tmp_path / "a", {0: 0.5})),
                                 paired_runs.load_runs(_results(tmp_path / "b", {0: 0.4})))
    assert paired_runs.summarize(rows)["crossmatch"]["dice"]["verdict"] == "one pair: no verdict"


def test_a_setting_run_seed_by_seed_in_several_folders(tmp_path: Path):
    a0, a1 = _results(tmp_path / "a0", {0: 0.60}), _results(tmp_path / "a1", {1: 0.70})
    b = _results(tmp_path / "b", {0: 0.62, 1: 0.71})
    out = tmp_path / "pairs.json"
    assert paired_runs.main([f"{a0},{a1}", str(b), "--json", str(out)]) == 0
    assert [p["seed"] for p in json.loads(out.read_text())["pairs"]] == [0, 1]
    with pytest.raises(SystemExit, match="seed 0 is in two"):
        paired_runs.main([f"{a0},{a0}", str(b)])
