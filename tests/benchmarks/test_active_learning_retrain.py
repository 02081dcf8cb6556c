"""benchmarks/active_learning_retrain.py: the data folder of a retraining labels exactly the base cases + the chosen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import active_learning_retrain as retrain  # noqa: E402

from crossmatch_ext.data.datasets import acdc, dataset_datalists  # noqa: E402


def test_choose_counts_a_patient_once_and_stops_at_k():
    ranked = [acdc.patient_id(v) for v in ["patient007_frame02", "patient007_frame01", "patient003_frame01",
                                           "patient005_frame02"]]
    assert retrain.choose(ranked, 2) == ["patient007", "patient003"]
    assert retrain.choose(ranked, 5) == ["patient007", "patient003", "patient005"]


def test_volume_id_of_both_layouts():
    assert retrain.volume_id("/d/acdc/volumes/patient012_frame01.h5") == "patient012_frame01"
    assert retrain.volume_id("/d/la/CASE_A/mri_norm2.h5") == "CASE_A"


def test_arm_dataset_labels_the_base_patients_and_the_chosen_one(tmp_path):
    data = tmp_path / "acdc"
    subprocess.run([sys.executable, "-m", "crossmatch_ext.data.synthetic", "acdc", "--out", str(data),
                    "--num-train", "5", "--num-val", "1", "--shape", "32", "32", "--num-slices", "3", "3",
                    "--seed", "3"], check=True, capture_output=True, timeout=300)
    order = retrain.read_list(data / "train.list")
    base = dataset_datalists("crossmatch_ext.data.datasets.acdc", data, 2)
    base_patients = sorted({acdc.patient_id(item["case"]) for item in base["labeled"]})
    candidates = sorted({acdc.patient_id(item["case"]) for item in base["unlabeled"]})
    chosen = [candidates[-1]]  # the last patient of train.list: labeled only if the new order puts it first
    folder = retrain.arm_dataset(data, tmp_path / "arm", retrain.labeled_first(order, base_patients, chosen,
                                                                               acdc.patient_id))
    arm = dataset_datalists("crossmatch_ext.data.datasets.acdc", folder, 3)
    assert sorted({acdc.patient_id(item["case"]) for item in arm["labeled"]}) == sorted(base_patients + chosen)
    assert len(arm["labeled"]) == 6 and len(arm["unlabeled"]) == len(base["unlabeled"]) - 2
    assert [item["case"] for item in arm["validation"]] == [item["case"] for item in base["validation"]]
    assert sorted(retrain.read_list(folder / "train.list")) == sorted(order)  # the same pool, reordered
    assert (folder / "volumes").resolve() == (data / "volumes").resolve()  # the volumes are linked, not copied
    assert (data / "train.list").read_text().splitlines() == order  # the source folder is untouched


def test_set_values_reach_the_scoring_as_the_values_they_spell():
    assert retrain.literal("[48,48,32]") == [48, 48, 32]
    assert retrain.literal("0.5") == 0.5
    assert retrain.literal("monai") == "monai"  # a plain word stays a string
    assert retrain.literal([64, 64, 32]) == [64, 64, 32]
