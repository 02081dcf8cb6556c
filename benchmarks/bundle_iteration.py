"""Seconds per iteration of a bundle's real training config on a data folder, and how long the trainer waits for data.

Usage:
    python benchmarks/bundle_iteration.py --bundle acdc --data /path/to/ACDC --iterations 10 [--mode both]
    python benchmarks/bundle_iteration.py --bundle la --data /path/to/LA --stub-step-ms 50 --num-workers 2
    python benchmarks/bundle_iteration.py --bundle la --data /path/to/LA --device cuda --amp --iterations 20

The trainer is ``train::trainer`` of ``bundles/crossmatch_<bundle>/configs/train.yaml``, parsed by MONAI's
``ConfigParser`` with the overrides given here (``--set key=value`` for any other key, value parsed as YAML), so its
loaders, transforms, handlers (LR schedule, progress bar, stats, TensorBoard) and per-iteration train metric are the
bundle's own. Validation and checkpoints are left out (``val_interval`` beyond the run, no checkpoint handlers); the
outputs go to a temporary folder.

Per iteration it records the wall time from one ``GET_BATCH_STARTED`` to the next (a whole iteration: data, step,
handlers) and the data wait (``GET_BATCH_STARTED`` -> ``GET_BATCH_COMPLETED``). ``--stub-step-ms T`` replaces the step
with a sleep of ``T`` ms (no network, no metric) to measure the rate at which the loaders deliver batches; with
``--num-workers 0`` the data wait is then the cost of one batch on one core, which gives the cores needed for a
target rate (``cores_needed_for_rate``).

Prints one JSON object (both modes with ``--mode both``, each in its own process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def _stats(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4), "max": round(max(values), 4)}


def _children_rss_gb() -> float | None:
    """Total resident memory of this process's live child processes (the loader workers), Linux only."""
    try:
        pids: set[str] = set()
        for task in Path("/proc/self/task").iterdir():
            pids.update((task / "children").read_text().split())
        total_kb = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        return round(total_kb / 2**20, 3)
    except OSError:
        return None


def build_trainer(args: argparse.Namespace, mode: str, workdir: str):
    from monai.bundle import ConfigParser

    bundle = REPO / "bundles" / f"crossmatch_{args.bundle}"
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.yaml"))
    total = args.iterations + args.warmup
    overrides: dict = {
        "bundle_root": str(bundle),
        "dataset_dir": args.data,
        "ckpt_dir": os.path.join(workdir, "models"),
        "output_dir": os.path.join(workdir, "eval"),
        "mode": mode,
        "num_iterations": total,
        "val_interval": total + 1,
        "device": f"$torch.device('{args.device}')",
        "amp": args.amp is not None,
    }
    if args.amp:
        overrides["amp_dtype"] = args.amp
    if args.num_workers is not None:
        overrides["num_workers"] = args.num_workers
    if args.batch is not None:
        overrides["batch_size"] = args.batch
    if args.patch is not None:
        overrides["patch_size" if args.bundle == "la" else "image_size"] = args.patch
    for item in args.set or []:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    if args.stub_step_ms is not None:  # the stub produces no prediction: no train metric, no post-processing
        overrides["train::trainer#key_train_metric"] = None
        overrides["train::trainer#postprocessing"] = None
    for key, value in overrides.items():
        parser[key] = value
    from monai.utils import set_determinism

    # as the bundle's `initialize`: MONAI's set_determinism also sets cudnn.deterministic=True, benchmark=False
    set_determinism(seed=parser.get_parsed_content("seed"))
    if args.cudnn_benchmark:
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    trainer = parser.get_parsed_content("train::trainer")
    if args.stub_step_ms is not None:
        delay = args.stub_step_ms / 1000.0

        def stub(engine, batch):
            time.sleep(delay)
            return {}

        trainer._process_function = stub
    return trainer, overrides


def run_one(args: argparse.Namespace, mode: str) -> dict:
    from ignite.engine import Events

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as workdir:
        t0 = time.perf_counter()
        trainer, overrides = build_trainer(args, mode, workdir)
        setup_s = time.perf_counter() - t0
        marks: dict[str, list[float]] = {"get_started": [], "get_completed": [], "completed": []}

        def mark(name: str):
            def handler(_) -> None:
                if cuda:
                    torch.cuda.synchronize()
                marks[name].append(time.perf_counter())

            return handler

        trainer.add_event_handler(Events.GET_BATCH_STARTED, mark("get_started"))
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, mark("get_completed"))
        trainer.add_event_handler(Events.ITERATION_COMPLETED, mark("completed"))
        workers_rss: list[float | None] = [None]

        def sample_workers(engine) -> None:
            if engine.state.iteration == args.iterations + args.warmup:
                workers_rss[0] = _children_rss_gb()

        trainer.add_event_handler(Events.ITERATION_COMPLETED, sample_workers)
        if cuda:
            def reset(engine) -> None:
                if engine.state.iteration == args.warmup + 1:
                    torch.cuda.reset_peak_memory_stats()

            trainer.add_event_handler(Events.ITERATION_STARTED, reset)
        t0 = time.perf_counter()
        trainer.run()
        run_s = time.perf_counter() - t0
    n = len(marks["completed"])
    # iteration i: from its GET_BATCH_STARTED to the next one (to ITERATION_COMPLETED for the last)
    starts = marks["get_started"][:n]
    ends = starts[1:] + [marks["completed"][-1]]
    iteration = [e - s for s, e in zip(starts, ends)]
    wait = [c - s for s, c in zip(starts, marks["get_completed"][:n])]
    first = min(args.warmup, n - 1)
    iteration, wait = iteration[first:], wait[first:]
    result = {
        "bundle": args.bundle, "mode": mode, "data": args.data, "device": str(device), "amp": args.amp,
        "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "stub_step_ms": args.stub_step_ms, "overrides": {k: v for k, v in overrides.items() if "dir" not in k},
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "iterations": len(iteration), "warmup": first,
        "s_per_iteration": _stats(iteration), "data_wait_s": _stats(wait),
        "data_wait_share": round(sum(wait) / sum(iteration), 3),
        "batches_per_s": round(1.0 / statistics.median(iteration), 2),
        "setup_s": round(setup_s, 1), "run_s": round(run_s, 1),
        "peak_rss_main_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "loader_workers_rss_gb_at_end": workers_rss[0],
    }
    if args.stub_step_ms is not None and args.target_rate:
        per_batch_core_s = statistics.median(wait) if args.num_workers == 0 else None
        if per_batch_core_s is not None:
            result["cpu_s_per_batch_one_core"] = round(per_batch_core_s, 4)
            result["cores_needed_for_rate"] = {
                "target_batches_per_s": args.target_rate,
                "cores": round(per_batch_core_s * args.target_rate, 1),
            }
    if cuda:
        result["peak_cuda_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        result["gpu"] = torch.cuda.get_device_name()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", choices=["la", "acdc"], required=True)
    parser.add_argument("--data", required=True, help="the bundle's dataset_dir (its layout is detected)")
    parser.add_argument("--mode", choices=["crossmatch", "supervised", "both"], default="crossmatch")
    parser.add_argument("--iterations", type=int, default=10, help="measured iterations")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured iterations first (worker start-up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", nargs="?", const="bfloat16", default=None, choices=["bfloat16", "float16"],
                        help="autocast dtype (a bare --amp means bfloat16); default float32")
    parser.add_argument("--batch", type=int, default=None, help="batch_size override (default: the bundle's)")
    parser.add_argument("--patch", type=int, nargs="+", default=None,
                        help="LA patch_size / ACDC image_size override (default: the bundle's)")
    parser.add_argument("--num-workers", type=int, default=None, help="workers per loader (default: the bundle's)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads in the main process")
    parser.add_argument("--stub-step-ms", type=float, default=None, help="replace the step by a sleep of this length")
    parser.add_argument("--target-rate", type=float, default=60.0,
                        help="batches/s the loaders should deliver (default 3x a 50 ms step)")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="after the bundle's set_determinism: cudnn.deterministic=False, cudnn.benchmark=True")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other config override (YAML value)")
    args = parser.parse_args()
    stdout, sys.stdout = sys.stdout, sys.stderr  # handler logs go to stderr; stdout carries the JSON only
    try:
        if args.mode != "both":
            result = run_one(args, args.mode)
        else:
            result = {}
            for mode in ("crossmatch", "supervised"):
                cmd = [sys.executable, os.path.abspath(__file__)] + [
                    a for a in sys.argv[1:] if a not in ("both",)
                ]
                cmd[cmd.index("--mode") + 1: cmd.index("--mode") + 1] = [mode]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.stderr.write(proc.stderr)
                    raise SystemExit(f"bundle_iteration: the {mode} run failed (exit {proc.returncode})")
                result[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            result["ratio_crossmatch_to_supervised"] = round(
                result["crossmatch"]["s_per_iteration"]["median"] / result["supervised"]["s_per_iteration"]["median"],
                2,
            )
    finally:
        sys.stdout = stdout
    print(json.dumps(result))


if __name__ == "__main__":
    main()
