"""A seed fixes the model: validation, logging, train metrics and resuming leave the training untouched (both
bundles, generated data, float32, through MONAI's ConfigWorkflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from crossmatch_ext.data import write_acdc_dataset, write_la_dataset
from crossmatch_ext.engines import loss_terms

from bundle_helpers import REPO_ROOT

pytestmark = pytest.mark.slow

ITERATIONS = 12
SETTINGS = {
    "crossmatch_acdc": {"image_size": [32, 32], "batch_size": 2, "num_labeled_patients": 1, "sw_batch_size": 4},
    "crossmatch_la": {"patch_size": [16, 16, 16], "eval_strides": [8, 8, 8], "batch_size": 2, "num_labeled": 2,
                      "network_def::n_filters": 4},
}


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def bundle(request, tmp_path_factory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "crossmatch_acdc":
        data = write_acdc_dataset(root / "data", num_train_patients=3, num_val_patients=1, labeled_patients=(1,),
                                  seed=4, size=((36, 32), (44, 40)), num_slices=(3, 4), nifti=True)
    else:
        data = write_la_dataset(root / "data", num_train=5, num_val=1, num_labeled=(2,), seed=2, shape=(24, 24, 16),
                                nifti=True)
    return request.param, data


def _train(bundle: tuple[str, Path], out: Path, **override: Any) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Train with the bundle's train.yaml; the loss of every iteration (also across a resume) and the final weights."""
    name, data = bundle
    configs = REPO_ROOT / "bundles" / name / "configs"
    settings = {"seed": 0, "amp": False, "num_workers": 0, "num_iterations": ITERATIONS, "val_interval": ITERATIONS,
                "log_interval": 1, "lr_decay_iterations": ITERATIONS, **SETTINGS[name], **override}
    wf = ConfigWorkflow(config_file=str(configs / "train.yaml"), meta_file=str(configs / "metadata.json"),
                        logging_file=False, workflow_type="train", dataset_dir=str(data),
                        ckpt_dir=str(out / "models"), output_dir=str(out / "eval"), **settings)
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train::trainer")
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(loss_terms(e.state.output)["loss"]))
    wf.run()
    wf.finalize()
    return losses, torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True)


def _assert_same_model(first: tuple[list[float], dict], second: tuple[list[float], dict]) -> None:
    assert len(first[0]) == len(second[0])
    assert first[0] == second[0], "the training losses differ"
    assert first[1].keys() == second[1].keys()
    for key in first[1]:
        assert torch.equal(first[1][key], second[1][key]), key


def test_validation_schedule_leaves_training_untouched(bundle, tmp_path: Path):
    at_end = _train(bundle, tmp_path / "end")
    every_4 = _train(bundle, tmp_path / "every4", val_interval=4)
    assert len(at_end[0]) == ITERATIONS
    _assert_same_model(at_end, every_4)


def test_logging_and_train_metric_intervals_leave_training_untouched(bundle, tmp_path: Path):
    often = _train(bundle, tmp_path / "often", log_interval=1, train_metric_interval=1)
    rarely = _train(bundle, tmp_path / "rarely", log_interval=50, train_metric_interval=50)
    _assert_same_model(often, rarely)


def test_stop_and_resume_repeats_the_uninterrupted_run(bundle, tmp_path: Path):
    # the run stopped at iteration 6 and resumed to 12 (same schedule of the learning rate: lr_decay_iterations 12)
    uninterrupted = _train(bundle, tmp_path / "whole", val_interval=3)
    first, _ = _train(bundle, tmp_path / "parts", val_interval=3, num_iterations=6)
    rest, weights = _train(bundle, tmp_path / "parts", val_interval=3, resume=True)
    assert len(first) == 6 and len(rest) == 6
    _assert_same_model(uninterrupted, (first + rest, weights))


def test_another_seed_gives_another_model(bundle, tmp_path: Path):
    seed_0 = _train(bundle, tmp_path / "seed0", num_iterations=4, lr_decay_iterations=4, val_interval=4)
    seed_1 = _train(bundle, tmp_path / "seed1", num_iterations=4, lr_decay_iterations=4, val_interval=4, seed=1)
    assert seed_0[0] != seed_1[0]
    assert any(not torch.equal(seed_0[1][k], seed_1[1][k]) for k in seed_0[1])


def test_number_of_loader_workers_leaves_training_untouched(bundle, tmp_path: Path):
    """Each item's augmentation is seeded from the loader's own stream, so the workers that make it do not matter."""
    in_process = _train(bundle, tmp_path / "w0", num_iterations=4, lr_decay_iterations=4, val_interval=4)
    workers = _train(bundle, tmp_path / "w2", num_iterations=4, lr_decay_iterations=4, val_interval=4, num_workers=2)
    _assert_same_model(in_process, workers)
