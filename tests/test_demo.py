"""The quick start's demo: its comparison table on fake run folders, and (slow) scripts/demo.sh end to end, tiny."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from crossmatch_ext.metrics import plots, write_metrics_csv

REPO = Path(__file__).resolve().parents[1]


def load_demo_summary() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_summary", REPO / "scripts" / "demo_summary.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(folder: Path, dice: list[float], hd95: list[float]) -> None:
    rows = [{"case": f"CASE{i}", "dice": d, "jaccard": d / (2 - d), "hd95": h, "asd": h / 3}
            for i, (d, h) in enumerate(zip(dice, hd95))]
    write_metrics_csv(folder / "eval" / "metrics.csv", rows, protocol={"split": "val.list"})
    lines = [{"event": "train", "iteration": i, "wall_time": float(i), "loss": 1.0 / i} for i in (1, 2, 3)]
    lines.append({"event": "validation", "iteration": 3, "wall_time": 3.5, "val_mean_dice": dice[0]})
    (folder / "eval" / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


@pytest.fixture
def demo_output(tmp_path: Path) -> Path:
    fake_run(tmp_path / "crossmatch", dice=[0.8, 0.9, 0.7, 0.8], hd95=[4.0, 3.0, 6.0, 5.0])
    fake_run(tmp_path / "supervised", dice=[0.5, 0.7, 0.6, 0.6], hd95=[12.0, 8.0, 10.0, 10.0])
    return tmp_path


def test_summary_table_of_both_runs(demo_output: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo_summary = load_demo_summary()
    assert demo_summary.main([str(demo_output), "--no-plots"]) == 0
    printed = capsys.readouterr().out
    table = (demo_output / "summary.txt").read_text().splitlines()
    assert table[0].startswith("Final weights on the 4 validation volumes")
    assert table[1].split() == ["Dice", "HD95", "(voxels)"]
    assert table[2].split() == ["supervised", "only", "0.600", "±", "0.071", "10.00", "±", "1.41"]
    assert table[3].split()[:2] == ["CrossMatch", "0.800"]
    assert table[-1].split() == ["gain", "of", "CrossMatch", "+0.200", "+5.50"]
    assert "\n".join(table) in printed
    assert str(demo_output / "crossmatch" / "train.log") in printed  # where the logs are


def test_summary_names_a_missing_run(demo_output: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo_summary = load_demo_summary()
    assert demo_summary.main([str(demo_output), "--baseline", "other", "--no-plots"]) == 1
    assert str(demo_output / "other" / "eval" / "metrics_summary.csv") in capsys.readouterr().err


def test_summary_without_matplotlib_says_how_to_get_the_figures(
    demo_output: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    demo_summary = load_demo_summary()
    monkeypatch.setattr(plots, "plots_available", lambda: False)
    assert demo_summary.main([str(demo_output)]) == 0
    printed = capsys.readouterr().out
    assert "crossmatch-ext[benchmarks]" in printed and f"tensorboard --logdir {demo_output}" in printed
    assert not (demo_output / "curves.png").exists()


def test_training_curves_figure(demo_output: Path) -> None:
    pytest.importorskip("matplotlib")
    logs = {name: demo_output / name / "eval" / "training_log.jsonl" for name in ("crossmatch", "supervised")}
    path = plots.plot_training_curves(logs, demo_output / "figures" / "curves.png")
    assert path.stat().st_size > 0


def test_read_training_log_skips_a_partial_line(tmp_path: Path) -> None:
    log = tmp_path / "training_log.jsonl"
    log.write_text('{"event": "train", "iteration": 1, "loss": 0.5}\n{"event": "tra')
    assert plots.read_training_log(log) == [{"event": "train", "iteration": 1, "loss": 0.5}]
    assert plots.read_training_log(tmp_path / "missing.jsonl") == []


def environment_without_install(tmp_path: Path) -> dict[str, str]:
    """The current Python environment for scripts/setup_env.sh, marked as installed so that it installs nothing."""
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "bin").symlink_to(Path(sys.executable).parent)
    (venv / ".crossmatch-installed").touch()
    env = dict(os.environ)
    env.update(CROSSMATCH_VENV=str(venv), PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    return env


@pytest.mark.slow
def test_demo_script_prints_the_comparison(tmp_path: Path) -> None:
    env = environment_without_install(tmp_path)
    out = tmp_path / "demo"
    env.update(CROSSMATCH_DEMO_DIR=str(out), CROSSMATCH_DEMO_ITERS="2", CROSSMATCH_DEMO_SHAPE="16 16 16",
               CROSSMATCH_DEMO_PATCH="16,16,16", OMP_NUM_THREADS="1")
    start = time.time()
    result = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), "--num_workers", "0"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "gain of CrossMatch" in result.stdout and "supervised only" in result.stdout
    assert (out / "summary.txt").read_text().splitlines()[-1].startswith("gain of CrossMatch")
    for mode in ("crossmatch", "supervised"):
        assert (out / mode / "eval" / "training_log.jsonl").exists()
        log = (out / mode / "train.log").read_text()
        assert "Got new best metric" in log  # the engines' log lines are kept in the run's log ...
    terminal = result.stdout + result.stderr
    assert "Got new best metric" not in terminal and "Complete. Time taken" not in terminal  # ... not on screen
    assert "any `\"_target_\"` value" not in terminal
    if plots.plots_available():  # the figures are drawn from the runs and named at the end
        for figure in ("curves.png", "overlays.png"):
            assert (out / figure).stat().st_size > 0 and str(out / figure) in result.stdout
    print(f"demo.sh, tiny settings: {time.time() - start:.0f} s")
