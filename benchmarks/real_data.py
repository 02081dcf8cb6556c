"""Train and evaluate a bundle on real scans in both modes (CrossMatch and supervised-only) and compare them.

Every run goes through MONAI's bundle CLI (``python -m monai.bundle run training`` with the bundle's own
``train.yaml``, then the ``train.yaml`` + ``evaluate.yaml`` merge on the evaluation list), with the same labeled
cases, iterations, seed and evaluation for both modes. Outputs, in ``--out``:

* ``results.json``: per protocol, mode and seed the per-case metrics (per class for ACDC), their mean ± std over
  cases, wall time and seconds per iteration; per mode the mean ± std over seeds; the CrossMatch - supervised gain;
  the exact config overrides of every run and the commands;
* ``curves.png``: loss terms, share of confident pixels and validation Dice against iteration, both modes;
* ``overlays.png``: image, ground truth, supervised and CrossMatch predictions on a few validation slices;
* ``<mode>_seed<k>/``: each run's bundle outputs (``models/``, ``eval/`` with ``training_log.jsonl`` and the
  metric CSVs) and its ``train.log`` / ``eval.log``.

A run whose evaluation summary exists is not repeated (``--force`` repeats it), so an interrupted benchmark
continues where it stopped. A training run that was interrupted continues from its last resumable state
(``models/resume/last.pt``, saved every ``val_interval`` iterations, with its random streams) through the bundle's
``--resume True``: its training log keeps the records up to that iteration, ``train.log`` is appended to, and its
``timing.json`` lists the iterations it resumed at (``train_resumed_at``) with no wall time, since the interrupted
part's was lost with its process.

``--eval-name NAME --eval-set KEY=VALUE`` evaluates the same weights again with an evaluation override (e.g.
``largest_component=True``, the auto bundle's connected-component filtering): the metrics go to
``<run>/eval_<NAME>`` and the results to ``results_<NAME>.json``; the protocol's own evaluation is kept.

Protocols (``--protocol``), sized for a CPU (about an hour per CrossMatch run on a 2-core machine):

* ``acdc``: the 3 labeled patients of ``train_3_label.list`` (both frames), every other ``train.list`` volume
  unlabeled, slices resized to 128x128, batch 4 labeled + 4 unlabeled (+4 mix), 2000 iterations, the authors'
  recipe otherwise; evaluated per volume on ``val.list`` (final weights, medpy metrics in pixels, 128x128
  order-0 resize as the authors' test script).
* ``la``: the 8 labeled cases of ``train_8_label.list``, the rest of ``train.list`` unlabeled, volumes resampled
  to 1.25 mm (half the 0.625 mm grid), 64x64x32 crops (128x128x64 at full resolution: most crops hold atrium),
  batch 2+2(+2), a poly schedule over the run; evaluated on ``val.list`` with a strided sliding window at 1.25 mm
  whose probabilities are resampled to the original grid, final weights, medpy metrics in voxels of 0.625 mm.

``--reproduce la8|la16|acdc3|acdc7`` runs the paper's setting (full-size patches, the authors' iteration counts)
for several seeds and prints our mean ± std beside the paper's row. It is sized for a GPU: on a CPU it states the
expected time and stops unless ``--yes`` is given.

Examples::

    python benchmarks/real_data.py --protocol acdc --data ../shared/data/acdc --seeds 0 1
    python benchmarks/real_data.py --protocol la --data ../shared/data/la --seeds 0 1 --jobs 2 --device cuda
    python benchmarks/real_data.py --reproduce acdc3 --data /data/ACDC --eval-list test.list --seeds 0 1 2
    python benchmarks/real_data.py --protocol acdc --out runs/real_data/acdc --report-only
    python benchmarks/real_data.py --protocol acdc_auto --out runs/auto/acdc_auto --eval-name lcc \\
        --eval-set largest_component=True
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUNDLES = {"la": REPO / "bundles" / "crossmatch_la", "acdc": REPO / "bundles" / "crossmatch_acdc",
           "auto": REPO / "bundles" / "crossmatch_auto"}
MODES = ("crossmatch", "supervised")
METRICS = ("dice", "jaccard", "hd95", "asd")
ACDC_CLASSES = {"1": "RV", "2": "Myo", "3": "LV"}


@dataclass
class Protocol:
    """One experimental setting: a bundle, its config overrides and how to read the result."""

    name: str
    bundle: str
    description: str
    overrides: dict[str, Any]
    eval_overrides: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, dict[str, float]] | None = None  # {"crossmatch": {...}, "supervised": {...}} in percent / voxels
    minutes_gpu: float | None = None  # expected minutes per CrossMatch run on one current GPU
    hours_cpu: float | None = None  # expected hours per CrossMatch run on a 2-core CPU
    # the auto bundle's protocols: the benchmark folder (la | acdc) converted to a Decathlon folder first, with the
    # labeled cases of the hand-tuned protocol (crossmatch_ext.data.decathlon.convert_<source>_to_decathlon)
    source: str | None = None
    source_labeled: int = 0
    class_names: dict[str, str] = field(default_factory=lambda: dict(ACDC_CLASSES))


PROTOCOLS: dict[str, Protocol] = {
    "acdc": Protocol(
        name="acdc",
        bundle="acdc",
        description=(
            "ACDC CPU-scale: 3 labeled patients (train_3_label.list), all other train.list volumes unlabeled, "
            "slices resized to 128x128 (order-0), batch 4+4(+4), 2000 iterations, SGD 0.01 poly; evaluated per "
            "volume on the evaluation list, final weights, medpy metrics in pixels, mean of RV/Myo/LV"
        ),
        overrides={
            "num_labeled_patients": 3,
            "image_size": [128, 128],
            "batch_size": 4,
            "num_iterations": 2000,
            "val_interval": 250,
            "log_interval": 10,
        },
        minutes_gpu=2.0,
        hours_cpu=1.5,
    ),
    "la": Protocol(
        name="la",
        bundle="la",
        description=(
            "LA CPU-scale: 8 labeled cases (train_8_label.list), the rest of train.list unlabeled, volumes "
            "resampled to 1.25 mm, 64x64x32 crops, batch 2+2(+2), 1000 iterations, AdamW 1e-3 poly over the run; "
            "evaluated on the evaluation list with a 64x64x32 sliding window (strides 16/16/4) at 1.25 mm, "
            "probabilities resampled to the 0.625 mm grid, final weights, medpy metrics in voxels"
        ),
        overrides={
            "num_labeled": 8,
            "downsample": 0.5,
            "patch_size": [64, 64, 32],
            "batch_size": 2,
            "num_iterations": 1000,
            "lr_decay_iterations": 1000,
            "val_interval": 250,
            "log_interval": 10,
            "eval_protocol": "paper",
            "eval_strides": [16, 16, 4],
            "sw_batch_size": 4,
        },
        minutes_gpu=3.0,
        hours_cpu=1.0,
    ),
}


# The self-configuring bundle at the hand-tuned protocols' budgets: the same labeled cases, iterations, batch and
# evaluation list (final weights); the plan chooses the rest (ACDC: 2D crops of the slices at their own resolution
# instead of slices resized to 128x128, per-image z-score; LA: the plan at the hand-tuned protocol's 1.25 mm).
PROTOCOLS.update(
    {
        "acdc_auto": Protocol(
            name="acdc_auto",
            bundle="auto",
            description=(
                "ACDC CPU-scale through the self-configuring bundle: the ACDC folder converted to a Decathlon folder "
                "(3 labeled patients, all other train.list volumes unlabeled, val.list kept), batch 4+4(+4), 2000 "
                "iterations, everything else from the plan (CPU budget 1 h, float32); final weights evaluated per "
                "volume on the evaluation list, medpy metrics in pixels, mean of RV/Myo/LV"
            ),
            overrides={"batch_size": 4, "num_iterations": 2000, "cpu_hours": 1.0, "val_interval": 250,
                       "log_interval": 10},
            eval_overrides={"checkpoint": "$@ckpt_dir + '/model.pt'"},
            hours_cpu=1.0,
            source="acdc",
            source_labeled=3,
        ),
        "la_auto": Protocol(
            name="la_auto",
            bundle="auto",
            description=(
                "LA CPU-scale through the self-configuring bundle: the LA folder converted to a Decathlon folder (8 "
                "labeled cases, the rest of train.list unlabeled, val.list kept), volumes planned at 1.25 mm, batch "
                "2+2(+2), 1000 iterations, everything else from the plan (CPU budget 2.5 h, float32); final weights "
                "evaluated on the evaluation list, probabilities resampled to the 0.625 mm grid, medpy metrics in "
                "voxels"
            ),
            overrides={"target_spacing": [1.25, 1.25, 1.25], "batch_size": 2, "num_iterations": 1000,
                       "cpu_hours": 2.5, "val_interval": 250, "log_interval": 10},
            eval_overrides={"checkpoint": "$@ckpt_dir + '/model.pt'"},
            hours_cpu=2.5,
            source="la",
            source_labeled=8,
            class_names={"1": "LA"},
        ),
    }
)


def _paper_setting(name: str, labeled: int, crossmatch: tuple[float, ...], supervised: tuple[float, ...]) -> Protocol:
    """A row of the paper's Table 1 (LA) / Table 2 (ACDC): final weights, medpy, LA voxels / ACDC pixels."""
    bundle = "la" if name.startswith("la") else "acdc"
    if bundle == "la":
        description = (f"paper LA {labeled} labeled: 112x112x80 crops, batch 2+2(+2), 14000 iterations "
                       "(authors' code)")
        overrides: dict[str, Any] = {"num_labeled": labeled, "val_interval": 2000, "log_interval": 50}
    else:
        description = f"paper ACDC {labeled} labeled patients: 256x256 slices, batch 12+12(+12), 30000 iterations"
        overrides = {"num_labeled_patients": labeled, "val_interval": 3000, "log_interval": 50}
    rows = {mode: dict(zip(METRICS, values)) for mode, values in zip(MODES, (crossmatch, supervised))}
    return Protocol(name=name, bundle=bundle, description=description, overrides=overrides, paper=rows,
                    minutes_gpu=20.0 if bundle == "la" else 30.0, hours_cpu=130.0 if bundle == "la" else 190.0)


PROTOCOLS.update(
    {
        "la8": _paper_setting("la8", 8, (91.33, 84.11, 5.29, 1.53), (79.99, 68.12, 21.11, 5.48)),
        "la16": _paper_setting("la16", 16, (91.61, 84.57, 5.36, 1.57), (86.03, 76.06, 14.26, 3.51)),
        "acdc3": _paper_setting("acdc3", 3, (88.27, 80.17, 1.53, 0.46), (47.83, 37.01, 31.16, 12.62)),
        "acdc7": _paper_setting("acdc7", 7, (89.08, 81.44, 1.52, 0.52), (79.41, 68.11, 9.35, 2.70)),
    }
)
REPRODUCIBLE = ("la8", "la16", "acdc3", "acdc7")


# ------------------------------------------------------------------------------------------------ commands
def _cli_value(value: Any) -> str:
    """A config override as MONAI's CLI (python-fire) reads it: Python literals, capitalised booleans."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_cli_value(v) for v in value) + "]"
    return str(value)


def _override_args(overrides: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in overrides.items():
        args += [f"--{key}", _cli_value(value)]
    return args


@dataclass
class Run:
    protocol: Protocol
    mode: str
    seed: int
    folder: Path
    overrides: dict[str, Any]
    eval_overrides: dict[str, Any]
    #: a named evaluation of the same weights (``--eval-name``): its metrics go to ``<folder>/eval_<name>``
    eval_name: str | None = None

    @property
    def label(self) -> str:
        return f"{self.protocol.name} {self.mode} seed {self.seed}"

    @property
    def output_dir(self) -> Path:
        return self.folder / "eval"

    @property
    def training_log(self) -> Path:
        return self.output_dir / "training_log.jsonl"

    @property
    def metrics_dir(self) -> Path:
        """Where the evaluation writes ``metrics.csv``: ``eval`` (beside the training log), or ``eval_<name>``."""
        return self.output_dir if self.eval_name is None else self.folder / f"eval_{self.eval_name}"

    @property
    def eval_log(self) -> Path:
        """The evaluation's console log: ``eval.log``, or ``eval_<name>.log`` for a named evaluation."""
        return self.folder / ("eval.log" if self.eval_name is None else f"eval_{self.eval_name}.log")

    @property
    def eval_wall_key(self) -> str:
        """The evaluation's wall time in ``timing.json``: a named evaluation keeps the protocol's own."""
        return "eval_wall_s" if self.eval_name is None else f"eval_{self.eval_name}_wall_s"

    @property
    def summary_file(self) -> Path:
        return self.metrics_dir / "metrics_summary.csv"

    def _config(self, *names: str) -> str:
        files = [str(BUNDLES[self.protocol.bundle] / "configs" / n) for n in names]
        return files[0] if len(files) == 1 else "[" + ",".join(repr(f) for f in files) + "]"

    def _common(self) -> list[str]:
        configs = BUNDLES[self.protocol.bundle] / "configs"
        return ["--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf")]

    @property
    def resume_state(self) -> Path:
        """The bundle's resumable training state (written every ``val_interval`` iterations)."""
        return self.folder / "models" / "resume" / "last.pt"

    def train_command(self, resume: bool = False) -> list[str]:
        overrides = {**self.overrides, "resume": True} if resume else self.overrides
        return [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", self._config("train.yaml"),
                *self._common(), *_override_args(overrides)]

    def eval_command(self) -> list[str]:
        merged = {**self.overrides, **self.eval_overrides}
        if self.eval_name is not None:
            merged["metrics_output"] = str(self.metrics_dir)
        return [sys.executable, "-m", "monai.bundle", "run", "--config_file",
                self._config("train.yaml", "evaluate.yaml"), *self._common(), *_override_args(merged)]


def make_runs(protocol: Protocol, args: argparse.Namespace, data: Path, out: Path) -> list[Run]:
    runs = []
    if args.seeds is None:
        args.seeds = [0, 1, 2] if protocol.paper else [0, 1]
    for seed in args.seeds:
        for mode in args.modes:
            folder = out / f"{mode}_seed{seed}"
            overrides: dict[str, Any] = dict(protocol.overrides)
            if args.iterations is not None:
                overrides["num_iterations"] = args.iterations
                if "lr_decay_iterations" in overrides:
                    overrides["lr_decay_iterations"] = args.iterations
                if "cpu_hours" in overrides:
                    # the auto bundle's time budget shrinks with the run, so that the plan keeps its crops
                    overrides["cpu_hours"] = (float(overrides["cpu_hours"]) * args.iterations
                                              / int(protocol.overrides["num_iterations"]))
                overrides["val_interval"] = max(1, min(int(overrides.get("val_interval", args.iterations)),
                                                       args.iterations))
            overrides.update(
                {
                    "dataset_dir": str(data),
                    "ckpt_dir": str(folder / "models"),
                    "output_dir": str(folder / "eval"),
                    "seed": seed,
                    "mode": mode,
                    "validation_list": args.eval_list,
                }
            )
            if args.num_workers is not None:
                overrides["num_workers"] = args.num_workers
            if args.device is not None:
                overrides["device"] = f"$torch.device({args.device!r})"
                overrides["amp"] = args.device.startswith("cuda") and not args.no_amp
            elif args.no_amp:
                overrides["amp"] = False
            for item in args.set or []:
                key, _, value = item.partition("=")
                if not key or not _:
                    raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
                overrides[key] = value
            eval_overrides = dict(protocol.eval_overrides)
            for item in getattr(args, "eval_set", None) or []:
                key, _, value = item.partition("=")
                if not key or not _:
                    raise SystemExit(f"--eval-set expects KEY=VALUE, got {item!r}")
                eval_overrides[key] = value
            runs.append(Run(protocol, mode, seed, folder, overrides, eval_overrides, getattr(args, "eval_name", None)))
    return runs


# ------------------------------------------------------------------------------------------------ running
class Progress:
    """Prints one status line per active run every ``interval`` seconds (iteration, loss, s/iter, ETA)."""

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self.active: dict[str, tuple[Run, str, float]] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def set(self, run: Run, stage: str | None) -> None:
        with self.lock:
            if stage is None:
                self.active.pop(run.label, None)
            else:
                self.active[run.label] = (run, stage, time.time())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self.lock:
                items = list(self.active.values())
            for run, stage, started in items:
                print(f"  [{time.strftime('%H:%M:%S')}] {run.label}: {stage}{_train_status(run, started)}", flush=True)


def _read_log(path: Path) -> list[dict[str, Any]]:
    from crossmatch_ext.engines import read_training_log

    return read_training_log(path)


def _train_status(run: Run, started: float) -> str:
    train = [r for r in _read_log(run.training_log) if r.get("event") == "train"]
    if not train:
        return ""
    last = train[-1]
    total = int(run.overrides["num_iterations"])
    it = int(last["iteration"])
    text = f" iteration {it}/{total}, loss {last.get('loss', float('nan')):.4f}"
    since = [r for r in train if r["wall_time"] >= started] or train  # a resumed run: its own part
    if len(since) >= 2 and it > int(since[0]["iteration"]):
        rate = (last["wall_time"] - since[0]["wall_time"]) / (it - int(since[0]["iteration"]))
        text += f", {rate:.3f} s/it, ~{rate * (total - it) / 60:.1f} min left"
    return text


DEADLINE: list[float | None] = [None]  # wall-clock time after which running commands are stopped


def _run_logged(command: list[str], log: Path, env: dict[str, str], append: bool = False) -> tuple[int, float]:
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "a" if append else "w", encoding="utf-8") as stream:
        stream.write("$ " + " ".join(shlex.quote(c) for c in command) + "\n")
        stream.flush()
        proc = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, cwd=str(REPO), env=env)
        while proc.poll() is None:
            deadline = DEADLINE[0]
            if deadline is not None and time.time() > deadline:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                stream.write("\n[stopped: the benchmark's time limit was reached]\n")
                return -1, time.time() - start
            time.sleep(1.0)
    return proc.returncode, time.time() - start


def resumable_iteration(run: Run) -> int | None:
    """The iteration of an interrupted run's saved state, or None when there is none to continue from."""
    if not run.resume_state.is_file():
        return None
    from crossmatch_ext.engines.checkpoints import load_resumable_state

    try:
        iteration = load_resumable_state(run.resume_state).get("trainer", {}).get("iteration")
    except Exception as error:  # an unreadable state: train from the start rather than fail the comparison
        print(f"  {run.resume_state}: not a readable training state ({error}); training {run.label} from the start",
              flush=True)
        return None
    return int(iteration) if iteration else None


def trim_training_log(path: Path, iteration: int) -> None:
    """Drop the records after ``iteration`` (those of the interrupted part that the resumed run repeats)."""
    if not path.exists():
        return
    kept = [r for r in _read_log(path) if int(r.get("iteration", 0)) <= iteration]
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in kept))
    temporary.replace(path)


def execute(run: Run, progress: Progress, force: bool, threads: int | None) -> dict[str, Any]:
    """Train (unless final weights exist) and evaluate one run; returns its timing record."""
    timing_file = run.folder / "timing.json"
    timing: dict[str, Any] = json.loads(timing_file.read_text()) if timing_file.exists() and not force else {}
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    final_weights = run.folder / "models" / "model.pt"
    if force or not final_weights.exists():
        resumed_at = None if force else resumable_iteration(run)
        if resumed_at is None:
            if run.training_log.exists():
                run.training_log.unlink()  # a fresh training run: the log restarts with it
            timing.pop("train_resumed_at", None)
            progress.set(run, "training")
        else:
            # an interrupted run continues from its last saved state, as the uninterrupted run would have
            trim_training_log(run.training_log, resumed_at)
            timing["train_resumed_at"] = [*timing.get("train_resumed_at", []), resumed_at]
            timing_file.parent.mkdir(parents=True, exist_ok=True)
            timing_file.write_text(json.dumps(timing, indent=1))
            progress.set(run, f"training (resumed at iteration {resumed_at})")
        rc, seconds = _run_logged(run.train_command(resume=resumed_at is not None), run.folder / "train.log", env,
                                  append=resumed_at is not None)
        if rc != 0 or not final_weights.exists():
            progress.set(run, None)
            raise RuntimeError(f"{run.label}: training failed (exit {rc}); see {run.folder / 'train.log'}")
        # a resumed run's wall time is not known (the interrupted part's was lost with its process)
        timing["train_wall_s"] = None if timing.get("train_resumed_at") else seconds
    if force or not run.summary_file.exists():
        progress.set(run, "evaluating")
        rc, seconds = _run_logged(run.eval_command(), run.eval_log, env)
        progress.set(run, None)
        if rc != 0 or not run.summary_file.exists():
            raise RuntimeError(f"{run.label}: evaluation failed (exit {rc}); see {run.eval_log}")
        timing[run.eval_wall_key] = seconds
    progress.set(run, None)
    timing_file.write_text(json.dumps(timing, indent=1))
    return timing


def execute_all(runs: list[Run], jobs: int, force: bool, threads: int | None) -> None:
    progress = Progress()
    progress.start()
    pending = list(runs)
    errors: list[str] = []
    lock = threading.Lock()
    done = [0]

    def worker() -> None:
        while True:
            with lock:
                if not pending or (DEADLINE[0] is not None and time.time() > DEADLINE[0]):
                    return
                run = pending.pop(0)
            print(f"[{time.strftime('%H:%M:%S')}] start {run.label} -> {run.folder}", flush=True)
            try:
                timing = execute(run, progress, force, threads)
                with lock:
                    done[0] += 1
                    print(f"[{time.strftime('%H:%M:%S')}] done {run.label} ({done[0]}/{len(runs)}): "
                          f"{json.dumps({k: round(v, 1) for k, v in timing.items()})}", flush=True)
            except Exception as error:  # keep the other runs going; report at the end
                with lock:
                    errors.append(str(error))
                print(f"[{time.strftime('%H:%M:%S')}] FAILED {error}", flush=True)

    threads_list = [threading.Thread(target=worker) for _ in range(max(1, jobs))]
    for t in threads_list:
        t.start()
    for t in threads_list:
        t.join()
    progress.stop()
    if errors:
        raise SystemExit("some runs failed:\n  " + "\n  ".join(errors))


# ------------------------------------------------------------------------------------------------ results
def _mean_std(values: list[float]) -> dict[str, float | int]:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return {"mean": statistics.fmean(finite), "std": std, "n": len(finite)}


def read_cases(run: Run) -> dict[str, Any]:
    """Per-case (ACDC: per volume and class) metrics of a run, and their means over cases."""
    with open(run.metrics_dir / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = run.protocol.class_names
    cases: dict[str, dict[str, Any]] = {}
    for row in rows:
        values = {m: float(row[m]) for m in METRICS if m in row and row[m] != ""}
        if "class" in row and row["class"] != "":
            cases.setdefault(row["case"], {})[names.get(row["class"], row["class"])] = values
        else:
            cases[row["case"]] = values
    per_case_mean: dict[str, dict[str, float]] = {}
    for case, entry in cases.items():
        if all(isinstance(v, dict) for v in entry.values()) and any(k in names.values() for k in entry):
            per_case_mean[case] = {m: statistics.fmean(entry[c][m] for c in entry if m in entry[c]) for m in METRICS}
        else:
            per_case_mean[case] = entry
    summary = {m: _mean_std([v[m] for v in per_case_mean.values() if m in v]) for m in METRICS}
    by_class: dict[str, Any] = {}
    for name in names.values():
        values = [entry[name] for entry in cases.values() if name in entry]
        if values:
            by_class[name] = {m: _mean_std([v[m] for v in values]) for m in METRICS}
    return {"cases": cases, "case_means": per_case_mean, "summary": summary, "by_class": by_class}


def _s_per_iteration(run: Run) -> float | None:
    """Median seconds per training iteration between consecutive log lines (validations are not counted)."""
    records = _read_log(run.training_log)
    rates = []
    for previous, current in zip(records, records[1:]):
        if previous.get("event") == current.get("event") == "train" and current["iteration"] > previous["iteration"]:
            elapsed = current["wall_time"] - previous["wall_time"]
            rates.append(elapsed / (current["iteration"] - previous["iteration"]))
    return statistics.median(rates) if rates else None


#: run-specific overrides that every run has (paths, seed, mode): not departures from the protocol
_PER_RUN_KEYS = ("dataset_dir", "ckpt_dir", "output_dir", "seed", "mode", "validation_list")


def run_description(protocol: Protocol, overrides: dict[str, Any]) -> str:
    """The protocol's description, then what the run changed of it (``overrides`` against the protocol's own) and
    its validation schedule, so that a results file never states defaults an overridden run did not use."""
    changed = [f"{key}={value}" for key, value in overrides.items()
               if key not in _PER_RUN_KEYS and protocol.overrides.get(key, _MISSING) != value]
    text = protocol.description
    if changed:
        text += "; THIS RUN OVERRIDES: " + ", ".join(changed)
    interval = overrides.get("val_interval")
    if interval is not None:
        text += (f"; validation every {interval} iterations (it does not change the model: validation draws from "
                 "random streams of its own)")
    return text


_MISSING = object()


def _evaluation_description(runs: list[Run]) -> str:
    """What a named evaluation changed of the protocol's evaluation (empty for the protocol's own)."""
    if not runs or runs[0].eval_name is None:
        return ""
    changed = [f"{key}={value}" for key, value in runs[0].eval_overrides.items()
               if runs[0].protocol.eval_overrides.get(key, _MISSING) != value]
    return (f"; EVALUATION '{runs[0].eval_name}' of the same weights (metrics in <run>/eval_{runs[0].eval_name})"
            + (": " + ", ".join(changed) if changed else ""))


def collect(runs: list[Run], protocol: Protocol, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "protocol": protocol.name,
        "description": (run_description(protocol, runs[0].overrides) if runs else protocol.description)
        + _evaluation_description(runs),
        "bundle": str(BUNDLES[protocol.bundle].relative_to(REPO)),
        "dataset_dir": str(data),
        "evaluation_list": args.eval_list,
        "checkpoint_rule": "final weights (models/model.pt)",
        "units": "ACDC: pixels (medpy, no spacing); LA: voxels of the original grid (medpy, no spacing)",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": {"python": sys.version.split()[0], "cpu_count": os.cpu_count(),
                 # a cap on oneDNN's kernels (e.g. AVX512_CORE_BF16: those of a CPU without AMX) changes the results
                 **({"onednn_max_cpu_isa": os.environ["ONEDNN_MAX_CPU_ISA"]}
                    if os.environ.get("ONEDNN_MAX_CPU_ISA") else {})},
        "runs": [],
        "modes": {},
    }
    try:
        import torch

        results["host"]["torch"] = torch.__version__
        if torch.cuda.is_available():
            results["host"]["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    for run in runs:
        if not run.summary_file.exists():
            continue
        metrics = read_cases(run)
        timing_file = run.folder / "timing.json"
        timing = json.loads(timing_file.read_text()) if timing_file.exists() else {}
        record = {
            "mode": run.mode,
            "seed": run.seed,
            "folder": str(run.folder),
            "overrides": run.overrides,
            "eval_overrides": run.eval_overrides,
            "train_command": " ".join(shlex.quote(c) for c in run.train_command()),
            "eval_command": " ".join(shlex.quote(c) for c in run.eval_command()),
            "train_wall_s": timing.get("train_wall_s"),
            "eval_wall_s": timing.get(run.eval_wall_key),
            "s_per_iteration": _s_per_iteration(run),
            **metrics,
        }
        results["runs"].append(record)
    for mode in MODES:
        records = [r for r in results["runs"] if r["mode"] == mode]
        if not records:
            continue
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in records]}
        # across seeds: the spread of the seed means; within: the mean of each seed's per-case standard deviation
        entry["across_seeds"] = {m: _mean_std([r["summary"][m]["mean"] for r in records]) for m in METRICS}
        entry["per_case_std"] = {m: statistics.fmean(r["summary"][m]["std"] for r in records) for m in METRICS}
        classes = sorted({c for r in records for c in r["by_class"]}, key=list(protocol.class_names.values()).index)
        if classes:
            entry["by_class_across_seeds"] = {
                c: {m: _mean_std([r["by_class"][c][m]["mean"] for r in records if c in r["by_class"]]) for m in METRICS}
                for c in classes
            }
        entry["train_wall_s"] = _mean_std([r["train_wall_s"] for r in records if r["train_wall_s"] is not None])
        entry["s_per_iteration"] = _mean_std([r["s_per_iteration"] for r in records if r["s_per_iteration"]])
        empty = sum(1 for r in records for case in r["cases"].values()
                    for v in (case.values() if isinstance(next(iter(case.values()), None), dict) else [case])
                    if v.get("dice", 1.0) == 0.0)
        entry["empty_or_missed"] = empty
        results["modes"][mode] = entry
    if set(MODES) <= set(results["modes"]):
        cm, sup = results["modes"]["crossmatch"], results["modes"]["supervised"]
        paired = {}
        for m in METRICS:
            diffs = []
            for r in results["runs"]:
                if r["mode"] != "crossmatch":
                    continue
                other = [s for s in results["runs"] if s["mode"] == "supervised" and s["seed"] == r["seed"]]
                if other:
                    diffs.append(r["summary"][m]["mean"] - other[0]["summary"][m]["mean"])
            paired[m] = _mean_std(diffs)
        results["gain"] = {
            "crossmatch_minus_supervised": {
                m: cm["across_seeds"][m]["mean"] - sup["across_seeds"][m]["mean"] for m in METRICS
            },
            "paired_by_seed": paired,
        }
    if protocol.paper:
        results["paper"] = protocol.paper
    return results


def _pct(value: float, metric: str) -> str:
    return f"{100 * value:.1f}" if metric in ("dice", "jaccard") else f"{value:.2f}"


def format_table(results: dict[str, Any]) -> str:
    lines = [f"{results['protocol']}: {results['description']}",
             f"evaluation list {results['evaluation_list']}; {results['checkpoint_rule']}; {results['units']}",
             "| mode | seeds | Dice | Jaccard | HD95 | ASD | per-case std of Dice | s/iter | train wall (min) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode, entry in results["modes"].items():
        cells = []
        for m in METRICS:
            s = entry["across_seeds"][m]
            cells.append(f"{_pct(s['mean'], m)} ± {_pct(s['std'], m)}")
        spi = entry["s_per_iteration"]
        wall = entry["train_wall_s"]
        lines.append(f"| {mode} | {len(entry['seeds'])} | " + " | ".join(cells)
                     + f" | {_pct(entry['per_case_std']['dice'], 'dice')} | {spi['mean']:.3f}"
                     + f" | {wall['mean'] / 60:.1f} |")
    for mode, row in (results.get("paper") or {}).items():
        lines.append(f"| paper {mode} | | " + " | ".join(f"{row[m]:.2f}" for m in METRICS) + " | | | |")
    if "gain" in results:
        g = results["gain"]["paired_by_seed"]["dice"]
        lines.append(
            f"CrossMatch - supervised Dice: {100 * g['mean']:+.1f} ± {100 * g['std']:.1f} points (paired by seed)"
        )
    for mode, entry in results["modes"].items():
        if "by_class_across_seeds" in entry:
            parts = [f"{c} {100 * v['dice']['mean']:.1f} ± {100 * v['dice']['std']:.1f}"
                     for c, v in entry["by_class_across_seeds"].items()]
            lines.append(f"{mode} Dice per class: " + ", ".join(parts))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ plots
def plot_curves(runs: list[Run], path: Path) -> None:
    from crossmatch_ext.metrics.plots import plot_training_curves

    colors = {"crossmatch": "tab:blue", "supervised": "tab:orange"}
    plot_training_curves(
        {f"{r.mode} s{r.seed}": r.training_log for r in runs}, path,
        title=f"{runs[0].protocol.name}: training curves, both modes (moving averages; validation on the "
              "evaluation list, for curves only: the reported numbers are the final weights)",
        colors={f"{r.mode} s{r.seed}": colors[r.mode] for r in runs},
    )


def plot_overlays(runs: list[Run], path: Path, num_cases: int, device: str) -> None:
    from crossmatch_ext.metrics.plots import plot_overlays as draw_overlays
    from crossmatch_ext.metrics.plots import predict_validation_cases

    seed = min(r.seed for r in runs)
    chosen = {r.mode: r for r in runs if r.seed == seed and (r.folder / "models" / "model.pt").exists()}
    if set(chosen) != set(MODES):
        print("overlays: both modes of one seed are needed; skipped", flush=True)
        return
    configs = BUNDLES[runs[0].protocol.bundle] / "configs"
    predictions = {
        title: predict_validation_cases(
            [configs / "train.yaml", configs / "evaluate.yaml"],
            {**chosen[mode].overrides, **chosen[mode].eval_overrides},
            chosen[mode].folder / "models" / "model.pt", num_cases, device,
        )
        for mode, title in (("supervised", "supervised"), ("crossmatch", "CrossMatch"))
    }
    draw_overlays(predictions, path, title=f"{runs[0].protocol.name}, seed {seed}: the evaluation list's first "
                                           "cases, the slice with the most foreground")


# ------------------------------------------------------------------------------------------------ main
def convert_source(protocol: Protocol, source: Path, target: Path, dry_run: bool = False) -> Path:
    """The benchmark folder as a Decathlon folder for the auto bundle (converted once, then reused)."""
    if (target / "dataset.json").is_file() or dry_run:
        return target
    from crossmatch_ext.data.decathlon import convert_acdc_to_decathlon, convert_la_to_decathlon

    convert = convert_acdc_to_decathlon if protocol.source == "acdc" else convert_la_to_decathlon
    print(f"converting {source} to a Decathlon folder in {target} ({protocol.source_labeled} labeled)", flush=True)
    dataset = convert(source, target, protocol.source_labeled)
    print(f"  {dataset.describe()}", flush=True)
    return target


def _default_data(bundle: str) -> Path | None:
    candidate = REPO.parent / "shared" / "data" / bundle
    return candidate if candidate.exists() else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--protocol", choices=["acdc", "la", "acdc_auto", "la_auto"],
                       help="a CPU-scale protocol (see above); *_auto: the self-configuring bundle at that budget")
    which.add_argument("--reproduce", choices=REPRODUCIBLE, help="the paper's setting for one table row")
    parser.add_argument("--data", type=Path, help="dataset folder (default: ../shared/data/<la|acdc> if present)")
    parser.add_argument("--eval-list", default="val.list", help="evaluation list in the data folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1; reproduce 0 1 2)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--iterations", type=int, help="override the protocol's number of iterations (its LR decay "
                        "and, for the *_auto protocols, the CPU budget follow: the plan keeps its crops)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/real_data/<protocol>)")
    parser.add_argument("--device", help="cpu or cuda (default: the bundle's choice, cuda when available)")
    parser.add_argument("--no-amp", action="store_true", help="float32 on CUDA (the bundles default to bf16 AMP)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (1 on a CPU; several fit one GPU)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of each run")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers per loader")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra config override (repeatable)")
    parser.add_argument("--eval-set", action="append", metavar="KEY=VALUE",
                        help="override of the evaluation only (repeatable; needs --eval-name), e.g. "
                             "largest_component=True: the trained weights are evaluated again")
    parser.add_argument("--eval-name", help="name of that evaluation: its metrics go to <run>/eval_<NAME> and the "
                                            "results to <out>/results_<NAME>.json, the protocol's own are kept")
    parser.add_argument("--overlay-cases", type=int, default=3, help="cases shown in overlays.png")
    parser.add_argument("--force", action="store_true", help="repeat runs that already have results")
    parser.add_argument("--time-limit", type=float, metavar="MINUTES",
                        help="stop starting runs and stop running ones after this long, then report what finished")
    parser.add_argument("--report-only", action="store_true", help="only aggregate existing runs and plot")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    parser.add_argument("--yes", action="store_true", help="go on with a paper setting without a GPU")
    args = parser.parse_args(argv)
    if args.eval_set and args.eval_name is None:
        parser.error("--eval-set needs --eval-name NAME, so that the protocol's own evaluation is not overwritten")
    if args.eval_name is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", args.eval_name):
        parser.error(f"--eval-name: {args.eval_name!r} is not a folder name (letters, digits, '_' and '-')")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = args.protocol or args.reproduce
    protocol = PROTOCOLS[name]
    data = args.data or _default_data(protocol.source or protocol.bundle)
    if data is None or not Path(data).is_dir():
        raise SystemExit(f"--data: dataset folder not found ({data}); give the folder with the "
                         f"{protocol.source or protocol.bundle} split lists and volumes")
    data = Path(data).resolve()
    out = (args.out or REPO / "runs" / "real_data" / name).resolve()
    if protocol.source is not None:
        data = convert_source(protocol, data, out / "decathlon", args.dry_run)
    if not (data / args.eval_list).exists() and not (args.dry_run and protocol.source is not None):
        raise SystemExit(f"--eval-list: {data / args.eval_list} does not exist")
    runs = make_runs(protocol, args, data, out)
    if args.dry_run:
        for run in runs:
            print(" ".join(shlex.quote(c) for c in run.train_command()))
            print(" ".join(shlex.quote(c) for c in run.eval_command()))
        return 0
    if not args.report_only:
        import torch

        on_gpu = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        total_cm = sum(1 for r in runs if r.mode == "crossmatch")
        if args.reproduce and not on_gpu:
            print(f"{name} is the paper's GPU-sized setting: about {protocol.hours_cpu:.0f} h per CrossMatch run on a "
                  f"2-core CPU ({total_cm} CrossMatch runs requested), about {protocol.minutes_gpu:.0f} min on one "
                  "current GPU.", flush=True)
            if not args.yes:
                print("Not started: run it on a GPU, or pass --yes to go on here.", flush=True)
                return 2
        out.mkdir(parents=True, exist_ok=True)
        print(f"{name}: {len(runs)} runs ({', '.join(args.modes)}; seeds {args.seeds}) in {out}", flush=True)
        start = time.time()
        if args.time_limit is not None:
            DEADLINE[0] = start + 60 * args.time_limit
        try:
            execute_all(runs, args.jobs, args.force, args.threads)
        except SystemExit as error:  # failed runs are listed; report the others
            print(error, flush=True)
        print(f"all runs finished in {(time.time() - start) / 60:.1f} min", flush=True)
    results = collect(runs, protocol, data, args)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.eval_name is None else f"_{args.eval_name}"
    (out / f"results{suffix}.json").write_text(json.dumps(results, indent=1, default=float))
    print(format_table(results), flush=True)
    if results["runs"]:
        plot_curves([r for r in runs if r.training_log.exists()], out / "curves.png")
        try:
            import torch

            device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
            if args.eval_name is None:
                plot_overlays(runs, out / "overlays.png", args.overlay_cases, device)
            else:  # the overlays draw the network's argmax, the same for every evaluation of the weights
                print(f"overlays: the protocol's own evaluation has them ({out / 'overlays.png'})", flush=True)
        except Exception as error:  # a plot must not lose the numbers above
            print(f"overlays.png not written: {type(error).__name__}: {error}", flush=True)
        print(f"wrote {out / f'results{suffix}.json'} and {out / 'curves.png'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
