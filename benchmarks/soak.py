"""Soak test: many steps of a tiny CrossMatch LA run through the bundle config; memory must stay flat and nothing leak.

Usage:
    python benchmarks/soak.py [--steps 500] [--num-workers 2] [--device cpu] [--amp False] [--out DIR]

Generates a small synthetic LA dataset, runs the LA bundle's ``train.yaml`` in this process (MONAI's
``ConfigWorkflow``, the same path as ``python -m monai.bundle run``) with a 16x16x16 patch, batch 2 and a 4-filter
V-Net (24 unlabeled cases: an epoch every 12 steps, about 40
epochs over persistent DataLoader workers), and
prints one JSON object: resident memory (VmRSS) at the first and the last measured step and its growth, open file
descriptors and live child processes (DataLoader workers) before and after the run. ``ok`` is true when the RSS
growth from step 50 to the last step is at most ``--max-growth`` (5 %) and no descriptor or process is left behind.
Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def open_fds() -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return sorted(found)


def live_children() -> list[int]:
    me = str(os.getpid())
    children = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            children.append(int(pid))
    return children


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--first", type=int, default=50, help="step of the first memory reading")
    parser.add_argument("--num-workers", type=int, default=1, help="DataLoader workers per loader (3 loaders)")
    parser.add_argument("--batch-size", type=int, default=2, help="at least 2: BatchNorm at a 1x1x1 bottleneck")
    parser.add_argument("--patch", type=int, nargs=3, default=[16, 16, 16])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="False", choices=["True", "False"])
    parser.add_argument("--val-interval", type=int, default=100)
    parser.add_argument("--max-growth", type=float, default=0.05)
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()

    import torch
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    from crossmatch_ext.data import write_la_dataset

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="crossmatch_soak_"))
    data = write_la_dataset(work / "data", num_train=26, num_val=1, num_labeled=(2,), seed=0, shape=(32, 32, 24),
                            nifti=False)
    configs = REPO_ROOT / "bundles" / "crossmatch_la" / "configs"
    gc.collect()
    fds_before, children_before = open_fds(), live_children()
    workflow = ConfigWorkflow(
        config_file=str(configs / "train.yaml"), meta_file=str(configs / "metadata.json"), logging_file=False,
        workflow_type="train", dataset_dir=str(data), ckpt_dir=str(work / "models"), output_dir=str(work / "eval"),
        num_labeled=2, patch_size=args.patch, eval_strides=[max(1, p // 2) for p in args.patch],
        batch_size=args.batch_size, num_iterations=args.steps,
        val_interval=args.val_interval, log_interval=args.steps, num_workers=args.num_workers,
        device=f"$torch.device('{args.device}')", amp=args.amp == "True", **{"network_def::n_filters": 4},
    )
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train::trainer")
    readings: dict[int, int] = {}
    times: dict[int, float] = {}

    def measure(engine) -> None:
        it = engine.state.iteration
        if it in (args.first, args.steps) or it % 100 == 0:
            gc.collect()
            readings[it] = rss_bytes()
            times[it] = time.perf_counter()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, measure)
    workflow.run()
    workflow.finalize()
    del workflow, trainer
    gc.collect()
    time.sleep(1.0)  # let worker processes exit
    fds_after, children_after = open_fds(), live_children()
    leaked_fds = sorted((Counter(fds_after) - Counter(fds_before)).elements())
    first, last = readings[args.first], readings[args.steps]
    growth = (last - first) / first
    result = {
        "benchmark": "soak",
        "steps": args.steps,
        "device": args.device,
        "amp": args.amp == "True",
        "num_workers": args.num_workers,
        "rss_mib": {str(k): round(v / 2**20, 1) for k, v in sorted(readings.items())},
        "rss_step_first_mib": round(first / 2**20, 1),
        "rss_step_last_mib": round(last / 2**20, 1),
        "rss_growth": round(growth, 4),
        "seconds_per_step": round((times[args.steps] - times[args.first]) / (args.steps - args.first), 4),
        "open_fds_before": len(fds_before),
        "open_fds_after": len(fds_after),
        "leaked_fds": leaked_fds,
        "child_processes_before": len(children_before),
        "child_processes_after": len(children_after),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    result["ok"] = growth <= args.max_growth and not leaked_fds and len(children_after) <= len(children_before)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
