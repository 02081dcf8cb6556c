"""Command line: ``python -m crossmatch_ext.data.synthetic {la,acdc} --out DIR ...``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .acdc import write_acdc_dataset
from .la import write_la_dataset

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m crossmatch_ext.data.synthetic",
        description=(
            "Write a synthetic cardiac MRI dataset in the layout of the LA (3D LGE-MRI) or ACDC (2D cine-MRI) "
            "semi-supervised segmentation benchmarks: HDF5 volumes, train/val/labeled list files and, optionally, "
            "NIfTI (MONAI datalist) or raw challenge copies. The same seed gives identical files."
        ),
    )
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="{la,acdc}")

    la = sub.add_parser(
        "la",
        help="LA-like 3D volumes (<out>/<CASE_ID>/mri_norm2.h5)",
        description="Write LA-like 3D volumes: <out>/<CASE_ID>/mri_norm2.h5, train.list, val.list, "
        "train_<N>_label.list; --nifti adds <out>/nifti, --nrrd adds the raw challenge layout <out>/raw.",
    )
    _add_counts(la, train=("training cases", 16), val=("validation cases", 4))
    la.add_argument(
        "--num-labeled", type=int, nargs="+", default=[4, 8], metavar="N", help="labeled counts N (default: 4 8)"
    )
    la.add_argument(
        "--shape", type=int, nargs=3, default=[112, 112, 80], metavar=("X", "Y", "Z"),
        help="volume size, slice axis last (default: 112 112 80)",
    )
    la.add_argument(
        "--max-shape", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
        help="draw each case's size between --shape and this (default: all cases --shape)",
    )
    la.add_argument("--nifti", action=argparse.BooleanOptionalAction, default=True,
                    help="also write NIfTI copies and MONAI datalists (default: on)")
    la.add_argument("--nrrd", action=argparse.BooleanOptionalAction, default=False,
                    help="also write the raw 2018 challenge NRRD layout (default: off)")

    acdc = sub.add_parser(
        "acdc",
        help="ACDC-like short-axis stacks (<out>/volumes/patientNNN_frameMM.h5)",
        description="Write ACDC-like short-axis stacks: <out>/volumes/patientNNN_frame0{1,2}.h5, train.list, "
        "val.list, train_<N>_label.list; --nifti adds the raw challenge layout <out>/raw.",
    )
    _add_counts(acdc, train=("training patients, two volumes each", 14), val=("validation patients", 4))
    acdc.add_argument(
        "--num-labeled", "--labeled-patients", type=int, nargs="+", default=[1, 3], metavar="N",
        help="labeled patient counts N (default: 1 3)",
    )
    acdc.add_argument(
        "--shape", "--size", type=int, nargs=2, default=[192, 192], metavar=("H", "W"),
        help="slice size (default: 192 192)",
    )
    acdc.add_argument(
        "--max-shape", "--max-size", type=int, nargs=2, default=None, metavar=("H", "W"),
        help="draw each patient's slice size between --shape and this (default: all --shape)",
    )
    acdc.add_argument(
        "--num-slices", type=int, nargs=2, default=[6, 12], metavar=("MIN", "MAX"),
        help="inclusive range of slices per patient (default: 6 12)",
    )
    acdc.add_argument("--nifti", action=argparse.BooleanOptionalAction, default=True,
                      help="also write the raw NIfTI layout and MONAI datalists (default: on)")
    return parser


def _add_counts(parser: argparse.ArgumentParser, train: tuple[str, int], val: tuple[str, int]) -> None:
    """The arguments every dataset takes: output folder, training and validation counts, seed."""
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--num-train", type=int, default=train[1], help=f"{train[0]} (default: {train[1]})")
    parser.add_argument("--num-val", type=int, default=val[1], help=f"{val[0]} (default: {val[1]})")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on invalid arguments.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    shape: Any = args.shape if args.max_shape is None else (args.shape, args.max_shape)
    start = time.perf_counter()
    try:
        if args.dataset == "la":
            out = write_la_dataset(
                args.out, num_train=args.num_train, num_val=args.num_val, num_labeled=args.num_labeled,
                seed=args.seed, shape=shape, nifti=args.nifti, nrrd=args.nrrd,
            )
            volumes = sorted(out.glob("*/mri_norm2.h5"))
            kind = f"{args.num_train} train + {args.num_val} val LA cases"
        else:
            out = write_acdc_dataset(
                args.out, num_train_patients=args.num_train, num_val_patients=args.num_val,
                labeled_patients=args.num_labeled, seed=args.seed, size=shape,
                num_slices=tuple(args.num_slices), nifti=args.nifti,
            )
            volumes = sorted((out / "volumes").glob("*.h5"))
            volumes_written = 2 * (args.num_train + args.num_val)
            kind = f"{args.num_train} train + {args.num_val} val ACDC patients ({volumes_written} volumes)"
    except ValueError as err:
        parser.error(str(err))
    elapsed = time.perf_counter() - start
    print(f"wrote {kind} (seed {args.seed}) to {out} in {elapsed:.2f} s")
    print(f"  {len(volumes)} HDF5 volumes, e.g. {volumes[0]}")
    for list_file in sorted(out.glob("*.list")):
        print(f"  {list_file} ({len(list_file.read_text().split())} entries)")
    for extra in ("nifti", "raw"):
        folder = out / extra
        if folder.is_dir():
            count = sum(1 for p in folder.rglob("*") if p.suffix in (".gz", ".nrrd"))
            datalists = sorted(folder.glob("datalist*.json"))
            names = ", ".join(p.name for p in datalists) if datalists else "no datalist"
            print(f"  {folder}: {count} image files; {names}")
    return 0
