"""The wiring every CrossMatch bundle shares, written once: builders that take their parts from the config by id.

A MONAI 1.6 config cannot include another file, and MONAI Label reads a bundle's ``configs/train.yaml`` alone, so the
wiring that is the same in every bundle (how the trainer, its handlers, the training loader, the in-training
evaluator, the checkpoints and the distributed set-up are put together) lives here instead of in each config. A
bundle's config keeps the MONAI ids that MONAI's bundle properties and MONAI Label address, and names a builder::

    train:
      handlers: [{_target_: crossmatch_ext.bundle.TrainingHandlers}]   # MONAI Label appends its own to this list
      trainer:
        _target_: crossmatch_ext.bundle.crossmatch_trainer
        max_epochs: 1                                                   # MONAI Label sets it
    validate:
      evaluator: {_target_: crossmatch_ext.bundle.validation_evaluator}

Each builder reads the parts it needs from the config being evaluated, by the ids every CrossMatch bundle defines
(listed in its docstring: e.g. the trainer's network is ``train_network``, its loader ``train::dataloader``, its
optimizer ``optimizer``); an argument written in the config entry, or on the command line as
``--train#trainer#<argument> value``, takes precedence over the id. Settings a bundle does not declare take the
default given in the table, and can still be set on the command line (``--channels_last True``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.engines import SupervisedEvaluator
from monai.handlers import (
    CheckpointLoader,
    LrScheduleHandler,
    MeanDice,
    StatsHandler,
    TensorBoardStatsHandler,
    ValidationHandler,
    from_engine,
)
from monai.inferers import SimpleInferer
from monai.transforms import AsDiscreted, Compose

from crossmatch_ext.engines.builders import build_train_loader, loss_terms
from crossmatch_ext.engines.checkpoints import training_checkpoint_handlers
from crossmatch_ext.engines.handlers import HandlerGroup, TrainingLog, TrainingProgressBar
from crossmatch_ext.engines.trainer import CrossMatchTrainer
from crossmatch_ext.errors import SettingError
from crossmatch_ext.networks import FeaturePerturbation, FeaturePerturbedNetwork

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
    "inference_evaluator",
    "init_distributed",
    "one_hot_postprocessing",
    "process_device",
    "process_rank",
    "train_loader",
    "validation_evaluator",
    "validation_loader",
]

logger = logging.getLogger(__name__)

_REQUIRED = object()

#: Settings of the CrossMatch step that every bundle accepts without declaring them (``--channels_last True``):
#: name -> (default, the values documented in benchmarks/README.md). The exact speed-ups are on, the
#: result-changing ones off.
TRAINER_SETTINGS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "channels_last": (True, (True, False)),  # channels-last batches: same results up to summation order
    "teacher_batch": ("labeled_and_mix", ("labeled_and_mix", "mix")),  # mix: P2 on the mix batch alone (opt-in)
    "merge_teacher_passes": (False, (False, True)),  # True: the mix image's pseudo-label from P2 (opt-in)
    "train_metric_interval": (10, (10, 1)),  # the train Dice on every n-th iteration only
}

#: The config ids each builder reads when the config entry does not give the argument (the dependency of a builder
#: entry on the config, for tools and tests that follow references; a test checks it against what the builders read).
CONFIG_READS: dict[str, tuple[str, ...]] = {
    "crossmatch_ext.bundle.crossmatch_trainer": (
        "device", "monailabel_studies", "num_iterations", "train::dataloader", "train_network", "optimizer", "loss",
        "threshold", "mode", "teacher_mode", "teacher_batch", "merge_teacher_passes", "channels_last",
        "train_metric_interval", "train::inferer", "train::postprocessing", "network_def::out_channels",
        "train::key_metric", "train::handlers", "amp", "amp_kwargs", "amp_dtype",
    ),
    "crossmatch_ext.bundle.train_loader": (
        "train::dataset", "train::unlabeled_dataset", "mode", "batch_size", "num_workers", "cutmix", "seed",
        "mix_replacement",
    ),
    "crossmatch_ext.bundle.TrainingHandlers": (
        "lr_scheduler", "validate::evaluator", "val_interval", "output_dir", "log_interval",
    ),
    "crossmatch_ext.bundle.validation_evaluator": (
        "device", "validate::dataloader", "network", "validate::inferer", "validate::postprocessing",
        "network_def::out_channels", "validate::key_metric", "validate::additional_metrics", "validate::handlers",
        "amp", "amp_kwargs", "amp_dtype",
    ),
    "crossmatch_ext.bundle.inference_evaluator": (
        "device", "dataloader", "network", "inferer", "postprocessing", "network_def::out_channels", "key_metric",
        "additional_metrics", "handlers", "amp", "amp_kwargs", "amp_dtype",
    ),
    "crossmatch_ext.bundle.EvaluationHandlers": ("network", "device"),
}


def find_config_parser() -> ConfigParser | None:
    """The MONAI ``ConfigParser`` evaluating the current config expression or component (searched up the call stack).

    Returns:
        The parser, or None when not called while a config is being evaluated.
    """
    import sys

    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, ConfigParser):
            return candidate
        parser = getattr(candidate, "parser", None)
        if isinstance(parser, ConfigParser):
            return parser
        frame = frame.f_back  # type: ignore[assignment]
    return None


class ConfigIds:
    """Read parts of the config being evaluated by their ids (``"train::dataloader"``), each resolved once.

    Reads go through the parser's reference resolver, so an object is the same instance that ``@id`` gives
    elsewhere in the config (the optimizer holds the parameters of the very network the trainer runs).

    Args:
        parser: the bundle's parser; default: the one on the call stack (a builder called from a config).
        builder: the builder's name, for the messages.

    Raises:
        RuntimeError: no parser was given and none is evaluating a config.
    """

    def __init__(self, parser: ConfigParser | None = None, builder: str = "a crossmatch_ext builder") -> None:
        parser = parser if parser is not None else find_config_parser()
        if parser is None:
            raise RuntimeError(f"{builder} reads its parts from the bundle config: call it from a config, or pass it.")
        self.parser = parser
        self.builder = builder

    def __contains__(self, id: str) -> bool:
        return id in self.parser

    def get(self, id: str, default: Any = _REQUIRED, make: Callable[[], Any] | None = None) -> Any:
        """The parsed content of ``id``; ``default`` when the config has no such id; ``make()`` when the content (or
        the default) is None.

        Raises:
            SettingError: the id is missing and has no default.
        """
        value = self._get(id, default)
        return make() if value is None and make is not None else value

    def _get(self, id: str, default: Any) -> Any:
        if id not in self.parser:
            if default is _REQUIRED:
                raise SettingError(
                    f"{self.builder} needs the config key {id!r}, which this config does not define: add it, or give "
                    "the builder the object as an argument in the config."
                )
            return default
        resolver = self.parser.ref_resolver
        if not resolver.is_resolved() and not resolver.items:  # called before the config was parsed
            return self.parser.get_parsed_content(id)
        return resolver.get_resolved_content(id=resolver.normalize_id(id))

    def fill(self, given: Mapping[str, Any], table: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
        """``given`` completed with ``table``'s entries (each a function reading ids) for the arguments not given."""
        arguments = {name: make() for name, make in table.items() if name not in given}
        arguments.update(given)
        return arguments


def process_rank() -> int:
    """This process's rank in the default process group, 0 when training in one process."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def one_hot_postprocessing(num_classes: int) -> Compose:
    """``pred`` (logits) to one-hot by argmax and ``label`` to one-hot: what MONAI's Dice handlers take."""
    return Compose([AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=int(num_classes))])


def _dice(name: str) -> dict[str, MeanDice]:
    return {name: MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))}


_AUTOCAST_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


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


class TrainingMonitors(HandlerGroup):
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
        super().__init__([
            TrainingProgressBar(output_transform=output_transform, refresh_every=1),
            StatsHandler(tag_name="train_loss", epoch_log=False, iteration_log=every(log_interval),
                         output_transform=output_transform),
            TensorBoardStatsHandler(log_dir=os.path.join(os.fspath(output_dir), "tensorboard"), tag_name="train",
                                    output_transform=output_transform),
            TrainingLog(os.path.join(os.fspath(output_dir), "training_log.jsonl"), output_transform,
                        interval=log_interval, validator=validator),
        ])


def _num_classes(ids: ConfigIds) -> int:
    return int(ids.get("network_def::out_channels"))


def _amp_kwargs(ids: ConfigIds) -> dict[str, Any]:
    return ids.get("amp_kwargs", None, lambda: autocast_kwargs(ids.get("amp_dtype", "bfloat16")))


class TrainingHandlers(HandlerGroup):
    """The training run's handlers, as one: the LR schedule every iteration, the in-training validation every
    ``val_interval`` iterations, and (in the first process only) the monitors of
    :class:`~crossmatch_ext.bundle.TrainingMonitors`: progress bar, console lines, TensorBoard, JSON-lines log.

    Config ids read when an argument is not given: ``lr_scheduler``, ``validate::evaluator``, ``val_interval``,
    ``output_dir``, ``log_interval``.

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
            "lr_scheduler": lambda: ids.get("lr_scheduler", None),
            # with validation off, the evaluator (and its data) is not built
            "validator": lambda: ids.get("validate::evaluator", None) if val_interval > 0 else None,
            "output_dir": lambda: ids.get("output_dir"),
            "log_interval": lambda: ids.get("log_interval", 50),
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
    network                   ``train_network`` (the network with its feature perturbation)
    optimizer                 ``optimizer``
    loss_function             ``loss``
    confidence_threshold      ``threshold``
    supervised_only           ``mode`` == ``"supervised"`` (``mode`` default ``"crossmatch"``)
    teacher_mode              ``teacher_mode`` (``"train"``)
    channels_last,            the settings of :data:`TRAINER_SETTINGS`, which bundles need not declare
    teacher_batch,            (defaults: False, ``"labeled_and_mix"``, False, 10)
    merge_teacher_passes,
    train_metric_interval
    inferer                   ``train::inferer`` (MONAI's ``SimpleInferer``)
    postprocessing            ``train::postprocessing`` (argmax + one-hot over ``network_def::out_channels``)
    key_train_metric          ``train::key_metric`` (``train_dice``: MONAI's ``MeanDice`` without background)
    train_handlers            ``train::handlers`` (none)
    amp, amp_kwargs           ``amp`` (False); ``amp_kwargs``, else the autocast type ``amp_dtype`` (bfloat16)
    ========================  ==========================================================================

    Args:
        max_epochs: epochs to run; with ``max_iterations`` set, the trainer derives it (MONAI Label sets this key).
        parser: the config parser (default: the one evaluating the config).
        given: any argument of ``CrossMatchTrainer``, taking precedence over the config id.
    """
    ids = ConfigIds(parser, "crossmatch_ext.bundle.crossmatch_trainer")
    arguments = ids.fill(given, {
        "device": lambda: ids.get("device"),
        "max_iterations": lambda: None if ids.get("monailabel_studies", None) else ids.get("num_iterations"),
        "train_data_loader": lambda: ids.get("train::dataloader"),
        "network": lambda: ids.get("train_network"),
        "optimizer": lambda: ids.get("optimizer"),
        "loss_function": lambda: ids.get("loss"),
        "confidence_threshold": lambda: ids.get("threshold"),
        "supervised_only": lambda: ids.get("mode", "crossmatch") == "supervised",
        "teacher_mode": lambda: ids.get("teacher_mode", "train"),
        **{name: _setting_reader(ids, name) for name in TRAINER_SETTINGS},
        "inferer": lambda: ids.get("train::inferer", None, SimpleInferer),
        "postprocessing": lambda: ids.get("train::postprocessing", None, lambda: one_hot_postprocessing(
            _num_classes(ids))),
        "key_train_metric": lambda: ids.get("train::key_metric", None, lambda: _dice("train_dice")),
        "train_handlers": lambda: ids.get("train::handlers", None),
        "amp": lambda: ids.get("amp", False),
        "amp_kwargs": lambda: _amp_kwargs(ids),
    })
    return CrossMatchTrainer(max_epochs=max_epochs, **arguments)


def train_loader(parser: ConfigParser | None = None, **given: Any) -> Any:
    """The training loader (:func:`~crossmatch_ext.engines.build_train_loader`), its arguments read from the config.

    Config ids: ``train::dataset`` (labeled), ``train::unlabeled_dataset``, ``mode`` (``"crossmatch"``),
    ``batch_size``, ``num_workers`` (0), ``cutmix`` (True), ``seed`` (0), ``mix_replacement`` (False).

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
        "cutmix": lambda: ids.get("cutmix", True),
        "seed": lambda: ids.get("seed", 0),
        "mix_replacement": lambda: ids.get("mix_replacement", False),
    })
    return build_train_loader(**arguments)


def validation_loader(dataset: Any, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """One volume per batch, in order; under ``torch.distributed`` each process evaluates its own share of the
    volumes (MONAI's ``DistributedSampler`` without padding, so no volume counts twice)."""
    import torch.distributed as dist
    from monai.data import DataLoader, DistributedSampler

    sampler = None
    if dist.is_available() and dist.is_initialized():
        sampler = DistributedSampler(dataset, even_divisible=False, shuffle=False)
    return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=int(num_workers), sampler=sampler)


def _evaluator(ids: ConfigIds, section: str, key_metric: str | None, given: Mapping[str, Any]) -> SupervisedEvaluator:
    def id_(name: str) -> str:
        return f"{section}::{name}" if section else name

    def metric() -> Any:
        return ids.get(id_("key_metric"), None, lambda: _dice(key_metric) if key_metric else None)

    arguments = ids.fill(given, {
        "device": lambda: ids.get("device"),
        "val_data_loader": lambda: ids.get(id_("dataloader")),
        "network": lambda: ids.get("network"),
        "inferer": lambda: ids.get(id_("inferer")),
        "postprocessing": lambda: ids.get(id_("postprocessing"), None, lambda: one_hot_postprocessing(
            _num_classes(ids))),
        "key_val_metric": metric,
        "additional_metrics": lambda: ids.get(id_("additional_metrics"), None),
        "val_handlers": lambda: ids.get(id_("handlers"), None) if process_rank() == 0 else None,
        "amp": lambda: ids.get("amp", False),
        "amp_kwargs": lambda: _amp_kwargs(ids),
    })
    return SupervisedEvaluator(**arguments)


def validation_evaluator(parser: ConfigParser | None = None, **given: Any) -> SupervisedEvaluator:
    """The in-training (and evaluation) ``SupervisedEvaluator``, its arguments read from the config.

    Config ids: ``device``; ``val_data_loader``: ``validate::dataloader``; ``network``: ``network``;
    ``inferer``: ``validate::inferer``; ``postprocessing``: ``validate::postprocessing`` (default: argmax + one-hot
    over ``network_def::out_channels``); ``key_val_metric``: ``validate::key_metric`` (default ``val_mean_dice``,
    MONAI's ``MeanDice`` without background); ``additional_metrics``: ``validate::additional_metrics`` (none);
    ``val_handlers``: ``validate::handlers``, in the first process only; ``amp`` (False) and ``amp_kwargs`` as the
    trainer.

    Args:
        parser: the config parser (default: the one evaluating the config).
        given: any argument of MONAI's ``SupervisedEvaluator``, taking precedence over the config id.
    """
    return _evaluator(ConfigIds(parser, "crossmatch_ext.bundle.validation_evaluator"), "validate", "val_mean_dice",
                      given)


def inference_evaluator(parser: ConfigParser | None = None, **given: Any) -> SupervisedEvaluator:
    """The ``SupervisedEvaluator`` of an inference config (no labels, no metric), its arguments read from the
    config: ``device``, ``dataloader``, ``network``, ``inferer``, ``postprocessing`` (which writes the label maps),
    ``handlers``, ``amp`` (False) and ``amp_kwargs``, all top-level ids.

    Args:
        parser: the config parser (default: the one evaluating the config).
        given: any argument of MONAI's ``SupervisedEvaluator``, taking precedence over the config id.
    """
    return _evaluator(ConfigIds(parser, "crossmatch_ext.bundle.inference_evaluator"), "", None, given)


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
        "lr_scheduler": lambda: ids.get("lr_scheduler"),
        "trainer": lambda: ids.get("train::trainer"),
        "save_interval": lambda: ids.get("val_interval", 0),
        "resume": lambda: ids.get("resume", False),
        "map_location": lambda: ids.get("device", None),
    })
    return training_checkpoint_handlers(**arguments)


class EvaluationHandlers(HandlerGroup):
    """The first handlers of an evaluation or inference run, as one: load the weights of ``checkpoint`` into the
    network before the first volume, and print the metrics at the end.

    Args:
        checkpoint: the weights (a ``state_dict`` file, e.g. ``models/model.pt``).
        network: default: the config's ``network``.
        device: ``map_location`` of the loader; default: the config's ``device``.
        parser: the config parser (default: the one evaluating the config).
    """

    def __init__(self, checkpoint: str | os.PathLike, parser: ConfigParser | None = None, **given: Any) -> None:
        ids = ConfigIds(parser, "crossmatch_ext.bundle.EvaluationHandlers")
        args = ids.fill(given, {"network": lambda: ids.get("network"), "device": lambda: ids.get("device", None)})
        super().__init__([
            CheckpointLoader(load_path=os.fspath(checkpoint), load_dict={"model": args["network"]},
                             map_location=args["device"]),
            StatsHandler(iteration_log=False),
        ])


# ------------------------------------------------------------------------------------------------ distributed
def process_device() -> torch.device:
    """This process's device under ``torchrun``: ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_distributed(device: torch.device | str) -> None:
    """Join the process group started by ``torchrun`` (NCCL on CUDA, Gloo on the CPU) and select this process's
    GPU. Does nothing when the group exists already."""
    import torch.distributed as dist

    device = torch.device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)


def end_distributed() -> None:
    """Wait for every process, then leave the process group (the ``finalize`` step of a ``torchrun`` run)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def distributed_network(network: torch.nn.Module, device: torch.device | str, sync_batchnorm: bool = True
                        ) -> torch.nn.Module:
    """The bare network on this process's device, its batch norms synchronised over the processes when
    ``sync_batchnorm`` is set and CUDA is available (PyTorch's ``SyncBatchNorm`` needs CUDA)."""
    device = torch.device(device)
    if sync_batchnorm and device.type == "cuda":
        network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
    return network.to(device)


def distributed_train_network(network: torch.nn.Module, perturbation: FeaturePerturbation,
                              device: torch.device | str) -> torch.nn.Module:
    """The training network (network + feature perturbation) wrapped in ``DistributedDataParallel`` (buffers not
    broadcast: each process keeps its batch-norm statistics, as the authors' multi-GPU runs)."""
    device = torch.device(device)
    module = FeaturePerturbedNetwork(network, perturbation).to(device)
    device_ids = [device] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)
