"""MONAI Label end to end with the self-configuring bundle: the real server (scripts/monailabel.sh) plans and trains
on its own studies folder (/train), and serves the trained model after a restart (/infer).

Needs the MONAI Label environment, as ``test_monailabel.py`` (skipped without it, failing in CI).
"""

from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pytest
from test_monailabel import Server, _curl, _get, _monailabel_python, _update_yaml, make_studies

from crossmatch_ext.planning import read_plan

pytestmark = [pytest.mark.slow, pytest.mark.monailabel]

BUNDLE = "crossmatch_auto"
NUM_STUDIES, NUM_FINAL_LABELS = 8, 3
# CPU-sized settings written into the app's copy of the bundle; the plan still chooses everything else
TINY_TRAIN = {"num_workers": 0, "log_interval": 1, "batch_size": 2, "cpu_hours": 0.01, "amp": False}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _monailabel_python()
    root = tmp_path_factory.mktemp("monailabel_auto")
    server = Server(root, make_studies(root, NUM_STUDIES, seed=3), BUNDLE)
    server.place()
    _update_yaml(server.bundle / "configs" / "train.yaml", TINY_TRAIN)
    server.start()
    yield server
    server.stop()


def test_the_untrained_bundle_offers_training_not_inference(server):
    info = _get(f"{server.url}/info/")
    assert BUNDLE in info["trainers"]
    # no weights and no plan yet: nothing to infer with (the script says so when placing the bundle)
    assert BUNDLE not in info["models"]


def test_train_plans_from_the_studies_then_the_restarted_server_infers_on_the_study_grid(server):
    studies = sorted(server.studies.glob("*.nii.gz"))
    for study in studies[:NUM_FINAL_LABELS]:
        label = server.root / "data" / "nifti" / "labelsTr" / study.name
        _curl("-X", "PUT", f"{server.url}/datastore/label?image={study.name[: -len('.nii.gz')]}&tag=final",
              "-F", f"label=@{label}")
    params = {"max_epochs": 1, "device": "cpu", "multi_gpu": False, "val_split": 0.2}
    _curl("-X", "POST", f"{server.url}/train/{BUNDLE}", "-H", "Content-Type: application/json",
          "-d", json.dumps(params))
    deadline, status = time.time() + 900, {}
    while time.time() < deadline:
        status = _get(f"{server.url}/train/")
        if status.get("status") in ("DONE", "ERROR"):
            break
        time.sleep(3)
    log = server.log.read_text()
    assert status.get("status") == "DONE", f"training ended as {status.get('status')}:\n{log[-5000:]}"

    # the plan was made from the server's studies folder and saved beside the weights
    models = server.bundle / "models"
    plan = read_plan(models)
    assert plan.data["source"] == str(server.studies.resolve())
    assert plan.data["labeled"] + plan.data["validation"] == NUM_FINAL_LABELS
    assert plan.data["unlabeled"] == NUM_STUDIES - NUM_FINAL_LABELS and plan.data["validation"] == 1
    assert plan.spatial_dims.value == 3 and plan.batch_size.value == TINY_TRAIN["batch_size"]
    assert "spatial_dims" in log and plan.spatial_dims.reason in log
    assert (models / "model.pt").is_file() and (models / "fingerprint.json").is_file()
    settings = json.loads((models / "run_settings.json").read_text())
    assert settings["settings"]["dataset_dir"] == str(server.studies)
    assert settings["settings"]["resolved_layout"] == "studies"

    # a user restarts the server to serve the new model: inference uses the saved plan
    server.stop()
    server.start()
    info = _get(f"{server.url}/info/")
    assert BUNDLE in info["models"] and info["models"][BUNDLE]["dimension"] == 3
    # the plan's classes (a studies folder names none: the label values found), written for MONAI Label
    assert info["models"][BUNDLE]["labels"] == {"class 1": 1}
    study = studies[-1]
    out = server.root / "infer.nii.gz"
    _curl("-X", "POST", f"{server.url}/infer/{BUNDLE}?image={study.name[: -len('.nii.gz')]}&output=image",
          "-F", "params={}", "-o", str(out))
    seg, img = nib.load(out), nib.load(study)
    assert seg.shape == img.shape
    np.testing.assert_allclose(seg.affine, img.affine, atol=1e-4)
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= set(range(int(plan.out_channels.value)))
