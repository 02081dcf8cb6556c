"""Seconds to segment one LA volume with the paper's sliding-window protocol and with MONAI's, per window batch size.

Usage:
    python benchmarks/inference_time.py --data /path/to/LA [--sw-batch-sizes 1 2 4] [--protocols paper monai]
    python benchmarks/inference_time.py --data /path/to/LA --device cuda --amp

The volume is the first case of the bundle's validation list, loaded by the LA bundle's own evaluation
preprocessing (``validate::preprocessing`` of ``train.yaml``); the inferers are the bundle's ``inferers::paper``
(112x112x80 windows, strides 18/18/4, uniform average of per-window softmax) and ``inferers::monai`` (overlap 0.5,
Gaussian weighting). The network is the bundle's V-Net in eval mode with its initial weights (the time does not
depend on the weights). One warm-up window runs first; each configuration is timed ``--repeats`` times (median).

Prints one JSON object with the seconds per volume for each protocol and window batch size, the number of windows,
and the fastest window batch size of each protocol.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _windows(shape: list[int], roi: list[int], strides: list[int]) -> int:
    return math.prod(max(1, math.ceil((s - r) / st) + 1) for s, r, st in zip(shape, roi, strides))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="LA dataset_dir")
    parser.add_argument("--case", type=int, default=0, help="index in the validation list")
    parser.add_argument("--protocols", nargs="+", choices=["paper", "monai"], default=["paper", "monai"])
    parser.add_argument("--sw-batch-sizes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", nargs="?", const="bfloat16", default=None, choices=["bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        result = run(args)
    finally:
        sys.stdout = stdout
    print(json.dumps(result))


def run(args: argparse.Namespace) -> dict:
    from monai.bundle import ConfigParser

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    config = ConfigParser()
    config.read_config(str(REPO / "bundles" / "crossmatch_la" / "configs" / "train.yaml"))
    config["bundle_root"] = str(REPO / "bundles" / "crossmatch_la")
    config["dataset_dir"] = args.data
    config["device"] = f"$torch.device('{args.device}')"
    item = config.get_parsed_content("datalists")["validation"][args.case]
    volume = config.get_parsed_content("validate::preprocessing")(item)
    image = volume["image"].as_tensor()[None].to(device)
    network = config.get_parsed_content("network").eval()
    patch = list(config.get_parsed_content("patch_size"))
    strides = list(config.get_parsed_content("eval_strides"))
    autocast = torch.autocast(device.type, dtype=getattr(torch, args.amp)) if args.amp else nullcontext()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    with torch.no_grad(), autocast:
        network(torch.zeros(1, 1, *patch, device=device))  # warm-up
    spatial = list(image.shape[2:])
    result: dict = {
        "case": str(item.get("image")), "volume_shape": spatial, "roi_size": patch, "device": str(device),
        "amp": args.amp, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "windows": {"paper": _windows(spatial, patch, strides),
                    "monai": _windows(spatial, patch, [max(1, int(r * 0.5)) for r in patch])},
        "seconds": {}, "fastest_sw_batch_size": {},
    }
    for protocol in args.protocols:
        times: dict[str, float] = {}
        for sw_batch_size in args.sw_batch_sizes:
            config["sw_batch_size"] = sw_batch_size
            inferer = config.get_parsed_content(f"inferers::{protocol}", lazy=False)
            runs = []
            for _ in range(args.repeats):
                sync()
                start = time.perf_counter()
                with torch.no_grad(), autocast:
                    out = inferer(image, network)
                sync()
                runs.append(time.perf_counter() - start)
            assert out.shape[2:] == image.shape[2:]
            times[str(sw_batch_size)] = round(statistics.median(runs), 2)
            print(f"{protocol} sw_batch_size={sw_batch_size}: {times[str(sw_batch_size)]} s", file=sys.stderr)
        result["seconds"][protocol] = times
        result["fastest_sw_batch_size"][protocol] = int(min(times, key=times.get))
    if cuda:
        result["peak_cuda_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        result["gpu"] = torch.cuda.get_device_name()
    return result


if __name__ == "__main__":
    main()
