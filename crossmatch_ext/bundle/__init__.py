"""Helpers for the bundle configs: the training wiring every CrossMatch bundle shares, defined once.

A MONAI config cannot include another file, so the blocks that would otherwise be copied into each bundle's
``train.yaml`` (trainer, handlers, training loader, evaluator, checkpoints, the run sequence, the distributed set-up)
are built here (:mod:`crossmatch_ext.wiring`, re-exported) and named by the configs; each bundle keeps only the
config ids MONAI's bundle properties and MONAI Label address (``train::trainer``, ``train::handlers``,
``validate::evaluator``, ...).

It also holds the checks a training run makes before it starts (:func:`check_training_run`), and importing it (every
bundle config does) installs :func:`crossmatch_ext.errors.install_error_hook`, so that a mistake in the user's input
is printed as the last two lines of ``python -m monai.bundle run ...`` instead of a chained traceback ending in
MONAI's ``RuntimeError: Failed to evaluate ConfigExpression``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import monai
import torch
from monai.handlers import StatsHandler, TensorBoardStatsHandler

# every module a bundle config reaches as ``crossmatch_ext.<module>``: ``$import crossmatch_ext.bundle`` is the one
# package import a config needs
import crossmatch_ext.data
import crossmatch_ext.engines.checkpoints
import crossmatch_ext.inferers
import crossmatch_ext.losses
import crossmatch_ext.metrics
import crossmatch_ext.networks
import crossmatch_ext.transforms  # noqa: F401
from crossmatch_ext.engines import HandlerGroup
from crossmatch_ext.engines.checkpoints import AtomicCheckpointSaver
from crossmatch_ext.errors import InputError, SettingError, install_error_hook
from crossmatch_ext.wiring import (
    TRAINER_SETTINGS,
    ConfigIds,
    EvaluationHandlers,
    TrainingHandlers,
    TrainingMonitors,
    autocast_kwargs,
    checkpoint_handlers,
    crossmatch_trainer,
    distributed_network,
    distributed_train_network,
    end_distributed,
    every,
    find_config_parser,
    inference_evaluator,
    init_distributed,
    one_hot_postprocessing,
    process_device,
    process_rank,
    train_loader,
    validation_evaluator,
    validation_loader,
)
from crossmatch_ext.wiring import checkpoint_handlers as build_checkpoint_handlers

__all__ = [
    "EvaluationHandlers",
    "SETTING_CHOICES",
    "SETTING_KINDS",
    "TRAINER_SETTINGS",
    "ConfigIds",
    "TrainingHandlers",
    "TrainingMonitors",
    "ValidationMonitors",
    "autocast_kwargs",
    "check_setting",
    "check_training_run",
    "checkpoint_handlers",
    "crossmatch_trainer",
    "default_amp",
    "distributed_network",
    "distributed_train_network",
    "effective_settings",
    "end_distributed",
    "every",
    "find_bundle_root",
    "find_config_parser",
    "inference_evaluator",
    "init_distributed",
    "one_hot_postprocessing",
    "prepare_run",
    "prepare_training",
    "process_device",
    "process_rank",
    "run_training",
    "train_loader",
    "validation_evaluator",
    "validation_handlers",
    "validation_loader",
]

logger = logging.getLogger(__name__)

install_error_hook()


def find_bundle_root(name: str) -> str:
    """The directory of bundle ``name`` for a config that does not set ``bundle_root``.

    Looks, in order, at the folder of the config files being run (``<bundle>/configs/*.yaml`` under MONAI's
    ``ConfigWorkflow``, i.e. ``python -m monai.bundle run``, wherever the bundle lies), at the working directory
    (when it is the bundle itself), at ``bundles/<name>`` under the working directory (commands run from the
    repository root), and at the bundle next to this package in a source checkout. Falls back to the working
    directory, the model-zoo convention.

    Args:
        name: the bundle's directory name, e.g. ``"crossmatch_la"``.

    Returns:
        The bundle directory as a string.
    """
    cwd = Path.cwd()
    # this file is <checkout>/crossmatch_ext/bundle/__init__.py
    candidates = [cwd, cwd / "bundles" / name, Path(__file__).resolve().parents[2] / "bundles" / name]
    from monai.bundle import ConfigWorkflow

    frame: Any = sys._getframe(1)
    while frame is not None:  # the ConfigWorkflow running the config knows where its files are
        workflow = frame.f_locals.get("self")
        if isinstance(workflow, ConfigWorkflow):
            config_root = Path(workflow.config_root_path)
            if config_root.name == "configs":
                candidates.insert(0, config_root.resolve().parent)
            break
        frame = frame.f_back
    for candidate in candidates:
        if (candidate / "configs" / "metadata.json").is_file() and (candidate.name == name or candidate != cwd):
            return os.fspath(candidate)
    return os.fspath(cwd)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX tiles), as torch reports it."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def default_amp(device: torch.device | str) -> tuple[bool, str]:
    """The default of the ``amp`` setting on ``device``, and why.

    bfloat16 autocast on CUDA and on a CPU with native bfloat16; float32 elsewhere. ``--amp False`` always gives
    float32.

    Args:
        device: the device the run uses.

    Returns:
        ``(amp, reason)``: whether to autocast, and a short reason for the training log.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return True, "CUDA device"
    if kind == "cpu" and cpu_has_native_bf16():
        return True, "CPU with native bf16"
    return False, f"{kind} device without native bf16"


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


def prepare_run(seed: int, output_dir: str | os.PathLike) -> None:
    """The ``initialize`` step of a training or evaluation run: seeds and the output folder.

    Raises:
        SettingError: ``seed`` is not an integer.
        InputError: ``output_dir`` cannot be created or written.
    """
    check_setting("seed", seed)
    monai.utils.set_determinism(seed=int(seed))
    _writable_dir("output_dir", output_dir)


def prepare_training(bundle: str, distributed: bool = False, parser: Any = None) -> dict[str, Any]:
    """The ``initialize`` step of a training run: with ``distributed``, join the ``torchrun`` process group on the
    config's ``device`` (:func:`~crossmatch_ext.wiring.init_distributed`); then :func:`prepare_run` with the config's
    ``seed`` (plus the process's rank, so that each process draws its own augmentations) and ``output_dir``, and
    :func:`check_training_run`.

    Args:
        bundle: the bundle's name, recorded in ``run_settings.json``.
        distributed: join the process group first (``multi_gpu_train.yaml``).
        parser: the config parser (default: the one evaluating the config).

    Returns:
        The effective settings.
    """
    ids = ConfigIds(parser, "crossmatch_ext.bundle.prepare_training")
    if distributed:
        init_distributed(ids.get("device"))
    seed = ids.get("seed", 0)
    check_setting("seed", seed)
    prepare_run(int(seed) + process_rank(), ids.get("output_dir"))
    return check_training_run(bundle, ids.parser)


def run_training(trainer: Any = None, checkpoint_handlers: Sequence[Any] | None = None, parser: Any = None) -> None:
    """The ``run`` step of training: attach the checkpoint handlers (outside ``train::handlers`` as they refer to
    the trainer itself) and run the trainer.

    Args:
        trainer: the trainer (default: the config's ``train::trainer``).
        checkpoint_handlers: default: :func:`~crossmatch_ext.wiring.checkpoint_handlers` of the config.
        parser: the config parser (default: the one evaluating the config).
    """
    if trainer is None or checkpoint_handlers is None:
        ids = ConfigIds(parser, "crossmatch_ext.bundle.run_training")
        trainer = ids.get("train::trainer") if trainer is None else trainer
        if checkpoint_handlers is None:
            checkpoint_handlers = ids.get("train::checkpoint_handlers", None)
        if checkpoint_handlers is None:
            checkpoint_handlers = build_checkpoint_handlers(ids.parser, trainer=trainer)
    for handler in checkpoint_handlers:
        handler.attach(trainer)
    trainer.run()


# ---------------------------------------------------------------------------------------------------------- checks
_BOOL = "True or False"
_INT = "an integer"
_NUMBER = "a number"
_INTS = "a list of integers"
_NUMBERS = "a list of numbers"
_TEXT = "a text value"

#: Expected kind of each user-facing setting of the bundles' configs (keys absent from a config are skipped).
SETTING_KINDS: dict[str, str] = {
    "amp": _BOOL, "cutmix": _BOOL, "resume": _BOOL, "legacy_cutmix_axes": _BOOL, "allow_overlap": _BOOL,
    "nesterov": _BOOL, "normalize_intensity": _BOOL, "largest_component": _BOOL, "mix_replacement": _BOOL,
    "channels_last": _BOOL, "merge_teacher_passes": _BOOL,
    "seed": _INT, "num_labeled": _INT, "num_labeled_patients": _INT, "batch_size": _INT, "num_iterations": _INT,
    "val_interval": _INT, "log_interval": _INT, "num_workers": _INT, "lr_decay_iterations": _INT,
    "sw_batch_size": _INT, "unlabeled_bits": _INT, "train_metric_interval": _INT,
    "learning_rate": _NUMBER, "weight_decay": _NUMBER, "momentum": _NUMBER, "eta": _NUMBER, "lr_power": _NUMBER,
    "perturbation_gap": _NUMBER, "confidence_threshold": _NUMBER, "cutmix_prob": _NUMBER, "cache_rate": _NUMBER,
    "rotation_degrees": _NUMBER, "downsample": _NUMBER,
    "patch_size": _INTS, "eval_strides": _INTS, "image_size": _INTS, "h5_spacing": _NUMBERS,
    "dataset_dir": _TEXT, "mode": _TEXT, "teacher_mode": _TEXT, "data_layout": _TEXT, "eval_protocol": _TEXT,
    "threshold_schedule": _TEXT, "loss_weighting": _TEXT, "perturbation_type": _TEXT, "perturbation_levels": _TEXT,
    "amp_dtype": _TEXT, "training_resize": _TEXT, "strong_blur": _TEXT, "strong_gamma": _TEXT, "teacher_batch": _TEXT,
    "dataset_module": _TEXT,
}

#: Settings with a fixed set of values.
SETTING_CHOICES: dict[str, tuple[str, ...]] = {
    "mode": ("crossmatch", "supervised"),
    "teacher_mode": ("train", "eval"),
    "amp_dtype": ("bfloat16", "float16"),
    "training_resize": ("zoom", "interpolate"),
    "strong_blur": ("isotropic", "per_axis"),
    "strong_gamma": ("signed", "rescaled"),
    "teacher_batch": ("labeled_and_mix", "mix"),
}


def _kind_ok(value: Any, kind: str) -> bool:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_number = is_int or isinstance(value, float)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _INT:
        return is_int
    if kind == _NUMBER:
        return is_number
    if kind in (_INTS, _NUMBERS):
        items = list(value) if isinstance(value, (list, tuple)) else None
        if not items:
            return False
        check = _INT if kind == _INTS else _NUMBER
        return all(_kind_ok(v, check) for v in items)
    if kind == _TEXT:
        return isinstance(value, (str, os.PathLike))
    return True


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"the text {value!r}"
    return f"{value!r} ({type(value).__name__})"


def check_setting(key: str, value: Any, kind: str | None = None) -> None:
    """Check one setting against :data:`SETTING_KINDS` / :data:`SETTING_CHOICES`.

    Args:
        key: the config key.
        value: its evaluated value.
        kind: expected kind (default: from :data:`SETTING_KINDS`; unknown keys pass).

    Raises:
        SettingError: the value has the wrong type or is not an allowed choice; the message names the key, the
            expected kind and what was found, and how to write it on the command line.
    """
    kind = kind or SETTING_KINDS.get(key)
    if kind is None:
        return
    if not _kind_ok(value, kind):
        hint = ""
        if kind == _BOOL and isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "0",
                                                                                  "1", "on", "off"):
            word = "True" if value.strip().lower() in ("true", "yes", "1", "on") else "False"
            hint = (f"; MONAI's command line passes lowercase true/false through as text, which counts as true: "
                    f"write --{key} {word}")
        elif kind in (_INTS, _NUMBERS):
            hint = f", e.g. --{key} [112,112,80] (no spaces)"
        elif kind == _INT:
            hint = f", e.g. --{key} 8"
        elif kind == _NUMBER:
            hint = f", e.g. --{key} 0.01"
        raise SettingError(f"config key {key!r} must be {kind}, got {_describe(value)}{hint}.")
    choices = SETTING_CHOICES.get(key)
    if choices is not None and value not in choices:
        raise SettingError(f"config key {key!r} must be one of {list(choices)}, got {_describe(value)}.")
    if kind in (_INTS,) and any(v <= 0 for v in value):
        raise SettingError(f"config key {key!r} must hold positive integers, got {value!r}.")
    if key in ("batch_size", "num_iterations", "num_labeled", "num_labeled_patients") and value < 1:
        raise SettingError(f"config key {key!r} must be at least 1, got {value!r}.")
    if key in ("val_interval", "num_workers", "log_interval", "seed") and value < 0:
        raise SettingError(f"config key {key!r} must be >= 0, got {value!r}.")


def _json_value(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


def _writable_dir(key: str, folder: str | os.PathLike) -> Path:
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_", delete=True) as probe:
            probe.write(b"0")
            probe.flush()
    except OSError as e:
        raise InputError(
            f"{key} {path} is not writable ({type(e).__name__}: {e.strerror or e}): choose a folder you can write "
            f"with --{key} DIR."
        ) from e
    return path


def _plain(value: Any) -> bool:
    """A literal config value (not an expression, a reference or a macro)."""
    if isinstance(value, str):
        return not value.startswith(("$", "@", "%"))
    return value is None or isinstance(value, (bool, int, float))


def effective_settings(parser: Any) -> dict[str, Any]:
    """The effective value of every top-level setting of a parsed config (after command-line overrides).

    Values of :data:`SETTING_KINDS` keys and of the path keys are evaluated; other plain values are reported as
    they are; components (``_target_``) and expressions of other keys are left out.

    Args:
        parser: a MONAI ``ConfigParser``.

    Returns:
        ``{key: JSON-compatible value}``.
    """
    settings: dict[str, Any] = {}
    evaluated = set(SETTING_KINDS) | {"bundle_root", "ckpt_dir", "output_dir", "device", "resolved_layout",
                                      "validation_list"}
    for key, raw in parser.get().items():
        if key in ("imports", "initialize", "run", "finalize", "training"):
            continue
        if key in evaluated:
            settings[key] = _json_value(parser.get_parsed_content(key))
        elif _plain(raw) or (isinstance(raw, list) and all(_plain(v) for v in raw)):
            settings[key] = raw
    if "train" in parser.get():  # the step's settings a training config need not declare, at their defaults
        for key, (default, _) in TRAINER_SETTINGS.items():
            settings.setdefault(key, default)
    return settings


def check_training_run(bundle: str, parser: Any = None, min_free_bytes: int | None = None) -> dict[str, Any]:
    """Everything a training run can check before it starts; called first in the bundles' ``initialize``.

    1. every setting of :data:`SETTING_KINDS` present in the config has the right type (``--amp false`` is
       rejected: MONAI's command line passes it as the text ``'false'``);
    2. ``ckpt_dir`` and ``output_dir`` can be created and written, and the disk has room for the checkpoints;
    3. the data lists are built and every file is checked (:func:`crossmatch_ext.data.validate_datalists`): raw
       label values against the ``RAW_LABEL_MAPS`` of the config's ``dataset_module`` for the ``resolved_layout``,
       image sizes against ``patch_size`` when the config has one;
    4. the seed and every effective setting are logged and written to ``<ckpt_dir>/run_settings.json`` (atomically).

    Args:
        bundle: the bundle's name (``"crossmatch_la"``, ``"crossmatch_acdc"``), recorded in ``run_settings.json``.
        parser: the config parser; found on the call stack when the function is called from a config expression.
        min_free_bytes: free disk space required in ``ckpt_dir``; default: room for five copies of the network's
            weights (final, best, resumable state with the optimizer's two moments) plus 64 MiB.

    Returns:
        The effective settings.

    Raises:
        SettingError, InputError: the first problem found, with a message naming the key or file and what to do.
    """
    import torch

    from crossmatch_ext.data.datasets import raw_label_map
    from crossmatch_ext.data.validation import validate_datalists
    from crossmatch_ext.io import atomic_open

    parser = parser if parser is not None else find_config_parser()
    if parser is None:
        raise RuntimeError("check_training_run needs the bundle's ConfigParser: call it from the config, or pass it.")
    config = parser.get()
    for key in SETTING_KINDS:
        if key in config:
            check_setting(key, parser.get_parsed_content(key))
    val_list = parser.get_parsed_content("validation_list") if "validation_list" in config else None
    if val_list is not None and not isinstance(val_list, str):
        raise SettingError(f"config key 'validation_list' must be a list file name or None, got {_describe(val_list)}.")

    ckpt_dir = _writable_dir("ckpt_dir", parser.get_parsed_content("ckpt_dir"))
    _writable_dir("output_dir", parser.get_parsed_content("output_dir"))
    network = parser.get_parsed_content("network_def") if "network_def" in config else None
    if min_free_bytes is None:
        weights = sum(p.numel() * p.element_size() for p in network.parameters()) if network is not None else 0
        min_free_bytes = 5 * weights + 64 * 2**20
    free = shutil.disk_usage(ckpt_dir).free
    if free < min_free_bytes:
        raise InputError(
            f"ckpt_dir {ckpt_dir}: only {free / 2**20:.0f} MiB free, the checkpoints need about "
            f"{min_free_bytes / 2**20:.0f} MiB: free some space or choose another folder with --ckpt_dir DIR."
        )

    mode = parser.get_parsed_content("mode") if "mode" in config else "crossmatch"
    layout = parser.get_parsed_content("resolved_layout") if "resolved_layout" in config else None
    out_channels = parser.get("network_def::out_channels") if network is not None else None
    label_map = None
    if "dataset_module" in config:
        bundle_root = parser.get_parsed_content("bundle_root") if "bundle_root" in config else None
        label_map = raw_label_map(parser.get_parsed_content("dataset_module"), layout, bundle_root=bundle_root)
    report = validate_datalists(
        parser.get_parsed_content("datalists"),
        spatial_dims=3,
        label_values=list(range(int(out_channels))) if out_channels is not None else None,
        raw_label_map=label_map,
        patch_size=parser.get_parsed_content("patch_size") if "patch_size" in config else None,
        mode=mode,
        allow_overlap=bool(parser.get_parsed_content("allow_overlap")) if "allow_overlap" in config else False,
    )

    import monai

    from crossmatch_ext import __version__

    settings = effective_settings(parser)
    record = {
        "bundle": bundle,
        "seed": settings.get("seed"),
        "settings": settings,
        "data": {"cases_checked": report["cases"], "padded_to_patch": report["padded"]},
        "command": sys.argv,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
                     "crossmatch_ext": __version__},
        "cuda": torch.cuda.is_available(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
    path = ckpt_dir / "run_settings.json"
    if process_rank() == 0:
        with atomic_open(path, "w") as stream:
            json.dump(record, stream, indent=2)
            stream.write("\n")
    logger.info(f"seed {record['seed']}; effective settings (saved to {path}): {json.dumps(settings)}")
    return settings
