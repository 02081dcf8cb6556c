"""DDP training of the ACDC bundle through torchrun, two CPU processes over gloo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crossmatch_ext.data import write_acdc_dataset

from bundle_helpers import REPO_ROOT

pytestmark = pytest.mark.slow


def test_torchrun_two_processes(tmp_path: Path):
    data = write_acdc_dataset(tmp_path / "data", num_train_patients=3, num_val_patients=1, labeled_patients=(1,),
                              seed=5, size=((36, 32), (40, 36)), num_slices=(3, 4), nifti=False)
    configs = "['bundles/crossmatch_acdc/configs/train.yaml','bundles/crossmatch_acdc/configs/multi_gpu_train.yaml']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "training", "--config_file", configs, "--dataset_dir", str(data),
           "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval"),
           "--num_labeled_patients", "1", "--batch_size", "2", "--image_size", "[32,32]", "--sw_batch_size", "4",
           "--num_iterations", "3", "--val_interval", "3", "--num_workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # the bare network, loadable into network_def
    resume = torch.load(tmp_path / "models" / "resume" / "last.pt", map_location="cpu", weights_only=False)
    assert resume["trainer"]["iteration"] == 3
    # both processes trained: each rank saw its own shard of the labeled slices
    assert result.stdout.count("Engine run") + result.stderr.count("Engine run") >= 2
