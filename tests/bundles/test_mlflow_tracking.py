"""Experiment tracking through MONAI's ``--tracking mlflow``: a local store in the bundle's output folder, no server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crossmatch_ext.data import write_la_dataset

from bundle_helpers import run_bundle_cli

pytestmark = [pytest.mark.slow, pytest.mark.mlflow]
if os.environ.get("CI"):
    # the project's environment (scripts/setup_env.sh) installs the mlflow extra: in CI its absence is an error
    import mlflow
else:
    mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'crossmatch-ext[mlflow]')")


def test_two_iterations_are_tracked_in_a_local_store(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    data = write_la_dataset(tmp_path / "data", num_train=4, num_val=1, num_labeled=(2,), seed=6, shape=(36, 36, 20),
                            nifti=False)
    eval_dir = tmp_path / "eval"
    run_bundle_cli("run", "training", "--config_file", "bundles/crossmatch_la/configs/train.yaml",
                   "--dataset_dir", str(data), "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(eval_dir),
                   "--num_labeled", "2", "--batch_size", "1", "--patch_size", "[32,32,16]", "--eval_strides",
                   "[16,16,8]", "--num_iterations", "2", "--val_interval", "2", "--num_workers", "0",
                   "--tracking", "mlflow")
    store = eval_dir / "mlruns.db"
    assert store.is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("crossmatch_la")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2]
    assert "val_mean_dice" in run.data.metrics
    assert list(eval_dir.glob("config_*.json"))  # the executed config, logged as an artifact
