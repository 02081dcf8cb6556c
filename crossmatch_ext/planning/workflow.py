"""Every planning stage in one call: check, fingerprint, plan, write, log."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.config import PathLike

from .checks import check_decathlon_folder
from .fingerprint import fingerprint
from .plan import DEFAULT_CPU_HOURS, DeviceBudget, Plan, describe_device, format_plan, make_plan, write_plan

__all__ = ["plan_dataset"]

logger = logging.getLogger("crossmatch_ext.planning")


def plan_dataset(
    dataset: PathLike,
    output_dir: PathLike | None = None,
    *,
    device: str | torch.device | DeviceBudget | None = None,
    overrides: Mapping[str, Any] | None = None,
    val_list: str | None = "val.list",
    hours: float = DEFAULT_CPU_HOURS,
    workers: int = 2,
) -> Plan:
    """Check a Decathlon folder, fingerprint it, plan, write ``plan.json`` and ``fingerprint.json``, log the plan.

    Nothing is written when the folder has a problem (the checks run first).

    Args:
        dataset: the Decathlon folder (or datalist JSON).
        output_dir: where ``plan.json``, ``fingerprint.json`` and MONAI's ``datastats*.yaml`` go; None: nowhere.
        device: the device to plan for (see :func:`~crossmatch_ext.planning.describe_device`).
        overrides: plan fields to set (see :func:`~crossmatch_ext.planning.make_plan`).
        val_list: see :func:`crossmatch_ext.data.decathlon.read_decathlon`.
        hours: the CPU time budget of a training run.
        workers: data loader workers of ``DataAnalyzer``.

    Returns:
        The plan.

    Raises:
        InputError: for a problem in the folder, or a bad override (``SettingError``).
    """
    budget = device if isinstance(device, DeviceBudget) else describe_device(device, hours=hours)
    summary = check_decathlon_folder(dataset, val_list=val_list)
    stats_dir = Path(output_dir).expanduser() if output_dir is not None else None
    fp = fingerprint(summary, stats_dir=stats_dir, device="cuda" if budget.kind == "cuda" else "cpu",
                     workers=workers)
    plan = make_plan(fp, budget, overrides)
    if stats_dir is not None:
        (stats_dir / "fingerprint.json").write_text(fp.to_json())
        write_plan(plan, stats_dir / "plan.json")
    logger.info(format_plan(plan))
    return plan
