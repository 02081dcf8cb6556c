"""The evaluators of a bundle (in-training validation, evaluation, inference), their loader, handlers and
post-processing, each builder reading its parts from the config by id (:class:`~crossmatch_ext.bundle.ConfigIds`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedEvaluator
from monai.handlers import CheckpointLoader, MeanDice, StatsHandler, from_engine
from monai.transforms import AsDiscreted, Compose

from crossmatch_ext.bundle.config import ConfigIds, config_amp_kwargs, config_amp_setting, config_num_classes
from crossmatch_ext.bundle.distributed import process_rank
from crossmatch_ext.engines.handlers import HandlerGroup

__all__ = [
    "EvaluationHandlers",
    "inference_evaluator",
    "mean_dice",
    "one_hot_postprocessing",
    "validation_evaluator",
    "validation_dataset",
    "validation_loader",
]


def one_hot_postprocessing(num_classes: int) -> Compose:
    """``pred`` (logits) to one-hot by argmax and ``label`` to one-hot: what MONAI's Dice handlers take."""
    return Compose([AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=int(num_classes))])


def mean_dice(name: str) -> dict[str, MeanDice]:
    """``{name: MeanDice}``: MONAI's Dice handler without the background, on ``pred`` and ``label``."""
    return {name: MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))}


def validation_dataset(data: Any = None, parser: ConfigParser | None = None, **given: Any) -> Any:
    """The validation volumes, each loaded once and kept (MONAI's ``CacheDataset``), its arguments read from the
    config: ``data`` (the config's ``datalists['validation']``; MONAI Label sets ``validate#dataset#data``),
    ``transform``: ``validate::preprocessing``, else the deterministic loading ``train::load``; ``cache_rate``
    (1.0) and ``num_workers`` (0), which also load the volumes in parallel.

    Args:
        data: the validation items (``{"image": ..., "label": ...}``).
        parser: the config parser (default: the one evaluating the config).
        given: any other argument of ``CacheDataset`` (``progress``), taking precedence over the config id.
    """
    from monai.data import CacheDataset

    ids = ConfigIds(parser, "crossmatch_ext.bundle.validation_dataset")
    arguments = ids.fill(given, {
        "transform": lambda: ids.get("validate::preprocessing", None, lambda: Compose(ids.get("train::load"))),
        "cache_rate": lambda: ids.get("cache_rate", 1.0),
        "num_workers": lambda: ids.get("num_workers", 0),
    })
    if data is None:
        data = ids.get("datalists")["validation"]
    return CacheDataset(data=data, **arguments)


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
        return ids.get(id_("key_metric"), None, lambda: mean_dice(key_metric) if key_metric else None)

    arguments = ids.fill(given, {
        "device": lambda: ids.get("device"),
        "val_data_loader": lambda: ids.get(id_("dataloader"), None, lambda: validation_loader(
            ids.get(id_("dataset")), ids.get("num_workers", 0))),
        "network": lambda: ids.get("network"),
        "inferer": lambda: ids.get(id_("inferer")),
        "postprocessing": lambda: ids.get(id_("postprocessing"), None, lambda: one_hot_postprocessing(
            config_num_classes(ids))),
        "key_val_metric": metric,
        "additional_metrics": lambda: ids.get(id_("additional_metrics"), None),
        "val_handlers": lambda: ids.get(id_("handlers"), None) if process_rank() == 0 else None,
        "amp": lambda: config_amp_setting(ids),
        "amp_kwargs": lambda: config_amp_kwargs(ids),
    })
    if torch.device(arguments["device"]).type != "cuda":
        arguments["amp"] = False  # MONAI's evaluator autocasts on CUDA only (on a CPU it warns and runs float32)
    return SupervisedEvaluator(**arguments)


def validation_evaluator(parser: ConfigParser | None = None, **given: Any) -> SupervisedEvaluator:
    """The in-training (and evaluation) ``SupervisedEvaluator``, its arguments read from the config.

    Config ids: ``device``; ``val_data_loader``: ``validate::dataloader``, else :func:`validation_loader` of
    ``validate::dataset`` with ``num_workers``; ``network``: ``network``;
    ``inferer``: ``validate::inferer``; ``postprocessing``: ``validate::postprocessing`` (default: argmax + one-hot
    over ``network_def::out_channels``); ``key_val_metric``: ``validate::key_metric`` (default ``val_mean_dice``,
    MONAI's ``MeanDice`` without background); ``additional_metrics``: ``validate::additional_metrics`` (none);
    ``val_handlers``: ``validate::handlers``, in the first process only; ``amp`` (else the device's default,
    :func:`~crossmatch_ext.bundle.config_amp`) and ``amp_kwargs`` as the trainer; on a CPU validation runs in
    float32 (MONAI's evaluator autocasts on CUDA only).

    Args:
        parser: the config parser (default: the one evaluating the config).
        given: any argument of MONAI's ``SupervisedEvaluator``, taking precedence over the config id.
    """
    return _evaluator(ConfigIds(parser, "crossmatch_ext.bundle.validation_evaluator"), "validate", "val_mean_dice",
                      given)


def inference_evaluator(parser: ConfigParser | None = None, **given: Any) -> SupervisedEvaluator:
    """The ``SupervisedEvaluator`` of an inference config (no labels, no metric), its arguments read from the
    config: ``device``, ``dataloader``, ``network``, ``inferer``, ``postprocessing`` (which writes the label maps),
    ``handlers``, ``amp`` (else the device's default) and ``amp_kwargs``, all top-level ids.

    Args:
        parser: the config parser (default: the one evaluating the config).
        given: any argument of MONAI's ``SupervisedEvaluator``, taking precedence over the config id.
    """
    return _evaluator(ConfigIds(parser, "crossmatch_ext.bundle.inference_evaluator"), "", None, given)


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
