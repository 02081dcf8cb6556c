"""Compare two settings of a real-data protocol seed by seed: the paired table and the mean ± std of the difference.

Reads the ``results.json`` of two ``real_data.py`` outputs (e.g. the same protocol run with ``--set amp=True`` and
with ``--no-amp``), pairs their runs by mode and seed, and prints one row per pair (Dice, per-class Dice, HD95, ASD
of each side and their difference B - A) and, over the pairs, the mean ± std of each difference, with the verdict
"within noise" when the mean difference is inside two standard errors of the paired differences (or, with one pair,
"one pair: no verdict"). Where a seed has both a CrossMatch and a supervised run on both sides, it also prints each
side's semi-supervised gain (CrossMatch - supervised Dice, same seed) and the paired gain difference. ``--goal
POINTS`` states whether each mean Dice difference, and the mean gain difference, is within that many points (e.g.
a self-configuring bundle against the hand-tuned one: "within 2 Dice, the same gain"). ``--json FILE`` writes the
same as JSON (kept in ``benchmarks/results/``).

Example::

    python benchmarks/paired_runs.py runs/precision/acdc_fp32 runs/precision/acdc_bf16 --names float32 bf16 \\
        --json benchmarks/results/acdc_precision_pairs_cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

METRICS = ("dice", "hd95", "asd")


def load_runs(folder: Path | str) -> dict[tuple[str, int], dict[str, Any]]:
    """``{(mode, seed): run}`` of a ``real_data.py`` output folder (or its ``results.json``), or of several joined
    by commas (``runs/acdc_fp32,runs/acdc_fp32_s1``: one setting run seed by seed into separate folders).

    Raises:
        SystemExit: for a missing ``results.json``, or a (mode, seed) that two of the folders both hold.
    """
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    for part in str(folder).split(","):
        given = Path(part)
        path = given / "results.json" if given.is_dir() else given
        if not path.is_file():
            raise SystemExit(f"error: no results.json at {path}: run benchmarks/real_data.py with --out {given} first")
        for run in json.loads(path.read_text())["runs"]:
            key = (run["mode"], int(run["seed"]))
            if key in runs:
                raise SystemExit(f"error: {key[0]} seed {key[1]} is in two of {folder}: give each seed once")
            runs[key] = run
    return runs


def _values(run: dict[str, Any]) -> dict[str, float]:
    values = {metric: float(run["summary"][metric]["mean"]) for metric in METRICS}
    for name, metrics in (run.get("by_class") or {}).items():
        values[f"dice_{name}"] = float(metrics["dice"]["mean"])
    return values


def pair_runs(a: dict[tuple[str, int], dict], b: dict[tuple[str, int], dict]) -> list[dict[str, Any]]:
    """One row per (mode, seed) present on both sides: each side's values and the difference B - A."""
    rows = []
    for key in sorted(set(a) & set(b)):
        va, vb = _values(a[key]), _values(b[key])
        rows.append({"mode": key[0], "seed": key[1], "a": va, "b": vb,
                     "difference": {name: vb[name] - va[name] for name in va if name in vb},
                     "wall_s": {"a": a[key].get("train_wall_s"), "b": b[key].get("train_wall_s")}})
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per mode and value: mean and std of the paired differences, n, and whether the mean is within noise."""
    out: dict[str, dict[str, Any]] = {}
    for mode in sorted({row["mode"] for row in rows}):
        mine = [row for row in rows if row["mode"] == mode]
        stats: dict[str, Any] = {}
        for name in mine[0]["difference"]:
            diffs = [row["difference"][name] for row in mine if name in row["difference"]]
            mean = statistics.fmean(diffs)
            std = statistics.stdev(diffs) if len(diffs) > 1 else math.nan
            if len(diffs) < 2:
                verdict = "one pair: no verdict"
            else:
                verdict = "within noise" if abs(mean) <= 2 * std / math.sqrt(len(diffs)) else "outside noise"
            stats[name] = {"mean": mean, "std": std, "n": len(diffs), "verdict": verdict}
        out[mode] = stats
    return out


def semi_supervised_gains(rows: list[dict[str, Any]], metric: str = "dice") -> dict[str, Any]:
    """Per seed with both modes on both sides: each side's CrossMatch - supervised ``metric`` and the difference
    B - A of those gains; over the seeds, the mean and std of each (``{"seeds": [], ...}`` when no seed has all
    four runs)."""
    by_key = {(row["mode"], row["seed"]): row for row in rows}
    seeds = sorted(seed for mode, seed in by_key if mode == "crossmatch" and ("supervised", seed) in by_key)
    per_seed = []
    for seed in seeds:
        semi, sup = by_key[("crossmatch", seed)], by_key[("supervised", seed)]
        gain_a, gain_b = semi["a"][metric] - sup["a"][metric], semi["b"][metric] - sup["b"][metric]
        per_seed.append({"seed": seed, "a": gain_a, "b": gain_b, "difference": gain_b - gain_a})
    out: dict[str, Any] = {"metric": metric, "seeds": per_seed}
    for side in ("a", "b", "difference"):
        values = [entry[side] for entry in per_seed]
        out[side] = {"mean": statistics.fmean(values) if values else math.nan,
                     "std": statistics.stdev(values) if len(values) > 1 else math.nan, "n": len(values)}
    return out


def goal_verdicts(summary: dict[str, dict[str, Any]], gains: dict[str, Any], goal: float) -> dict[str, Any]:
    """Whether each mode's mean Dice difference B - A, and the mean gain difference, is within ``goal`` points
    (Dice as a fraction: ``goal / 100``). Only the shortfall counts: B better than A by more than the goal is
    "better", not a miss."""
    def verdict(mean: float) -> str:
        if math.isnan(mean):
            return "not measured"
        if abs(mean) <= goal / 100:
            return f"within {goal:g} points"
        return "better" if mean > 0 else f"short by more than {goal:g} points"

    out: dict[str, Any] = {"points": goal}
    for mode, stats in summary.items():
        out[mode] = verdict(stats["dice"]["mean"])
    out["gain"] = verdict(gains["difference"]["mean"])
    return out


def _pm(stats: dict[str, Any], scale: float = 100.0) -> str:
    std = "n/a" if math.isnan(stats["std"]) else f"{stats['std'] * scale:.1f}"
    return f"{stats['mean'] * scale:+.1f} ± {std}"


def format_table(rows: list[dict[str, Any]], summary: dict[str, dict[str, Any]], names: tuple[str, str],
                 gains: dict[str, Any] | None = None, goals: dict[str, Any] | None = None) -> str:
    a, b = names
    lines = [f"| mode | seed | Dice {a} | Dice {b} | {b} - {a} (Dice) | per class {b} - {a} | HD95 {a} / {b} |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        per_class = ", ".join(f"{k[5:]} {v * 100:+.1f}" for k, v in row["difference"].items() if k.startswith("dice_"))
        lines.append(f"| {row['mode']} | {row['seed']} | {row['a']['dice'] * 100:.1f} | {row['b']['dice'] * 100:.1f} | "
                     f"{row['difference']['dice'] * 100:+.1f} | {per_class} | {row['a']['hd95']:.2f} / "
                     f"{row['b']['hd95']:.2f} |")
    for mode, stats in summary.items():
        dice = stats["dice"]
        std = "n/a" if math.isnan(dice["std"]) else f"{dice['std'] * 100:.1f}"
        lines.append(f"\n{mode}: paired Dice difference {b} - {a} = {dice['mean'] * 100:+.1f} ± {std} points over "
                     f"{dice['n']} seed(s): {dice['verdict']}"
                     + (f"; goal: {goals[mode]}" if goals is not None and mode in goals else ""))
    if gains is not None and gains["seeds"]:
        per_seed = ", ".join(f"seed {g['seed']}: {g['a'] * 100:+.1f} / {g['b'] * 100:+.1f}" for g in gains["seeds"])
        lines.append(f"\nsemi-supervised gain (CrossMatch - supervised Dice, {a} / {b}): {per_seed}; mean "
                     f"{_pm(gains['a'])} / {_pm(gains['b'])}; gain difference {b} - {a} = {_pm(gains['difference'])}"
                     + (f"; goal: {goals['gain']}" if goals is not None else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="the first setting's real_data.py output folder (or results.json); several "
                                   "joined by commas")
    parser.add_argument("b", help="the second setting's")
    parser.add_argument("--names", nargs=2, default=("A", "B"), help="names of the two settings")
    parser.add_argument("--goal", type=float, metavar="POINTS",
                        help="say whether each mean Dice difference and the gain difference is within POINTS")
    parser.add_argument("--json", type=Path, help="also write the pairs and the summary here")
    args = parser.parse_args(argv)
    rows = pair_runs(load_runs(args.a), load_runs(args.b))
    if not rows:
        print("error: no (mode, seed) is present in both results", file=sys.stderr)
        return 2
    summary = summarize(rows)
    gains = semi_supervised_gains(rows)
    goals = goal_verdicts(summary, gains, args.goal) if args.goal is not None else None
    print(format_table(rows, summary, tuple(args.names), gains, goals))
    if args.json is not None:
        written = {"settings": {"a": [args.names[0], str(args.a)], "b": [args.names[1], str(args.b)]},
                   "pairs": rows, "summary": summary, "semi_supervised_gain": gains}
        if goals is not None:
            written["goal"] = goals
        args.json.write_text(json.dumps(written, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
