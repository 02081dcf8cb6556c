"""benchmarks/active_learning.py on generated data: chosen ids per strategy and per random seed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from crossmatch_ext.networks import VNet

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_writes_k_chosen_unlabeled_ids_per_strategy_and_seed(tmp_path):
    subprocess.run([sys.executable, "-m", "crossmatch_ext.data.synthetic", "la", "--out", str(tmp_path / "data"),
                    "--num-train", "4", "--num-val", "1", "--num-labeled", "1", "--shape", "32", "32", "16",
                    "--seed", "5"], check=True, capture_output=True, timeout=300)
    torch.manual_seed(0)
    torch.save(VNet(in_channels=1, out_channels=2, n_filters=16, normalization="batch").state_dict(),
               tmp_path / "model.pt")
    datalist = tmp_path / "data" / "nifti" / "datalist_1_label.json"
    out = tmp_path / "choices.json"
    subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "active_learning.py"), "--bundle",
                    str(REPO_ROOT / "bundles" / "crossmatch_la"), "--model", str(tmp_path / "model.pt"),
                    "--datalist", str(datalist), "--k", "2", "--seeds", "0", "1", "--out", str(out),
                    "--override", "patch_size=[32,32,16]"], check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    labeled = {Path(e["image"]).name[: -len(".nii.gz")] for e in json.loads(datalist.read_text())["training"]
               if e.get("label")}
    assert result["unlabeled"] == 3 and set(result["strategies"]) == {"disagreement", "entropy"}
    for chosen in [*result["strategies"].values(), *result["random"].values()]:
        assert len(chosen) == 2 and not set(chosen) & labeled
    assert set(result["random"]) == {"0", "1"}
