"""Compare two settings of a real-data protocol seed by seed: the paired table and the mean ± std of the difference.

Reads the ``results.json`` of two ``real_data.py`` outputs (e.g. the same protocol run with ``--set amp=True`` and
with ``--no-amp``), pairs their runs by mode and seed, and prints one row per pair (Dice, per-class Dice, HD95, ASD
of each side and their difference B - A) and, over the pairs, the mean ± std of each difference, with the verdict
"within noise" when the mean difference is inside two standard errors of the paired differences (or, with one pair,
"one pair: no verdict"). ``--json FILE`` writes the same as JSON (kept in ``benchmarks/results/``).

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


def format_table(rows: list[dict[str, Any]], summary: dict[str, dict[str, Any]], names: tuple[str, str]) -> str:
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
                     f"{dice['n']} seed(s): {dice['verdict']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="the first setting's real_data.py output folder (or results.json); several "
                                   "joined by commas")
    parser.add_argument("b", help="the second setting's")
    parser.add_argument("--names", nargs=2, default=("A", "B"), help="names of the two settings")
    parser.add_argument("--json", type=Path, help="also write the pairs and the summary here")
    args = parser.parse_args(argv)
    rows = pair_runs(load_runs(args.a), load_runs(args.b))
    if not rows:
        print("error: no (mode, seed) is present in both results", file=sys.stderr)
        return 2
    summary = summarize(rows)
    print(format_table(rows, summary, tuple(args.names)))
    if args.json is not None:
        args.json.write_text(json.dumps({"settings": {"a": [args.names[0], str(args.a)], "b": [args.names[1],
                                         str(args.b)]}, "pairs": rows, "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
