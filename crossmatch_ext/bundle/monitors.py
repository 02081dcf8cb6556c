"""What a run shows and keeps as it goes: progress, console lines, TensorBoard, the JSON-lines log, best weights."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine
from monai.handlers import StatsHandler, TensorBoardStatsHandler

from crossmatch_ext.engines.builders import loss_terms
from crossmatch_ext.engines.checkpoints import AtomicCheckpointSaver
from crossmatch_ext.engines.handlers import HandlerGroup, TrainingLog, TrainingProgressBar

__all__ = [
    "TrainingMonitors",
    "ValidationMonitors",
    "every",
    "validation_handlers",
]


def every(interval: int) -> Callable[[Engine, int], bool]:
    """An Ignite event filter true every ``interval`` iterations (``StatsHandler(iteration_log=...)``).

    ``StatsHandler`` reads a plain int as a bool (log every iteration), hence this filter.

    Raises:
        ValueError: for an interval below 1.
    """
    interval = int(interval)
    if interval < 1:
        raise ValueError(f"log_interval must be >= 1, got {interval}.")
    return lambda engine, iteration: iteration % interval == 0


class TrainingMonitors(HandlerGroup):
    """The training run's monitors as one handler: a progress bar, the loss terms in the console every
    ``log_interval`` iterations (``StatsHandler``), in TensorBoard (``<output_dir>/tensorboard``)
    and every ``log_interval`` iterations in ``<output_dir>/training_log.jsonl`` with the validations' metrics
    (:class:`~crossmatch_ext.engines.TrainingLog`, for curves and scripts).

    Args:
        output_dir: the bundle's output folder.
        log_interval: iterations between console lines.
        output_transform: ``engine.state.output`` to ``{name: float}`` (default: the CrossMatch loss terms).
        validator: the in-training evaluator, whose metrics join the JSON-lines log (optional).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        log_interval: int,
        output_transform: Callable[[Any], dict[str, float]] = loss_terms,
        validator: Engine | None = None,
    ) -> None:
        super().__init__([
            # reading a loss value synchronises with a GPU: the bar reads them every min(log_interval, 10)
            # iterations, the logs every log_interval, never on every step
            TrainingProgressBar(output_transform=output_transform, refresh_every=min(int(log_interval), 10)),
            StatsHandler(tag_name="train_loss", epoch_log=False, iteration_log=every(log_interval),
                         output_transform=output_transform),
            TensorBoardStatsHandler(log_dir=os.path.join(os.fspath(output_dir), "tensorboard"), tag_name="train",
                                    iteration_log=every(log_interval), output_transform=output_transform),
            TrainingLog(os.path.join(os.fspath(output_dir), "training_log.jsonl"), output_transform,
                        interval=log_interval, validator=validator),
        ])


def validation_handlers(output_dir: str | os.PathLike, ckpt_dir: str | os.PathLike, network: torch.nn.Module) -> list:
    """The in-training validation's handlers: the metrics in the console and TensorBoard, and the best weights by
    the key metric as ``<ckpt_dir>/model_best.pt`` (replaced atomically)."""
    return [
        StatsHandler(iteration_log=False),
        TensorBoardStatsHandler(log_dir=os.path.join(os.fspath(output_dir), "tensorboard"), iteration_log=False),
        AtomicCheckpointSaver(save_dir=os.fspath(ckpt_dir), save_dict={"model": network}, save_key_metric=True,
                              key_metric_filename="model_best.pt"),
    ]


class ValidationMonitors(HandlerGroup):
    """The in-training validation's handlers (:func:`validation_handlers`) as one handler.

    Configs list it as ``validate::handlers: [{_target_: crossmatch_ext.bundle.ValidationMonitors, ...}]``: a list,
    so that tools which add handlers to a bundle's list (MONAI's ``--tracking mlflow``) can append theirs.

    Args:
        output_dir: the bundle's output folder (TensorBoard logs).
        ckpt_dir: where ``model_best.pt`` is written.
        network: the network whose weights are saved.
    """

    def __init__(self, output_dir: str | os.PathLike, ckpt_dir: str | os.PathLike, network: torch.nn.Module) -> None:
        super().__init__(validation_handlers(output_dir, ckpt_dir, network))
