"""The self-configuring bundle (``bundles/crossmatch_auto``): a plan from the data, and the parts it chooses.

``train.yaml`` of the bundle names one entry ``plan`` (:func:`config_plan`): the folder is checked, fingerprinted with
MONAI's ``DataAnalyzer`` and planned (:func:`crossmatch_ext.planning.plan_dataset`), ``plan.json`` and
``fingerprint.json`` are written into ``ckpt_dir`` beside the weights, and the plan is logged with the reason of
every choice. Every other key the plan decides reads it (``patch_size: "$@plan_values['patch_size']"``), so a key
given on the command line (``--patch_size [64,64,48]``) is taken by the plan as an override and the rest of the plan
is fitted around it, exactly as :func:`~crossmatch_ext.planning.make_plan`'s ``overrides``. Evaluation, inference
and export read the ``plan.json`` of the weights (:func:`saved_plan`).

The recipe of a plan (``la``: 3D V-Net, ``acdc``: 2D U-Net) also fixes what the two hand-tuned bundles fix by hand
(:data:`RECIPE_METHODS`): the loss weighting, the network's dropout, the confidence threshold and its schedule and
which classes the Dice loss averages.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from crossmatch_ext.data.studies import monailabel_studies
from crossmatch_ext.errors import SettingError
from crossmatch_ext.planning import (
    PLAN_FIELDS,
    Plan,
    describe_device,
    format_plan,
    make_plan,
    plan_dataset,
    read_plan,
    write_plan,
)
from crossmatch_ext.planning.fingerprint import Fingerprint

from .config import ConfigIds, config_amp_setting, find_config_parser, find_config_workflow

__all__ = [
    "PLAN_CONFIG_KEYS",
    "RECIPE_METHODS",
    "config_plan",
    "evaluation_split",
    "default_val_interval",
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

logger = logging.getLogger("crossmatch_ext.planning")

#: Plan field -> the config key that holds it, where the two differ (``network`` and ``optimizer`` are the built
#: objects in every bundle config). ``validation`` comes from the folder and is not a config key.
PLAN_CONFIG_KEYS: dict[str, str] = {
    **{name: name for name in PLAN_FIELDS if name != "validation"},
    "network": "network_type",
    "optimizer": "optimizer_type",
}

#: What each recipe fixes beyond the plan's fields, as the hand-tuned bundles' train.yaml set it.
RECIPE_METHODS: dict[str, dict[str, Any]] = {
    "la": {
        "loss_weighting": "strong_distillation",
        "network_dropout": 0.5,  # the V-Net's Dropout3d at the bottleneck and before the output layer
        "threshold_schedule": "official",  # tau0 with the authors' ln 2 ramp over the poly schedule's length
        "confidence_threshold": 0.75,
        "dice_background": False,  # the Dice loss averages the foreground classes (LA: class 1)
        "dice_smooth": 1e-5,
    },
    "acdc": {
        "loss_weighting": "light_distillation",
        "network_dropout": [0.05, 0.1, 0.2, 0.3, 0.5],  # element-wise dropout in the five encoder stages
        "threshold_schedule": "constant",
        "confidence_threshold": 0.95,
        "dice_background": True,  # the Dice loss averages every class, background included (ACDC)
        "dice_smooth": 1e-4,
    },
}

_PLAN_REFERENCE = "@plan"  # a config value that refers to the plan is the plan's, not an override
_SAVED_PLAN = "plan.json"


def _is_plan_default(raw: Any) -> bool:
    return isinstance(raw, str) and _PLAN_REFERENCE in raw


def plan_overrides(parser: ConfigParser) -> dict[str, Any]:
    """The plan fields a config sets itself: every key of :data:`PLAN_CONFIG_KEYS` whose value does not refer to
    the plan (a command-line value such as ``--patch_size [64,64,48]``), evaluated.

    Args:
        parser: the bundle's parser.

    Returns:
        ``{plan field: value}``.
    """
    overrides: dict[str, Any] = {}
    for field, key in PLAN_CONFIG_KEYS.items():
        if key in parser.get() and not _is_plan_default(parser.get(key)):
            overrides[field] = parser.get_parsed_content(key)
    return overrides


def _recipe_checked(plan: Plan) -> Plan:
    recipe = plan.recipe.value
    if recipe not in RECIPE_METHODS:
        raise SettingError(f"plan field 'recipe' must be one of {sorted(RECIPE_METHODS)}, got {recipe!r}.")
    return plan


def _same_as_saved(plan: Plan, overrides: Mapping[str, Any], where: Path, what: str) -> None:
    values = plan.values()
    differing = [f"{PLAN_CONFIG_KEYS[k]} {v!r} (saved: {values[k]!r})" for k, v in overrides.items() if values[k] != v]
    if differing:
        raise SettingError(
            f"{what} uses the plan saved in {where}, but the command line sets {', '.join(differing)}: drop those "
            "settings, or train a new model (another --ckpt_dir) with them."
        )


def config_plan(parser: ConfigParser | None = None) -> Plan:
    """The ``plan`` of the auto bundle's ``train.yaml``: plan the data of ``dataset_dir`` for the run.

    A new run checks and fingerprints the folder and plans, with the plan keys the config sets as overrides
    (:func:`plan_overrides`), for the config's ``device`` (and ``cpu_hours``, the CPU time budget); ``plan.json``
    and ``fingerprint.json`` go into ``ckpt_dir`` (with MONAI's ``datastats*.yaml``). With ``--resume True`` and a
    ``plan.json`` in ``ckpt_dir`` the run continues with that plan (the plan is not made again: the free GPU memory
    may differ), and a plan key set on the command line must agree with it. With ``plan_file`` (a ``plan.json``, or
    a folder holding one with its ``fingerprint.json``), that fingerprint is planned again with the overrides: no
    folder scan.

    Config ids read: ``dataset_dir``, ``ckpt_dir``, ``device``, ``cpu_hours`` (24), ``plan_file`` (None),
    ``resume``, ``validation_list``, ``num_workers`` (DataAnalyzer's workers) and the plan keys.

    Args:
        parser: the config parser (default: the one evaluating the config).

    Returns:
        The plan.

    Raises:
        InputError: for a problem in the data folder (every problem, one line each; nothing is written).
        SettingError: for a bad plan key, or keys that disagree with the plan of a resumed run.
    """
    ids = ConfigIds(parser, "crossmatch_ext.bundle.auto.config_plan")
    overrides = plan_overrides(ids.parser)
    ckpt_dir = Path(ids.get("ckpt_dir")).expanduser()
    saved = ckpt_dir / _SAVED_PLAN
    if bool(ids.setting("resume")) and saved.is_file():
        plan = read_plan(saved)
        _same_as_saved(plan, overrides, saved, "--resume True")
        logger.info(f"resuming with the plan of {saved}")
        return _recipe_checked(plan)
    device = ids.get("device")
    hours = float(ids.get("cpu_hours", 24.0))
    bf16 = bool(config_amp_setting(ids))  # a CPU step is costed in the run's precision
    plan_file = ids.get("plan_file", None)
    if plan_file:
        source = Path(plan_file).expanduser()
        folder = source if source.is_dir() else source.parent
        fingerprint_file = folder / "fingerprint.json"
        if not fingerprint_file.is_file():
            raise SettingError(f"config key 'plan_file': {fingerprint_file} not found; plan_file names a plan.json "
                               "written by a training run or by `run planning`, beside its fingerprint.json.")
        fp = Fingerprint.from_dict(json.loads(fingerprint_file.read_text()))
        plan = make_plan(fp, describe_device(device, hours=hours, bf16=bf16), overrides)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (ckpt_dir / "fingerprint.json").write_text(fp.to_json())
        write_plan(plan, saved)
        logger.info(f"plan from the fingerprint of {fingerprint_file}\n{format_plan(plan)}")
        return _recipe_checked(plan)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and torch.distributed.get_world_size() > 1:
        # one plan for every process of a torchrun run: the first makes it, the others read it
        if torch.distributed.get_rank() != 0:
            torch.distributed.barrier()
            return saved_plan(ckpt_dir, ids.parser)
        plan = _new_plan(ids, overrides, ckpt_dir, device, hours, bf16)
        torch.distributed.barrier()
        return plan
    return _new_plan(ids, overrides, ckpt_dir, device, hours, bf16)


def _new_plan(ids: ConfigIds, overrides: Mapping[str, Any], ckpt_dir: Path, device: Any, hours: float,
              bf16: bool) -> Plan:
    saved = ckpt_dir / _SAVED_PLAN
    validation_list = ids.setting("validation_list")
    budget = describe_device(device, hours=hours, bf16=bf16)
    plan = plan_dataset(ids.get("dataset_dir"), ckpt_dir, device=budget, overrides=overrides,
                        val_list=validation_list, hours=hours, workers=int(ids.get("num_workers", 2)))
    logger.info(f"plan saved to {saved}")
    if monailabel_studies() is not None:
        # MONAI Label names the served model's classes from the bundle's metadata.json (read at server start)
        label_metadata_classes(plan, Path(ids.get("bundle_root")) / "configs" / "metadata.json")
    return _recipe_checked(plan)


def label_metadata_classes(plan: Plan, metadata_file: str | Path) -> dict[str, str]:
    """Write the plan's classes into a bundle's ``metadata.json`` (the output's ``channel_def`` and
    ``num_channels``), where MONAI Label reads the label names of the model it serves.

    Done by a training run under a MONAI Label server, on the app's copy of the bundle: the names hold from the
    server's next start. A studies folder names no classes, so they are the label values found (``"class 1"``).

    Args:
        plan: the plan of the run.
        metadata_file: the bundle's ``configs/metadata.json``.

    Returns:
        The ``channel_def`` written (``{"0": "background", "1": ...}``).
    """
    path = Path(metadata_file)
    metadata = json.loads(path.read_text())
    channels = {"0": "background", **foreground_classes(plan)}
    output = next(iter(metadata["network_data_format"]["outputs"].values()))
    output["channel_def"] = channels
    output["num_channels"] = int(plan.out_channels.value)
    path.write_text(json.dumps(metadata, indent=4) + "\n")
    logger.info(f"classes of the plan written to {path} for MONAI Label: {channels}")
    return channels


def prepare_auto_run(bundle: str, distributed: bool = False, parser: ConfigParser | None = None) -> Any:
    """The ``initialize`` step of the auto bundle: :func:`~crossmatch_ext.bundle.prepare_training` (seeds, the
    plan, every check before training), or for ``python -m monai.bundle run planning`` the seeds and output folder
    only (the ``planning`` entry then makes, prints and saves the plan).

    Args:
        bundle: the bundle's name, recorded in ``run_settings.json``.
        distributed: join the ``torchrun`` process group first.
        parser: the config parser (default: the one evaluating the config).
    """
    from .checks import prepare_evaluation, prepare_training

    ids = ConfigIds(parser, "crossmatch_ext.bundle.auto.prepare_auto_run")
    workflow = find_config_workflow()
    if workflow is not None and workflow.run_id == "planning":
        return prepare_evaluation(ids.parser)
    return prepare_training(bundle, distributed=distributed, parser=ids.parser)


def saved_plan(ckpt_dir: str | Path, parser: ConfigParser | None = None) -> Plan:
    """The plan of trained weights: ``<ckpt_dir>/plan.json`` (evaluation, inference, export).

    Plan keys set on the command line must agree with it (the weights were trained for it).

    Args:
        ckpt_dir: the training run's folder.
        parser: the config parser (default: the one evaluating the config, if any).

    Raises:
        InputFileNotFoundError: when the folder has no ``plan.json``.
        SettingError: when a plan key on the command line disagrees with it.
    """
    path = Path(ckpt_dir).expanduser() / _SAVED_PLAN
    plan = read_plan(path)
    parser = parser if parser is not None else find_config_parser()
    if parser is not None:
        _same_as_saved(plan, plan_overrides(parser), path, "this run")
    return _recipe_checked(plan)


def foreground_classes(plan: Plan) -> dict[str, str]:
    """``{"1": "liver", ...}``: the classes of the plan's data, background left out (the evaluation's classes)."""
    classes = plan.data.get("classes") or {str(v): f"class {v}" for v in range(int(plan.out_channels.value))}
    return {str(k): str(v) for k, v in sorted(classes.items(), key=lambda kv: int(kv[0])) if int(k) != 0}


def evaluation_split(datalists: Mapping[str, Sequence[Any]], dataset_dir: str | Path,
                     parser: ConfigParser | None = None) -> str:
    """Where the evaluated cases come from, for the protocol file; they must exist.

    Raises:
        InputValueError: when there is no case to evaluate (no ``validation`` section and no validation list).
    """
    from crossmatch_ext.errors import InputValueError

    ids = ConfigIds(parser, "crossmatch_ext.bundle.auto.evaluation_split")
    name = ids.setting("validation_list")
    if not datalists.get("validation"):
        raise InputValueError(
            f"nothing to evaluate in {dataset_dir}: its JSON has no 'validation' section and there is no list "
            f"{name!r} beside it; write the IDs of labeled cases to evaluate, one per line, into a file there and "
            "give it with --validation_list NAME."
        )
    return str(name)


def plan_checkpoint(ckpt_dir: str | Path, plan: Plan) -> str:
    """The weights a plan's run serves: ``model_best.pt`` (best validation Dice) when the plan had validation cases
    and the file exists, else ``model.pt`` (the final weights, the papers' protocol without validation cases)."""
    folder = Path(ckpt_dir).expanduser()
    best = folder / "model_best.pt"
    if plan.validation.value and best.is_file():
        return str(best)
    return str(folder / "model.pt")


def plan_data_check(plan: Plan) -> dict[str, Any]:
    """What the folder check of the plan found, in the form of a training run's data check (``run_settings.json``).

    The plan's check (:func:`crossmatch_ext.planning.check_decathlon_folder`) read every image and label before
    training, so the bundles' own per-file check is not repeated.
    """
    data = plan.data
    cases = sum(int(data.get(k) or 0) for k in ("labeled", "unlabeled", "validation"))
    return {"cases": cases, "padded": [], "checked_by": "the plan's folder check (crossmatch_ext.planning)"}


# ----------------------------------------------------------------------------------------- the parts of a plan
def plan_network(network_type: str, in_channels: int, out_channels: int,
                 dropout: float | Sequence[float] | None = None) -> torch.nn.Module:
    """The plan's network: the V-Net of the LA bundle or the U-Net of the ACDC bundle.

    Args:
        network_type: ``"VNet"`` or ``"UNet"`` (plan field ``network``).
        in_channels: image channels.
        out_channels: classes, background included.
        dropout: V-Net: the dropout rate (default 0.5); U-Net: one rate per encoder stage (default the ACDC
            recipe's). A value of the other network's kind (the network set apart from its recipe) or None gives
            the network's default.

    Raises:
        SettingError: for another network.
    """
    from crossmatch_ext.networks import UNet, VNet

    if network_type == "VNet":
        # a per-stage list is the U-Net's (the network was set apart from its recipe): the V-Net's own default then
        rate = RECIPE_METHODS["la"]["network_dropout"] if dropout is None or isinstance(dropout, Sequence) else dropout
        return VNet(in_channels=int(in_channels), out_channels=int(out_channels), n_filters=16, normalization="batch",
                    dropout_rate=float(rate))
    if network_type == "UNet":
        rates = dropout if isinstance(dropout, Sequence) else RECIPE_METHODS["acdc"]["network_dropout"]
        return UNet(in_channels=int(in_channels), out_channels=int(out_channels), features=(16, 32, 64, 128, 256),
                    dropout=tuple(float(r) for r in rates))
    raise SettingError(f"config key 'network_type' (plan field 'network') must be 'VNet' or 'UNet', got "
                       f"{network_type!r}.")


def plan_optimizer(optimizer_type: str, params: Iterable[torch.nn.Parameter], learning_rate: float,
                   weight_decay: float, momentum: float | None = None, nesterov: bool = False) -> torch.optim.Optimizer:
    """The plan's optimizer: ``AdamW`` (LA recipe) or ``SGD`` (ACDC recipe, momentum and Nesterov as planned).

    Raises:
        SettingError: for another optimizer.
    """
    if optimizer_type == "AdamW":
        return torch.optim.AdamW(params, lr=float(learning_rate), weight_decay=float(weight_decay))
    if optimizer_type == "SGD":
        return torch.optim.SGD(params, lr=float(learning_rate), momentum=float(momentum or 0.0),
                               weight_decay=float(weight_decay), nesterov=bool(nesterov))
    raise SettingError(f"config key 'optimizer_type' (plan field 'optimizer') must be 'AdamW' or 'SGD', got "
                       f"{optimizer_type!r}.")


def plan_dice_loss(recipe: str, out_channels: int) -> torch.nn.Module:
    """The recipe's supervised Dice: foreground classes (LA recipe) or every class (ACDC recipe)."""
    from crossmatch_ext.losses import MaskedDiceLoss

    method = RECIPE_METHODS[recipe]
    classes = None if method["dice_background"] else list(range(1, int(out_channels)))
    return MaskedDiceLoss(classes=classes, smooth=float(method["dice_smooth"]))


def plan_threshold(schedule: str, confidence_threshold: float, lr_decay_iterations: int) -> Any:
    """The confidence threshold: ``constant``, or ``official`` (the authors' LA ramp from ``confidence_threshold``,
    over the poly schedule's length: 17000 steps at the LA recipe's 14000 iterations, as the LA bundle).

    Raises:
        SettingError: for another schedule.
    """
    from crossmatch_ext.engines import ConstantThreshold, OfficialRampThreshold

    if schedule == "constant":
        return ConstantThreshold(float(confidence_threshold))
    if schedule == "official":
        return OfficialRampThreshold(initial=float(confidence_threshold), ramp_length=int(lr_decay_iterations))
    raise SettingError(f"config key 'threshold_schedule' must be 'official' or 'constant', got {schedule!r}.")


def plan_training_dataset(spatial_dims: int, data: Sequence[Mapping[str, Any]], load: Sequence[Any],
                          transform: Sequence[Any], slice_axis: int | None = None, cache_rate: float = 1.0,
                          num_workers: int = 0) -> Any:
    """A training dataset of the plan: whole volumes through ``load`` then ``transform`` (3D, MONAI's
    ``CacheDataset``, which caches up to the first random transform), or one item per slice along ``slice_axis``
    (2D: each volume loaded and cached once, ``transform`` applied to each slice).

    Args:
        spatial_dims: the plan's ``spatial_dims``.
        data: the items.
        load: the deterministic loading transforms.
        transform: the random transforms (3D: of a volume, 2D: of a slice).
        slice_axis: the plan's ``slice_axis`` (2D; None: the last axis).
        cache_rate: fraction of volumes kept in memory.
        num_workers: threads that fill the cache.
    """
    from monai.data import CacheDataset
    from monai.transforms import Compose

    from crossmatch_ext.data import VolumeSliceDataset

    if int(spatial_dims) == 3:
        return CacheDataset(data=list(data), transform=Compose([*load, *transform]), cache_rate=cache_rate,
                            num_workers=num_workers)
    return VolumeSliceDataset(data=list(data), load_transform=Compose(list(load)), transform=Compose(list(transform)),
                              slice_axis=-1 if slice_axis is None else int(slice_axis), cache_rate=cache_rate,
                              cache_num_workers=num_workers)


def plan_inferer(spatial_dims: int, patch_size: Sequence[int], slice_axis: int | None = None,
                 sw_batch_size: int = 4, overlap: float = 0.5) -> Any:
    """The sliding-window inferer of a plan: MONAI's ``SlidingWindowInferer`` with 3D patches, or its
    ``SliceInferer`` (each slice along ``slice_axis``, windows of the 2D patch), Gaussian-weighted, overlapping by
    ``overlap``."""
    from monai.inferers import SliceInferer, SlidingWindowInferer

    roi = [int(p) for p in patch_size]
    if int(spatial_dims) == 3:
        return SlidingWindowInferer(roi_size=roi, sw_batch_size=int(sw_batch_size), overlap=float(overlap),
                                    mode="gaussian")
    axis = 2 if slice_axis is None else int(slice_axis)
    if not 0 <= axis <= 2:
        raise SettingError(f"plan field 'slice_axis' must be 0, 1 or 2 for 3D images, got {slice_axis!r}.")
    return SliceInferer(spatial_dim=axis, roi_size=roi, sw_batch_size=int(sw_batch_size), overlap=float(overlap),
                        mode="gaussian", progress=False)


def default_val_interval(num_iterations: int) -> int:
    """Iterations between validations and resumable checkpoints: a tenth of the run, at most 1000."""
    return max(1, min(1000, math.ceil(int(num_iterations) / 10)))
