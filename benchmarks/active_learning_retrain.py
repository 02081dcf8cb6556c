"""Does labeling the study CrossMatch is least sure of help more than labeling one at random? Retrain and see.

On real scans, from the labeled cases of a CPU-scale protocol of ``real_data.py`` (ACDC: 3 patients, LA: the 4 cases
of ``train_4_label.list``):

1. train CrossMatch on the protocol (the *base* run) and evaluate it;
2. score every unlabeled training volume with the base weights (:mod:`crossmatch_ext.active_learning`: the
   perturbed decoders' ``disagreement`` and the softmax ``entropy``) and pick ``k`` labeling units per strategy,
   walking down the ranking (ACDC labels patients, so a volume's pick adds its patient, both frames, as the
   challenge's annotation does; LA labels cases); ``random`` draws ``k`` units per ``--random-seeds`` seed;
3. for each choice, retrain from scratch with the same settings and training seed on the labeled units plus the chosen
   ones (a ``train.list`` that lists them first, beside links to the same volumes) and evaluate on ``val.list``.

Everything goes under ``--out``: one folder per run (``base``, ``disagreement``, ``entropy``, ``random_seed<N>``; a
choice two strategies share is trained once), ``choices.json`` (picks and scores) and ``results.json``; the table is
printed (markdown). A rerun skips the runs that finished (final weights and metrics present), so a stopped comparison
resumes where it was.

    python benchmarks/active_learning_retrain.py --protocol acdc --data ../shared/data/acdc --out runs/al_acdc \\
        --iterations 600 --random-seeds 0 1 2
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_data  # the benchmark's runner: commands, logs, resumable execution

from crossmatch_ext.active_learning import STRATEGIES, rank_studies, score_studies
from crossmatch_ext.data.datasets import acdc as acdc_dataset
from crossmatch_ext.data.datasets import dataset_datalists

#: Per protocol: the bundle, the count setting, labeled units at the start, units to add, how a volume maps to a unit.
SETTINGS: dict[str, dict[str, Any]] = {
    "acdc": {"count_key": "num_labeled_patients", "start": 3, "k": 1, "unit": acdc_dataset.patient_id,
             "module": "crossmatch_ext.data.datasets.acdc"},
    "la": {"count_key": "num_labeled", "start": 4, "k": 4, "unit": lambda case: case,
           "module": "crossmatch_ext.data.datasets.la"},
}


def volume_id(path: str) -> str:
    """The ``train.list`` ID of a volume file: ACDC ``volumes/<id>.h5``, LA ``<id>/mri_norm2.h5``."""
    p = Path(path)
    return p.parent.name if p.name == "mri_norm2.h5" else p.name.split(".")[0]


def read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def arm_dataset(data: Path, folder: Path, order: list[str]) -> Path:
    """A data folder for one run: links to the volumes of ``data`` and a ``train.list`` in ``order``."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in data.iterdir():
        if entry.name == "train.list":
            continue
        link = folder / entry.name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(entry.resolve())
    temporary = folder / "train.list.tmp"
    temporary.write_text("\n".join(order) + "\n")
    temporary.replace(folder / "train.list")
    return folder


def labeled_first(order: list[str], labeled: list[str], chosen: list[str], unit_of: Any) -> list[str]:
    """``order`` (volume IDs) with the volumes of the ``labeled`` units first, then those of ``chosen``, then the rest.

    A dataset module labels the first units of ``train.list``, so this order labels exactly ``labeled + chosen``.
    """
    first = [v for v in order if unit_of(v) in labeled]
    added = [v for v in order if unit_of(v) in chosen and unit_of(v) not in labeled]
    return first + added + [v for v in order if v not in first and v not in added]


def literal(value: Any) -> Any:
    """A ``--set`` value (a string) as the Python value it spells; other values unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def choose(units_ranked: list[str], k: int) -> list[str]:
    """The first ``k`` distinct units of a ranking (two frames of one patient count once)."""
    chosen: list[str] = []
    for unit in units_ranked:
        if unit not in chosen:
            chosen.append(unit)
        if len(chosen) == k:
            break
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--protocol", choices=sorted(SETTINGS), default="acdc")
    parser.add_argument("--data", type=Path, required=True, help="the protocol's data folder (with train.list)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=None, help="training iterations of every run "
                        "(default: the protocol's)")
    parser.add_argument("--k", type=int, default=None, help="units to add (default: ACDC 1 patient, LA 4 cases)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of the base run (default: 0)")
    parser.add_argument("--retrain-seeds", type=int, nargs="+", default=None,
                        help="training seeds of each retraining (default: --seed)")
    parser.add_argument("--random-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--eval-list", default="val.list")
    parser.add_argument("--device", default=None, help="e.g. cuda (default: the bundle's choice)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="extra config override of every run and of the scoring (repeatable), e.g. "
                        "patch_size=[48,48,32]")
    args = parser.parse_args(argv)
    setting = SETTINGS[args.protocol]
    k = args.k if args.k is not None else setting["k"]
    data = args.data.resolve()
    if not (data / "train.list").is_file():
        print(f"error: --data {data}: no train.list", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    protocol = real_data.PROTOCOLS[args.protocol]
    bundle = real_data.BUNDLES[protocol.bundle]
    count_key, start = setting["count_key"], setting["start"]
    run_args = argparse.Namespace(seeds=[args.seed], modes=["crossmatch"], iterations=args.iterations,
                                  eval_list=args.eval_list, num_workers=None, device=args.device, no_amp=False,
                                  set=args.set)

    def make_run(name: str, dataset_dir: Path, labeled: int, seed: int) -> real_data.Run:
        run = real_data.make_runs(protocol, run_args, dataset_dir, out / name)[0]
        run.folder, run.seed = out / name, seed
        run.overrides.update({count_key: labeled, "seed": seed, "ckpt_dir": str(run.folder / "models"),
                              "output_dir": str(run.folder / "eval")})
        return run

    train_ids = read_list(data / "train.list")
    unit_of = setting["unit"]
    base_order = train_ids
    labeled_units = choose([unit_of(v) for v in base_order], start)

    base = make_run("base", data, start, args.seed)
    print(f"[{time.strftime('%H:%M:%S')}] base run: {start} labeled units {labeled_units}", flush=True)
    real_data.execute_all([base], jobs=1, force=False, threads=None)

    # 2. choices
    lists = dataset_datalists(setting["module"], data, start, val_list=args.eval_list)
    unlabeled = sorted(item["image"] for item in lists["unlabeled"])
    overrides = {key: literal(base.overrides[key]) for key in ("image_size", "downsample", "patch_size")
                 if key in base.overrides}  # the scoring sees the volumes as the training did
    began = time.time()
    scores, cache = score_studies(bundle, base.folder / "models" / "model.pt", unlabeled, overrides=overrides,
                                  progress=lambda line: print(line, file=sys.stderr, flush=True))
    scoring_wall_s: float | None = time.time() - began
    previous = out / "choices.json"
    if cache["misses"] == 0:  # every score came from the cache: keep the time of the run that computed them
        scoring_wall_s = json.loads(previous.read_text()).get("scoring_wall_s") if previous.is_file() else None
    candidates = sorted({unit_of(volume_id(s.image)) for s in scores} - set(labeled_units))
    arms: dict[str, list[str]] = {}
    for strategy in args.strategies:
        arms[strategy] = choose([unit_of(volume_id(s.image)) for s in rank_studies(scores, strategy)], k)
    for seed in args.random_seeds:
        arms[f"random_seed{seed}"] = sorted(random.Random(seed).sample(candidates, k))
    choices = {"labeled": labeled_units, "k": k, "arms": arms, "cache": cache, "scoring_wall_s": scoring_wall_s,
               "scores": {volume_id(s.image): {"disagreement": s.disagreement, "entropy": s.entropy,
                                               "foreground_voxels": s.foreground_voxels} for s in scores}}
    (out / "choices.json").write_text(json.dumps(choices, indent=1) + "\n")
    print(json.dumps({"labeled": labeled_units, "arms": arms}), flush=True)

    # 3. retraining, one run per distinct choice and training seed
    retrain_seeds = args.retrain_seeds or [args.seed]

    def run_name(arm: str, seed: int) -> str:
        return arm if seed == args.seed else f"{arm}_train{seed}"

    runs: dict[str, real_data.Run] = {}
    run_of_arm: dict[str, str] = {}  # arm -> the arm whose runs it shares (the same picks)
    for arm, chosen in arms.items():
        same = next((other for other in run_of_arm if sorted(arms[other]) == sorted(chosen)), None)
        run_of_arm[arm] = run_of_arm[same] if same is not None else arm
        if same is not None:
            continue
        folder = arm_dataset(data, out / arm / "data", labeled_first(base_order, labeled_units, chosen, unit_of))
        for seed in retrain_seeds:
            runs[run_name(arm, seed)] = make_run(run_name(arm, seed), folder, start + k, seed)
    real_data.execute_all(list(runs.values()), jobs=1, force=False, threads=None)

    # 4. results
    def result(run: real_data.Run) -> dict[str, Any]:
        cases = real_data.read_cases(run)
        timing = json.loads((run.folder / "timing.json").read_text())
        return {"summary": cases["summary"], "by_class": cases["by_class"], "wall_s": timing}

    def wall(row: dict[str, Any]) -> float:
        values = [v for key, v in row["wall_s"].items() if key.endswith("wall_s")]
        # a resumed run's training wall time is not known (None): nan rather than a part of it
        return float("nan") if None in values else sum(values)

    base_result = result(base)
    rows: dict[str, Any] = {}
    for arm, shared in run_of_arm.items():
        per_seed = {str(seed): result(runs[run_name(shared, seed)]) for seed in retrain_seeds}
        dice = [r["summary"]["dice"]["mean"] for r in per_seed.values()]
        rows[arm] = {"added": arms[arm], "runs_of": shared, "training_seeds": per_seed,
                     "dice_mean": statistics.fmean(dice)}
    random_dice = [rows[a]["dice_mean"] for a in arms if a.startswith("random_seed")]
    results = {"protocol": args.protocol, "description": real_data.run_description(protocol, base.overrides),
               "iterations":
               base.overrides["num_iterations"], "base_training_seed": args.seed, "training_seeds": retrain_seeds,
               "labeled": labeled_units, "k": k, "extra_overrides": args.set or [], "scoring_wall_s": scoring_wall_s,
               "base": base_result,
               "rows": rows, "random_mean_dice": statistics.fmean(random_dice) if random_dice else None}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    base_dice = base_result["summary"]["dice"]["mean"]
    print(f"\n{args.protocol}: {start} labeled units + {k} added, {results['iterations']} iterations; picks from the "
          f"base run (training seed {args.seed}); Dice on {args.eval_list} (mean ± std over volumes) per training "
          f"seed of the retraining; wall = train + evaluate of one run"
          + (f"; overrides {' '.join(args.set)}" if args.set else "") + "\n")
    print("| run | added | " + " | ".join(f"Dice, seed {seed}" for seed in retrain_seeds)
          + " | mean Dice | gain over base | wall (s) |")
    print("|---|---|" + "---|" * len(retrain_seeds) + "---|---|---|")
    dice = base_result["summary"]["dice"]
    print(f"| base (seed {args.seed}) | - | {100 * dice['mean']:.1f} ± {100 * dice['std']:.1f}"
          + " |" * (len(retrain_seeds) - 1) + f" | {100 * base_dice:.1f} | - | {wall(base_result):.0f} |")
    for arm, row in rows.items():
        cells = [f"{100 * r['summary']['dice']['mean']:.1f} ± {100 * r['summary']['dice']['std']:.1f}"
                 for r in row["training_seeds"].values()]
        walls = statistics.fmean(wall(r) for r in row["training_seeds"].values())
        print(f"| {arm} | {', '.join(row['added'])} | " + " | ".join(cells)
              + f" | {100 * row['dice_mean']:.1f} | {100 * (row['dice_mean'] - base_dice):+.1f} | {walls:.0f} |")
    if random_dice:
        print(f"\nrandom, mean of {len(random_dice)} draws: Dice {100 * results['random_mean_dice']:.1f}")
    if scoring_wall_s is not None:
        print(f"scoring the {len(scores)} unlabeled volumes with the base weights: {scoring_wall_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
