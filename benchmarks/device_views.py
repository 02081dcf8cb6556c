"""Time of the unlabeled strong views and CutMix boxes per batch: per sample (today's DataLoader workers) against
:class:`crossmatch_ext.transforms.BatchedUnlabeledViews` (batched, on ``--device``).

Both paths are built from the bundles' own ``train::unlabeled_views`` (parsed from their train.yaml): the per-sample
path runs its ``StrongViewsd`` and ``RandCutMixBoxd`` on each item of the batch and stacks the results as the
DataLoader's collation does (on MetaTensors, as the workers get them from the geometric transforms, and on plain
tensors, the cheaper case); the batched path makes the same keys from the stacked weak views. The weak view itself
(made by the workers in both cases) is not timed. Rounds alternate between the paths, so that a change of machine
speed hits both alike.

Cases: ACDC 128^2 and 256^2 slices, batch 4 and 12; LA 112 x 112 x 80 crops, batch 2.

Usage::

    python benchmarks/device_views.py                  # CPU, 1 thread (a DataLoader worker's setting)
    python benchmarks/device_views.py --threads 2 --repeats 30
    python benchmarks/device_views.py --device cuda    # batched on the GPU; per sample on the CPU as in workers

Prints one JSON object: the conditions (threads, load average, versions) and per case the median / min wall time
and the median CPU time (all threads of this process) per batch of every path, and the ratio of the batched median
to the per-sample medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crossmatch_ext.transforms import BatchedUnlabeledViews, RandCutMixBoxd, StrongViewsd  # noqa: E402

CASES = {
    "acdc_128_b4": ("crossmatch_acdc", (128, 128), 4),
    "acdc_128_b12": ("crossmatch_acdc", (128, 128), 12),
    "acdc_256_b4": ("crossmatch_acdc", (256, 256), 4),
    "acdc_256_b12": ("crossmatch_acdc", (256, 256), 12),
    "la_112x112x80_b2": ("crossmatch_la", (112, 112, 80), 2),
}
KEYS = ("image_s1", "image_s2", "cutmix_box_s1", "cutmix_box_s2")


def unlabeled_views(bundle: str) -> Compose:
    """The bundle's ``train::unlabeled_views`` (weak-view quantisation, strong views, boxes) as one Compose."""
    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundles" / bundle / "configs" / "train.yaml"))
    return Compose(parser.get_parsed_content("train::unlabeled_views"))


def weak_batch(bundle: str, shape: tuple[int, ...], batch: int, seed: int = 0) -> torch.Tensor:
    """Weak views like the bundles': [0, 1] slices on the 8-bit lattice (ACDC), z-scored crops (LA)."""
    g = torch.Generator().manual_seed(seed)
    if bundle == "crossmatch_acdc":
        return torch.floor(torch.rand((batch, 1, *shape), generator=g) * 255) / 255
    return torch.randn((batch, 1, *shape), generator=g)


def per_sample_path(pipeline: Compose, weak: torch.Tensor, meta: bool) -> Callable[[], dict]:
    """Today's workers: StrongViewsd and RandCutMixBoxd per item, then the collation's stack."""
    steps = [t for t in pipeline.transforms if isinstance(t, (StrongViewsd, RandCutMixBoxd))]
    items = [{"image": MetaTensor(w.clone()) if meta else w.clone()} for w in weak]

    def run() -> dict:
        outs = []
        for item in items:
            d = dict(item)
            for step in steps:
                d = step(d)
            outs.append(d)
        return {k: torch.stack([torch.as_tensor(o[k]) for o in outs]) for k in KEYS}

    return run


def batched_path(pipeline: Compose, weak: torch.Tensor, device: torch.device) -> Callable[[], dict]:
    views = BatchedUnlabeledViews.from_transform(pipeline, defer=False, seed=0)
    on_device = weak.to(device)

    def run() -> dict:
        out = views({"image": on_device})
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return run


def time_paths(paths: dict[str, Callable[[], dict]], repeats: int, warmup: int) -> dict[str, dict]:
    for _ in range(warmup):
        for run in paths.values():
            run()
    wall: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, run in paths.items():
            w0, c0 = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return {
        name: {
            "median_s": statistics.median(wall[name]),
            "min_s": min(wall[name]),
            "max_s": max(wall[name]),
            "cpu_median_s": statistics.median(cpu[name]),
        }
        for name in paths
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="where the batched views are made (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: a DataLoader worker's)")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds per case (LA: a quarter, at least 3)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result: dict = {
        "conditions": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_before": list(os.getloadavg()),
            "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "per_sample_runs_on": "cpu",
        },
        "cases": {},
    }
    for name in args.cases:
        bundle, shape, batch = CASES[name]
        pipeline = unlabeled_views(bundle)
        weak = weak_batch(bundle, shape, batch)
        paths = {
            "per_sample_meta": per_sample_path(pipeline, weak, meta=True),
            "per_sample_plain": per_sample_path(pipeline, weak, meta=False),
            "batched": batched_path(pipeline, weak, device),
        }
        repeats = args.repeats if bundle == "crossmatch_acdc" else max(3, args.repeats // 4)
        timing = time_paths(paths, repeats, args.warmup)
        batched = timing["batched"]["median_s"]
        result["cases"][name] = {
            "shape": list(shape),
            "batch": batch,
            "repeats": repeats,
            **timing,
            "batched_over_per_sample_meta": batched / timing["per_sample_meta"]["median_s"],
            "batched_over_per_sample_plain": batched / timing["per_sample_plain"]["median_s"],
        }
        print(f"{name} done", file=sys.stderr, flush=True)
    result["conditions"]["load_average_after"] = list(os.getloadavg())
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
