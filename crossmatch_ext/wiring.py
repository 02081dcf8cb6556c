"""Deprecated: kept for old imports only; the shared bundle wiring lives in :mod:`crossmatch_ext.bundle`.

``crossmatch_ext.wiring`` names the same objects as ``crossmatch_ext.bundle``, re-exported from its modules; new code
and configs import ``crossmatch_ext.bundle``. Patching a name here changes nothing: patch it in the module of
:mod:`crossmatch_ext.bundle` that defines it.
"""

from __future__ import annotations

from crossmatch_ext.bundle.config import (
    CONFIG_READS,
    TRAINER_SETTINGS,
    ConfigIds,
    autocast_kwargs,
    find_config_parser,
)
from crossmatch_ext.bundle.distributed import (
    distributed_network,
    distributed_train_network,
    end_distributed,
    init_distributed,
    process_device,
    process_rank,
)
from crossmatch_ext.bundle.evaluation import (
    EvaluationHandlers,
    inference_evaluator,
    one_hot_postprocessing,
    validation_evaluator,
    validation_loader,
)
from crossmatch_ext.bundle.monitors import TrainingMonitors, every
from crossmatch_ext.bundle.training import TrainingHandlers, checkpoint_handlers, crossmatch_trainer, train_loader

__all__ = [
    "CONFIG_READS",
    "TRAINER_SETTINGS",
    "ConfigIds",
    "EvaluationHandlers",
    "TrainingHandlers",
    "TrainingMonitors",
    "autocast_kwargs",
    "checkpoint_handlers",
    "crossmatch_trainer",
    "distributed_network",
    "distributed_train_network",
    "end_distributed",
    "every",
    "find_config_parser",
    "inference_evaluator",
    "init_distributed",
    "one_hot_postprocessing",
    "process_device",
    "process_rank",
    "train_loader",
    "validation_evaluator",
    "validation_loader",
]
