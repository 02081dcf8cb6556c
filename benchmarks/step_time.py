"""Median seconds per training step and peak memory of a CrossMatch or supervised step, on random tensors.

Usage:
    python benchmarks/step_time.py --task la --patch 64 64 48 --batch 2 [--mode both] [--device cpu]

Prints one JSON object. ``--mode both`` runs each mode in its own process (so peak memory is per mode) and adds
their ratio. Warm-up steps are excluded from the median.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import os
import subprocess
import sys
import time

import numpy as np
import torch


AMP_CHOICES = ("bfloat16", "float16")


def parse_amp(value: str | None) -> torch.dtype | None:
    """The autocast dtype named by ``--amp`` (``None``: float32)."""
    return None if value is None else {"bfloat16": torch.bfloat16, "float16": torch.float16}[value]


def build_step_objects(task: str, device: torch.device | str) -> tuple:
    """The bundles' network (with feature perturbation), loss, optimizer and confidence threshold for ``task``."""
    from crossmatch_ext.engines import OfficialRampThreshold
    from crossmatch_ext.losses import CrossMatchLoss, MaskedDiceLoss
    from crossmatch_ext.networks import FeaturePerturbation, FeaturePerturbedNetwork, UNet, VNet

    torch.manual_seed(0)
    if task == "la":
        net = VNet(1, 2, dropout_rate=0.5)
        dice = MaskedDiceLoss(classes=[1], smooth=1e-5)
        optimizer_cls, opt_kwargs, spatial_dims = torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 1e-4}, 3
        threshold = OfficialRampThreshold(0.75)(0)
    else:
        net = UNet(1, 4)
        dice = MaskedDiceLoss(smooth=1e-4)
        optimizer_cls, opt_kwargs, spatial_dims = torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}, 2
        threshold = 0.95
    network = FeaturePerturbedNetwork(net, FeaturePerturbation(0.5, spatial_dims=spatial_dims)).to(device)
    optimizer = optimizer_cls(network.parameters(), **opt_kwargs)
    return network, CrossMatchLoss(dice, weighting=task), optimizer, threshold


def make_batch(task: str, patch: list[int], batch: int, unlabeled: bool, rng: np.random.RandomState) -> dict:
    """A random labeled batch, or an unlabeled one (weak view, two strong views, two CutMix boxes)."""
    return _batch(task, patch, batch, unlabeled, rng)


def _batch(task: str, patch: list[int], batch: int, unlabeled: bool, rng: np.random.RandomState) -> dict:
    from crossmatch_ext.transforms import sample_cutmix_box

    classes = 2 if task == "la" else 4
    shape = (batch, 1, *patch)
    item = {"image": torch.randn(shape), "label": torch.randint(0, classes, shape)}
    if unlabeled:
        item = {"image": torch.randn(shape), "image_s1": torch.randn(shape), "image_s2": torch.randn(shape)}
        for key in ("cutmix_box_s1", "cutmix_box_s2"):
            boxes = [sample_cutmix_box(rng, patch, prob=0.5) for _ in range(batch)]
            item[key] = torch.from_numpy(np.stack(boxes))[:, None]
    return item


def run_one(task: str, patch: list[int], batch: int, mode: str, device: str, steps: int, warmup: int,
            amp: bool) -> dict:
    from ignite.engine import Events

    from crossmatch_ext.engines import CrossMatchTrainer, OfficialRampThreshold
    from crossmatch_ext.losses import CrossMatchLoss, MaskedDiceLoss
    from crossmatch_ext.networks import FeaturePerturbation, FeaturePerturbedNetwork, UNet, VNet

    torch.manual_seed(0)
    rng = np.random.RandomState(0)
    if task == "la":
        net = VNet(1, 2, dropout_rate=0.5)
        dice = MaskedDiceLoss(classes=[1], smooth=1e-5)
        optimizer_cls, opt_kwargs, spatial_dims = torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 1e-4}, 3
        threshold = OfficialRampThreshold(0.75)
    else:
        net = UNet(1, 4)
        dice = MaskedDiceLoss(smooth=1e-4)
        optimizer_cls, opt_kwargs, spatial_dims = torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}, 2
        threshold = 0.95
    network = FeaturePerturbedNetwork(net, FeaturePerturbation(0.5, spatial_dims=spatial_dims)).to(device)
    total = steps + warmup
    labeled = [_batch(task, patch, batch, False, rng) for _ in range(total)]
    if mode == "supervised":
        loader: list = labeled
    else:
        loader = [
            {"labeled": labeled[i], "unlabeled": _batch(task, patch, batch, True, rng),
             "mix": _batch(task, patch, batch, True, rng)}
            for i in range(total)
        ]
    trainer = CrossMatchTrainer(
        device=torch.device(device), max_epochs=1, train_data_loader=loader, network=network,
        optimizer=optimizer_cls(network.parameters(), **opt_kwargs),
        loss_function=CrossMatchLoss(dice, weighting=task), confidence_threshold=threshold,
        supervised_only=mode == "supervised", amp=amp, decollate=False,
    )
    times: list[float] = []
    start = [0.0]

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def begin(_):
        sync()
        start[0] = time.perf_counter()

    def end(_):
        sync()
        times.append(time.perf_counter() - start[0])

    trainer.add_event_handler(Events.ITERATION_STARTED, begin)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, end)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    trainer.run()
    measured = times[warmup:]
    result = {
        "task": task, "mode": mode, "patch": patch, "batch": batch, "device": device, "amp": amp,
        "torch_threads": torch.get_num_threads(), "steps": len(measured),
        "median_step_s": round(statistics.median(measured), 4), "step_times_s": [round(t, 4) for t in measured],
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }
    if device.startswith("cuda"):
        result["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        result["gpu"] = torch.cuda.get_device_name()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["la", "acdc"], default="la")
    parser.add_argument("--patch", type=int, nargs="+", default=None, help="patch size (LA 3 values, ACDC 2)")
    parser.add_argument("--batch", type=int, default=2, help="batch size per loader (labeled = unlabeled = mix)")
    parser.add_argument("--mode", choices=["crossmatch", "supervised", "both"], default="both")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=3, help="measured steps")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA only)")
    args = parser.parse_args()
    patch = args.patch or ([112, 112, 80] if args.task == "la" else [256, 256])
    if len(patch) != (3 if args.task == "la" else 2):
        parser.error(f"--patch needs {3 if args.task == 'la' else 2} values for task {args.task}, got {patch}")
    if args.mode != "both":
        print(json.dumps(run_one(args.task, patch, args.batch, args.mode, args.device, args.steps, args.warmup,
                                 args.amp)))
        return
    results = {}
    for mode in ("crossmatch", "supervised"):
        cmd = [sys.executable, __file__, "--task", args.task, "--patch", *map(str, patch), "--batch", str(args.batch),
               "--mode", mode, "--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup)]
        if args.amp:
            cmd.append("--amp")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
    results["ratio_crossmatch_to_supervised"] = round(
        results["crossmatch"]["median_step_s"] / results["supervised"]["median_step_s"], 2
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
