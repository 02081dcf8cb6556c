"""A training plan from a data fingerprint: every choice with the rule that made it, overridable field by field.

:func:`make_plan` turns a :class:`~crossmatch_ext.planning.Fingerprint` and a device into a :class:`Plan`; each field
is a :class:`PlanField` (``value`` and ``reason``), named as the bundles' config keys where one exists
(``patch_size``, ``batch_size``, ``num_iterations``, ``learning_rate``, ...). The rules, in the order they are applied
(a field given in ``overrides`` replaces the rule's value, and the later rules use it):

``spatial_dims`` / ``slice_axis`` (nnU-Net's anisotropy rule)
    2D on slices when the largest median voxel size is at least :data:`ANISOTROPY_THRESHOLD` (3) times the
    smallest, the slice axis being the coarsest one; also 2D when the median image has fewer than
    :data:`MIN_SLICES_3D` voxels along an axis (a 3D patch needs :data:`MIN_PATCH_AXIS` ``[3]`` = 48, so more
    than half of it would be padding); else 3D. When the voxel size is unknown (``spacing_known`` false: converted
    HDF5 files) the shape decides: an axis with 3 times fewer voxels than the others is read as thick slices.
``recipe`` / ``network``
    3D: the LA recipe (V-Net, ``bundles/crossmatch_la``); 2D: the ACDC recipe (U-Net, ``bundles/crossmatch_acdc``).
``target_spacing``
    3D: the median voxel size per axis (nnU-Net); 2D: the in-plane median, the slice axis kept as it is (``null``;
    :func:`spacing_transforms` maps it to MONAI's "keep"); unknown voxel size: ``null``, no resampling.
``normalization``
    CT (``dataset.json`` modality, or no modality and images reaching -500 or less, like Hounsfield units): clip to
    the foreground's 0.5 / 99.5 percentiles, then z-score with the foreground's mean and standard deviation
    (nnU-Net's CT scheme); MR and every other modality: z-score per image.
``num_iterations``, ``lr_decay_iterations``, ``optimizer``, ``learning_rate``, ``momentum``, ``weight_decay``,
``nesterov``
    The recipe's values (:data:`RECIPES`, the two bundles' ``train.yaml``); the LA recipe's poly schedule runs over
    17000 steps for 14000 iterations, scaled with ``num_iterations``.
``patch_size`` / ``batch_size``
    The patch starts as the median image shape at the target spacing (in-plane axes for 2D), rounded down to a
    multiple of :data:`PATCH_DIVISOR` (16: the networks downsample 4 times by 2) and at least
    :data:`MIN_PATCH_AXIS` (3D: 48, so that every V-Net feature map stays at least 3 voxels deep: a bf16 Conv3d
    defect on some CPUs breaks weight gradients at depth 2; 2D: 64). Then 16 voxels come off the longest axis
    (ties: the first) until the patch holds no more voxels than the recipe's (112x112x80 / 256x256). The batch is
    the recipe's (2 / 12 labeled, as many unlabeled). When ``batch_size x patch voxels`` exceeds what the device
    allows per step, the batch is lowered first (not below :data:`MIN_BATCH` = 2: batch norm) and then the patch
    shrinks by the same longest-axis rule down to the minimum. The device allows:

    * CUDA: :data:`CUDA_MEMORY_FRACTION` (80 %) of the free memory (``torch.cuda.mem_get_info``, rounded down to
      0.25 GiB so that the plan does not change with a few MiB) divided by :data:`CUDA_BYTES_PER_VOXEL` bytes per
      voxel of the labeled batch (3D: 2048, from 3.66 GB peak for the bf16 CrossMatch step at 2 x 112x112x80 on an
      H200, benchmarks/README.md; 2D: 5120, scaled from the CPU measurements, not measured on a GPU).
    * CPU: a time budget, ``hours`` (default :data:`DEFAULT_CPU_HOURS`) for ``num_iterations`` steps, at
      :data:`CPU_CORE_SECONDS_PER_VOXEL` core-seconds per voxel of the labeled batch (the CrossMatch step measured in
      ``benchmarks/results/step_ratio_*_cpu.json``: float32, the CPU default, or bf16 autocast + channels-last
      with ``--amp True`` on CPUs with native bf16), divided over ``torch.get_num_threads()`` threads.
``in_channels`` / ``out_channels``
    The image channels; the largest class value of ``dataset.json`` plus one.
``validation``
    Where the validation cases come from, or ``null``: every labeled case trains and the run keeps its final weights.

The plan is deterministic: the same fingerprint and device description give a byte-identical ``plan.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.config import PathLike

from ..errors import InputFileNotFoundError, InputValueError, SettingError
from .fingerprint import Fingerprint, compact_json

__all__ = [
    "ANISOTROPY_THRESHOLD",
    "CPU_CORE_SECONDS_PER_VOXEL",
    "CUDA_BYTES_PER_VOXEL",
    "CUDA_MEMORY_FRACTION",
    "DEFAULT_CPU_HOURS",
    "MIN_BATCH",
    "MIN_PATCH_AXIS",
    "MIN_SLICES_3D",
    "PATCH_DIVISOR",
    "PLAN_FIELDS",
    "PLAN_VERSION",
    "RECIPES",
    "DeviceBudget",
    "Plan",
    "PlanField",
    "describe_device",
    "format_plan",
    "make_plan",
    "normalization_transforms",
    "read_plan",
    "spacing_transforms",
    "write_plan",
]

logger = logging.getLogger(__name__)

PLAN_VERSION = 1
#: nnU-Net's anisotropy threshold: a largest / smallest voxel size ratio from which the data are thick slices.
ANISOTROPY_THRESHOLD = 3.0
#: Every patch axis is a multiple of this (V-Net and U-Net downsample 4 times by 2).
PATCH_DIVISOR = 16
#: Smallest patch axis by spatial dims: 3D 48 = 3 * 16 keeps every V-Net feature map >= 3 voxels deep.
MIN_PATCH_AXIS: dict[int, int] = {3: 48, 2: 64}
#: Fewer median voxels than this along an axis make a 3D patch mostly padding: 2D instead.
MIN_SLICES_3D = 24
#: Smallest batch (labeled, and as many unlabeled) the plan lowers to: batch norm needs more than one sample.
MIN_BATCH = 2
#: Share of the free GPU memory a plan uses (the rest: cuDNN workspaces, allocator fragmentation, evaluation).
CUDA_MEMORY_FRACTION = 0.8
#: Bytes of GPU memory per voxel of the labeled batch for a bf16 CrossMatch training step. 3D: 3.66 GB peak at
#: 2 x 112x112x80 (H200, benchmarks/README.md section 5) is 1823 B, rounded up; 2D: not measured on a GPU, the CPU's
#: step memory per voxel (bf16: 0.49 GB at 4 x 128x128 against 1.08 GB at 2 x 64x64x48) scaled by the 3D GPU / CPU
#: ratio, rounded up.
CUDA_BYTES_PER_VOXEL: dict[int, int] = {3: 2048, 2: 5120}
#: Core-seconds per voxel of the labeled batch for a CrossMatch step on a CPU: (spatial dims, native bf16) -> s.
#: From benchmarks/results/step_ratio_*_cpu.json (2 threads): 3D 2 x 64x64x48 in 2.485 s (bf16 autocast +
#: channels-last) / 6.029 s (float32); 2D 4 x 128x128 in 0.688 s / 1.300 s; rounded up.
CPU_CORE_SECONDS_PER_VOXEL: dict[tuple[int, bool], float] = {
    (3, True): 13e-6, (3, False): 31e-6, (2, True): 21e-6, (2, False): 40e-6,
}
#: Default CPU time budget of a whole training run, in hours.
DEFAULT_CPU_HOURS = 24.0

#: The authors' recipes, as the two bundles' train.yaml set them.
RECIPES: dict[str, dict[str, Any]] = {
    "la": {
        "bundle": "bundles/crossmatch_la", "network": "VNet", "spatial_dims": 3, "patch_size": [112, 112, 80],
        "batch_size": 2, "num_iterations": 14000, "lr_decay_iterations": 17000, "optimizer": "AdamW",
        "learning_rate": 0.001, "momentum": None, "weight_decay": 0.0001, "nesterov": False,
    },
    "acdc": {
        "bundle": "bundles/crossmatch_acdc", "network": "UNet", "spatial_dims": 2, "patch_size": [256, 256],
        "batch_size": 12, "num_iterations": 30000, "lr_decay_iterations": 30000, "optimizer": "SGD",
        "learning_rate": 0.01, "momentum": 0.9, "weight_decay": 0.0001, "nesterov": True,
    },
}
_NETWORK_DIMS = {"VNet": 3, "UNet": 2}

#: The decisions of a plan, in the order :func:`make_plan` takes them (the keys ``overrides`` accepts).
PLAN_FIELDS: tuple[str, ...] = (
    "spatial_dims", "slice_axis", "recipe", "network", "target_spacing", "normalization", "num_iterations",
    "lr_decay_iterations", "optimizer", "learning_rate", "momentum", "weight_decay", "nesterov", "batch_size",
    "patch_size", "in_channels", "out_channels", "validation",
)


@dataclass(frozen=True)
class PlanField:
    """One decision of a plan: its value (JSON) and why."""

    value: Any
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """``{"value", "reason"}``."""
        return {"value": self.value, "reason": self.reason}


@dataclass(frozen=True)
class DeviceBudget:
    """The device a plan is fitted to (see the module docstring for how each kind limits a step).

    Attributes:
        kind: ``"cuda"`` or ``"cpu"``.
        name: the GPU's name, or ``"cpu"``.
        free_memory_gib: CUDA: free memory, rounded down to 0.25 GiB.
        threads: CPU: torch's intra-op threads.
        native_bf16: CPU: the run trains in bf16 autocast on a CPU with native bf16 (AVX512-BF16 or AMX) and
            ``--amp True``; float32 (the CPU default) otherwise.
        hours: CPU: the time budget of a whole training run.
    """

    kind: str
    name: str
    free_memory_gib: float | None = None
    threads: int = 1
    native_bf16: bool = False
    hours: float = DEFAULT_CPU_HOURS

    def to_dict(self) -> dict[str, Any]:
        """The fields that matter for the kind."""
        if self.kind == "cuda":
            return {"kind": "cuda", "name": self.name, "free_memory_gib": self.free_memory_gib}
        return {"kind": self.kind, "threads": self.threads, "native_bf16": self.native_bf16, "hours": self.hours}

    def describe(self) -> str:
        """A short description for the log."""
        if self.kind == "cuda":
            return f"{self.name} ({self.free_memory_gib:g} GiB free)"
        return (f"CPU, {self.threads} thread(s), {'native bf16' if self.native_bf16 else 'float32'}, "
                f"{self.hours:g} h budget")

    def voxels_per_step(self, spatial_dims: int, num_iterations: int) -> tuple[int, str]:
        """How many voxels of labeled batch (``batch_size x patch voxels``) one training step may take, and why.

        Args:
            spatial_dims: 2 or 3.
            num_iterations: the planned iterations (CPU: the time budget is shared among them).

        Returns:
            ``(voxels, reason)``.
        """
        if self.kind == "cuda":
            free = float(self.free_memory_gib or 0.0)
            per_voxel_bytes = CUDA_BYTES_PER_VOXEL[spatial_dims]
            voxels = int(free * CUDA_MEMORY_FRACTION * 2**30 // per_voxel_bytes)
            return voxels, (f"{CUDA_MEMORY_FRACTION:.0%} of {free:g} GiB free on {self.name} at ~{per_voxel_bytes} "
                            f"bytes per voxel (bf16 {spatial_dims}D CrossMatch step) allows {voxels / 1e6:.2f} M "
                            "voxels per step")
        seconds = self.hours * 3600.0 / max(int(num_iterations), 1)
        per_voxel = CPU_CORE_SECONDS_PER_VOXEL[(spatial_dims, self.native_bf16)]
        voxels = int(seconds * self.threads / per_voxel)
        return voxels, (f"CPU time budget {self.hours:g} h / {num_iterations} iterations = {seconds:.2f} s per "
                        f"step; at ~{per_voxel * 1e6:g} us per voxel per core ({spatial_dims}D CrossMatch step, "
                        f"{'bf16' if self.native_bf16 else 'float32'}) on {self.threads} thread(s) that allows "
                        f"{voxels / 1e6:.2f} M voxels per step")

    def step_seconds(self, spatial_dims: int, voxels: int) -> float:
        """CPU: estimated seconds of a step of ``voxels`` labeled-batch voxels."""
        return voxels * CPU_CORE_SECONDS_PER_VOXEL[(spatial_dims, self.native_bf16)] / max(self.threads, 1)


def describe_device(device: str | torch.device | None = None, *, hours: float = DEFAULT_CPU_HOURS,
                    bf16: bool = False) -> DeviceBudget:
    """Describe the device a plan is fitted to.

    Args:
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``, a ``torch.device``, or None (CUDA when available, else CPU).
        hours: the CPU time budget of a whole training run.
        bf16: CPU: the run trains in bf16 autocast (``--amp True``; float32 is the CPU default). It is costed as
            bf16 only where the CPU has native bf16.

    Returns:
        The description (CUDA: its free memory now).

    Raises:
        SettingError: for CUDA without a GPU, or a non-positive ``hours``.
    """
    if not (isinstance(hours, (int, float)) and math.isfinite(hours) and hours > 0):
        raise SettingError(f"the CPU time budget (hours) must be a positive number, got {hours!r}.")
    chosen = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingError(f"device {str(chosen)!r}: no CUDA GPU is available; plan for device 'cpu'.")
        free, _ = torch.cuda.mem_get_info(chosen)
        return DeviceBudget(kind="cuda", name=torch.cuda.get_device_name(chosen),
                            free_memory_gib=math.floor(free / 2**30 * 4) / 4)
    cpu = getattr(torch, "cpu", None)
    native = bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                  or getattr(cpu, "_is_amx_tile_supported", lambda: False)())
    return DeviceBudget(kind="cpu", name="cpu", threads=int(torch.get_num_threads()), native_bf16=native and bf16,
                        hours=float(hours))


@dataclass(frozen=True)
class Plan:
    """A training plan: the fields of :data:`PLAN_FIELDS`, each a :class:`PlanField`, plus what it was made from.

    Attributes:
        data: the fingerprint's summary (source, counts, median spacing and shape, classes).
        device: the device description (:meth:`DeviceBudget.to_dict`) with the step's estimated cost.
        warnings: what the user should know (e.g. a plan that does not fit the device).
        version: :data:`PLAN_VERSION`.
    """

    spatial_dims: PlanField
    slice_axis: PlanField
    recipe: PlanField
    network: PlanField
    target_spacing: PlanField
    normalization: PlanField
    num_iterations: PlanField
    lr_decay_iterations: PlanField
    optimizer: PlanField
    learning_rate: PlanField
    momentum: PlanField
    weight_decay: PlanField
    nesterov: PlanField
    batch_size: PlanField
    patch_size: PlanField
    in_channels: PlanField
    out_channels: PlanField
    validation: PlanField
    data: dict[str, Any]
    device: dict[str, Any]
    warnings: list[str]
    version: int = PLAN_VERSION

    def values(self) -> dict[str, Any]:
        """``{field: value}`` of every decision (what a bundle config reads)."""
        return {name: getattr(self, name).value for name in PLAN_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``version``, ``data``, ``device``, every field as ``{"value", "reason"}``, warnings."""
        out: dict[str, Any] = {"version": self.version, "data": self.data, "device": self.device}
        out.update({name: getattr(self, name).to_dict() for name in PLAN_FIELDS})
        out["warnings"] = list(self.warnings)
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON, newline-terminated (byte-identical for identical plans)."""
        return compact_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Rebuild a plan from :meth:`to_dict`'s output.

        Raises:
            InputValueError: for another version, or a missing or malformed field (the message names it).
        """
        if data.get("version") != PLAN_VERSION:
            raise InputValueError(f"plan version {data.get('version')!r} is not {PLAN_VERSION}: make the plan again.")
        values: dict[str, Any] = {}
        for name in PLAN_FIELDS:
            entry = data.get(name)
            if not isinstance(entry, Mapping) or "value" not in entry or "reason" not in entry:
                raise InputValueError(f"plan field {name!r} is missing or not {{\"value\", \"reason\"}}: make the "
                                      "plan again, or fix the field.")
            values[name] = PlanField(entry["value"], str(entry["reason"]))
        return cls(**values, data=dict(data.get("data", {})), device=dict(data.get("device", {})),
                   warnings=[str(w) for w in data.get("warnings", [])])


# ----------------------------------------------------------------------------------------------- the rules
def _fmt(values: Sequence[Any], unit: str = "") -> str:
    return " x ".join("-" if v is None else f"{v:g}" for v in values) + unit


def _coarse_axis(fp: Fingerprint) -> int:
    """The slice axis: the coarsest median spacing, or (spacing unknown) the fewest median voxels; ties: last."""
    if fp.spacing_known:
        spacing = fp.median_spacing
        return max(range(len(spacing)), key=lambda i: (spacing[i], i))
    shape = fp.median_shape
    return min(range(len(shape)), key=lambda i: (shape[i], -i))


def _dims_rule(fp: Fingerprint) -> tuple[PlanField, PlanField]:
    if fp.spatial_dims == 2:
        return (PlanField(2, "2D: the images are 2D"), PlanField(None, "2D images: no slice axis"))
    spacing, shape = fp.median_spacing, fp.median_shape
    axis = _coarse_axis(fp)
    others = [i for i in range(len(shape)) if i != axis]
    thin = min(range(len(shape)), key=lambda i: (shape[i], -i))
    if fp.spacing_known:
        in_plane = min(spacing[i] for i in others)
        ratio = spacing[axis] / min(spacing)
        if ratio >= ANISOTROPY_THRESHOLD:
            return (PlanField(2, f"2D: slice spacing {spacing[axis]:g} mm is {ratio:.1f}x the in-plane spacing "
                              f"{in_plane:g} mm (nnU-Net's anisotropy threshold is {ANISOTROPY_THRESHOLD:g})"),
                    PlanField(axis, f"axis {axis} has the coarsest median spacing ({spacing[axis]:g} mm)"))
        isotropic = (f"largest / smallest median spacing {ratio:.2f} < {ANISOTROPY_THRESHOLD:g} (nnU-Net's "
                     "anisotropy threshold)")
    else:
        ratio = min(shape[i] for i in others) / max(shape[axis], 1.0)
        if ratio >= ANISOTROPY_THRESHOLD:
            return (PlanField(2, f"2D: the voxel size is unknown (spacing_known is false); axis {axis} has "
                              f"{shape[axis]:g} voxels, {ratio:.1f}x fewer than the others: read as thick slices"),
                    PlanField(axis, f"axis {axis} has the fewest voxels ({shape[axis]:g}; voxel size unknown)"))
        isotropic = (f"the voxel size is unknown; no axis has {ANISOTROPY_THRESHOLD:g}x fewer voxels than the others "
                     "(voxels taken as isotropic)")
    if shape[thin] < MIN_SLICES_3D:
        return (PlanField(2, f"2D: the median image has only {shape[thin]:g} voxels along axis {thin}; a 3D patch "
                          f"needs {MIN_PATCH_AXIS[3]}, so more than half of it would be padding"),
                PlanField(thin, f"axis {thin} has the fewest voxels ({shape[thin]:g})"))
    return PlanField(3, f"3D: {isotropic}"), PlanField(None, "3D: no slice axis")


def _spacing_rule(fp: Fingerprint, spatial_dims: int, slice_axis: int | None) -> PlanField:
    if not fp.spacing_known:
        return PlanField(None, "the voxel size is unknown (spacing_known is false in the dataset's JSON): images are "
                               "used on their own voxel grid, not resampled")
    median = fp.median_spacing
    target: list[float | None] = list(median)
    if spatial_dims == 2 and slice_axis is not None:
        target[slice_axis] = None
    used = [i for i, v in enumerate(target) if v is not None]
    ranges = [(min(s[i] for s in fp.spacings), max(s[i] for s in fp.spacings)) for i in used]
    uniform = all(low == high for low, high in ranges)
    what = "in-plane median voxel size" if spatial_dims == 2 and slice_axis is not None else "median voxel size"
    tail = (" (the slice axis keeps each image's own spacing)" if spatial_dims == 2 and slice_axis is not None else "")
    if uniform:
        return PlanField(target, f"{what} of the {len(fp.spacings)} cases{tail}; every case already has it: no "
                                 "resampling")
    spread = ", ".join(f"axis {i}: {low:g}-{high:g}" for i, (low, high) in zip(used, ranges))
    return PlanField(target, f"{what} of the {len(fp.spacings)} cases (nnU-Net's rule){tail}; cases range {spread} "
                             "mm and are resampled to it")


def _normalization_rule(fp: Fingerprint) -> PlanField:
    modality = fp.modality.get(0, "")
    foreground = fp.foreground_intensity
    ct = modality.strip().upper() == "CT"
    why = f"modality {modality} (dataset.json)" if modality else ""
    if not modality and fp.image_intensity.get("min", 0.0) <= -500.0:
        ct = True
        why = (f"no modality in dataset.json, and the images reach {fp.image_intensity['min']:g}, like CT Hounsfield "
               "units")
    if ct and foreground:
        low, high = foreground["percentile_00_5"], foreground["percentile_99_5"]
        mean, std = foreground["mean"], max(foreground["std"], 1e-8)
        return PlanField(
            {"scheme": "ct", "clip": [low, high], "mean": mean, "std": std},
            f"{why}: clip to the foreground's 0.5-99.5 percentiles [{low:g}, {high:g}], then z-score with the "
            f"foreground mean {mean:g} and std {std:g} (nnU-Net's CT scheme; DataAnalyzer statistics of the labeled "
            "cases)")
    if ct:
        return PlanField({"scheme": "zscore"}, f"{why}, but the labeled cases hold no foreground: per-image z-score")
    name = modality or "not given"
    return PlanField({"scheme": "zscore"}, f"modality {name}: per-image z-score (the intensities have no absolute "
                                           "scale)")


def _shape_at(fp: Fingerprint, target: Sequence[float | None] | None) -> list[float]:
    if target is None:
        return list(fp.median_shape)
    resampled = [[shape[i] * spacing[i] / t if t else float(shape[i]) for i, t in enumerate(target)]
                 for shape, spacing in zip(fp.shapes, fp.spacings)]
    return [round(statistics.median(axis), 1) for axis in zip(*resampled)]


def _shrink(patch: list[int], voxels: float, minimum: int) -> list[int]:
    """Take :data:`PATCH_DIVISOR` voxels off the longest axis (ties: the first) while the patch exceeds ``voxels``."""
    patch = list(patch)
    while math.prod(patch) > voxels:
        candidates = [i for i, p in enumerate(patch) if p - PATCH_DIVISOR >= minimum]
        if not candidates:
            break
        axis = max(candidates, key=lambda i: (patch[i], -i))
        patch[axis] -= PATCH_DIVISOR
    return patch


def _check_int(name: str, minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SettingError(f"plan field {name!r} must be an integer >= {minimum}, got {value!r}.")
        return int(value)
    return check


def _check_float(name: str, minimum: float, allow_none: bool = False) -> Callable[[Any], float | None]:
    def check(value: Any) -> float | None:
        if value is None and allow_none:
            return None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < minimum:
            raise SettingError(f"plan field {name!r} must be a number >= {minimum:g}, got {value!r}.")
        return float(value)
    return check


def _check_choice(name: str, choices: Sequence[Any]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in choices:
            raise SettingError(f"plan field {name!r} must be one of {list(choices)}, got {value!r}.")
        return value
    return check


class _Decisions:
    """Apply ``overrides`` over the rules' values, keeping the rule's reason in the overridden field's reason."""

    def __init__(self, overrides: Mapping[str, Any] | None) -> None:
        self.overrides = dict(overrides or {})
        unknown = sorted(set(self.overrides) - set(PLAN_FIELDS))
        if unknown:
            raise SettingError(f"unknown plan field(s) {unknown} in the overrides; the fields are {list(PLAN_FIELDS)}.")

    def __call__(self, name: str, rule: PlanField, check: Callable[[Any], Any] = lambda v: v) -> PlanField:
        if name not in self.overrides:
            return rule
        value = check(self.overrides[name])
        return PlanField(value, f"set by override (the rule gives {json.dumps(rule.value)}: {rule.reason})")


def _check_normalization(fp: Fingerprint) -> Callable[[Any], dict[str, Any]]:
    def check(value: Any) -> dict[str, Any]:
        if value in ("zscore", "ct"):
            value = {"scheme": value}
        if not isinstance(value, Mapping) or value.get("scheme") not in ("zscore", "ct"):
            raise SettingError("plan field 'normalization' must be 'zscore', 'ct' or {\"scheme\": \"ct\", \"clip\": "
                               f"[low, high], \"mean\": m, \"std\": s}}, got {value!r}.")
        out = dict(value)
        if out["scheme"] == "ct":
            foreground = fp.foreground_intensity
            if not foreground and not {"clip", "mean", "std"} <= set(out):
                raise SettingError("plan field 'normalization': 'ct' needs foreground statistics, and the labeled "
                                   "cases hold no foreground: give clip, mean and std.")
            out.setdefault("clip", [foreground.get("percentile_00_5"), foreground.get("percentile_99_5")])
            out.setdefault("mean", foreground.get("mean"))
            out.setdefault("std", foreground.get("std"))
        return out
    return check


def _check_spacing(dims: int) -> Callable[[Any], list[float | None] | None]:
    def check(value: Any) -> list[float | None] | None:
        if value is None:
            return None
        ok = isinstance(value, (list, tuple)) and len(value) == dims and all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0)
            for v in value)
        if not ok:
            raise SettingError(f"plan field 'target_spacing' must be null or {dims} positive numbers (null keeps an "
                               f"axis), got {value!r}.")
        return [None if v is None else float(v) for v in value]
    return check


def _check_patch(dims: int) -> Callable[[Any], list[int]]:
    def check(value: Any) -> list[int]:
        ok = isinstance(value, (list, tuple)) and len(value) == dims and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= PATCH_DIVISOR for v in value)
        if not ok:
            raise SettingError(f"plan field 'patch_size' must be {dims} integers >= {PATCH_DIVISOR} (the networks "
                               f"downsample 4 times), got {value!r}.")
        return [int(v) for v in value]
    return check


def make_plan(
    fp: Fingerprint,
    device: str | torch.device | DeviceBudget | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    hours: float = DEFAULT_CPU_HOURS,
) -> Plan:
    """Make the training plan of a dataset (the rules are in the module docstring).

    Args:
        fp: the dataset's fingerprint.
        device: the device to fit (a :class:`DeviceBudget`, or see :func:`describe_device`).
        overrides: ``{field: value}`` for any of :data:`PLAN_FIELDS`; later rules use the overridden value (e.g.
            ``{"spatial_dims": 2}`` also makes the network a U-Net and the patch 2D).
        hours: the CPU time budget of a training run (when ``device`` is not a :class:`DeviceBudget`).

    Returns:
        The plan.

    Raises:
        SettingError: for an unknown override or a value of the wrong kind (the message names the field).
    """
    budget = device if isinstance(device, DeviceBudget) else describe_device(device, hours=hours)
    decide = _Decisions(overrides)
    warnings: list[str] = []

    dims_rule, axis_rule = _dims_rule(fp)
    dims_checks = (2, 3) if fp.spatial_dims == 3 else (2,)
    spatial_dims = decide("spatial_dims", dims_rule, _check_choice("spatial_dims", dims_checks))
    dims = int(spatial_dims.value)
    if dims == 3:
        axis_rule = PlanField(None, "3D: no slice axis")
    elif fp.spatial_dims == 3 and axis_rule.value is None:
        axis = _coarse_axis(fp)
        axis_rule = PlanField(axis, f"axis {axis} has the coarsest median spacing (or the fewest voxels)")
    slice_axis = decide("slice_axis", axis_rule,
                        _check_choice("slice_axis", [None] if dims == 3 or fp.spatial_dims == 2 else [0, 1, 2]))
    axis_value: int | None = slice_axis.value

    recipe_name = "la" if dims == 3 else "acdc"
    recipe = decide("recipe", PlanField(recipe_name, f"{dims}D: the {recipe_name.upper()} recipe "
                                        f"({RECIPES[recipe_name]['bundle']}/configs/train.yaml)"),
                    _check_choice("recipe", sorted(RECIPES)))
    values = RECIPES[recipe.value]
    network_name = "VNet" if dims == 3 else "UNet"
    network = decide("network", PlanField(network_name, f"{dims}D: the {'V-Net' if dims == 3 else 'U-Net'} of the "
                                          f"{'LA' if dims == 3 else 'ACDC'} bundle"),
                     _check_choice("network", [network_name]))

    target_spacing = decide("target_spacing", _spacing_rule(fp, dims, axis_value), _check_spacing(fp.spatial_dims))
    normalization = decide("normalization", _normalization_rule(fp), _check_normalization(fp))

    source = f"the {recipe.value.upper()} recipe"
    num_iterations = decide("num_iterations", PlanField(values["num_iterations"], f"{source}"),
                            _check_int("num_iterations", 1))
    iterations = int(num_iterations.value)
    decay = round(iterations * values["lr_decay_iterations"] / values["num_iterations"])
    decay_reason = (f"{source}: the poly schedule runs over {values['lr_decay_iterations']} steps for "
                    f"{values['num_iterations']} iterations" + ("" if decay == values["lr_decay_iterations"]
                                                                 else ", scaled with num_iterations"))
    lr_decay_iterations = decide("lr_decay_iterations", PlanField(decay, decay_reason),
                                 _check_int("lr_decay_iterations", 1))
    optimizer = decide("optimizer", PlanField(values["optimizer"], source), _check_choice("optimizer",
                                                                                          ["AdamW", "SGD"]))
    learning_rate = decide("learning_rate", PlanField(values["learning_rate"], source),
                           _check_float("learning_rate", 0.0))
    if optimizer.value == "SGD":
        momentum_rule = PlanField(values["momentum"] if values["momentum"] is not None else 0.9,
                                  source if values["momentum"] is not None else "SGD's usual momentum")
    else:
        momentum_rule = PlanField(None, "AdamW: no momentum setting (betas 0.9, 0.999)")
    momentum = decide("momentum", momentum_rule, _check_float("momentum", 0.0, allow_none=True))
    weight_decay = decide("weight_decay", PlanField(values["weight_decay"], source), _check_float("weight_decay", 0.0))
    nesterov = decide("nesterov", PlanField(bool(values["nesterov"]) and optimizer.value == "SGD", source),
                      _check_choice("nesterov", [True, False]))

    # ---- patch and batch: data-shaped within the recipe's voxels, then fitted to the device
    target = target_spacing.value
    at_target = _shape_at(fp, target)
    plane = [i for i in range(len(at_target)) if not (dims == 2 and i == axis_value)]
    median = [at_target[i] for i in plane]
    minimum = MIN_PATCH_AXIS[dims]
    recipe_patch = RECIPES["la" if dims == 3 else "acdc"]["patch_size"]
    start = [max(minimum, int(m // PATCH_DIVISOR) * PATCH_DIVISOR) for m in median]
    data_patch = _shrink(start, math.prod(recipe_patch), minimum)
    padded = [f"axis {plane[i]}: median {m:g} < {minimum}" for i, m in enumerate(median) if m < minimum]
    step_voxels, device_reason = budget.voxels_per_step(dims, iterations)
    batch_default = int(values["batch_size"])

    def fit(batch: int, batch_fixed: bool, patch: list[int], patch_fixed: bool) -> tuple[int, list[int]]:
        if math.prod(patch) * batch <= step_voxels:
            return batch, patch
        if not batch_fixed:
            batch = max(MIN_BATCH, min(batch, step_voxels // max(math.prod(patch), 1)))
        if not patch_fixed and math.prod(patch) * batch > step_voxels:
            patch = _shrink(patch, step_voxels / batch, minimum)
        return batch, patch

    def batch_reason(batch: int, given: str = "") -> str:
        text = f"{source}: {batch_default} labeled + {batch_default} unlabeled per step"
        if batch != batch_default:
            text += f"; lowered to {batch} to fit the device{given} (not below {MIN_BATCH}: batch norm)"
        return text

    def patch_reason(patch: list[int], given: str = "") -> str:
        text = (f"median image {_fmt(median)} at the target spacing, rounded down to multiples of {PATCH_DIVISOR} (at "
                f"least {minimum}" + (": every V-Net feature map stays >= 3 voxels deep, a bf16 Conv3d defect on some "
                                      "CPUs breaks weight gradients at depth 2)" if dims == 3 else ")")
                + f", then {PATCH_DIVISOR} off the longest axis while above the recipe's {_fmt(recipe_patch)} voxels")
        if padded:
            text += f"; smaller images are padded ({', '.join(padded)})"
        fitted = "shrunk to fit the device" if patch != data_patch else "fits the device"
        return f"{text}; {fitted}{given}: {device_reason}"

    rule_batch, rule_patch = fit(batch_default, False, data_patch, False)
    batch_size = decide("batch_size", PlanField(rule_batch, batch_reason(rule_batch)), _check_int("batch_size", 1))
    patch_size = decide("patch_size", PlanField(rule_patch, patch_reason(rule_patch)), _check_patch(dims))
    batch_given, patch_given = "batch_size" in decide.overrides, "patch_size" in decide.overrides
    if batch_given != patch_given:  # one of them given: fit the other one around it
        batch, patch = fit(int(batch_size.value) if batch_given else batch_default, batch_given,
                           list(patch_size.value) if patch_given else data_patch, patch_given)
        if not batch_given:
            batch_size = PlanField(batch, batch_reason(batch, " with the given patch_size"))
        else:
            patch_size = PlanField(patch, patch_reason(patch, " with the given batch_size"))
    patch_value = [int(p) for p in patch_size.value]
    if dims == 3 and min(patch_value) < MIN_PATCH_AXIS[3]:
        warnings.append(f"patch_size {patch_value} has an axis below {MIN_PATCH_AXIS[3]}: the V-Net's deepest feature "
                        "maps are then 2 voxels deep or less, where bf16 Conv3d weight gradients are wrong on some "
                        "CPUs (the bundles' precision guard runs such layers in float32, slower)")
    needed = math.prod(patch_value) * int(batch_size.value)
    if needed > step_voxels:
        warnings.append(f"batch {batch_size.value} x patch {_fmt(patch_value)} = {needed / 1e6:.2f} M voxels per step "
                        f"exceeds what the device allows ({step_voxels / 1e6:.2f} M: {device_reason}); expect "
                        + ("running out of GPU memory" if budget.kind == "cuda" else "training to take longer than the "
                           "budget") + ": lower patch_size or batch_size, or use a GPU")

    in_channels = decide("in_channels", PlanField(fp.in_channels, f"the images have {fp.in_channels} channel(s)"
                                                  + (f" ({', '.join(fp.modality.values())})" if fp.modality else "")),
                         _check_int("in_channels", 1))
    classes = fp.classes or {0: "background"}
    out_channels = decide("out_channels", PlanField(max(classes) + 1, f"classes {sorted(classes)} "
                                                    f"({', '.join(classes.values())})"),
                          _check_int("out_channels", 2))
    if fp.validation_source:
        validation_rule = PlanField({"source": fp.validation_source, "cases": fp.num_validation},
                                    f"{fp.num_validation} validation case(s) from {fp.validation_source}: the weights "
                                    "with the best validation Dice (model_best.pt) are evaluated and served; "
                                    "model.pt holds the final ones")
    else:
        validation_rule = PlanField(None, "no val.list and no 'validation' section: every labeled case trains and "
                                          "the run keeps its final weights")
    validation = decide("validation", validation_rule)
    if int(out_channels.value) < 2:
        warnings.append("fewer than 2 output channels")

    device_info = budget.to_dict()
    if budget.kind == "cpu":
        seconds = budget.step_seconds(dims, needed)
        device_info["step_seconds_estimate"] = round(seconds, 2)
        device_info["training_hours_estimate"] = round(seconds * iterations / 3600.0, 1)
    else:
        device_info["step_memory_gib_estimate"] = round(needed * CUDA_BYTES_PER_VOXEL[dims] / 2**30, 2)
    data = {
        "source": fp.source,
        "name": fp.name,
        "modality": {str(k): v for k, v in fp.modality.items()},
        "classes": {str(k): v for k, v in fp.classes.items()},
        "labeled": fp.num_labeled,
        "unlabeled": fp.num_unlabeled,
        "validation": fp.num_validation,
        "test": fp.num_test,
        "spacing_known": fp.spacing_known,
        "median_spacing": fp.median_spacing,
        "median_shape": fp.median_shape,
        "median_shape_at_target_spacing": at_target,
        "foreground_intensity": dict(fp.foreground_intensity),
        "analyzer": fp.analyzer,
    }
    if fp.num_unlabeled == 0:
        warnings.append("no unlabeled case: CrossMatch learns from unlabeled images; add some (images without a "
                        "label), or train supervised")
    return Plan(
        spatial_dims=spatial_dims, slice_axis=slice_axis, recipe=recipe, network=network,
        target_spacing=target_spacing, normalization=normalization, num_iterations=num_iterations,
        lr_decay_iterations=lr_decay_iterations, optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
        weight_decay=weight_decay, nesterov=nesterov, batch_size=batch_size, patch_size=patch_size,
        in_channels=in_channels, out_channels=out_channels, validation=validation, data=data, device=device_info,
        warnings=warnings,
    )


# ---------------------------------------------------------------------------------------------- input / output
def write_plan(plan: Plan, path: PathLike) -> Path:
    """Write ``plan.json`` (atomically: a reader never sees half a file).

    Args:
        plan: the plan.
        path: the file, or a folder (then ``<folder>/plan.json``; created).

    Returns:
        The file written.
    """
    target = Path(path).expanduser()
    if target.is_dir() or target.suffix.lower() != ".json":
        target = target / "plan.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    partial.write_text(plan.to_json())
    partial.replace(target)
    return target


def read_plan(path: PathLike) -> Plan:
    """Read a ``plan.json`` (a file, or a folder holding one).

    Raises:
        InputFileNotFoundError: when there is no such file.
        InputValueError: when it is not a plan (the message names the file).
    """
    target = Path(path).expanduser()
    if target.is_dir():
        target = target / "plan.json"
    if not target.is_file():
        raise InputFileNotFoundError(f"plan not found: {target}; make one with crossmatch_ext.planning.make_plan.")
    try:
        return Plan.from_dict(json.loads(target.read_text()))
    except json.JSONDecodeError as e:
        raise InputValueError(f"{target} is not valid JSON (line {e.lineno}: {e.msg}): fix or delete it.") from e
    except InputValueError as e:
        raise InputValueError(f"{target}: {e}") from e


def _value_text(value: Any, nested: bool = False) -> str:
    if isinstance(value, list) and value and all(v is None or isinstance(v, (int, float)) for v in value):
        return "[" + ", ".join(_value_text(v) for v in value) + "]" if nested else _fmt(value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value_text(v, nested=True)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def format_plan(plan: Plan) -> str:
    """The plan as log text: the data, the device, then one line per field: name, value and why.

    Args:
        plan: the plan.

    Returns:
        The text (no trailing newline).
    """
    d = plan.data
    validation = plan.validation.value
    lines = [
        f"CrossMatch plan for {d.get('name')} ({d.get('source')})",
        f"  data: {d.get('labeled')} labeled, {d.get('unlabeled')} unlabeled, "
        + (f"{validation['cases']} validation ({validation['source']})" if isinstance(validation, dict)
           else "no validation") + f", {d.get('test')} test; median spacing "
        + (_fmt(d.get("median_spacing", []), " mm") if d.get("spacing_known") else "unknown")
        + f", median shape {_fmt(d.get('median_shape', []))}",
        "  device: " + ", ".join(f"{k} {_value_text(v)}" for k, v in plan.device.items()),
    ]
    width = max(len(name) for name in PLAN_FIELDS)
    for name in PLAN_FIELDS:
        entry: PlanField = getattr(plan, name)
        value = _value_text(entry.value)
        lines.append(f"  {name:<{width}}  {value:<16}  {entry.reason}")
    lines += [f"  warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- MONAI transforms
def _field_value(plan: Any, name: str) -> Any:
    if isinstance(plan, Plan):
        return getattr(plan, name).value
    return plan


def normalization_transforms(plan: Plan | Mapping[str, Any], keys: str | Sequence[str] = "image") -> list[Any]:
    """The MONAI transforms of a plan's ``normalization`` (for ``crossmatch_ext.data.load_transforms(intensity=...)``).

    Args:
        plan: a plan, or its ``normalization`` value.
        keys: the image keys.

    Returns:
        CT: ``ScaleIntensityRanged`` (clip to ``clip``) then ``NormalizeIntensityd`` with the plan's mean and std;
        z-score: ``NormalizeIntensityd`` per image and channel.

    Raises:
        SettingError: for an unknown scheme.
    """
    from monai.transforms import NormalizeIntensityd, ScaleIntensityRanged

    value = _field_value(plan, "normalization")
    scheme = value.get("scheme") if isinstance(value, Mapping) else None
    if scheme == "zscore":
        return [NormalizeIntensityd(keys=keys, channel_wise=True)]
    if scheme == "ct":
        low, high = (float(v) for v in value["clip"])
        return [ScaleIntensityRanged(keys=keys, a_min=low, a_max=high, b_min=low, b_max=high, clip=True),
                NormalizeIntensityd(keys=keys, subtrahend=float(value["mean"]),  # type: ignore[arg-type]
                                    divisor=float(value["std"]))]  # type: ignore[arg-type]  # floats work
    raise SettingError(f"plan field 'normalization' must have scheme 'zscore' or 'ct', got {value!r}.")


def spacing_transforms(plan: Plan | Sequence[float | None] | None,
                       keys: Sequence[str] = ("image", "label")) -> list[Any]:
    """The resampling of a plan's ``target_spacing`` (none when it is null).

    Args:
        plan: a plan, or its ``target_spacing`` value.
        keys: the image and label keys (bilinear for the first, nearest for the others; missing keys allowed).

    Returns:
        ``[Spacingd(...)]`` with ``-1`` (MONAI: keep the image's own spacing) for null axes, or ``[]``.
    """
    from crossmatch_ext.transforms import Spacingd  # MONAI's, safe beside MONAI Label's ``image_path``

    value = _field_value(plan, "target_spacing")
    if value is None:
        return []
    pixdim = [-1.0 if v is None else float(v) for v in value]
    modes = ["bilinear"] + ["nearest"] * (len(keys) - 1)
    return [Spacingd(keys=list(keys), pixdim=pixdim, mode=modes, allow_missing_keys=True)]
