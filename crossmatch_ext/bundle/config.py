"""Reading a bundle config: the parts by id, the settings every bundle accepts, and their checks.

The builders of the other modules of :mod:`crossmatch_ext.bundle` read their parts from the config being evaluated
through :class:`ConfigIds`, by the ids listed in :data:`CONFIG_READS`; the user-facing settings are checked against
:data:`SETTING_KINDS` / :data:`SETTING_CHOICES` (:func:`check_setting`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from crossmatch_ext.errors import SettingError

__all__ = [
    "CONFIG_READS",
    "METHOD_SETTINGS",
    "SHARED_SETTINGS",
    "TRAINER_SETTINGS",
    "SETTING_CHOICES",
    "SETTING_KINDS",
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
]

_REQUIRED = object()

#: Settings of the CrossMatch step that every bundle accepts without declaring them (``--channels_last True``):
#: name -> (default, the values documented in benchmarks/README.md). The exact speed-ups are on, the
#: result-changing ones off.
TRAINER_SETTINGS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "channels_last": (True, (True, False)),  # channels-last batches: same results up to summation order
    "teacher_batch": ("labeled_and_mix", ("labeled_and_mix", "mix")),  # mix: P2 on the mix batch alone (opt-in)
    "merge_teacher_passes": (False, (False, True)),  # True: the mix image's pseudo-label from P2 (opt-in)
    "train_metric_interval": (10, (10, 1)),  # the train Dice on every n-th iteration only
    # torch.compile of the training passes (eager fallback on a compiler failure); reduce-overhead: CUDA graphs
    "compile": ("none", ("none", "default", "reduce-overhead", "max-autotune")),
    # the unlabeled strong views and CutMix boxes made batched on the training device (auto: on CUDA, not on a CPU)
    "device_views": ("auto", ("auto", True, False)),
    # with amp: each convolution checked at each new input shape, in float32 where its autocast kernel is wrong
    # (crossmatch_ext.engines.PrecisionGuard; the CPU bf16 Conv3d weight gradient at depth 2 of torch 2.13)
    "precision_guard": (True, (True, False)),
}

#: The method's and the run's settings that are the same in every CrossMatch bundle (the authors' values for LA and
#: ACDC alike), kept here once instead of in each ``train.yaml``: name -> (default, the documented values). A bundle
#: accepts each on the command line (``--eta 0.5``) and may declare its own value; ``run_settings.json`` records
#: the value a run used, declared or not.
METHOD_SETTINGS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "seed": (1337, (1337,)),
    "validation_list": ("val.list", ("val.list",)),  # list file (or the JSON's "validation" section) evaluated
    "eta": (0.3, (0.3,)),  # weight of the feature-perturbed (weak-to-strong) distillation
    "perturbation_gap": (0.5, (0.5,)),  # weak / strong feature dropout 0.5 -+ gap / 2: 0.25 / 0.75
    "perturbation_type": ("dropout", ("dropout", "alpha", "feature_alpha")),
    "perturbation_levels": ("all", ("all", "bottleneck")),  # all (authors' code) | bottleneck (paper text)
    "teacher_mode": ("train", ("train", "eval")),  # train (authors' current code) | eval (paper-era code)
    "cutmix": (True, (True, False)),
    "cutmix_prob": (0.5, (0.5,)),  # probability of a CutMix box per strong view
    "lr_power": (0.9, (0.9,)),  # poly schedule lr * (1 - t / total) ** lr_power
    "log_interval": (50, (50,)),
    "resume": (False, (False, True)),  # continue the interrupted run in ckpt_dir (models/resume/last.pt)
    "amp_dtype": ("bfloat16", ("bfloat16", "float16")),  # autocast type of training and validation
}

#: Every setting a bundle need not declare (:data:`METHOD_SETTINGS` and :data:`TRAINER_SETTINGS`), and ``amp``,
#: whose default depends on the device (:func:`config_amp`).
SHARED_SETTINGS: dict[str, tuple[Any, tuple[Any, ...]]] = {**METHOD_SETTINGS, **TRAINER_SETTINGS}

#: The config ids each builder reads when the config entry does not give the argument (the dependency of a builder
#: entry on the config, for tools and tests that follow references; a test checks it against what the builders read).
#: The keys are the names the configs use.
CONFIG_READS: dict[str, tuple[str, ...]] = {
    "crossmatch_ext.bundle.crossmatch_trainer": (
        "device", "monailabel_studies", "num_iterations", "train::dataloader", "train_network", "network",
        "perturbation", "perturbation_gap", "perturbation_type", "perturbation_levels", "optimizer", "loss",
        "dice_loss", "loss_weighting", "eta", "threshold", "mode", "teacher_mode", "teacher_batch",
        "merge_teacher_passes", "channels_last", "train_metric_interval", "train::inferer", "train::postprocessing",
        "network_def::out_channels", "train::key_metric", "train::handlers", "amp", "amp_kwargs", "amp_dtype",
        "compile", "device_views",
        "deterministic",  # and, with device views on, train::unlabeled_dataset (also behind train::dataloader)
        "precision_guard", "ckpt_dir",  # the guard's verdicts are added to <ckpt_dir>/run_settings.json
    ),
    "crossmatch_ext.bundle.config_amp": ("device", "deterministic"),
    "crossmatch_ext.bundle.setting": tuple(SHARED_SETTINGS),
    "crossmatch_ext.bundle.train_loader": (
        "train::dataset", "train::unlabeled_dataset", "mode", "batch_size", "num_workers", "cutmix", "seed",
        "mix_replacement",
    ),
    "crossmatch_ext.bundle.TrainingHandlers": (
        "lr_scheduler", "optimizer", "lr_decay_iterations", "num_iterations", "lr_power", "validate::evaluator",
        "val_interval", "output_dir", "log_interval",
    ),
    "crossmatch_ext.bundle.validation_dataset": (
        "validate::preprocessing", "train::load", "cache_rate", "num_workers", "datalists",
    ),
    "crossmatch_ext.bundle.validation_evaluator": (
        "device", "validate::dataloader", "validate::dataset", "num_workers", "network", "validate::inferer",
        "validate::postprocessing", "network_def::out_channels", "validate::key_metric",
        "validate::additional_metrics", "validate::handlers", "amp", "amp_kwargs", "amp_dtype",
    ),
    "crossmatch_ext.bundle.inference_evaluator": (
        "device", "dataloader", "dataset", "num_workers", "network", "inferer", "postprocessing",
        "network_def::out_channels", "key_metric", "additional_metrics", "handlers", "amp", "amp_kwargs", "amp_dtype",
    ),
    "crossmatch_ext.bundle.EvaluationHandlers": ("network", "device"),
}


def find_config_parser() -> ConfigParser | None:
    """The MONAI ``ConfigParser`` evaluating the current config expression or component (searched up the call stack).

    Returns:
        The parser, or None when not called while a config is being evaluated.
    """
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

    def setting(self, name: str) -> Any:
        """The config's value of the shared setting ``name``, else its default in :data:`SHARED_SETTINGS`."""
        return self.get(name, SHARED_SETTINGS[name][0])

    def fill(self, given: Mapping[str, Any], table: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
        """``given`` completed with ``table``'s entries (each a function reading ids) for the arguments not given."""
        arguments = {name: make() for name, make in table.items() if name not in given}
        arguments.update(given)
        return arguments


def setting(name: str, parser: ConfigParser | None = None) -> Any:
    """A shared setting in a config expression: the config's value of ``name`` (declared, or given on the command
    line), else its default in :data:`SHARED_SETTINGS`; ``"$crossmatch_ext.bundle.setting('validation_list')"``
    where a config would write ``"@validation_list"``.

    Raises:
        KeyError: ``name`` is not a shared setting.
    """
    if name not in SHARED_SETTINGS:
        raise KeyError(f"{name!r} is not a shared setting of crossmatch_ext.bundle: one of {sorted(SHARED_SETTINGS)}.")
    return ConfigIds(parser, "crossmatch_ext.bundle.setting").setting(name)


def find_config_workflow() -> Any:
    """The MONAI ``ConfigWorkflow`` running the current config (``python -m monai.bundle run``), searched up the call
    stack; None when no workflow runs it."""
    from monai.bundle import ConfigWorkflow

    frame: Any = sys._getframe(1)
    while frame is not None:
        workflow = frame.f_locals.get("self")
        if isinstance(workflow, ConfigWorkflow):
            return workflow
        frame = frame.f_back
    return None


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
    # this file is <checkout>/crossmatch_ext/bundle/config.py
    candidates = [cwd, cwd / "bundles" / name, Path(__file__).resolve().parents[2] / "bundles" / name]

    workflow = find_config_workflow()
    if workflow is not None:  # the ConfigWorkflow running the config knows where its files are
        config_root = Path(workflow.config_root_path)
        if config_root.name == "configs":
            candidates.insert(0, config_root.resolve().parent)
    for candidate in candidates:
        if (candidate / "configs" / "metadata.json").is_file() and (candidate.name == name or candidate != cwd):
            return os.fspath(candidate)
    return os.fspath(cwd)


# --------------------------------------------------------------------------------------------------- mixed precision
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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX tiles), as torch reports it."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


#: Why CPUs train in float32 by default (paired seeds, benchmarks/README.md section 8).
CPU_FLOAT32_REASON = ("the CPU default: bf16 autocast lowered the LA bundle's Dice by 6.4 +- 4.8 points against "
                      "float32 over 3 paired seeds (ACDC: within noise); benchmarks/README.md section 8")


def default_amp(device: torch.device | str, deterministic: bool = False) -> tuple[bool, str]:
    """The default of the ``amp`` setting on ``device``, and why.

    bfloat16 autocast on CUDA; float32 on every CPU. On a CPU with native bfloat16, bf16 autocast (``--amp True``)
    is about twice as fast for the 2D U-Net, but over paired seeds it lowered the LA bundle's Dice well outside
    the seed noise (the ACDC bundle's was within it): see :data:`CPU_FLOAT32_REASON`. ``--amp False`` always gives
    float32.

    Args:
        device: the device the run uses.
        deterministic: the run's ``deterministic`` setting (bit-for-bit repeatable runs; float32 on a CPU either way).

    Returns:
        ``(amp, reason)``: whether to autocast, and a short reason for the training log.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return True, "CUDA device"
    if kind == "cpu" and cpu_has_native_bf16():
        return False, CPU_FLOAT32_REASON
    return False, f"{kind} device without native bf16"


def config_amp(parser: ConfigParser | None = None) -> bool:
    """The default of a bundle's ``amp`` setting: :func:`default_amp` of the config's ``device`` and
    ``deterministic`` (False)."""
    ids = ConfigIds(parser, "crossmatch_ext.bundle.config_amp")
    return default_amp(ids.get("device"), bool(ids.get("deterministic", False)))[0]


def config_amp_setting(ids: ConfigIds) -> bool:
    """The config's ``amp``, else :func:`config_amp` (a config need not declare it)."""
    return bool(ids.get("amp", None, lambda: config_amp(ids.parser)))


def config_amp_kwargs(ids: ConfigIds) -> dict[str, Any]:
    """The config's ``amp_kwargs``, else :func:`autocast_kwargs` of its ``amp_dtype`` (bfloat16)."""
    return ids.get("amp_kwargs", None, lambda: autocast_kwargs(ids.setting("amp_dtype")))


def config_num_classes(ids: ConfigIds) -> int:
    """The config's ``network_def::out_channels``."""
    return int(ids.get("network_def::out_channels"))


# ----------------------------------------------------------------------------------------------------------- checks
_BOOL = "True or False"
_INT = "an integer"
_NUMBER = "a number"
_INTS = "a list of integers"
_NUMBERS = "a list of numbers"
_TEXT = "a text value"
_BOOL_OR_AUTO = "True, False or auto"

#: Expected kind of each user-facing setting of the bundles' configs (keys absent from a config are skipped).
SETTING_KINDS: dict[str, str] = {
    "amp": _BOOL, "cutmix": _BOOL, "resume": _BOOL, "legacy_cutmix_axes": _BOOL, "allow_overlap": _BOOL,
    "nesterov": _BOOL, "normalize_intensity": _BOOL, "largest_component": _BOOL, "mix_replacement": _BOOL,
    "channels_last": _BOOL, "merge_teacher_passes": _BOOL, "deterministic": _BOOL, "precision_guard": _BOOL,
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
    "compile": _TEXT,
    "dataset_module": _TEXT,
    "device_views": _BOOL_OR_AUTO,
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
    "compile": ("none", "default", "reduce-overhead", "max-autotune"),
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
    if kind == _BOOL_OR_AUTO:
        return isinstance(value, bool) or value == "auto"
    return True


def describe_value(value: Any) -> str:
    """A value as the messages name it: ``the text 'false'``, ``3 (int)``."""
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
        raise SettingError(f"config key {key!r} must be {kind}, got {describe_value(value)}{hint}.")
    choices = SETTING_CHOICES.get(key)
    if choices is not None and value not in choices:
        raise SettingError(f"config key {key!r} must be one of {list(choices)}, got {describe_value(value)}.")
    if kind in (_INTS,) and any(v <= 0 for v in value):
        raise SettingError(f"config key {key!r} must hold positive integers, got {value!r}.")
    if key in ("batch_size", "num_iterations", "num_labeled_patients") and value < 1:
        raise SettingError(f"config key {key!r} must be at least 1, got {value!r}.")
    if key == "num_labeled" and value < 0:  # 0: every case with a label (the auto bundle); LA needs 1 or more
        raise SettingError(f"config key {key!r} must be >= 0, got {value!r}.")
    if key in ("val_interval", "num_workers", "log_interval", "seed") and value < 0:
        raise SettingError(f"config key {key!r} must be >= 0, got {value!r}.")
