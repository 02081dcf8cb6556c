"""A precision guard for autocast training: convolutions whose low-precision kernel is wrong run in float32.

Some builds compute wrong convolution gradients in bfloat16. torch 2.13 on CPUs with AVX-512 BF16 but without AMX
(oneDNN 3.12, ``jit_avx512_core_bf16`` backward-weights kernel) returns a garbage *weight* gradient of ``Conv3d``
whenever the input depth is 2 (relative error 0.8-1.0, sometimes 1e30 or NaN); the output and the input gradient
are right, and the garbage is mostly finite, so a non-finite check of the gradients does not see it. The LA V-Net's
bottleneck convolutions see depth 2 at 32-47 voxel patches. Whether a given layer is hit depends on the thread count
(oneDNN splits the reduction by threads: 16 channels are wrong with 1 thread and right with 2, 64 and more are wrong
with both), and a CPU with AMX runs another, right, kernel unless oneDNN's ISA is capped
(``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` reproduces the defect there). The upstream reproducer::

    benchdnn --conv --dir=BWD_W --dt=bf16 mb1ic16id2ih4iw4oc16od2oh4ow4kd3kh3kw3pd1ph1pw1

:class:`PrecisionGuard` checks every convolution of a network (``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d``) at the
input shapes it actually sees, lazily on the first forward pass at each new (layer configuration, input shape,
memory format, autocast type, device): the lone layer of the same configuration runs forward and backward on random
data (its own ``torch.Generator``: the global random streams are untouched) under autocast and in float32
(:func:`check_convolution`), and the relative L2 errors of the output, the input gradient and the weight gradient
are compared with a tolerance (:data:`DEFAULT_TOLERANCE`, 0.05: about 15 times bf16's rounding error of a healthy
kernel, 0.003-0.004, and 20 times below the defect). A layer above the tolerance, or with a non-finite result, runs
in float32 inside the autocast region for the rest of the run (its forward runs with autocast disabled on float32
inputs); a healthy layer stays in the autocast type. One ``WARNING`` line of the logger
``crossmatch_ext.engines.precision`` names each layer kept in float32, its input shape and the three errors.

The verdicts are cached in memory (for the process) and on disk (:func:`default_cache_path`, a JSON file), keyed
by the build and the machine (:func:`environment_key`: torch, oneDNN, the CPU's model and bf16 / AMX features, the
intra-op thread count, or the GPU, CUDA and cuDNN), the layer configuration, the input shape and memory format and
the autocast type, so a check costs its seconds once per machine: on a 2-core CPU about 1.5 s for the LA V-Net at
32x32x32 and a minute for the ACDC U-Net at 256x256 with batch 12 (the first iteration pays it; see
``benchmarks/precision_check.py``). After its first call at a shape, a guarded convolution costs one dictionary
lookup per call (plus reading the autocast state: a few microseconds).

Usage::

    guard = PrecisionGuard(network, "cpu", torch.bfloat16).attach()
    ...  # training under torch.autocast("cpu", dtype=torch.bfloat16)
    guard.summary()  # [{"module": "network.encoder.4.block.0.conv", "input_shape": [4, 256, 2, 2, 2], ...}]
    guard.detach()

The guard replaces the ``forward`` of each convolution instance (no new module, so the ``state_dict`` keys do not
change and the weights load into an unguarded network); a deep copy of a guarded network is guarded by the same
guard, a pickled one (``torch.save(network)``) is saved unguarded.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import math
import os
import platform
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional, cast

import torch
from torch import Tensor, nn

from crossmatch_ext.io import atomic_open

from .trainer import unwrap_network

__all__ = [
    "DEFAULT_TOLERANCE",
    "PRECISION_CACHE_ENV",
    "ConvolutionConfig",
    "PrecisionGuard",
    "PrecisionVerdict",
    "check_convolution",
    "clear_verdict_cache",
    "default_cache_path",
    "environment_key",
    "guarded_forwards",
    "memory_layout",
    "relative_error",
]

logger = logging.getLogger(__name__)

#: Relative L2 error (of the output, the input gradient or the weight gradient, autocast against float32) above which
#: a convolution is kept in float32. A healthy bf16 kernel is at 0.003-0.004 (bf16's 8-bit mantissa: 2**-9 rounding
#: of the inputs and the weights), float16 at about 0.0003; the oneDNN bf16 defect at 0.8 and above (or not finite).
DEFAULT_TOLERANCE = 0.05

#: Environment variable naming the verdict cache file; empty (or ``off`` / ``none``) keeps the verdicts in memory.
PRECISION_CACHE_ENV = "CROSSMATCH_PRECISION_CACHE"

_CACHE_FORMAT = 1
_CONVOLUTIONS: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
}
_CONVOLUTION_TYPES = tuple(_CONVOLUTIONS.values())
_AUTOCAST_INPUTS = (torch.float32, torch.float16, torch.bfloat16)
_MEMORY_FORMATS = {"channels_last": torch.channels_last, "channels_last_3d": torch.channels_last_3d}
# the environment variables that change which oneDNN kernel runs
_ONEDNN_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE", "DNNL_DEFAULT_FPMATH_MODE",
                     "ONEDNN_CPU_ISA_HINTS", "DNNL_CPU_ISA_HINTS")


# ------------------------------------------------------------------------------------------------------- the check
def memory_layout(tensor: Tensor) -> str:
    """The memory format of a tensor, as the verdicts name it: ``"contiguous"``, ``"channels_last"`` (4D),
    ``"channels_last_3d"`` (5D), else ``"strided"`` (checked as contiguous)."""
    if tensor.is_contiguous():
        return "contiguous"
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    if tensor.dim() == 5 and tensor.is_contiguous(memory_format=torch.channels_last_3d):
        return "channels_last_3d"
    return "strided"


def _in_layout(tensor: Tensor, layout: str) -> Tensor:
    memory_format = _MEMORY_FORMATS.get(layout)
    if memory_format is None or tensor.dim() != (4 if layout == "channels_last" else 5):
        return tensor.contiguous()
    return tensor.contiguous(memory_format=memory_format)


def _ints(value: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),)


@dataclass(frozen=True)
class ConvolutionConfig:
    """Everything about a convolution layer that selects its kernel, without its weights.

    Args:
        kind: the torch class name: ``"Conv1d"`` ... ``"ConvTranspose3d"``.
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
            output_padding: the layer's arguments (``padding`` may be ``"same"`` / ``"valid"``).
        weight_layout: the memory format of the weight (:func:`memory_layout`; the trainer's ``channels_last``
            converts the weights).
    """

    kind: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...] = (1,)
    padding: tuple[int, ...] | str = (0,)
    dilation: tuple[int, ...] = (1,)
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"
    output_padding: tuple[int, ...] = (0,)
    weight_layout: str = "contiguous"

    def __post_init__(self) -> None:
        if self.kind not in _CONVOLUTIONS:
            raise ValueError(f"ConvolutionConfig: kind must be one of {sorted(_CONVOLUTIONS)}, got {self.kind!r}.")

    @classmethod
    def from_module(cls, module: nn.Module) -> ConvolutionConfig:
        """The configuration of a convolution module (a subclass is described by the torch class it derives from).

        Raises:
            TypeError: ``module`` is not a ``torch.nn`` convolution.
        """
        kind = next((name for name, base in _CONVOLUTIONS.items() if isinstance(module, base)), None)
        if kind is None:
            raise TypeError(f"ConvolutionConfig.from_module needs a torch.nn convolution, got {type(module).__name__}.")
        conv: Any = module
        padding = conv.padding if isinstance(conv.padding, str) else _ints(conv.padding)
        return cls(
            kind=kind, in_channels=int(conv.in_channels), out_channels=int(conv.out_channels),
            kernel_size=_ints(conv.kernel_size), stride=_ints(conv.stride), padding=padding,
            dilation=_ints(conv.dilation), groups=int(conv.groups), bias=conv.bias is not None,
            padding_mode=str(conv.padding_mode), output_padding=_ints(conv.output_padding),
            weight_layout=memory_layout(conv.weight),
        )

    @property
    def transposed(self) -> bool:
        """Whether the layer is a transposed convolution."""
        return self.kind.startswith("ConvTranspose")

    @property
    def spatial_dims(self) -> int:
        """1, 2 or 3."""
        return int(self.kind[-2])

    def describe(self) -> str:
        """A short, stable description (part of the cache key), e.g. ``Conv3d(16->16, k3x3x3, s1x1x1, p1x1x1)``."""
        def axes(values: tuple[int, ...]) -> str:
            return "x".join(map(str, values))

        padding = self.padding if isinstance(self.padding, str) else axes(self.padding)
        parts = [f"{self.in_channels}->{self.out_channels}", f"k{axes(self.kernel_size)}", f"s{axes(self.stride)}",
                 f"p{padding}"]
        if set(self.dilation) != {1}:
            parts.append(f"d{axes(self.dilation)}")
        if self.groups != 1:
            parts.append(f"g{self.groups}")
        if self.transposed and set(self.output_padding) != {0}:
            parts.append(f"op{axes(self.output_padding)}")
        if not self.bias:
            parts.append("no bias")
        if self.padding_mode != "zeros":
            parts.append(self.padding_mode)
        if self.weight_layout != "contiguous":
            parts.append(f"weight {self.weight_layout}")
        return f"{self.kind}({', '.join(parts)})"

    def build(self, device: torch.device | str = "cpu") -> nn.Module:
        """A layer of this configuration on ``device`` with uninitialised weights (no random draw)."""
        kwargs: dict[str, Any] = {
            "in_channels": self.in_channels, "out_channels": self.out_channels, "kernel_size": self.kernel_size,
            "stride": self.stride, "padding": self.padding, "dilation": self.dilation, "groups": self.groups,
            "bias": self.bias, "padding_mode": self.padding_mode,
        }
        if self.transposed:
            kwargs["output_padding"] = self.output_padding
        layer = torch.nn.utils.skip_init(_CONVOLUTIONS[self.kind], device=device, **kwargs)
        if self.weight_layout in _MEMORY_FORMATS:
            layer.weight.data = _in_layout(layer.weight.data, self.weight_layout)
        return layer


_FLOAT64_ELEMENTS = 1 << 22  # relative errors of larger tensors are computed in float32 (a 1e-6 matter)


def relative_error(value: Tensor, reference: Tensor) -> float:
    """``||value - reference|| / ||reference||`` (L2; in float64 up to 4M elements, float32 beyond); ``inf`` /
    ``nan`` when ``value`` is not finite; the absolute error when the reference is zero."""
    dtype = torch.float64 if reference.numel() <= _FLOAT64_ELEMENTS else torch.float32
    reference = reference.detach().to(dtype)
    difference = float(torch.linalg.vector_norm(value.detach().to(dtype) - reference))
    scale = float(torch.linalg.vector_norm(reference))
    if not math.isfinite(difference):
        return difference
    return difference / scale if scale > 0 else difference


def _json_float(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return str(value)  # "nan", "inf": strict JSON has no non-finite numbers


def _from_json_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class PrecisionVerdict:
    """The result of :func:`check_convolution`: the errors of one layer configuration at one input shape.

    Attributes:
        layer: :meth:`ConvolutionConfig.describe` of the layer.
        input_shape: the input's shape, batch first.
        memory_format: the input's memory format (:func:`memory_layout`).
        dtype: the autocast type checked (``"bfloat16"``, ``"float16"``).
        device: the device type (``"cpu"``, ``"cuda"``).
        output_error, input_grad_error, weight_grad_error, bias_grad_error: relative L2 errors against float32
            (the largest over the repeats; ``bias_grad_error`` None without bias). Not used for the decision:
            ``bias_grad_error``.
        nonfinite: non-finite values in the autocast output and gradients, over all repeats.
        tolerance: the largest error accepted.
        seconds: the time the check took.
    """

    layer: str
    input_shape: tuple[int, ...]
    memory_format: str
    dtype: str
    device: str
    output_error: float
    input_grad_error: float
    weight_grad_error: float
    bias_grad_error: float | None = None
    nonfinite: int = 0
    tolerance: float = DEFAULT_TOLERANCE
    seconds: float = 0.0

    @property
    def errors(self) -> tuple[float, float, float]:
        """The errors the decision reads: output, input gradient, weight gradient."""
        return self.output_error, self.input_grad_error, self.weight_grad_error

    @property
    def keep_float32(self) -> bool:
        """Whether the layer must run in float32: an error above the tolerance, or a non-finite value."""
        return self.nonfinite > 0 or any(not math.isfinite(e) or e > self.tolerance for e in self.errors)

    def reason(self) -> str:
        """Why the layer is kept in float32 (empty when it is not)."""
        if self.nonfinite:
            return f"{self.nonfinite} non-finite values"
        names = ("output", "input gradient", "weight gradient")
        bad = [name for name, e in zip(names, self.errors) if not math.isfinite(e) or e > self.tolerance]
        return f"{' and '.join(bad)} above the tolerance {self.tolerance:g}" if bad else ""

    def to_dict(self) -> dict[str, Any]:
        """The verdict as JSON-compatible values (non-finite errors as the text ``"nan"`` / ``"inf"``)."""
        record = asdict(self)
        record["input_shape"] = list(self.input_shape)
        for name in ("output_error", "input_grad_error", "weight_grad_error", "bias_grad_error"):
            record[name] = _json_float(record[name])
        record["keep_float32"] = self.keep_float32
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> PrecisionVerdict:
        """The verdict of :meth:`to_dict`."""
        return cls(
            layer=str(record["layer"]), input_shape=tuple(int(s) for s in record["input_shape"]),
            memory_format=str(record["memory_format"]), dtype=str(record["dtype"]), device=str(record["device"]),
            output_error=float(record["output_error"]), input_grad_error=float(record["input_grad_error"]),
            weight_grad_error=float(record["weight_grad_error"]),
            bias_grad_error=_from_json_float(record.get("bias_grad_error")), nonfinite=int(record.get("nonfinite", 0)),
            tolerance=float(record.get("tolerance", DEFAULT_TOLERANCE)), seconds=float(record.get("seconds", 0.0)),
        )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _nonfinite(tensor: Tensor) -> int:
    return int((~torch.isfinite(tensor)).sum())


def check_convolution(
    config: ConvolutionConfig | nn.Module,
    input_shape: Sequence[int],
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    memory_format: str = "contiguous",
    tolerance: float = DEFAULT_TOLERANCE,
    repeats: int = 1,
    seed: int = 0,
) -> PrecisionVerdict:
    """Run the lone layer forward and backward under autocast and in float32, and compare.

    The weights (uniform, standard deviation ``1 / sqrt(fan_in)``), the bias (0.1), the input and the upstream
    gradient (uniform, standard deviation 1; rounded to ``dtype`` so that both runs get the same one) are drawn from a
    private
    ``torch.Generator`` seeded with ``seed``: the global random streams are untouched. The autocast passes run
    first (so that no float32 result of this layer is left in freed memory that a wrong kernel might leave unwritten);
    grad mode is enabled (also inside ``torch.no_grad()`` / ``torch.inference_mode()``), and the float32 reference
    runs with autocast disabled (also inside an active autocast region).

    Args:
        config: the layer's configuration, or the layer itself (its weights are not used).
        input_shape: the input's shape, batch first.
        dtype: the autocast type (``torch.bfloat16``, ``torch.float16``).
        device: where to run it.
        memory_format: the input's memory format (:func:`memory_layout`); ``"strided"`` runs contiguous.
        tolerance: the largest relative error accepted (:data:`DEFAULT_TOLERANCE`).
        repeats: autocast passes (the errors are the largest of them).
        seed: seed of the private generator.

    Returns:
        The verdict; :attr:`PrecisionVerdict.keep_float32` tells whether the layer must run in float32.

    Raises:
        ValueError: ``input_shape`` does not fit the layer, or ``repeats`` is not positive.
    """
    if not isinstance(config, ConvolutionConfig):
        config = ConvolutionConfig.from_module(config)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != config.spatial_dims + 2 or shape[1] != config.in_channels:
        raise ValueError(
            f"check_convolution: {config.describe()} takes (batch, {config.in_channels}, "
            f"{config.spatial_dims} spatial sizes), got input shape {list(shape)}."
        )
    if repeats < 1:
        raise ValueError(f"check_convolution: repeats must be positive, got {repeats}.")
    device = torch.device(device)
    started = time.perf_counter()
    generator = torch.Generator(device="cpu").manual_seed(int(seed))

    def draw(size: Sequence[int], std: float = 1.0) -> Tensor:  # uniform: cheaper than normal for large inputs
        values = torch.empty(tuple(size), dtype=torch.float32).uniform_(-1.0, 1.0, generator=generator)
        return values.mul_(std * math.sqrt(3.0)).to(device)

    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        layer = config.build(device)
        weight = cast(Tensor, layer.weight)
        bias = cast(Optional[Tensor], layer.bias)
        # fan-in of an output value: in_channels / groups * kernel volume (the weight's dims 1... of a convolution,
        # dim 0 over groups of a transposed one)
        fan_in = weight[0].numel() if not config.transposed else weight.shape[0] // config.groups * math.prod(
            config.kernel_size)
        with torch.no_grad():
            weight.copy_(draw(weight.shape, 1.0 / math.sqrt(max(fan_in, 1))))
            if bias is not None:
                bias.copy_(draw(bias.shape, 0.1))
        parameters = [weight] + ([bias] if bias is not None else [])
        x = _in_layout(draw(shape), memory_format).requires_grad_(True)
        upstream: Tensor | None = None
        results: list[tuple[Tensor, ...]] = []
        for _ in range(repeats):
            with torch.autocast(device.type, dtype=dtype):
                out = layer(x)
            if upstream is None:
                upstream = _in_layout(draw(out.shape).to(dtype), memory_layout(out))
            grads = torch.autograd.grad(out, [x, *parameters], upstream.to(out.dtype))
            results.append((out.detach(), *grads))  # compared after the float32 run (see above)
            del out, grads
        assert upstream is not None
        with torch.autocast(device.type, enabled=False):
            out = layer(x)
            reference = (out.detach(), *torch.autograd.grad(out, [x, *parameters], upstream.float()))

    errors, nonfinite = [], 0
    for i in range(len(reference)):
        values = [relative_error(result[i], reference[i]) for result in results]
        errors.append(max(values, key=lambda e: e if math.isfinite(e) else math.inf))
        # a finite error implies finite values: count them only where it is not
        nonfinite += sum(_nonfinite(result[i]) for result, e in zip(results, values) if not math.isfinite(e))
    return PrecisionVerdict(
        layer=config.describe(), input_shape=shape, memory_format=memory_format, dtype=_dtype_name(dtype),
        device=device.type, output_error=errors[0], input_grad_error=errors[1], weight_grad_error=errors[2],
        bias_grad_error=errors[3] if len(errors) > 3 else None, nonfinite=nonfinite, tolerance=float(tolerance),
        seconds=time.perf_counter() - started,
    )


# ------------------------------------------------------------------------------------------------- the cache keys
@functools.cache
def _onednn_version() -> str:
    match = re.search(r"MKL-DNN v([\w.]+)(?: \(Git Hash (\w+)\))?", torch.__config__.show())
    if match is None:
        return "none"
    return match.group(1) + (f" ({match.group(2)[:12]})" if match.group(2) else "")


@functools.cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def _cpu_features() -> str:
    features = []
    for name in ("avx512_bf16", "amx_tile", "amx_fp16", "vnni"):
        probe = getattr(torch.cpu, f"_is_{name}_supported", None)
        if probe is not None and probe():
            features.append(name)
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    return f"{capability}" + (f" +{'+'.join(features)}" if features else "")


def environment_key(device: torch.device | str = "cpu") -> str:
    """What, besides the layer and the shape, decides which kernel runs: the first part of every cache key.

    On a CPU: torch, oneDNN (``torch.__config__.show()``), the CPU model, torch's CPU capability and the bf16 / AMX
    features, the intra-op thread count (oneDNN's blocking depends on it; the bf16 defect does too), whether oneDNN
    is enabled, and the ``ONEDNN_*`` variables that cap or hint its ISA. On CUDA: torch, CUDA, cuDNN, the GPU's
    name and compute capability. Elsewhere: torch and the device type.
    """
    device = torch.device(device)
    parts = [f"torch {torch.__version__}"]
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        parts += [f"cuda {torch.version.cuda}", f"cudnn {torch.backends.cudnn.version()}",
                  f"gpu {torch.cuda.get_device_name(index)} (sm {major}.{minor})"]
    elif device.type == "cpu":
        parts += [f"onednn {_onednn_version()}" if torch.backends.mkldnn.is_available() else "no onednn",
                  f"cpu {_cpu_model()} ({_cpu_features()})", f"threads {torch.get_num_threads()}"]
        if not torch.backends.mkldnn.enabled:
            parts.append("onednn disabled")
        parts += [f"{name}={os.environ[name]}" for name in _ONEDNN_VARIABLES if os.environ.get(name)]
    else:
        parts.append(device.type)
    return "; ".join(parts)


def _cache_key(environment: str, config: ConvolutionConfig, shape: Sequence[int], layout: str, dtype: str) -> str:
    return f"{environment} | {config.describe()} | input {list(shape)} {layout} | {dtype}"


# ------------------------------------------------------------------------------------------------------ the cache
def default_cache_path() -> Path | None:
    """The verdict cache file: ``$CROSSMATCH_PRECISION_CACHE``, else ``$XDG_CACHE_HOME/crossmatch_ext/
    precision_verdicts.json`` (``~/.cache/...``); None when the variable is set to ``""``, ``off`` or ``none``."""
    value = os.environ.get(PRECISION_CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "none") else Path(value).expanduser()
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "crossmatch_ext" / "precision_verdicts.json"


_MEMORY: dict[str, PrecisionVerdict] = {}  # every verdict known to this process, by cache key
_LOADED: set[Path] = set()  # cache files read into _MEMORY
_UNWRITABLE: set[Path] = set()  # cache files already warned about
_CACHE_LOCK = threading.RLock()


def clear_verdict_cache() -> None:
    """Forget the verdicts held in memory (the next lookup reads the cache file again, as a new process would)."""
    with _CACHE_LOCK:
        _MEMORY.clear()
        _LOADED.clear()


def _read_cache_file(path: Path) -> dict[str, Any]:
    """The verdicts of a cache file as stored (``{}`` when it is missing or unreadable, with a warning)."""
    try:
        with open(path, encoding="utf-8") as stream:
            content = json.load(stream)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        logger.warning(f"precision guard: the verdict cache {path} is unreadable ({error}); it will be rewritten")
        return {}
    if not isinstance(content, dict) or content.get("format") != _CACHE_FORMAT:
        return {}
    verdicts = content.get("verdicts")
    return verdicts if isinstance(verdicts, dict) else {}


def _cached_verdict(key: str, path: Path | None) -> PrecisionVerdict | None:
    with _CACHE_LOCK:
        if path is not None and path not in _LOADED:
            _LOADED.add(path)
            for stored_key, record in _read_cache_file(path).items():
                try:
                    _MEMORY.setdefault(stored_key, PrecisionVerdict.from_dict(record))
                except (KeyError, TypeError, ValueError):
                    continue  # an entry of another format: checked again
        return _MEMORY.get(key)


def _store_verdict(key: str, verdict: PrecisionVerdict, path: Path | None) -> None:
    with _CACHE_LOCK:
        _MEMORY[key] = verdict
        if path is None:
            return
        verdicts = _read_cache_file(path)  # merged: another process may have added its own since
        verdicts[key] = verdict.to_dict()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(path, "w", encoding="utf-8") as stream:
                json.dump({"format": _CACHE_FORMAT, "written_by": "crossmatch_ext.engines.precision",
                           "verdicts": dict(sorted(verdicts.items()))}, stream, indent=1)
                stream.write("\n")
        except OSError as error:
            if path not in _UNWRITABLE:
                _UNWRITABLE.add(path)
                logger.warning(
                    f"precision guard: cannot write the verdict cache {path} ({error}); verdicts are kept in memory "
                    f"only (set {PRECISION_CACHE_ENV} to a writable file)"
                )


# ------------------------------------------------------------------------------------------------------ the guard
_HotKey = tuple[torch.Size, tuple[int, ...], torch.dtype, str]


class _GuardedForward:
    """The ``forward`` of a guarded convolution instance: the layer's own forward, in float32 where the guard's
    verdict for the input's shape says so."""

    def __init__(self, guard: PrecisionGuard, module: nn.Module, name: str, previous: Callable[..., Any] | None):
        self.guard = guard
        self.module = module
        self.name = name
        self.previous = previous  # an instance forward set before the guard's (restored by detach)
        self.verdicts: dict[_HotKey, bool] = {}  # keep in float32, by (shape, strides, autocast type, device)

    def plain(self, *args: Any, **kwargs: Any) -> Any:
        if self.previous is not None:
            return self.previous(*args, **kwargs)
        return type(self.module).forward(self.module, *args, **kwargs)

    def __call__(self, input: Tensor, *args: Any, **kwargs: Any) -> Any:
        device_type = input.device.type
        if not torch.is_autocast_enabled(device_type) or input.dtype not in _AUTOCAST_INPUTS:
            return self.plain(input, *args, **kwargs)
        dtype = torch.get_autocast_dtype(device_type)
        key = (input.shape, input.stride(), dtype, device_type)
        keep_float32 = self.verdicts.get(key)
        if keep_float32 is None:
            keep_float32 = self.guard._decide(self, input, dtype, key)
        if not keep_float32:
            return self.plain(input, *args, **kwargs)
        with torch.autocast(device_type, enabled=False):
            return self.plain(input.float(), *args, **kwargs)

    def __deepcopy__(self, memo: dict[int, Any]) -> _GuardedForward:
        copied = _GuardedForward(self.guard, copy.deepcopy(self.module, memo), self.name,
                                 copy.deepcopy(self.previous, memo))
        copied.verdicts = dict(self.verdicts)
        return copied

    def __reduce__(self) -> tuple[Any, ...]:
        # a pickled network (torch.save(network)) holds the layer's plain forward, not the guard
        return functools.partial, (type(self.module).forward, self.module)


class PrecisionGuard:
    """Keep in float32 the convolutions of ``network`` whose autocast kernel is wrong at the shapes they see.

    See the module docstring. Each convolution module gets a guarded ``forward`` (:meth:`attach`); on its first call
    at a new input shape under autocast, :func:`check_convolution` runs (or the cached verdict is read) and the
    verdict is kept for that shape. Outside autocast the guarded forward is the layer's own.

    Args:
        network: the network (``DistributedDataParallel`` / ``torch.compile`` wrappers are looked through; module
            names are relative to the module inside, e.g. ``network.encoder.4.block.0.conv`` for a
            :class:`~crossmatch_ext.networks.FeaturePerturbedNetwork`).
        device_type: act only under the autocast of this device type (None: any).
        dtype: act only under autocast to this type (None: any).
        tolerance: the largest relative error accepted (:data:`DEFAULT_TOLERANCE`).
        cache_path: the verdict cache file (default: :func:`default_cache_path`).
        disk_cache: read and write the cache file (False: verdicts in memory only).
        repeats: autocast passes per check.

    Raises:
        ValueError: ``tolerance`` is not positive.
    """

    def __init__(
        self,
        network: nn.Module,
        device_type: str | None = None,
        dtype: torch.dtype | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
        cache_path: str | os.PathLike | None = None,
        disk_cache: bool = True,
        repeats: int = 1,
    ) -> None:
        if not tolerance > 0:
            raise ValueError(f"PrecisionGuard: tolerance must be positive, got {tolerance}.")
        self.network = unwrap_network(network)
        self.device_type = device_type
        self.dtype = dtype
        self.tolerance = float(tolerance)
        self.cache_path = (Path(cache_path) if cache_path is not None else default_cache_path()) if disk_cache else None
        self.repeats = int(repeats)
        self.checks_run = 0  # checks run by this guard (not read from a cache)
        self.check_seconds = 0.0
        self._guarded: dict[str, _GuardedForward] = {}
        self._records: dict[tuple[str, str], PrecisionVerdict] = {}  # by (module name, cache key)
        self._lock = threading.RLock()
        self._announced = False

    # ------------------------------------------------------------------------------------------------------------
    def attach(self) -> PrecisionGuard:
        """Guard every convolution of the network (a convolution guarded by another guard changes guard).

        Returns:
            The guard itself.
        """
        for name, module in self.network.named_modules():
            if not isinstance(module, _CONVOLUTION_TYPES) or name in self._guarded:
                continue
            previous = module.__dict__.get("forward")
            if isinstance(previous, _GuardedForward):
                previous = previous.previous
            guarded = _GuardedForward(self, module, name, previous)
            setattr(module, "forward", guarded)  # noqa: B010  # an instance attribute: mypy rejects `module.forward =`
            self._guarded[name] = guarded
        return self

    def detach(self) -> None:
        """Give every guarded convolution its own forward back (the verdicts stay cached)."""
        for guarded in self._guarded.values():
            module = guarded.module
            if module.__dict__.get("forward") is guarded:
                if guarded.previous is None:
                    del module.__dict__["forward"]
                else:
                    setattr(module, "forward", guarded.previous)  # noqa: B010
        self._guarded.clear()

    def __enter__(self) -> PrecisionGuard:
        return self.attach()

    def __exit__(self, *exc_info: Any) -> None:
        self.detach()

    @property
    def guarded_modules(self) -> list[str]:
        """The names of the convolutions guarded."""
        return list(self._guarded)

    @property
    def float32_modules(self) -> list[str]:
        """The names of the convolutions kept in float32 at one shape or more, in network order."""
        flagged = {name for (name, _), verdict in self._records.items() if verdict.keep_float32}
        return [name for name in self._guarded if name in flagged] + sorted(flagged - set(self._guarded))

    def summary(self, flagged_only: bool = True) -> list[dict[str, Any]]:
        """One dict per (convolution, input shape) decided so far: ``module`` (its name), ``float32`` (kept in
        float32), and the fields of :meth:`PrecisionVerdict.to_dict` (``layer``, ``input_shape``,
        ``memory_format``, ``dtype``, ``device``, the errors, ``tolerance``).

        Args:
            flagged_only: only the layers kept in float32.
        """
        rows = []
        for (name, _), verdict in self._records.items():
            if flagged_only and not verdict.keep_float32:
                continue
            record = verdict.to_dict()
            rows.append({"module": name, "float32": record.pop("keep_float32"), **record})
        return rows

    def record(self) -> dict[str, Any]:
        """What a run records (``run_settings.json``): the settings of the guard, the count of convolution
        shapes decided and the layers kept in float32 (:meth:`summary`)."""
        return {
            "tolerance": self.tolerance,
            "device_type": self.device_type,
            "dtype": None if self.dtype is None else _dtype_name(self.dtype),
            "cache": None if self.cache_path is None else os.fspath(self.cache_path),
            "guarded_convolutions": len(self._guarded),
            "shapes_decided": len(self._records),
            "checks_run": self.checks_run,
            "float32_layers": self.summary(),
        }

    # ------------------------------------------------------------------------------------------------------------
    @torch.compiler.disable
    def _decide(self, guarded: _GuardedForward, input: Tensor, dtype: torch.dtype, key: _HotKey) -> bool:
        """The verdict of a guarded convolution at a new input shape (cached, else checked), remembered in
        ``guarded.verdicts``."""
        device_type = input.device.type
        if (self.device_type is not None and device_type != self.device_type) or (
            self.dtype is not None and dtype != self.dtype
        ) or input.numel() == 0:
            guarded.verdicts[key] = False
            return False
        with self._lock:
            if key in guarded.verdicts:
                return guarded.verdicts[key]
            config = ConvolutionConfig.from_module(guarded.module)
            layout = memory_layout(input)
            shape = tuple(input.shape)
            cache_key = _cache_key(environment_key(input.device), config, shape, layout, _dtype_name(dtype))
            verdict = _cached_verdict(cache_key, self.cache_path)
            if verdict is None:
                if not self._announced:
                    self._announced = True
                    where = f"cached in {self.cache_path}" if self.cache_path is not None else "cached in memory"
                    logger.info(
                        f"precision guard: checking each convolution at each new input shape in {_dtype_name(dtype)} "
                        f"autocast against float32 (once per machine and build, {where})"
                    )
                verdict = check_convolution(config, shape, dtype, input.device, layout, self.tolerance, self.repeats)
                self.checks_run += 1
                self.check_seconds += verdict.seconds
                _store_verdict(cache_key, verdict, self.cache_path)
            verdict = replace(verdict, tolerance=self.tolerance)
            self._records[(guarded.name, cache_key)] = verdict
            if verdict.keep_float32:
                logger.warning(
                    f"precision guard: {guarded.name} ({verdict.layer}) at input {list(shape)} ({layout}) runs in "
                    f"float32 inside the {verdict.dtype} autocast region: relative errors of {verdict.dtype} against "
                    f"float32: output {verdict.output_error:.3g}, input gradient {verdict.input_grad_error:.3g}, "
                    f"weight gradient {verdict.weight_grad_error:.3g} ({verdict.reason()})"
                )
            guarded.verdicts[key] = verdict.keep_float32
            return verdict.keep_float32


def guarded_forwards(network: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The convolutions of ``network`` that carry a guarded forward (for checks and tests)."""
    for name, module in unwrap_network(network).named_modules():
        if isinstance(module.__dict__.get("forward"), _GuardedForward):
            yield name, module

