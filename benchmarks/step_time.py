"""Median seconds per training step and peak memory of a CrossMatch or supervised step, on random tensors.

Usage:
    python benchmarks/step_time.py --task la --patch 64 64 48 --batch 2 [--mode both] [--device cpu]
    python benchmarks/step_time.py --task la --patch 112 112 80 --batch 2 --mode both --device cuda --amp bfloat16
    python benchmarks/step_time.py --task acdc --patch 256 256 --batch 12 --device cuda --amp

Prints one JSON object. ``--mode both`` runs each mode in its own process (so peak memory is per mode) and adds
their ratio. Warm-up steps are excluded from the median; the steps are timed with a CUDA synchronisation at both
ends; peak memory is the process's peak RSS (CPU) or ``torch.cuda.max_memory_allocated`` over the measured steps.
The step is the trainer's; the options after ``--threads`` select its variants (the default is the bundles').
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

AMP_CHOICES = ("bfloat16", "float16")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")  # crossmatch_ext.engines.trainer


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


def run_one(args: argparse.Namespace, mode: str) -> dict:
    """Time ``args.steps`` steps of one mode after ``args.warmup`` unmeasured ones, in this process."""
    from ignite.engine import Events

    from crossmatch_ext.engines import CrossMatchTrainer

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.RandomState(0)
    network, loss_function, optimizer, threshold = build_step_objects(args.task, device)
    total = args.steps + args.warmup
    labeled = [_batch(args.task, args.patch, args.batch, False, rng) for _ in range(total)]
    if mode == "supervised":
        loader: list = labeled
    else:
        loader = [
            {"labeled": labeled[i], "unlabeled": _batch(args.task, args.patch, args.batch, True, rng),
             "mix": _batch(args.task, args.patch, args.batch, True, rng)}
            for i in range(total)
        ]
    trainer = CrossMatchTrainer(
        device=device, max_epochs=1, train_data_loader=loader, network=network, optimizer=optimizer,
        loss_function=loss_function, confidence_threshold=threshold, supervised_only=mode == "supervised",
        amp=args.amp is not None, amp_kwargs={"dtype": parse_amp(args.amp or "bfloat16")}, decollate=False,
        backward_per_pass=not args.single_backward, teacher_batch=args.teacher_batch,
        merge_teacher_passes=args.merge_teacher_passes, channels_last=args.channels_last, compile=args.compile,
    )
    times: list[float] = []
    start = [0.0]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def begin(engine) -> None:
        sync()
        if cuda and engine.state.iteration == args.warmup + 1:
            torch.cuda.reset_peak_memory_stats()
        start[0] = time.perf_counter()

    def end(_) -> None:
        sync()
        times.append(time.perf_counter() - start[0])

    trainer.add_event_handler(Events.ITERATION_STARTED, begin)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, end)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    trainer.run()
    measured = times[args.warmup:]
    result = {
        "task": args.task, "mode": mode, "patch": args.patch, "batch": args.batch, "device": str(device),
        "amp": args.amp, "channels_last": args.channels_last, "backward_per_pass": not args.single_backward,
        "teacher_batch": args.teacher_batch, "merge_teacher_passes": args.merge_teacher_passes,
        "compile": args.compile, "compile_fell_back": args.compile != "none" and trainer._compiled is None,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "steps": len(measured),
        "median_step_s": round(statistics.median(measured), 4), "min_step_s": round(min(measured), 4),
        "max_step_s": round(max(measured), 4), "step_times_s": [round(t, 4) for t in measured],
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "rss_before_run_gb": round(rss_before, 3),
    }
    if cuda:
        result["peak_cuda_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        result["peak_cuda_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
        result["gpu"] = torch.cuda.get_device_name()
    return result


def _forwarded_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--task", args.task, "--patch", *map(str, args.patch), "--batch", str(args.batch), "--device",
             args.device, "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
             "--teacher-batch", args.teacher_batch, "--compile", args.compile]
    if args.amp:
        flags += ["--amp", args.amp]
    for flag in ("channels_last", "single_backward", "merge_teacher_passes"):
        if getattr(args, flag):
            flags.append("--" + flag.replace("_", "-"))
    return flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["la", "acdc"], default="la")
    parser.add_argument("--patch", type=int, nargs="+", default=None,
                        help="patch size (LA 3 values, ACDC 2); default the bundles' 112 112 80 / 256 256")
    parser.add_argument("--batch", type=int, default=2, help="batch size per loader (labeled = unlabeled = mix)")
    parser.add_argument("--mode", choices=["crossmatch", "supervised", "both"], default="both")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=5, help="measured steps")
    parser.add_argument("--warmup", type=int, default=None,
                        help="unmeasured steps first (default 1 on CPU, 3 on CUDA for cudnn.benchmark)")
    parser.add_argument("--amp", nargs="?", const="bfloat16", default=None, choices=AMP_CHOICES,
                        help="autocast dtype, on CUDA or CPU (a bare --amp means bfloat16); default float32")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last (3D) input batches")
    parser.add_argument("--single-backward", action="store_true",
                        help="one backward after both gradient passes (the authors' order; more memory)")
    parser.add_argument("--teacher-batch", choices=["labeled_and_mix", "mix"], default="labeled_and_mix",
                        help="opt-in 'mix': the no-grad perturbed pass P2 without the labeled half")
    parser.add_argument("--merge-teacher-passes", action="store_true",
                        help="opt-in: the mix image's plain pseudo-label from P2's clean rows (no pass P1)")
    parser.add_argument("--compile", choices=COMPILE_MODES, default="none",
                        help="torch.compile mode of the training passes (reduce-overhead: CUDA graphs on a GPU); "
                             "compilation happens in the warm-up steps")
    args = parser.parse_args()
    args.patch = args.patch or ([112, 112, 80] if args.task == "la" else [256, 256])
    if len(args.patch) != (3 if args.task == "la" else 2):
        parser.error(f"--patch needs {3 if args.task == 'la' else 2} values for task {args.task}, got {args.patch}")
    if args.warmup is None:
        args.warmup = 3 if args.device.startswith("cuda") else 1
    if args.mode != "both":
        print(json.dumps(run_one(args, args.mode)))
        return
    results = {}
    for mode in ("crossmatch", "supervised"):
        cmd = [sys.executable, os.path.abspath(__file__), "--mode", mode, *_forwarded_flags(args)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"step_time: the {mode} run failed (exit {proc.returncode}): {' '.join(cmd)}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    results["ratio_crossmatch_to_supervised"] = round(
        results["crossmatch"]["median_step_s"] / results["supervised"]["median_step_s"], 2
    )
    if "peak_cuda_allocated_gb" in results["crossmatch"]:
        results["peak_cuda_ratio_crossmatch_to_supervised"] = round(
            results["crossmatch"]["peak_cuda_allocated_gb"] / results["supervised"]["peak_cuda_allocated_gb"], 2
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
