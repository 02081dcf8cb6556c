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


def _interrupted_run(tmp_path: Path, saved_iteration: int | None):
    """A run stopped at iteration 300 (log every 10), with a resumable state at ``saved_iteration`` if given."""
    import torch

    args = real_data.parse_args(["--protocol", "acdc", "--seeds", "0", "--modes", "crossmatch"])
    run = real_data.make_runs(real_data.PROTOCOLS["acdc"], args, _data(tmp_path), tmp_path / "out")[0]
    run.output_dir.mkdir(parents=True)
    log = [{"event": "train", "iteration": i, "wall_time": float(i), "loss": 1.0} for i in range(10, 301, 10)]
    log.append({"event": "validation", "iteration": 250, "wall_time": 251.0, "val_mean_dice": 0.5})
    run.training_log.write_text("\n".join(json.dumps(r) for r in log) + "\n")
    (run.folder / "train.log").write_text("first part\n")
    if saved_iteration is not None:
        run.resume_state.parent.mkdir(parents=True)
        torch.save({"trainer": {"iteration": saved_iteration, "epoch": 3}}, run.resume_state)
    return run


def _finish_like_the_bundle(calls):
    def fake(command, log, env, append=False):
        calls.append((command, append))
        folder = Path(command[command.index("--ckpt_dir") + 1])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.pt").write_bytes(b"weights")
        out = Path(command[command.index("--output_dir") + 1]) if "--output_dir" in command else None
        if "--metrics_output" in command:
            out = Path(command[command.index("--metrics_output") + 1])
            out.mkdir(parents=True, exist_ok=True)
        if out is not None and "evaluate.yaml" in " ".join(command):
            (out / "metrics_summary.csv").write_text("scope,metric,mean,std,n\n")
        return 0, 12.5
    return fake


def test_an_interrupted_run_resumes_from_its_saved_state(tmp_path, monkeypatch):
    run = _interrupted_run(tmp_path, saved_iteration=250)
    calls: list = []
    monkeypatch.setattr(real_data, "_run_logged", _finish_like_the_bundle(calls))
    assert real_data.resumable_iteration(run) == 250
    timing = real_data.execute(run, real_data.Progress(), force=False, threads=None)
    train_command, append = calls[0]
    assert train_command[train_command.index("--resume") + 1] == "True" and append
    records = real_data._read_log(run.training_log)
    assert max(r["iteration"] for r in records) == 250  # the repeated part is gone, the validation at 250 kept
    assert any(r["event"] == "validation" for r in records)
    assert timing["train_resumed_at"] == [250] and timing["train_wall_s"] is None
    assert json.loads((run.folder / "timing.json").read_text())["train_resumed_at"] == [250]


def test_a_run_without_saved_state_or_forced_starts_over(tmp_path, monkeypatch):
    for name, saved, force in (("none", None, False), ("forced", 250, True)):
        (tmp_path / name).mkdir()
        run = _interrupted_run(tmp_path / name, saved_iteration=saved)
        calls: list = []
        monkeypatch.setattr(real_data, "_run_logged", _finish_like_the_bundle(calls))
        timing = real_data.execute(run, real_data.Progress(), force=force, threads=None)
        train_command, append = calls[0]
        assert "--resume" not in train_command and not append
        assert not run.training_log.exists() and timing["train_wall_s"] == 12.5
        assert "train_resumed_at" not in timing


def test_an_unreadable_saved_state_starts_over_and_says_so(tmp_path, capsys):
    run = _interrupted_run(tmp_path, saved_iteration=None)
    run.resume_state.parent.mkdir(parents=True)
    run.resume_state.write_bytes(b"truncated")
    assert real_data.resumable_iteration(run) is None
    assert "not a readable training state" in capsys.readouterr().out


def test_fewer_iterations_shrink_the_auto_bundles_budget_with_them(tmp_path):
    """--iterations shortens a protocol and keeps the rest: for the auto bundle the plan's crops, so its CPU budget
    per iteration."""
    args = real_data.parse_args(["--protocol", "la_auto", "--seeds", "0", "--iterations", "400"])
    run = real_data.make_runs(real_data.PROTOCOLS["la_auto"], args, tmp_path, tmp_path / "out")[0]
    full = real_data.PROTOCOLS["la_auto"].overrides
    assert run.overrides["num_iterations"] == 400
    assert run.overrides["cpu_hours"] == pytest.approx(full["cpu_hours"] * 400 / full["num_iterations"])
    plain = real_data.make_runs(real_data.PROTOCOLS["la_auto"], real_data.parse_args(["--protocol", "la_auto"]),
                                tmp_path, tmp_path / "out2")[0]
    assert plain.overrides["cpu_hours"] == full["cpu_hours"]


def test_a_named_evaluation_scores_the_same_weights_again_beside_the_protocols_own(tmp_path, monkeypatch, capsys):
    data = _data(tmp_path)
    with pytest.raises(SystemExit):  # an evaluation override would overwrite the protocol's own metrics
        real_data.parse_args(["--protocol", "acdc_auto", "--eval-set", "largest_component=True"])
    with pytest.raises(SystemExit):
        real_data.parse_args(["--protocol", "acdc_auto", "--eval-name", "../x", "--eval-set", "a=1"])
    capsys.readouterr()
    args = real_data.parse_args(["--protocol", "acdc_auto", "--seeds", "0", "--modes", "crossmatch", "--eval-name",
                                 "lcc", "--eval-set", "largest_component=True"])
    run = real_data.make_runs(real_data.PROTOCOLS["acdc_auto"], args, data, tmp_path / "out")[0]
    command = run.eval_command()
    assert command[command.index("--largest_component") + 1] == "True"
    assert command[command.index("--metrics_output") + 1] == str(run.folder / "eval_lcc")
    assert command[command.index("--checkpoint") + 1] == "$@ckpt_dir + '/model.pt'"  # the protocol's own kept
    assert "--largest_component" not in run.train_command()
    # trained and evaluated already: only the named evaluation runs, into its own folder
    _fake_run(run, {"v1": (0.9, 0.9, 0.9)})
    (run.folder / "models").mkdir(parents=True)
    (run.folder / "models" / "model.pt").write_bytes(b"weights")
    calls: list = []
    logs: list = []
    finish = _finish_like_the_bundle(calls)
    monkeypatch.setattr(real_data, "_run_logged", lambda command, log, env, append=False: (
        logs.append(log), finish(command, log, env, append))[1])
    (run.folder / "timing.json").write_text(json.dumps({"train_wall_s": 100.0, "eval_wall_s": 30.0}))
    timing = real_data.execute(run, real_data.Progress(), force=False, threads=None)
    assert len(calls) == 1 and "evaluate.yaml" in " ".join(calls[0][0])
    assert timing == {"train_wall_s": 100.0, "eval_wall_s": 30.0, "eval_lcc_wall_s": 12.5}
    assert logs == [run.folder / "eval_lcc.log"]  # the protocol's own eval.log is kept
    assert run.summary_file == run.folder / "eval_lcc" / "metrics_summary.csv" and run.summary_file.is_file()
    (run.folder / "eval_lcc" / "metrics.csv").write_text("case,class,dice,jaccard,hd95,asd\nv1,1,0.5,0.3,2,1\n")
    results = real_data.collect([run], real_data.PROTOCOLS["acdc_auto"], data, args)
    assert results["runs"][0]["summary"]["dice"]["mean"] == pytest.approx(0.5)  # eval_lcc's, not eval's 0.9
    assert "EVALUATION 'lcc' of the same weights" in results["description"]
    assert "largest_component=True" in results["description"]
