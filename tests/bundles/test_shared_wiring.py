"""The training wiring both bundles share: one definition, the same behaviour in each bundle's ``train.yaml``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.handlers import StatsHandler

from crossmatch_ext.bundle import TrainingHandlers, TrainingMonitors, autocast_kwargs, every
from crossmatch_ext.data import write_acdc_dataset, write_la_dataset
from crossmatch_ext.engines import CrossMatchTrainer
from crossmatch_ext.losses import CrossMatchLoss, MaskedDiceLoss
from crossmatch_ext.networks import FeaturePerturbation, FeaturePerturbedNetwork, UNet

from bundle_helpers import REPO_ROOT

BUNDLES = ["crossmatch_la", "crossmatch_acdc"]


def _parsed(bundle: str, key: str, tmp_path: Path, **override):
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / bundle / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(REPO_ROOT / "bundles" / bundle), "output_dir": str(tmp_path), **override})
    return parser.get_parsed_content(key)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _stats_lines(logs: TrainingMonitors, iterations: int) -> int:
    """Run a dummy engine with CrossMatch-like outputs and count the StatsHandler lines of the training loss."""
    engine = Engine(lambda e, b: {"loss": torch.tensor(0.5), "loss_kd": torch.tensor(0.1)})
    logs.attach(engine)
    (stats,) = [h for h in logs.handlers if isinstance(h, StatsHandler)]
    records = _Records()
    stats.logger.addHandler(records)
    try:
        engine.run(range(iterations), max_epochs=1)
    finally:
        stats.logger.removeHandler(records)
    return sum("loss_kd" in message for message in records.messages)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wiring")
    return {
        "crossmatch_la": write_la_dataset(root / "la", num_train=4, num_val=1, num_labeled=(2,), seed=1,
                                          shape=(36, 36, 20)),
        "crossmatch_acdc": write_acdc_dataset(root / "acdc", num_train_patients=2, num_val_patients=1,
                                              labeled_patients=(1,), seed=2, size=(48, 48), num_slices=(3, 4)),
    }


SMALL = {
    "crossmatch_la": {"patch_size": [32, 32, 16], "eval_strides": [16, 16, 8], "num_labeled": 2},
    "crossmatch_acdc": {"image_size": [32, 32], "num_labeled_patients": 1},
}


def _small(bundle: str, datasets: dict[str, Path], **override) -> dict:
    return {"dataset_dir": str(datasets[bundle]), "num_workers": 0, "cache_rate": 0.0, "batch_size": 2,
            "device": "$torch.device('cpu')", **SMALL[bundle], **override}


@pytest.mark.parametrize("bundle", BUNDLES)
def test_console_logs_every_log_interval_iterations(bundle: str, tmp_path: Path, datasets):
    (handlers,) = _parsed(bundle, "train::handlers", tmp_path, **_small(bundle, datasets, log_interval=3))
    assert isinstance(handlers, TrainingHandlers)
    assert isinstance(handlers.monitors, TrainingMonitors)
    assert _stats_lines(handlers.monitors, 9) == 3  # iterations 3, 6, 9; never one line per iteration


@pytest.mark.parametrize("bundle", BUNDLES)
def test_training_and_validation_autocast_to_the_same_type(bundle: str, tmp_path: Path, datasets):
    for amp_dtype, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        trainer = _parsed(bundle, "train::trainer", tmp_path, **_small(bundle, datasets, amp_dtype=amp_dtype))
        evaluator = _parsed(bundle, "validate::evaluator", tmp_path, **_small(bundle, datasets, amp_dtype=amp_dtype))
        assert trainer.amp_kwargs == evaluator.amp_kwargs == {"dtype": dtype}


def test_every_filters_iterations():
    keep = every(4)
    assert [i for i in range(1, 13) if keep(None, i)] == [4, 8, 12]
    with pytest.raises(ValueError, match="log_interval"):
        every(0)


def test_autocast_kwargs_rejects_unknown_types():
    assert autocast_kwargs("bfloat16") == {"dtype": torch.bfloat16}
    with pytest.raises(ValueError, match="amp_dtype"):
        autocast_kwargs("float8")


def test_trainer_takes_monai_amp_kwargs():
    net = FeaturePerturbedNetwork(UNet(1, 2, features=(4, 8, 8, 16, 16)), FeaturePerturbation(0.5, spatial_dims=2))
    trainer = CrossMatchTrainer(
        device="cpu", max_epochs=1, train_data_loader=[{}], network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=CrossMatchLoss(MaskedDiceLoss()),
        amp=True, amp_kwargs=autocast_kwargs("bfloat16"),
    )
    assert trainer.amp_kwargs == {"dtype": torch.bfloat16}
    trainer.state.device = torch.device("cpu")
    assert trainer._scaler() is None  # no scaler off CUDA, nor with bfloat16
