"""The training run of a bundle, written once: trainer, training loader, handlers, checkpoints and the ``run`` step.

A MONAI 1.6 config cannot include another file, and MONAI Label reads a bundle's ``configs/train.yaml`` alone, so the
wiring that is the same in every bundle lives in :mod:`crossmatch_ext.bundle` instead of in each config. A bundle's
config keeps the MONAI ids that MONAI's bundle properties and MONAI Label address, and names a builder::

    train:
      handlers: [{_target_: crossmatch_ext.bundle.TrainingHandlers}]   # MONAI Label appends its own to this list
      trainer:
        _target_: crossmatch_ext.bundle.crossmatch_trainer
        max_epochs: 1                                                   # MONAI Label sets it
    validate:
      evaluator: {_target_: crossmatch_ext.bundle.validation_evaluator}

Each builder reads the parts it needs from the config being evaluated, by the ids every CrossMatch bundle defines
(listed in its docstring and in :data:`~crossmatch_ext.bundle.CONFIG_READS`: e.g. the trainer's network is
``train_network``, its loader ``train::dataloader``, its optimizer ``optimizer``); an argument written in the config
entry, or on the command line as ``--train#trainer#<argument> value``, takes precedence over the id. Settings a
bundle does not declare take the default given in :data:`~crossmatch_ext.bundle.TRAINER_SETTINGS`, and can still be
set on the command line (``--channels_last True``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.handlers import LrScheduleHandler, ValidationHandler
from monai.inferers import SimpleInferer

from crossmatch_ext.bundle.config import (
    CPU_FLOAT32_REASON,
    TRAINER_SETTINGS,
    ConfigIds,
    config_amp_kwargs,
    config_amp_setting,
    config_num_classes,
    default_amp,
)
from crossmatch_ext.bundle.distributed import distributed_train_network, process_rank
from crossmatch_ext.bundle.evaluation import mean_dice, one_hot_postprocessing
from crossmatch_ext.bundle.monitors import TrainingMonitors
from crossmatch_ext.data.studies import monailabel_studies
from crossmatch_ext.engines.builders import build_train_loader
from crossmatch_ext.engines.checkpoints import training_checkpoint_handlers
from crossmatch_ext.engines.handlers import HandlerGroup
from crossmatch_ext.engines.precision import PrecisionGuard
from crossmatch_ext.engines.trainer import CrossMatchTrainer
from crossmatch_ext.errors import SettingError
from crossmatch_ext.io import atomic_open
from crossmatch_ext.losses import CrossMatchLoss
from crossmatch_ext.networks import FeaturePerturbation, FeaturePerturbedNetwork
from crossmatch_ext.transforms.batched import BatchedUnlabeledViews, device_views_from_dataset

__all__ = [
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
]

logger = logging.getLogger(__name__)


class TrainingHandlers(HandlerGroup):
    """The training run's handlers, as one: the LR schedule every iteration, the in-training validation every
    ``val_interval`` iterations, and (in the first process only) the monitors of
    :class:`~crossmatch_ext.bundle.TrainingMonitors`: progress bar, console lines, TensorBoard, JSON-lines log.

    Config ids read when an argument is not given: ``lr_scheduler`` (else :func:`config_lr_scheduler`),
    ``validate::evaluator``, ``val_interval``, ``output_dir``, ``log_interval`` (50).

    Configs list it as ``train::handlers: [{_target_: crossmatch_ext.bundle.TrainingHandlers}]``: a list, so that
    MONAI Label can insert its checkpoint loader and ``--tracking mlflow`` append MONAI's MLflow handler.

    Args:
        lr_scheduler: the LR scheduler (stepped every iteration).
        validator: the in-training evaluator (None: no validation).
        val_interval: iterations between validations (0: none).
        output_dir: the run's output folder (TensorBoard, ``training_log.jsonl``).
        log_interval: iterations between console and JSON-lines log lines.
        parser: the config parser (default: the one evaluating the config).
    """

    def __init__(self, parser: ConfigParser | None = None, **given: Any) -> None:
        unknown = set(given) - {"lr_scheduler", "validator", "val_interval", "output_dir", "log_interval"}
        if unknown:
            raise SettingError(f"crossmatch_ext.bundle.TrainingHandlers got unknown arguments {sorted(unknown)}.")
        ids = ConfigIds(parser, "crossmatch_ext.bundle.TrainingHandlers")
        val_interval = int(given["val_interval"] if "val_interval" in given else ids.get("val_interval", 0))
        args = ids.fill(given, {
            "lr_scheduler": lambda: config_lr_scheduler(ids),
            # with validation off, the evaluator (and its data) is not built
            "validator": lambda: ids.get("validate::evaluator", None) if val_interval > 0 else None,
            "output_dir": lambda: ids.get("output_dir"),
            "log_interval": lambda: ids.setting("log_interval"),
        })
        super().__init__()
        if args["lr_scheduler"] is not None:
            self.handlers.append(LrScheduleHandler(args["lr_scheduler"], print_lr=False, epoch_level=False))
        if args["validator"] is not None and val_interval > 0:
            self.handlers.append(ValidationHandler(val_interval, args["validator"], epoch_level=False))
        self.monitors = None
        if process_rank() == 0:
            self.monitors = TrainingMonitors(args["output_dir"], args["log_interval"], validator=args["validator"])
            self.handlers.append(self.monitors)


def _setting_reader(ids: ConfigIds, name: str) -> Callable[[], Any]:
    return lambda: ids.get(name, TRAINER_SETTINGS[name][0])


def crossmatch_trainer(max_epochs: int = 1, parser: ConfigParser | None = None, **given: Any) -> CrossMatchTrainer:
    """The bundle's :class:`~crossmatch_ext.engines.CrossMatchTrainer`, its arguments read from the config.

    ========================  ==========================================================================
    argument                  config id (default when the config lacks it)
    ========================  ==========================================================================
    device                    ``device``
    max_iterations            ``num_iterations``; None under a MONAI Label server (``monailabel_studies``
                              set), which trains for the request's ``max_epochs``
    train_data_loader         ``train::dataloader``
    network                   ``train_network``, else :func:`config_train_network` (``network`` with its
                              feature perturbation)
    optimizer                 ``optimizer``
    loss_function             ``loss``, else :func:`config_loss` (``dice_loss``, ``loss_weighting``, ``eta``)
    confidence_threshold      ``threshold``
    supervised_only           ``mode`` == ``"supervised"`` (``mode`` default ``"crossmatch"``)
    teacher_mode              ``teacher_mode`` (``"train"``)
    channels_last,            the settings of :data:`TRAINER_SETTINGS`, which bundles need not declare
    teacher_batch,            (defaults: True, ``"labeled_and_mix"``, False, 10)
    merge_teacher_passes,
    train_metric_interval
    inferer                   ``train::inferer`` (MONAI's ``SimpleInferer``)
    postprocessing            ``train::postprocessing`` (argmax + one-hot over ``network_def::out_channels``)
    key_train_metric          ``train::key_metric`` (``train_dice``: MONAI's ``MeanDice`` without background)
    train_handlers            ``train::handlers`` (none)
    device_views              :func:`config_device_views` (setting ``device_views``, ``"auto"``)
    amp, amp_kwargs           ``amp``, else :func:`config_amp` (the device's default); ``amp_kwargs``, else the
                              autocast type ``amp_dtype`` (bfloat16). The precision is logged.
    precision_guard           with ``amp``: :func:`attach_precision_guard` (setting ``precision_guard``, True);
                              its verdicts are added to ``<ckpt_dir>/run_settings.json``
    ========================  ==========================================================================

    Args:
        max_epochs: epochs to run; with ``max_iterations`` set, the trainer derives it (MONAI Label sets this key).
        parser: the config parser (default: the one evaluating the config).
        given: any argument of ``CrossMatchTrainer``, taking precedence over the config id.
    """
    ids = ConfigIds(parser, "crossmatch_ext.bundle.crossmatch_trainer")
    given = dict(given)
    guard = bool(given.pop("precision_guard")) if "precision_guard" in given else bool(ids.setting("precision_guard"))
    ckpt_dir = ids.get("ckpt_dir", None)
    arguments = ids.fill(given, {
        "device": lambda: ids.get("device"),
        "max_iterations": lambda: None if ids.get("monailabel_studies", None, monailabel_studies)
        else ids.get("num_iterations"),
        "train_data_loader": lambda: ids.get("train::dataloader"),
        "network": lambda: ids.get("train_network", None, lambda: config_train_network(ids)),
        "optimizer": lambda: ids.get("optimizer"),
        "loss_function": lambda: ids.get("loss", None, lambda: config_loss(ids)),
        "confidence_threshold": lambda: ids.get("threshold"),
        "supervised_only": lambda: ids.get("mode", "crossmatch") == "supervised",
        "teacher_mode": lambda: ids.setting("teacher_mode"),
        **{name: _setting_reader(ids, name) for name in TRAINER_SETTINGS
           if name not in ("device_views", "precision_guard")},
        "device_views": lambda: config_device_views(ids),
        "inferer": lambda: ids.get("train::inferer", None, SimpleInferer),
        "postprocessing": lambda: ids.get("train::postprocessing", None, lambda: one_hot_postprocessing(
            config_num_classes(ids))),
        "key_train_metric": lambda: ids.get("train::key_metric", None, lambda: mean_dice("train_dice")),
        "train_handlers": lambda: ids.get("train::handlers", None),
        "amp": lambda: config_amp_setting(ids),
        "amp_kwargs": lambda: config_amp_kwargs(ids),
    })
    precision = describe_precision(arguments["amp"], arguments["amp_kwargs"], arguments["device"],
                                   bool(ids.get("deterministic", False)))
    logger.info(f"precision: {precision}")
    trainer = CrossMatchTrainer(max_epochs=max_epochs, **arguments)
    if arguments["amp"] and guard:
        attach_precision_guard(trainer, Path(ckpt_dir) / "run_settings.json" if ckpt_dir is not None else None)
    return trainer


def attach_precision_guard(
    trainer: CrossMatchTrainer, run_settings: str | os.PathLike | None = None
) -> PrecisionGuard:
    """Guard the convolutions of the network ``trainer`` trains against wrong autocast kernels
    (:class:`~crossmatch_ext.engines.PrecisionGuard`), and record the verdicts.

    Each convolution is checked at each new input shape on its first call under the trainer's autocast (CPU:
    ``amp_kwargs``' dtype, else bfloat16; CUDA: else float16); one that is wrong in that type runs in float32 for
    the whole run, with a warning naming it. The bundle's evaluators run the same network modules, so an evaluator's
    autocast (on CUDA) is guarded too; on a CPU they run in float32 and the guard does nothing there.

    After the first iteration (and again when the run completes, if more shapes were decided meanwhile) the guard's
    :meth:`~crossmatch_ext.engines.PrecisionGuard.record` is written into ``run_settings`` as the entry
    ``"precision_guard"`` (atomically, by the first process only, when the file exists: it is written by
    :func:`~crossmatch_ext.bundle.check_training_run`).

    Args:
        trainer: the trainer (its ``network`` may be wrapped in ``DistributedDataParallel``).
        run_settings: the run's ``run_settings.json`` (None: not recorded).

    Returns:
        The guard, also set as ``trainer.precision_guard``.
    """
    device_type = torch.device(trainer.state.device if trainer.state.device is not None else "cpu").type
    default = torch.bfloat16 if device_type == "cpu" else torch.float16
    dtype = trainer.amp_kwargs.get("dtype", default)
    guard = PrecisionGuard(trainer.network, device_type, dtype).attach()
    setattr(trainer, "precision_guard", guard)  # noqa: B010  # an attribute CrossMatchTrainer does not declare
    path = Path(run_settings) if run_settings is not None else None
    recorded: list[int] = []  # the count of shapes decided when last recorded

    def record(engine: Any) -> None:
        decided = guard.record()["shapes_decided"]
        if recorded and recorded[-1] == decided:
            return
        first = not recorded
        recorded.append(decided)
        if first:
            flagged = guard.float32_modules
            logger.info(
                f"precision guard: {decided} convolution input shapes decided ({guard.checks_run} checked in "
                f"{guard.check_seconds:.1f} s, the others from the cache); kept in float32: "
                f"{', '.join(flagged) if flagged else 'none'}"
            )
        if path is not None and process_rank() == 0:
            _record_in_run_settings(path, guard)

    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: None if recorded else record(engine))
    trainer.add_event_handler(Events.COMPLETED, record)
    return guard


def _record_in_run_settings(path: Path, guard: PrecisionGuard) -> None:
    """Add the guard's record to ``run_settings.json`` as ``"precision_guard"`` (nothing when the file is missing)."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as error:
        logger.warning(f"precision guard: {path} is unreadable ({error}); its verdicts are not recorded there")
        return
    if not isinstance(content, dict):
        logger.warning(f"precision guard: {path} does not hold a JSON object; its verdicts are not recorded there")
        return
    content["precision_guard"] = guard.record()
    with atomic_open(path, "w", encoding="utf-8") as stream:
        json.dump(content, stream, indent=2)
        stream.write("\n")


def _spatial_dims(network: torch.nn.Module) -> int:
    for module in network.modules():
        if isinstance(module, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
            return 3
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            return 2
    raise SettingError(
        f"the feature perturbation cannot tell whether {type(network).__name__} is a 2D or a 3D network (it has no "
        "convolution): define `perturbation` in the config (crossmatch_ext.networks.FeaturePerturbation with "
        "spatial_dims)."
    )


def config_perturbation(ids: ConfigIds) -> FeaturePerturbation:
    """The config's ``perturbation``, else the feature perturbation of the settings ``perturbation_gap`` (0.5),
    ``perturbation_type`` (dropout) and ``perturbation_levels`` (all), 2D or 3D as the convolutions of
    ``network``."""
    return ids.get("perturbation", None, lambda: FeaturePerturbation(
        gap=float(ids.setting("perturbation_gap")), kind=ids.setting("perturbation_type"),
        levels=ids.setting("perturbation_levels"), spatial_dims=_spatial_dims(ids.get("network"))))


def config_train_network(ids: ConfigIds) -> torch.nn.Module:
    """The network the trainer runs: ``network`` with :func:`config_perturbation` on ``device``; in a ``torchrun``
    process group wrapped in ``DistributedDataParallel`` (:func:`~crossmatch_ext.bundle.distributed_train_network`)."""
    import torch.distributed as dist

    network, perturbation, device = ids.get("network"), config_perturbation(ids), ids.get("device")
    if dist.is_available() and dist.is_initialized():
        return distributed_train_network(network, perturbation, device)
    return FeaturePerturbedNetwork(network, perturbation).to(device)


def config_loss(ids: ConfigIds) -> CrossMatchLoss:
    """The CrossMatch loss of the config's ``dice_loss``, ``loss_weighting`` and the setting ``eta`` (0.3)."""
    return CrossMatchLoss(dice=ids.get("dice_loss"), weighting=ids.get("loss_weighting"), eta=float(ids.setting("eta")))


def config_lr_scheduler(ids: ConfigIds) -> Any:
    """The config's ``lr_scheduler``, else the poly schedule of ``optimizer``: ``lr * (1 - t / total) ** lr_power``
    (0.9) over ``lr_decay_iterations`` steps (default: ``num_iterations``), stepped every iteration. One instance
    per optimizer, so the handlers and the resumable checkpoint hold the same schedule."""
    declared = ids.get("lr_scheduler", None)
    if declared is not None:
        return declared
    optimizer = ids.get("optimizer")
    schedule = getattr(optimizer, "_crossmatch_lr_scheduler", None)
    if schedule is None:
        total = ids.get("lr_decay_iterations", ids.get("num_iterations"))
        schedule = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=int(total),
                                                         power=float(ids.setting("lr_power")))
        optimizer._crossmatch_lr_scheduler = schedule
    return schedule


def config_device_views(ids: ConfigIds) -> BatchedUnlabeledViews | None:
    """The trainer's ``device_views``: the unlabeled strong views and CutMix boxes made batched on the training
    device from the weak views, translated from the ``StrongViewsd`` / ``RandCutMixBoxd`` of
    ``train::unlabeled_dataset`` (which then add nothing in the loader workers); None to make them in the workers.

    Setting ``device_views``: ``"auto"`` (default) on a CUDA device and not on a CPU, where the workers run beside
    the step anyway; ``True`` / ``False`` force it. Supervised runs have no unlabeled views.

    Raises:
        SettingError: ``device_views`` is True and the unlabeled transform has no batched counterpart (with
            ``"auto"`` the views stay in the workers, with a warning naming the transform).
    """
    setting = ids.get("device_views", TRAINER_SETTINGS["device_views"][0])
    wanted = torch.device(ids.get("device")).type != "cpu" if setting == "auto" else bool(setting)
    if not wanted or ids.get("mode", "crossmatch") == "supervised":
        return None
    dataset = ids.get("train::unlabeled_dataset", None)
    if dataset is None:
        return None
    try:
        views = device_views_from_dataset(dataset)
    except ValueError as error:
        if setting == "auto":
            logger.warning(f"unlabeled views made in the loader workers: {error}")
            return None
        raise SettingError(f"--device_views True: {error}") from error
    logger.info(f"unlabeled strong views made on {ids.get('device')}: {views!r}")
    return views


def describe_precision(
    amp: bool, amp_kwargs: dict[str, Any], device: torch.device | str, deterministic: bool = False
) -> str:
    """One line for the training log: the precision the step runs in on ``device``, and how to change it."""
    default, reason = default_amp(device, deterministic)
    kind = torch.device(device).type
    if not amp:
        if default:
            return "float32 (--amp False)"
        if reason == CPU_FLOAT32_REASON:
            return f"float32 ({reason}; --amp True for bf16 autocast)"
        return f"float32 (default on a {reason})"
    dtype = str(amp_kwargs.get("dtype", torch.bfloat16)).replace("torch.", "")
    if default:
        return f"{dtype} autocast on {kind} ({reason}; --amp False for float32)"
    default_text = reason if reason == CPU_FLOAT32_REASON else f"the default on a {reason}"
    return f"{dtype} autocast on {kind} (--amp True; float32 is {default_text}; --amp False for float32)"


def train_loader(parser: ConfigParser | None = None, **given: Any) -> Any:
    """The training loader (:func:`~crossmatch_ext.engines.build_train_loader`), its arguments read from the config.

    Config ids: ``train::dataset`` (labeled), ``train::unlabeled_dataset``, ``mode`` (``"crossmatch"``),
    ``batch_size``, ``num_workers`` (0), ``cutmix`` (True), ``seed`` (1337), ``mix_replacement`` (False).

    Args:
        parser: the config parser (default: the one evaluating the config).
        given: any argument of ``build_train_loader``, taking precedence over the config id.
    """
    ids = ConfigIds(parser, "crossmatch_ext.bundle.train_loader")
    arguments = ids.fill(given, {
        "labeled": lambda: ids.get("train::dataset"),
        "unlabeled": lambda: ids.get("train::unlabeled_dataset", None),
        "mode": lambda: ids.get("mode", "crossmatch"),
        "batch_size": lambda: ids.get("batch_size"),
        "num_workers": lambda: ids.get("num_workers", 0),
        "cutmix": lambda: ids.setting("cutmix"),
        "seed": lambda: ids.setting("seed"),
        "mix_replacement": lambda: ids.get("mix_replacement", False),
    })
    return build_train_loader(**arguments)


def checkpoint_handlers(parser: ConfigParser | None = None, **given: Any) -> list[Any]:
    """The training run's checkpoint handlers: final weights as ``<ckpt_dir>/model.pt`` and a resumable state every
    ``val_interval`` iterations (:func:`~crossmatch_ext.engines.checkpoints.training_checkpoint_handlers`).

    Config ids: ``ckpt_dir``, ``network`` (the bare network), ``optimizer``, ``lr_scheduler``, ``train::trainer``,
    ``val_interval`` (``save_interval``), ``resume`` (False), ``device`` (``map_location``).
    """
    ids = ConfigIds(parser, "crossmatch_ext.bundle.checkpoint_handlers")
    arguments = ids.fill(given, {
        "ckpt_dir": lambda: ids.get("ckpt_dir"),
        "network": lambda: ids.get("network"),
        "optimizer": lambda: ids.get("optimizer"),
        "lr_scheduler": lambda: config_lr_scheduler(ids),
        "trainer": lambda: ids.get("train::trainer"),
        "save_interval": lambda: ids.get("val_interval", 0),
        "resume": lambda: ids.setting("resume"),
        "map_location": lambda: ids.get("device", None),
    })
    return training_checkpoint_handlers(**arguments)


def run_training(trainer: Any = None, checkpoint_handlers: Sequence[Any] | None = None, parser: Any = None) -> None:
    """The ``run`` step of training: attach the checkpoint handlers (outside ``train::handlers`` as they refer to
    the trainer itself) and run the trainer.

    Args:
        trainer: the trainer (default: the config's ``train::trainer``).
        checkpoint_handlers: default: :func:`~crossmatch_ext.bundle.checkpoint_handlers` of the config.
        parser: the config parser (default: the one evaluating the config).
    """
    if trainer is None or checkpoint_handlers is None:
        ids = ConfigIds(parser, "crossmatch_ext.bundle.run_training")
        trainer = ids.get("train::trainer") if trainer is None else trainer
        if checkpoint_handlers is None:
            checkpoint_handlers = ids.get("train::checkpoint_handlers", None)
        if checkpoint_handlers is None:
            checkpoint_handlers = _build_checkpoint_handlers(ids.parser, trainer=trainer)
    for handler in checkpoint_handlers:
        handler.attach(trainer)
    trainer.run()


_build_checkpoint_handlers = checkpoint_handlers  # run_training's argument of the same name hides the builder
