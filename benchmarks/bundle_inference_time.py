"""Seconds to segment one volume with a bundle's inference.yaml (preprocessing + inferer + argmax), per protocol.

Usage:
    python benchmarks/bundle_inference_time.py --bundle crossmatch_la --shape 244 147 88 \\
        --set eval_protocol=monai --set eval_protocol=paper [--image IMAGE] [--device cpu] [--threads N]

Each ``--set`` is one configuration to time (comma-separated ``key=value`` config overrides, values parsed as YAML;
no ``--set`` times the config's defaults). The network has random weights (speed does not depend on them). The
input is ``--image`` (any file the bundle reads) or a random volume of ``--shape`` written as NIfTI. Prints one
JSON object with the seconds of each configuration (one warm-up forward pass first).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_set(text: str) -> dict:
    overrides = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def time_one(bundle: str, image: str, overrides: dict, device: str) -> dict:
    from monai.bundle import ConfigParser

    bundle_dir = REPO_ROOT / "bundles" / bundle
    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.yaml"))
    parser.update({"bundle_root": str(bundle_dir), "device": f"$torch.device('{device}')", "amp": False, **overrides})
    network = parser.get_parsed_content("network").eval()
    preprocessing = parser.get_parsed_content("preprocessing")
    inferer = parser.get_parsed_content("inferer")
    start = time.perf_counter()
    data = preprocessing({"image": image})
    with torch.no_grad():
        scores = inferer(data["image"][None].to(device), network)
    labels = scores.argmax(1)
    seconds = time.perf_counter() - start
    return {"overrides": overrides, "seconds": round(seconds, 2), "shape": list(labels.shape[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="crossmatch_la", choices=["crossmatch_la", "crossmatch_acdc"])
    parser.add_argument("--image", help="an image file; default: a random volume of --shape")
    parser.add_argument("--shape", type=int, nargs=3, default=[244, 147, 88])
    parser.add_argument("--set", dest="sets", action="append", default=[], help="key=value[,key=value...]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        image = args.image
        if image is None:
            import nibabel as nib

            image = str(Path(tmp) / "image.nii.gz")
            volume = np.random.default_rng(0).normal(size=args.shape).astype(np.float32)
            nib.save(nib.Nifti1Image(volume, np.diag([0.625, 0.625, 0.625, 1.0])), image)
        runs = [time_one(args.bundle, image, parse_set(s), args.device) for s in (args.sets or [""])]
    print(json.dumps({"bundle": args.bundle, "image": args.image or f"random {args.shape}", "device": args.device,
                      "threads": torch.get_num_threads(), "runs": runs}))


if __name__ == "__main__":
    sys.exit(main())
