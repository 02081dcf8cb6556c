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


def _both_modes(folder: Path, dice: dict[tuple[str, int], float]) -> Path:
    folder.mkdir()
    runs = [{"mode": mode, "seed": seed, "summary": {"dice": {"mean": value}, "hd95": {"mean": 5.0},
                                                      "asd": {"mean": 1.0}}}
            for (mode, seed), value in dice.items()]
    (folder / "results.json").write_text(json.dumps({"runs": runs}))
    return folder


def test_the_semi_supervised_gain_of_each_side_paired_by_seed_and_the_goal(tmp_path: Path, capsys):
    hand = _both_modes(tmp_path / "hand", {("crossmatch", 0): 0.67, ("supervised", 0): 0.38,
                                           ("crossmatch", 1): 0.64, ("supervised", 1): 0.40})
    # seed 1 lacks its supervised run on the auto side: only seed 0 has a gain on both sides
    auto = _both_modes(tmp_path / "auto", {("crossmatch", 0): 0.66, ("supervised", 0): 0.30,
                                           ("crossmatch", 1): 0.60})
    out = tmp_path / "pairs.json"
    assert paired_runs.main([str(hand), str(auto), "--names", "hand", "auto", "--goal", "2", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    gain = written["semi_supervised_gain"]
    assert [g["seed"] for g in gain["seeds"]] == [0]
    assert math.isclose(gain["a"]["mean"], 0.29) and math.isclose(gain["b"]["mean"], 0.36)
    assert math.isclose(gain["difference"]["mean"], 0.07) and gain["difference"]["n"] == 1
    # CrossMatch: -1 and -4 points, mean -2.5: short; supervised: -8, short; gain +7: better
    assert written["goal"] == {"points": 2.0, "crossmatch": "short by more than 2 points",
                               "supervised": "short by more than 2 points", "gain": "better"}
    printed = capsys.readouterr().out
    assert "semi-supervised gain (CrossMatch - supervised Dice, hand / auto): seed 0: +29.0 / +36.0" in printed
    assert "gain difference auto - hand = +7.0 ± n/a; goal: better" in printed


def test_goal_within_and_no_gain_without_supervised_runs(tmp_path: Path):
    rows = paired_runs.pair_runs(paired_runs.load_runs(_results(tmp_path / "a", {0: 0.60, 1: 0.70})),
                                 paired_runs.load_runs(_results(tmp_path / "b", {0: 0.59, 1: 0.68})))
    summary = paired_runs.summarize(rows)
    gains = paired_runs.semi_supervised_gains(rows)
    assert gains["seeds"] == [] and math.isnan(gains["difference"]["mean"])
    goals = paired_runs.goal_verdicts(summary, gains, 2.0)
    assert goals["crossmatch"] == "within 2 points" and goals["gain"] == "not measured"
    assert "semi-supervised gain" not in paired_runs.format_table(rows, summary, ("a", "b"), gains, goals)
