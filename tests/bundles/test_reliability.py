"""The LA bundle through MONAI's own entry points: clear last lines for bad input, resume after SIGKILL, repeatable
losses, volumes smaller than the patch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from crossmatch_ext.data import write_la_dataset
from crossmatch_ext.engines import loss_terms

from bundle_helpers import REPO_ROOT

pytestmark = pytest.mark.slow

CONFIGS = REPO_ROOT / "bundles" / "crossmatch_la" / "configs"
TRAIN = "bundles/crossmatch_la/configs/train.yaml"
FAST = ["--patch_size", "[16,16,16]", "--eval_strides", "[8,8,8]", "--num_workers", "0", "--num_labeled", "2",
        "--batch_size", "2", "--network_def::n_filters", "4", "--log_interval", "1000"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_la_dataset(tmp_path_factory.mktemp("la") / "data", num_train=5, num_val=1, num_labeled=(2,), seed=2,
                            shape=(24, 24, 16), nifti=True)


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def _last_lines(result: subprocess.CompletedProcess, n: int = 2) -> list[str]:
    assert result.returncode != 0, result.stdout[-3000:]
    return result.stdout.rstrip().splitlines()[-n:]


def test_bad_inputs_end_with_a_short_message(dataset: Path, tmp_path: Path):
    out = ["--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval")]
    missing = _last_lines(_cli("run", "training", "--config_file", TRAIN, "--dataset_dir", "/nonexistent", *out))
    assert missing[0].startswith("crossmatch: error in config key")
    assert missing[1].startswith("InputFileNotFoundError: dataset_dir not found: /nonexistent. Set --dataset_dir")

    amp = _last_lines(_cli("run", "training", "--config_file", TRAIN, "--dataset_dir", str(dataset), "--amp", "false",
                           *FAST, *out))
    assert amp[1] == ("SettingError: config key 'amp' must be True or False, got the text 'false'; MONAI's command "
                      "line passes lowercase true/false through as text, which counts as true: write --amp False.")

    blocker = tmp_path / "file"
    blocker.write_text("x")
    unwritable = _last_lines(_cli("run", "training", "--config_file", TRAIN, "--dataset_dir", str(dataset), *FAST,
                                  "--ckpt_dir", str(blocker / "models"), "--output_dir", str(tmp_path / "eval")))
    assert f"ckpt_dir {blocker}/models is not writable" in unwritable[1] and "--ckpt_dir DIR" in unwritable[1]


def test_two_channel_image_at_inference(tmp_path: Path):
    from crossmatch_ext.networks import VNet

    torch.save(VNet(1, 2, n_filters=4).state_dict(), tmp_path / "model.pt")
    images = tmp_path / "images"
    images.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 16, 2), np.float32), np.eye(4)), images / "two.nii.gz")
    result = _cli("run", "--config_file", "bundles/crossmatch_la/configs/inference.yaml", "--dataset_dir", str(images),
                  "--checkpoint", str(tmp_path / "model.pt"), "--output_dir", str(tmp_path / "seg"),
                  "--network_def::n_filters", "4", "--patch_size", "[16,16,16]", "--eval_strides", "[8,8,8]")
    last = _last_lines(result, 1)[0]
    assert last.startswith(f"InputValueError: image {images / 'two.nii.gz'} has 2 channels"), result.stdout[-2000:]
    assert "the model takes 1 (network_def::in_channels)" in last


def _iteration(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["trainer"]["iteration"])


def test_sigkill_mid_run_then_resume(dataset: Path, tmp_path: Path):
    models = tmp_path / "models"
    common = ["--config_file", TRAIN, "--dataset_dir", str(dataset), "--ckpt_dir", str(models), "--output_dir",
              str(tmp_path / "eval"), *FAST, "--val_interval", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "monai.bundle", "run", "training", *common, "--num_iterations",
                             "10000"], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    last = models / "resume" / "last.pt"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if last.is_file() and _iteration(last) >= 4:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "training stopped before it was killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(last, map_location="cpu", weights_only=True)  # the last complete checkpoint
    done = int(state["trainer"]["iteration"])
    assert done >= 4 and done % 2 == 0
    assert (models / "run_settings.json").is_file()

    result = _cli("run", "training", *common, "--num_iterations", str(done + 3), "--resume", "True")
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"(iteration {done})" in result.stdout
    final = torch.load(last, map_location="cpu", weights_only=True)
    assert final["trainer"]["iteration"] == done + 3
    # the optimizer continued from the checkpoint's moments: it has taken every step of both runs
    steps = {int(s["step"]) for s in final["optimizer"]["state"].values()}
    assert steps == {done + 3}
    assert final["lr_scheduler"]["last_epoch"] == done + 3
    assert torch.load(models / "model.pt", map_location="cpu", weights_only=True)


def _losses(dataset: Path, tmp_path: Path, seed: int, steps: int = 5, deterministic: bool = True) -> list[float]:
    wf = ConfigWorkflow(config_file=str(CONFIGS / "train.yaml"), meta_file=str(CONFIGS / "metadata.json"),
                        logging_file=False, workflow_type="train", dataset_dir=str(dataset), seed=seed,
                        ckpt_dir=str(tmp_path / f"models{seed}"), output_dir=str(tmp_path / f"eval{seed}"),
                        num_iterations=steps, val_interval=steps, patch_size=[32, 32, 32], eval_strides=[16, 16, 16],
                        num_workers=0, num_labeled=2, batch_size=1, log_interval=1000, deterministic=deterministic,
                        **{"network_def::n_filters": 4})
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train::trainer")
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(loss_terms(e.state.output)["loss"]))
    wf.run()
    wf.finalize()
    return losses


def test_same_seed_same_losses_and_small_volumes_are_padded(dataset: Path, tmp_path: Path):
    # the 24x24x16 volumes are smaller than the 32x32x32 patch: padded for training and validation. Bit-for-bit
    # repeatable runs are --deterministic True (float32 on a CPU: its bf16 convolutions are not repeatable there)
    first = _losses(dataset, tmp_path / "a", seed=11)
    second = _losses(dataset, tmp_path / "b", seed=11)
    assert len(first) == 5 and first == second
    other = _losses(dataset, tmp_path / "c", seed=12)
    assert other != first
    import json

    record = json.loads((tmp_path / "a" / "models11" / "run_settings.json").read_text())
    assert record["seed"] == 11 and record["settings"]["patch_size"] == [32, 32, 32]
    assert record["settings"]["deterministic"] is True and record["settings"]["amp"] is False
    assert len(record["data"]["padded_to_patch"]) == 6
