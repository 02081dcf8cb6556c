"""Autocast convolutions against float32 on this machine and build: the op-level table and the bundles' networks.

Part 1, ops: a lone ``Conv3d`` (kernel 3, padding 1) at each input shape of ``--shapes3d`` (depth first; the
defaults hold the depth-2 shapes of the oneDNN bf16 defect and depth >= 3 ones) and a lone ``Conv2d`` at each of
``--shapes2d``, for each channel count of ``--channels``, contiguous and channels-last, forward and backward under
autocast (``--dtype``) and in float32, ``--repeats`` times with fresh random data
(:func:`crossmatch_ext.engines.check_convolution`): the max / median relative L2 error of the output, the input
gradient, the weight gradient and the bias gradient, the count of non-finite values, and in how many repeats the
guard's tolerance is exceeded.

Part 2, networks: the bundles' networks at the bundles' shapes, each convolution checked at the input shapes the
training passes give it (a plain pass on B rows, the feature-perturbed pass on [labeled; unlabeled], 2B rows
through the encoder and 4B through the decoder; channels-last as the trainer's default) by the guard itself
(:class:`crossmatch_ext.engines.PrecisionGuard`, in-memory cache only, so every shape is checked here): its
verdict for each distinct (layer configuration, input shape), with the module names that have it. ``la32`` is the
LA V-Net at a 32x32x32 patch (bottleneck 2x2x2), ``la`` at the bundle's 112x112x80 patch (slow on a CPU: about
a minute per convolution shape), ``acdc`` the ACDC U-Net at 256x256; batch sizes as the bundles (LA 2, ACDC 12).

Usage::

    python benchmarks/precision_check.py --table                      # JSON on stdout, the table on stderr
    python benchmarks/precision_check.py --output precision.json --networks la32 la acdc
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python benchmarks/precision_check.py --table   # oneDNN without AMX
    python benchmarks/precision_check.py --device cuda --dtype float16

The oneDNN defect's upstream reproducer::

    benchdnn --conv --dir=BWD_W --dt=bf16 mb1ic16id2ih4iw4oc16od2oh4ow4kd3kh3kw3pd1ph1pw1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crossmatch_ext.engines.precision import (
    DEFAULT_TOLERANCE,
    ConvolutionConfig,
    PrecisionGuard,
    check_convolution,
    clear_verdict_cache,
    environment_key,
)

SHAPES_3D = ("2x2x2", "2x4x4", "2x3x3", "2x2x3", "3x2x2", "4x4x2", "4x4x3", "7x7x5", "8x8x4")
SHAPES_2D = ("2x2", "4x4", "8x8", "16x16", "32x32")
CHANNELS = (16, 64, 128, 256)
ERRORS = ("output_error", "input_grad_error", "weight_grad_error", "bias_grad_error")
#: name -> (network builder arguments, spatial patch, batch per loader)
NETWORKS: dict[str, tuple[str, tuple[int, ...], int]] = {
    "la32": ("vnet", (32, 32, 32), 2),
    "la": ("vnet", (112, 112, 80), 2),
    "acdc": ("unet", (256, 256), 12),
}
DEFAULT_NETWORKS = ("la32", "acdc")


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"a shape is written like 2x4x4, got {text!r}") from error


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes3d", type=_shape, nargs="*", default=[_shape(s) for s in SHAPES_3D],
                        help=f"Conv3d input spatial shapes, depth first (default {' '.join(SHAPES_3D)})")
    parser.add_argument("--shapes2d", type=_shape, nargs="*", default=[_shape(s) for s in SHAPES_2D],
                        help=f"Conv2d input spatial shapes (default {' '.join(SHAPES_2D)})")
    parser.add_argument("--channels", type=int, nargs="+", default=list(CHANNELS),
                        help="input = output channels of the lone layers (default 16 64 128 256)")
    parser.add_argument("--batch", type=int, default=1, help="batch of the lone layers' input (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="checks per op row, each on fresh random data")
    parser.add_argument("--networks", nargs="*", choices=sorted(NETWORKS), default=list(DEFAULT_NETWORKS),
                        help="bundle networks to check (default la32 acdc; la = 112x112x80 is slow on a CPU)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16", help="the autocast type")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"the guard's tolerance (default {DEFAULT_TOLERANCE})")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON here instead of stdout")
    parser.add_argument("--table", action="store_true", help="print the readable table on stderr")
    return parser.parse_args(argv)


def _finite_or_text(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _stats(values: list[float]) -> dict[str, float | str]:
    """Max and median, a non-finite value counting as the largest."""
    keys = [math.inf if math.isnan(v) else v for v in values]
    order = sorted(range(len(values)), key=lambda i: keys[i])
    median = statistics.median(keys)
    worst = values[order[-1]]
    return {"max": _finite_or_text(worst), "median": _finite_or_text(median)}


def check_op(kind: str, channels: int, spatial: tuple[int, ...], memory_format: str, args: argparse.Namespace,
             dtype: torch.dtype) -> dict[str, Any]:
    """One row of the op table: ``args.repeats`` checks of a lone layer with fresh random data each."""
    dims = len(spatial)
    config = ConvolutionConfig(kind, channels, channels, (3,) * dims, (1,) * dims, (1,) * dims, (1,) * dims,
                               weight_layout=memory_format)
    shape = (args.batch, channels, *spatial)
    verdicts = [check_convolution(config, shape, dtype, args.device, memory_format, args.tolerance, seed=seed)
                for seed in range(args.repeats)]
    row: dict[str, Any] = {"op": config.describe(), "kind": kind, "channels": channels, "input_shape": list(shape),
                           "depth": spatial[0], "memory_format": memory_format}
    for name in ERRORS:
        row[name] = _stats([float(getattr(v, name)) for v in verdicts])
    row["nonfinite"] = sum(v.nonfinite for v in verdicts)
    row["flagged"] = sum(v.keep_float32 for v in verdicts)
    row["repeats"] = len(verdicts)
    row["seconds"] = round(sum(v.seconds for v in verdicts), 3)
    return row


def _network(kind: str) -> torch.nn.Module:
    from crossmatch_ext.networks import FeaturePerturbation, FeaturePerturbedNetwork, UNet, VNet

    if kind == "vnet":  # bundles/crossmatch_la/configs/train.yaml network_def
        return FeaturePerturbedNetwork(VNet(1, 2, n_filters=16, normalization="batch", dropout_rate=0.5),
                                       FeaturePerturbation(0.5, spatial_dims=3))
    # bundles/crossmatch_acdc/configs/train.yaml network_def
    return FeaturePerturbedNetwork(UNet(1, 4, features=(16, 32, 64, 128, 256), dropout=(0.05, 0.1, 0.2, 0.3, 0.5)),
                                   FeaturePerturbation(0.5, spatial_dims=2))


def check_network(name: str, args: argparse.Namespace, dtype: torch.dtype) -> dict[str, Any]:
    """The guard's verdicts for every convolution of a bundle network at the training passes' input shapes."""
    kind, patch, batch = NETWORKS[name]
    generator = torch.Generator().manual_seed(0)
    network = _network(kind)
    memory_format = torch.channels_last_3d if len(patch) == 3 else torch.channels_last
    network = network.to(args.device).train()
    network.to(memory_format=memory_format)  # type: ignore[call-overload]  # channels-last, as the trainer; torch's stubs omit it
    clear_verdict_cache()
    guard = PrecisionGuard(network, torch.device(args.device).type, dtype, args.tolerance, disk_cache=False).attach()
    started = time.perf_counter()
    with torch.no_grad(), torch.autocast(torch.device(args.device).type, dtype=dtype):
        for rows, perturbed in ((batch, 0), (2 * batch, batch)):  # P1 (mix) / P2-P4 ([labeled; unlabeled])
            x = torch.randn(rows, 1, *patch, generator=generator).to(args.device)
            network(x.contiguous(memory_format=memory_format), perturbed=perturbed)
    seconds = time.perf_counter() - started
    guard.detach()
    distinct: dict[tuple[str, tuple[int, ...], str], dict[str, Any]] = {}
    for row in guard.summary(flagged_only=False):
        key = (row["layer"], tuple(row["input_shape"]), row["memory_format"])
        entry = distinct.setdefault(key, {**{k: v for k, v in row.items() if k != "module"}, "modules": []})
        entry["modules"].append(row["module"])
    layers = list(distinct.values())
    return {
        "network": name, "patch": list(patch), "batch": batch, "layers": layers,
        "float32_layers": guard.float32_modules, "distinct_configurations": len(layers),
        "checks_run": guard.checks_run, "seconds": round(seconds, 1),
    }


def environment(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"key": environment_key(device), "torch": torch.__version__, "python":
                            platform.python_version(), "threads": torch.get_num_threads(),
                            "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA")}
    if torch.device(device).type == "cpu":
        from crossmatch_ext.engines.precision import _cpu_features, _cpu_model, _onednn_version

        info.update(cpu=_cpu_model(), cpu_features=_cpu_features(), onednn=_onednn_version())
    else:
        info.update(gpu=torch.cuda.get_device_name(torch.device(device)), cuda=torch.version.cuda)
    return info


def _format(value: Any) -> str:
    if isinstance(value, str):
        return value
    return f"{value:.2g}" if value >= 0.01 or value == 0 else f"{value:.1e}"


def table(result: dict[str, Any]) -> str:
    """The readable table of a result."""
    tolerance = result["tolerance"]
    lines = [f"# {result['environment']['key']}",
             f"# {result['dtype']} autocast vs float32, relative L2 error max (median) over {result['repeats']} "
             f"repeats; flagged: repeats above the tolerance {tolerance:g} or not finite"]
    header = f"{'op':<9} {'C':>4} {'input':<18} {'format':<16} {'output':>15} {'input grad':>15} {'weight grad':>19} " \
             f"{'bias grad':>15} {'nonfin':>6} {'flagged':>7}"
    lines += [header, "-" * len(header)]
    for row in result["ops"]:
        cells = [f"{_format(row[n]['max'])} ({_format(row[n]['median'])})" for n in ERRORS]
        lines.append(f"{row['kind']:<9} {row['channels']:>4} {'x'.join(map(str, row['input_shape'])):<18} "
                     f"{row['memory_format']:<16} {cells[0]:>15} {cells[1]:>15} {cells[2]:>19} {cells[3]:>15} "
                     f"{row['nonfinite']:>6} {row['flagged']:>4}/{row['repeats']}")
    for network in result["networks"]:
        lines += ["", f"## {network['network']}: patch {'x'.join(map(str, network['patch']))}, batch "
                      f"{network['batch']}: {network['distinct_configurations']} distinct (layer, input) checked in "
                      f"{network['seconds']} s; float32: {', '.join(network['float32_layers']) or 'none'}"]
        for layer in network["layers"]:
            verdict = "FLOAT32" if layer["float32"] else "ok"
            errors = " / ".join(_format(layer[n]) for n in ERRORS[:3])
            lines.append(f"  {verdict:<7} {layer['layer']:<72} {'x'.join(map(str, layer['input_shape'])):<18} "
                         f"out/in/w {errors:<24} {', '.join(layer['modules'])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    dtype = getattr(torch, args.dtype)
    started = time.perf_counter()
    ops = []
    for kind, shapes, formats in (("Conv3d", args.shapes3d, ("contiguous", "channels_last_3d")),
                                  ("Conv2d", args.shapes2d, ("contiguous", "channels_last"))):
        for spatial in shapes:
            if len(spatial) != int(kind[-2]):
                raise SystemExit(f"--shapes{kind[-2].lower()}d takes {kind[-2]} sizes, got {spatial}")
            for channels in args.channels:
                for memory_format in formats:
                    ops.append(check_op(kind, channels, spatial, memory_format, args, dtype))
    networks = [check_network(name, args, dtype) for name in args.networks]
    flagged = [row for row in ops if row["flagged"]]
    result = {
        "environment": environment(args.device),
        "device": args.device, "dtype": args.dtype, "tolerance": args.tolerance, "repeats": args.repeats,
        "batch": args.batch, "ops": ops, "networks": networks,
        "summary": {
            "ops": len(ops), "ops_flagged": len(flagged),
            "flagged_depths": sorted({row["depth"] for row in flagged if row["kind"] == "Conv3d"}),
            "flagged_conv2d": sum(row["kind"] == "Conv2d" for row in flagged),
            "network_float32_layers": {n["network"]: n["float32_layers"] for n in networks},
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
    text = json.dumps(result, indent=1)
    if args.output is not None:
        args.output.write_text(text + "\n")
    else:
        print(text)
    if args.table:
        print(table(result), file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
