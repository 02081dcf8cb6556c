"""The real-data benchmark's command building and aggregation (no training: fake run folders)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "real_data.py"
_spec = importlib.util.spec_from_file_location("real_data", _PATH)
real_data = importlib.util.module_from_spec(_spec)
sys.modules["real_data"] = real_data  # dataclasses look their module up
assert _spec.loader is not None
_spec.loader.exec_module(real_data)


def _data(tmp_path: Path) -> Path:
    data = tmp_path / "acdc"
    data.mkdir()
    (data / "val.list").write_text("patient002_frame01\n")
    return data


def test_cli_values_are_fire_literals():
    assert real_data._cli_value(True) == "True" and real_data._cli_value(False) == "False"
    assert real_data._cli_value([128, 128]) == "[128,128]"
    assert real_data._override_args({"a": 1, "b": [1, 2]}) == ["--a", "1", "--b", "[1,2]"]


def test_runs_share_everything_but_mode_and_seed(tmp_path):
    args = real_data.parse_args(["--protocol", "la", "--seeds", "3", "4", "--iterations", "50",
                                 "--set", "cutmix_prob=0.25", "--device", "cpu"])
    runs = real_data.make_runs(real_data.PROTOCOLS["la"], args, tmp_path, tmp_path / "out")
    assert [(r.mode, r.seed) for r in runs] == [("crossmatch", 3), ("supervised", 3), ("crossmatch", 4),
                                                ("supervised", 4)]
    first, second = runs[0].overrides, runs[1].overrides
    differing = {k for k in first if first[k] != second.get(k)}
    assert differing == {"mode", "ckpt_dir", "output_dir"}
    assert first["num_iterations"] == 50 and first["lr_decay_iterations"] == 50 and first["val_interval"] == 50
    assert first["downsample"] == 0.5 and first["cutmix_prob"] == "0.25" and first["amp"] is False
    command = runs[0].train_command()
    assert command[1:5] == ["-m", "monai.bundle", "run", "training"]
    assert "--seed" in command and command[command.index("--seed") + 1] == "3"
    assert "evaluate.yaml" in " ".join(runs[0].eval_command())


def test_bad_set_override_is_rejected(tmp_path):
    args = real_data.parse_args(["--protocol", "acdc", "--set", "no_equals_sign"])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        real_data.make_runs(real_data.PROTOCOLS["acdc"], args, tmp_path, tmp_path / "out")


def _fake_run(run, dice_by_class):
    run.output_dir.mkdir(parents=True)
    rows = ["case,class,dice,jaccard,hd95,asd"]
    for case, values in dice_by_class.items():
        for cls, dice in zip(("1", "2", "3"), values):
            rows.append(f"{case},{cls},{dice},{dice / 2},{10 * (1 - dice)},{1 - dice}")
    (run.output_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    (run.output_dir / "metrics_summary.csv").write_text("scope,metric,mean,std,n\n")
    log = [{"event": "train", "iteration": i, "wall_time": 100.0 + 0.5 * i, "loss": 1.0 / i} for i in (1, 11, 21)]
    log.insert(2, {"event": "validation", "iteration": 11, "wall_time": 200.0, "val_mean_dice": 0.5})
    run.training_log.write_text("\n".join(json.dumps(r) for r in log) + "\n")


def test_collect_aggregates_cases_classes_and_seeds(tmp_path):
    data = _data(tmp_path)
    args = real_data.parse_args(["--protocol", "acdc", "--seeds", "0", "1", "--data", str(data)])
    runs = real_data.make_runs(real_data.PROTOCOLS["acdc"], args, data, tmp_path / "out")
    scores = {("crossmatch", 0): 0.8, ("supervised", 0): 0.5, ("crossmatch", 1): 0.6, ("supervised", 1): 0.4}
    for run in runs:
        base = scores[(run.mode, run.seed)]
        _fake_run(run, {"v1": (base, base, base), "v2": (base - 0.2, base, base + 0.2)})
    results = real_data.collect(runs, real_data.PROTOCOLS["acdc"], data, args)
    assert len(results["runs"]) == 4
    cm = results["modes"]["crossmatch"]
    assert cm["across_seeds"]["dice"]["mean"] == pytest.approx(0.7)
    assert cm["across_seeds"]["dice"]["std"] == pytest.approx(0.1414, abs=1e-4)  # sample std of 0.8, 0.6
    assert cm["by_class_across_seeds"]["RV"]["dice"]["mean"] == pytest.approx(0.6)
    assert cm["s_per_iteration"]["mean"] == pytest.approx(0.5)  # validation gaps are not counted
    assert results["gain"]["paired_by_seed"]["dice"]["mean"] == pytest.approx(0.25)
    table = real_data.format_table(results)
    assert "| crossmatch | 2 | 70.0 ± 14.1" in table and "+25.0" in table
    assert "onednn_max_cpu_isa" not in results["host"]


def test_a_cap_on_onednn_kernels_is_recorded_with_the_host(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    data = _data(tmp_path)
    args = real_data.parse_args(["--protocol", "acdc", "--seeds", "0", "--data", str(data)])
    runs = real_data.make_runs(real_data.PROTOCOLS["acdc"], args, data, tmp_path / "out")
    results = real_data.collect(runs, real_data.PROTOCOLS["acdc"], data, args)
    assert results["host"]["onednn_max_cpu_isa"] == "AVX512_CORE_BF16"


def test_paper_setting_refuses_on_cpu_without_yes(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = _data(tmp_path)
    code = real_data.main(["--reproduce", "acdc3", "--data", str(data), "--out", str(tmp_path / "o")])
    assert code == 2
    out = capsys.readouterr().out
    assert "GPU-sized" in out and "--yes" in out and not (tmp_path / "o").exists()


def test_the_description_names_what_a_run_changed_and_its_validation_schedule(tmp_path: Path):
    protocol = real_data.PROTOCOLS["la"]
    args = real_data.argparse.Namespace(seeds=[0], modes=["crossmatch"], iterations=300, eval_list="val.list",
                                        num_workers=None, device=None, no_amp=False,
                                        set=["patch_size=[32,32,32]", "eval_protocol=monai"])
    run = real_data.make_runs(protocol, args, _data(tmp_path), tmp_path / "out")[0]
    text = real_data.run_description(protocol, run.overrides)
    assert text.startswith(protocol.description)
    changed = text.split("THIS RUN OVERRIDES: ")[1]
    assert "num_iterations=300" in changed and "patch_size=[32,32,32]" in changed and "eval_protocol=monai" in changed
    assert "seed=" not in changed and "dataset_dir" not in changed  # per-run values are not departures
    assert "validation every 250 iterations" in text
    (tmp_path / "b").mkdir()
    plain = real_data.make_runs(protocol, real_data.argparse.Namespace(
        seeds=[0], modes=["crossmatch"], iterations=None, eval_list="val.list", num_workers=None, device=None,
        no_amp=False, set=None), _data(tmp_path / "b"), tmp_path / "out2")[0]
    assert "OVERRIDES" not in real_data.run_description(protocol, plain.overrides)
