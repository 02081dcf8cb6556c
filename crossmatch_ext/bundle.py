"""Helpers for the bundle configs: the training wiring every CrossMatch bundle shares, defined once.

A MONAI config cannot include another file, so the blocks that would otherwise be copied into each bundle's
``train.yaml`` (autocast type, log handlers, validation handlers, the run sequence) are built here and called from
the configs; each bundle keeps only the config ids MONAI's bundle properties and MONAI Label address
(``train::trainer``, ``train::handlers``, ``validate::evaluator``, ...).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import monai
import torch
from ignite.engine import Engine
from monai.handlers import CheckpointSaver, StatsHandler, TensorBoardStatsHandler

# every module a bundle config reaches as ``crossmatch_ext.<module>``: ``$import crossmatch_ext.bundle`` is the one
# package import a config needs
import crossmatch_ext.data
import crossmatch_ext.engines.checkpoints
import crossmatch_ext.inferers
import crossmatch_ext.losses
import crossmatch_ext.metrics
import crossmatch_ext.networks
import crossmatch_ext.transforms  # noqa: F401
from crossmatch_ext.engines import TrainingLog, TrainingProgressBar, loss_terms

__all__ = [
    "TrainingMonitors",
    "ValidationMonitors",
    "autocast_kwargs",
    "every",
    "find_bundle_root",
    "prepare_run",
    "run_training",
    "validation_handlers",
]

_AUTOCAST_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def find_bundle_root(name: str) -> str:
    """The directory of bundle ``name`` for a config that does not set ``bundle_root``.

    Looks, in order, at the working directory (when it is the bundle itself), at ``bundles/<name>`` under the
    working directory (commands run from the repository root), and at the bundle next to this package in a source
    checkout. Falls back to the working directory, the model-zoo convention.

    Args:
        name: the bundle's directory name, e.g. ``"crossmatch_la"``.

    Returns:
        The bundle directory as a string.
    """
    cwd = Path.cwd()
    candidates = [cwd, cwd / "bundles" / name, Path(__file__).resolve().parent.parent / "bundles" / name]
    for candidate in candidates:
        if (candidate / "configs" / "metadata.json").is_file() and (candidate.name == name or candidate != cwd):
            return os.fspath(candidate)
    return os.fspath(cwd)


def autocast_kwargs(amp_dtype: str) -> dict[str, Any]:
    """MONAI's ``amp_kwargs`` (the arguments of ``torch.autocast``) for the config key ``amp_dtype``.

    The trainer and the validation evaluator take the same dict, so both autocast to the same type.

    Args:
        amp_dtype: ``"bfloat16"`` or ``"float16"`` (float16 training adds a gradient scaler).

    Returns:
        ``{"dtype": torch.<amp_dtype>}``.

    Raises:
        ValueError: for another type name.
    """
    if amp_dtype not in _AUTOCAST_DTYPES:
        raise ValueError(f"amp_dtype must be one of {sorted(_AUTOCAST_DTYPES)}, got {amp_dtype!r}.")
    return {"dtype": _AUTOCAST_DTYPES[amp_dtype]}


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


class TrainingMonitors:
    """The training run's monitors as one handler: a progress bar, the loss terms in the console every
    ``log_interval`` iterations (``StatsHandler``), at every iteration in TensorBoard (``<output_dir>/tensorboard``)
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
        self.handlers = [
            TrainingProgressBar(output_transform=output_transform, refresh_every=1),
            StatsHandler(tag_name="train_loss", epoch_log=False, iteration_log=every(log_interval),
                         output_transform=output_transform),
            TensorBoardStatsHandler(log_dir=os.path.join(os.fspath(output_dir), "tensorboard"), tag_name="train",
                                    output_transform=output_transform),
            TrainingLog(os.path.join(os.fspath(output_dir), "training_log.jsonl"), output_transform,
                        interval=log_interval, validator=validator),
        ]

    def attach(self, engine: Engine) -> None:
        for handler in self.handlers:
            handler.attach(engine)


def validation_handlers(output_dir: str | os.PathLike, ckpt_dir: str | os.PathLike, network: torch.nn.Module) -> list:
    """The in-training validation's handlers: the metrics in the console and TensorBoard, and the best weights by
    the key metric as ``<ckpt_dir>/model_best.pt``."""
    return [
        StatsHandler(iteration_log=False),
        TensorBoardStatsHandler(log_dir=os.path.join(os.fspath(output_dir), "tensorboard"), iteration_log=False),
        CheckpointSaver(save_dir=os.fspath(ckpt_dir), save_dict={"model": network}, save_key_metric=True,
                        key_metric_filename="model_best.pt"),
    ]


class ValidationMonitors:
    """The in-training validation's handlers (:func:`validation_handlers`) as one handler.

    Configs list it as ``validate::handlers: [{_target_: crossmatch_ext.bundle.ValidationMonitors, ...}]``: a list,
    so that tools which add handlers to a bundle's list (MONAI's ``--tracking mlflow``) can append theirs.

    Args:
        output_dir: the bundle's output folder (TensorBoard logs).
        ckpt_dir: where ``model_best.pt`` is written.
        network: the network whose weights are saved.
    """

    def __init__(self, output_dir: str | os.PathLike, ckpt_dir: str | os.PathLike, network: torch.nn.Module) -> None:
        self.handlers = validation_handlers(output_dir, ckpt_dir, network)

    def attach(self, engine: Engine) -> None:
        for handler in self.handlers:
            handler.attach(engine)


def prepare_run(seed: int, output_dir: str | os.PathLike) -> None:
    """The ``initialize`` step of a training or evaluation run: seeds and the output folder."""
    monai.utils.set_determinism(seed=int(seed))
    os.makedirs(output_dir, exist_ok=True)


def run_training(trainer: Any, checkpoint_handlers: Sequence[Any]) -> None:
    """The ``run`` step of training: attach the checkpoint handlers (outside ``train::handlers`` as they refer to
    the trainer itself) and run the trainer."""
    for handler in checkpoint_handlers:
        handler.attach(trainer)
    trainer.run()
