"""Helpers for the bundle configs: the wiring every CrossMatch bundle shares, defined once.

A MONAI config cannot include another file, so the blocks that would otherwise be copied into each bundle's
``train.yaml`` (trainer, handlers, training loader, evaluator, checkpoints, the run sequence, the distributed set-up)
are built here and named by the configs (``crossmatch_ext.bundle.crossmatch_trainer``); each bundle keeps only the
config ids MONAI's bundle properties and MONAI Label address (``train::trainer``, ``train::handlers``,
``validate::evaluator``, ...). The modules, each importing only those listed before it:

- :mod:`~crossmatch_ext.bundle.config`: reading the config by id (:class:`ConfigIds`, :data:`CONFIG_READS`), the
  settings every bundle accepts without declaring them (:data:`SHARED_SETTINGS`: :data:`METHOD_SETTINGS` and
  :data:`TRAINER_SETTINGS`, read in config expressions with :func:`setting`) and their checks
  (:func:`check_setting`), mixed precision;
- :mod:`~crossmatch_ext.bundle.distributed`: device, rank and process group of a ``torchrun`` run;
- :mod:`~crossmatch_ext.bundle.monitors`: progress, console, TensorBoard, JSON-lines log, best weights;
- :mod:`~crossmatch_ext.bundle.evaluation`: the evaluators, their loader and handlers;
- :mod:`~crossmatch_ext.bundle.training`: the trainer, its loader, handlers and checkpoints, the ``run`` step;
- :mod:`~crossmatch_ext.bundle.checks`: what a training run checks before it starts (:func:`check_training_run`);
- :mod:`~crossmatch_ext.bundle.auto`: the self-configuring bundle's plan (:func:`config_plan`) and the parts it
  chooses (network, optimizer, loss, threshold, datasets, inferer).

Importing the package (every bundle config does: ``$import crossmatch_ext.bundle``) imports every module a config
reaches as ``crossmatch_ext.<module>``, and installs :func:`crossmatch_ext.errors.install_error_hook`, so that a
mistake in the user's input is printed as the last two lines of ``python -m monai.bundle run ...`` instead of a
chained traceback ending in MONAI's ``RuntimeError: Failed to evaluate ConfigExpression``.
"""

from __future__ import annotations

# every module a bundle config reaches as ``crossmatch_ext.<module>``: ``$import crossmatch_ext.bundle`` is the one
# package import a config needs
import crossmatch_ext.data
import crossmatch_ext.engines.checkpoints
import crossmatch_ext.inferers
import crossmatch_ext.losses
import crossmatch_ext.metrics
import crossmatch_ext.networks
import crossmatch_ext.planning
import crossmatch_ext.transforms  # noqa: F401
from crossmatch_ext.errors import install_error_hook

from .auto import (
    PLAN_CONFIG_KEYS,
    RECIPE_METHODS,
    config_plan,
    default_val_interval,
    evaluation_split,
    foreground_classes,
    label_metadata_classes,
    plan_checkpoint,
    plan_data_check,
    plan_dice_loss,
    plan_inferer,
    plan_network,
    plan_optimizer,
    plan_overrides,
    plan_threshold,
    plan_training_dataset,
    prepare_auto_run,
    saved_plan,
)
from .checks import check_training_run, effective_settings, prepare_evaluation, prepare_run, prepare_training
from .config import (
    CONFIG_READS,
    CPU_FLOAT32_REASON,
    METHOD_SETTINGS,
    SETTING_CHOICES,
    SETTING_KINDS,
    SHARED_SETTINGS,
    TRAINER_SETTINGS,
    ConfigIds,
    autocast_kwargs,
    check_setting,
    config_amp,
    config_amp_kwargs,
    config_amp_setting,
    config_num_classes,
    cpu_has_native_bf16,
    default_amp,
    describe_value,
    find_bundle_root,
    find_config_parser,
    find_config_workflow,
    setting,
)
from .distributed import (
    distributed_network,
    distributed_train_network,
    end_distributed,
    init_distributed,
    process_count,
    process_device,
    process_rank,
)
from .evaluation import (
    EvaluationHandlers,
    inference_evaluator,
    mean_dice,
    one_hot_postprocessing,
    validation_dataset,
    validation_evaluator,
    validation_loader,
)
from .monitors import TrainingMonitors, ValidationMonitors, every, validation_handlers
from .training import (
    TrainingHandlers,
    attach_precision_guard,
    checkpoint_handlers,
    config_device_views,
    config_loss,
    config_lr_scheduler,
    config_perturbation,
    config_train_network,
    crossmatch_trainer,
    describe_precision,
    run_training,
    train_loader,
)

__all__ = [
    # config
    "CONFIG_READS",
    "METHOD_SETTINGS",
    "SETTING_CHOICES",
    "SETTING_KINDS",
    "SHARED_SETTINGS",
    "TRAINER_SETTINGS",
    "ConfigIds",
    "autocast_kwargs",
    "check_setting",
    "config_amp_kwargs",
    "config_amp_setting",
    "config_num_classes",
    "CPU_FLOAT32_REASON",
    "cpu_has_native_bf16",
    "config_amp",
    "default_amp",
    "describe_value",
    "find_bundle_root",
    "find_config_parser",
    "find_config_workflow",
    "setting",
    # distributed
    "distributed_network",
    "distributed_train_network",
    "end_distributed",
    "init_distributed",
    "process_count",
    "process_device",
    "process_rank",
    # monitors
    "TrainingMonitors",
    "ValidationMonitors",
    "every",
    "validation_handlers",
    # evaluation
    "EvaluationHandlers",
    "inference_evaluator",
    "mean_dice",
    "one_hot_postprocessing",
    "validation_dataset",
    "validation_evaluator",
    "validation_loader",
    # training
    "TrainingHandlers",
    "attach_precision_guard",
    "checkpoint_handlers",
    "crossmatch_trainer",
    "config_device_views",
    "config_loss",
    "config_lr_scheduler",
    "config_perturbation",
    "config_train_network",
    "describe_precision",
    "run_training",
    "train_loader",
    # checks
    "check_training_run",
    "effective_settings",
    "prepare_evaluation",
    "prepare_run",
    "prepare_training",
    # auto (the self-configuring bundle)
    "PLAN_CONFIG_KEYS",
    "RECIPE_METHODS",
    "config_plan",
    "default_val_interval",
    "evaluation_split",
    "foreground_classes",
    "label_metadata_classes",
    "plan_checkpoint",
    "plan_data_check",
    "plan_dice_loss",
    "plan_inferer",
    "plan_network",
    "plan_optimizer",
    "plan_overrides",
    "plan_threshold",
    "plan_training_dataset",
    "prepare_auto_run",
    "saved_plan",
]

install_error_hook()
