"""The checks a training run makes before it starts, and the ``initialize`` steps that make them.

:func:`check_training_run` checks every setting, the output folders and the data, and records the effective settings
in ``<ckpt_dir>/run_settings.json``; :func:`prepare_run` / :func:`prepare_training` are the ``initialize`` steps of
the bundles' configs.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import monai
import torch

from crossmatch_ext.bundle.config import (
    SETTING_KINDS,
    SHARED_SETTINGS,
    ConfigIds,
    check_setting,
    config_amp,
    describe_value,
    find_config_parser,
)
from crossmatch_ext.bundle.distributed import init_distributed, process_count, process_rank
from crossmatch_ext.errors import InputError, SettingError

__all__ = [
    "check_training_run",
    "effective_settings",
    "prepare_evaluation",
    "prepare_run",
    "prepare_training",
]

logger = logging.getLogger(__name__)


def prepare_run(seed: int, output_dir: str | os.PathLike, deterministic: bool = False) -> None:
    """The ``initialize`` step of a training or evaluation run: seeds, cuDNN's algorithm choice, the output folder.

    Seeding (MONAI's ``set_determinism``) also pins cuDNN to deterministic algorithms without autotuning; that is
    kept only with ``deterministic=True`` (bit-for-bit repeatable runs on one GPU). Otherwise cuDNN autotunes
    (``cudnn.benchmark``): the fastest kernels for the fixed training shapes, the same results up to float
    summation order. On a CPU the choice has no effect.

    Raises:
        SettingError: ``seed`` is not an integer.
        InputError: ``output_dir`` cannot be created or written.
    """
    check_setting("seed", seed)
    monai.utils.set_determinism(seed=int(seed))
    if not deterministic:
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    _writable_dir("output_dir", output_dir)


def prepare_training(bundle: str, distributed: bool = False, parser: Any = None) -> dict[str, Any]:
    """The ``initialize`` step of a training run: with ``distributed``, join the ``torchrun`` process group on the
    config's ``device`` (:func:`~crossmatch_ext.bundle.init_distributed`); then :func:`prepare_run` with the config's
    ``seed`` (plus the process's rank, so that each process draws its own augmentations), ``output_dir`` and
    ``deterministic`` (default False: cuDNN autotuning), and :func:`check_training_run`.

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
    seed = ids.setting("seed")
    check_setting("seed", seed)
    prepare_run(int(seed) + process_rank(), ids.get("output_dir"), bool(ids.get("deterministic", False)))
    return check_training_run(bundle, ids.parser)


def prepare_evaluation(parser: Any = None) -> None:
    """The ``initialize`` step of an evaluation run (``evaluate.yaml``): :func:`prepare_run` with the config's
    ``seed`` (default 1337) and ``output_dir``; no training checks.

    Args:
        parser: the config parser (default: the one evaluating the config).
    """
    ids = ConfigIds(parser, "crossmatch_ext.bundle.prepare_evaluation")
    prepare_run(ids.setting("seed"), ids.get("output_dir"), bool(ids.get("deterministic", False)))


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
    if "train" in parser.get():  # the settings a training config need not declare, at their defaults
        for key, (default, _) in SHARED_SETTINGS.items():
            settings.setdefault(key, default)
        if "amp" not in settings and "device" in parser.get():
            settings["amp"] = config_amp(parser)
    return settings


def _check_validation_shares(parser: Any, val_list: str | None) -> None:
    """Under ``torchrun`` each process validates its own share of the validation cases: every process needs one."""
    processes = process_count()
    config = parser.get()
    if processes < 2 or "datalists" not in config:
        return
    if "val_interval" in config and int(parser.get_parsed_content("val_interval")) <= 0:
        return  # no validation
    validation = (parser.get_parsed_content("datalists") or {}).get("validation") or []
    if 0 < len(validation) < processes:
        source = f"--validation_list {val_list}, or the datalist's 'validation' section" if val_list else (
            "the datalist's 'validation' section")
        raise SettingError(
            f"config key 'validation_list': {len(validation)} validation case(s) for {processes} processes. Under "
            f"torchrun each process validates its own share of the cases, so each needs at least one: give at least "
            f"{processes} validation cases ({source}), or start torchrun with --nproc_per_node {len(validation)}."
        )


def check_training_run(bundle: str, parser: Any = None, min_free_bytes: int | None = None) -> dict[str, Any]:
    """Everything a training run can check before it starts; called first in the bundles' ``initialize``.

    1. every setting of :data:`SETTING_KINDS` present in the config has the right type (``--amp false`` is
       rejected: MONAI's command line passes it as the text ``'false'``);
    2. ``ckpt_dir`` and ``output_dir`` can be created and written, and the disk has room for the checkpoints;
    3. the data lists are built and every file is checked (:func:`crossmatch_ext.data.validate_datalists`, or the
       config's ``data_check`` when it has one: the report of a check made already): raw
       label values against the ``RAW_LABEL_MAPS`` of the config's ``dataset_module`` for the ``resolved_layout``,
       image sizes against ``patch_size`` when the config has one; under ``torchrun``, at least one validation
       case per process;
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
    val_list = parser.get_parsed_content("validation_list") if "validation_list" in config else "val.list"
    if val_list is not None and not isinstance(val_list, str):
        raise SettingError(
            f"config key 'validation_list' must be a list file name or None, got {describe_value(val_list)}."
        )

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
    # a config whose data were checked already (the auto bundle's plan reads every file) names that check's report
    report = parser.get_parsed_content("data_check") if "data_check" in config else validate_datalists(
        parser.get_parsed_content("datalists"),
        spatial_dims=3,
        label_values=list(range(int(out_channels))) if out_channels is not None else None,
        raw_label_map=label_map,
        patch_size=parser.get_parsed_content("patch_size") if "patch_size" in config else None,
        mode=mode,
        allow_overlap=bool(parser.get_parsed_content("allow_overlap")) if "allow_overlap" in config else False,
    )

    _check_validation_shares(parser, val_list)

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
