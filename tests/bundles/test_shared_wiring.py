"""The training wiring both bundles share: one definition, the same behaviour in each bundle's ``train.yaml``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.handlers import StatsHandler

from crossmatch_ext.bundle import TrainingMonitors, autocast_kwargs, every
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


@pytest.mark.parametrize("bundle", BUNDLES)
def test_console_logs_every_log_interval_iterations(bundle: str, tmp_path: Path):
    # the in-training evaluator (which needs data) is not part of what is checked here
    handlers = _parsed(
        bundle, "train::handlers::2", tmp_path, log_interval=3, **{"train::handlers::2::validator": None}
    )
    assert isinstance(handlers, TrainingMonitors)
    assert _stats_lines(handlers, 9) == 3  # iterations 3, 6, 9; never one line per iteration


@pytest.mark.parametrize("bundle", BUNDLES)
def test_training_and_validation_autocast_to_the_same_type(bundle: str, tmp_path: Path):
    for amp_dtype, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        trainer = _parsed(bundle, "train::trainer::amp_kwargs", tmp_path, amp_dtype=amp_dtype)
        evaluator = _parsed(bundle, "validate::evaluator::amp_kwargs", tmp_path, amp_dtype=amp_dtype)
        assert trainer == evaluator == {"dtype": dtype}


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
