"""Planning: check a Decathlon folder, fingerprint it with MONAI's ``DataAnalyzer`` and make a training plan.

One call per stage, as nnU-Net's ``plan_and_preprocess``::

    summary = check_decathlon_folder("/data/Task02_Heart")       # every problem, one line each, before training
    fp = fingerprint(summary)                                     # spacings, shapes, intensities, classes
    plan = make_plan(fp, device="cuda", overrides={"num_iterations": 20000})
    write_plan(plan, "/runs/heart/plan.json")
    print(format_plan(plan))                                      # each choice and why

or :func:`plan_dataset` for all of them.
"""

from __future__ import annotations

from .checks import AFFINE_TOLERANCE_MM, FolderSummary, check_decathlon_folder
from .fingerprint import FINGERPRINT_VERSION, Fingerprint, compact_json, fingerprint
from .plan import (
    ANISOTROPY_THRESHOLD,
    CPU_CORE_SECONDS_PER_VOXEL,
    CUDA_BYTES_PER_VOXEL,
    CUDA_MEMORY_FRACTION,
    DEFAULT_CPU_HOURS,
    MIN_BATCH,
    MIN_PATCH_AXIS,
    MIN_SLICES_3D,
    PATCH_DIVISOR,
    PLAN_FIELDS,
    PLAN_VERSION,
    RECIPES,
    DeviceBudget,
    Plan,
    PlanField,
    describe_device,
    format_plan,
    make_plan,
    normalization_transforms,
    read_plan,
    spacing_transforms,
    write_plan,
)
from .workflow import plan_dataset

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "ANISOTROPY_THRESHOLD",
    "CPU_CORE_SECONDS_PER_VOXEL",
    "CUDA_BYTES_PER_VOXEL",
    "CUDA_MEMORY_FRACTION",
    "DEFAULT_CPU_HOURS",
    "FINGERPRINT_VERSION",
    "MIN_BATCH",
    "MIN_PATCH_AXIS",
    "MIN_SLICES_3D",
    "PATCH_DIVISOR",
    "PLAN_FIELDS",
    "PLAN_VERSION",
    "RECIPES",
    "DeviceBudget",
    "Fingerprint",
    "FolderSummary",
    "Plan",
    "PlanField",
    "check_decathlon_folder",
    "compact_json",
    "describe_device",
    "fingerprint",
    "format_plan",
    "make_plan",
    "normalization_transforms",
    "plan_dataset",
    "read_plan",
    "spacing_transforms",
    "write_plan",
]
