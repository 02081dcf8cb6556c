"""Which unlabeled training cases each active-learning strategy would label next, for a retraining comparison.

Given a protocol's MONAI datalist (``training`` entries without a ``label`` are the unlabeled cases) and the model
trained on it, ranks the unlabeled cases by CrossMatch's decoder disagreement and by softmax entropy
(:mod:`crossmatch_ext.active_learning`), and draws ``k`` cases at random per seed; writes the chosen case ids as JSON
(also printed), so a retraining can add exactly those labels.

    python benchmarks/active_learning.py --bundle bundles/crossmatch_la --model runs/la_4/model.pt \\
        --datalist data/LA/nifti/datalist_4_label.json --k 4 --seeds 0 1 2 --out al_choices.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

from crossmatch_ext.active_learning import STRATEGIES, rank_studies, score_studies, study_id


def unlabeled_cases(datalist: Path) -> list[str]:
    """Image paths of the ``training`` entries without a label, resolved against the datalist's folder."""
    try:
        content = json.loads(datalist.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"--datalist {datalist}: cannot read it as JSON: {error}") from error
    training = content.get("training") if isinstance(content, dict) else None
    if not isinstance(training, list):
        raise ValueError(f"--datalist {datalist}: expected a 'training' list, found {type(training).__name__}.")
    return sorted(os.fspath(datalist.parent / entry["image"]) for entry in training
                  if isinstance(entry, dict) and "image" in entry and not entry.get("label"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--bundle", required=True, help="bundle folder, e.g. bundles/crossmatch_la")
    parser.add_argument("--model", required=True, help="checkpoint trained on the protocol")
    parser.add_argument("--datalist", required=True, help="the protocol's datalist JSON (unlabeled: no 'label')")
    parser.add_argument("--k", type=int, default=4, help="cases to choose per strategy (default: 4)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="random-choice seeds (default: 0 1 2)")
    parser.add_argument("--out", default=None, help="write the JSON here too")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--override", action="append", default=[], metavar="ID=JSON",
                        help="inference config id, e.g. patch_size=[32,32,16] (repeatable)")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.override:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    try:
        images = unlabeled_cases(Path(args.datalist))
        if len(images) < args.k:
            raise ValueError(f"--datalist {args.datalist}: {len(images)} unlabeled cases, fewer than --k {args.k}.")
        scores, cache = score_studies(args.bundle, args.model, images, device=args.device, overrides=overrides,
                                      progress=lambda line: print(line, file=sys.stderr))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ids = sorted(study_id(image) for image in images)
    result = {
        "datalist": os.fspath(args.datalist), "model": os.fspath(args.model), "k": args.k, "unlabeled": len(ids),
        "strategies": {strategy: [s.id for s in rank_studies(scores, strategy)[: args.k]] for strategy in STRATEGIES},
        "random": {str(seed): sorted(random.Random(seed).sample(ids, args.k)) for seed in args.seeds},
        "scores": {s.id: {"disagreement": s.disagreement, "entropy": s.entropy,
                          "foreground_voxels": s.foreground_voxels} for s in scores},
        "cache": cache,
    }
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
