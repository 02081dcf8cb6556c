"""Compare the runs of ``scripts/demo.sh``: a table of Dice and HD95 per run and the method's gain, and the figures.

Each run is a folder ``<out>/<name>`` holding the bundle's outputs: ``eval/metrics_summary.csv`` (the evaluation
of the final weights), ``eval/training_log.jsonl`` and ``models/`` (``model.pt``, ``run_settings.json``). The table
is printed and written to ``<out>/summary.txt``. With matplotlib installed (``pip install
'crossmatch-ext[benchmarks]'``) the training curves of all runs go to ``<out>/curves.png`` and the predictions of
the first validation cases to ``<out>/overlays.png``; without it the script says so and where the curves can be
seen instead (TensorBoard, installed with the package).

Example::

    python scripts/demo_summary.py demo_output --baseline supervised --method crossmatch
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from crossmatch_ext.metrics import format_comparison, plots, read_summary  # noqa: E402

#: How the runs are named in the table.
DISPLAY_NAMES = {"crossmatch": "CrossMatch", "supervised": "supervised only"}
#: Settings of a run that its predictions for the overlays are made with (read from ``run_settings.json``).
PREDICTION_SETTINGS = ("dataset_dir", "data_layout", "dataset_module", "num_labeled", "validation_list",
                       "h5_spacing", "patch_size", "downsample", "eval_protocol", "eval_strides", "sw_batch_size")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the demo's output folder (one sub-folder per run)")
    parser.add_argument("--baseline", default="supervised", help="run the gain is measured against")
    parser.add_argument("--method", default="crossmatch", help="run whose gain is reported")
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "crossmatch_la",
                        help="the bundle the runs trained (for the overlays' predictions)")
    parser.add_argument("--overlay-cases", type=int, default=3, help="validation cases shown in overlays.png")
    parser.add_argument("--no-plots", action="store_true", help="write no figures")
    return parser.parse_args(argv)


def summary_table(out: Path, baseline: str, method: str) -> str:
    """The comparison table of the runs ``baseline`` and ``method`` under ``out``, with a title line."""
    summaries = {name: read_summary(out / name / "eval") for name in (baseline, method)}
    cases = int(summaries[method]["dice"]["n"])
    table = format_comparison(
        {DISPLAY_NAMES.get(n, n): s for n, s in summaries.items()},
        baseline=DISPLAY_NAMES.get(baseline, baseline),
        method=DISPLAY_NAMES.get(method, method),
        headers={"dice": "Dice", "hd95": "HD95 (voxels)"},
    )
    return (f"Final weights on the {cases} validation volumes (mean ± std over volumes; medpy metrics; "
            f"a positive gain is better in both columns):\n{table}")


def write_plots(args: argparse.Namespace, runs: list[str]) -> list[Path]:
    """Write curves.png and overlays.png; return the files written."""
    written = [plots.plot_training_curves(
        {DISPLAY_NAMES.get(n, n): args.out / n / "eval" / "training_log.jsonl" for n in runs},
        args.out / "curves.png",
        title="training curves on the generated data (validation Dice: during training, on the validation volumes)",
    )]
    configs = args.bundle / "configs"
    predictions = {}
    for name in runs:
        settings = json.loads((args.out / name / "models" / "run_settings.json").read_text())["settings"]
        overrides = {k: settings[k] for k in PREDICTION_SETTINGS if k in settings}
        predictions[DISPLAY_NAMES.get(name, name)] = plots.predict_validation_cases(
            [configs / "train.yaml", configs / "evaluate.yaml"], overrides, args.out / name / "models" / "model.pt",
            num_cases=args.overlay_cases,
        )
    written.append(plots.plot_overlays(
        predictions, args.out / "overlays.png",
        title="validation volumes: the axial slice with the most atrium (ground truth and each run's prediction)",
    ))
    return written


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        text = summary_table(args.out, args.baseline, args.method)
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"cannot compare the runs in {args.out}: {error}", file=sys.stderr)
        return 1
    print(text)
    (args.out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    runs = [args.method, args.baseline]
    logs = ", ".join(str(args.out / n / "train.log") for n in runs)
    print(f"\nTable: {args.out / 'summary.txt'}; per-volume metrics: {args.out}/<run>/eval/metrics.csv; "
          f"final weights: {args.out}/<run>/models/model.pt")
    print(f"Training curves (JSON lines): {args.out}/<run>/eval/training_log.jsonl; run logs: {logs}")
    if args.no_plots:
        return 0
    if not plots.plots_available():
        print(f"Figures not drawn: matplotlib is not installed (pip install 'crossmatch-ext[benchmarks]', then "
              f"python scripts/demo_summary.py {args.out}). The curves are in TensorBoard: "
              f"tensorboard --logdir {args.out}")
        return 0
    try:
        written = write_plots(args, runs)
    except Exception as error:  # a figure must not hide the numbers above
        print(f"Figures not drawn: {type(error).__name__}: {error}")
        return 0
    print("Figures: " + ", ".join(str(p) for p in written) + " (training curves; predictions on validation slices)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
