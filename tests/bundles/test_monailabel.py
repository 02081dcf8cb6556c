"""MONAI Label end to end: the real server (scripts/monailabel.sh) on generated NIfTI studies, driven over HTTP.

Needs the MONAI Label environment (``bash scripts/monailabel.sh setup``: about 10 minutes and 8 GB, measured on
the 2-core development machine) at ``CROSSMATCH_MONAILABEL_VENV`` (default ``<repo>/.venv-monailabel``). Without it
the tests skip, saying how to create it, except in CI (``CI`` set), where they fail: ``.ci/run`` builds the
environment (cached between runs) before the suite.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from bundle_helpers import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.monailabel]

SCRIPT = REPO_ROOT / "scripts" / "monailabel.sh"
VENV = Path(os.environ.get("CROSSMATCH_MONAILABEL_VENV", REPO_ROOT / ".venv-monailabel"))
BUNDLE = "crossmatch_la"
# CPU-sized settings written into the app's copy of the bundle (the way a user adapts the app's bundle)
TINY_TRAIN = {"patch_size": [32, 32, 16], "eval_strides": [16, 16, 8], "num_workers": 0, "batch_size": 2,
              "val_interval": 2, "log_interval": 1}
TINY_INFER = {"patch_size": [32, 32, 16]}
NUM_STUDIES, NUM_FINAL_LABELS = 8, 3


def _monailabel_python() -> Path:
    python = VENV / "bin" / "python"
    reason = (f"MONAI Label environment not found at {VENV} (create it with `bash scripts/monailabel.sh setup`, "
              "about 10 min and 8 GB)")
    # in CI the environment is built before the suite (.ci/run): its absence is a failure there, not a skip
    missing = pytest.fail if os.environ.get("CI") else pytest.skip
    if not python.is_file():
        missing(reason)
    probe = subprocess.run([str(python), "-c", "import monailabel, crossmatch_ext"], capture_output=True, timeout=300)
    if probe.returncode != 0:
        missing(f"{reason}: {probe.stderr.decode()[-300:]}")
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _update_yaml(path: Path, values: dict) -> None:
    config = yaml.safe_load(path.read_text())
    config.update(values)
    path.write_text(yaml.safe_dump(config, sort_keys=False, width=1000))


def _get(url: str, timeout: float = 30) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _curl(*args: str, timeout: float = 600) -> str:
    result = subprocess.run(["curl", "-sS", "--fail-with-body", *args], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"curl {args}: {result.stdout[-2000:]} {result.stderr[-2000:]}"
    return result.stdout


def make_studies(root: Path, num_studies: int, seed: int) -> Path:
    """``root/studies``: the images of a generated LA-like NIfTI set (its labels stay in ``root/data/nifti/labelsTr``
    for the tests to save as final labels)."""
    subprocess.run([sys.executable, "-m", "crossmatch_ext.data.synthetic", "la", "--out", str(root / "data"),
                    "--num-train", str(num_studies - 1), "--num-val", "1", "--num-labeled", "2", "--shape", "48", "48",
                    "32", "--seed", str(seed)], check=True, capture_output=True, timeout=300)
    studies = root / "studies"
    studies.mkdir()
    for image in sorted((root / "data" / "nifti" / "imagesTr").glob("*.nii.gz")):
        shutil.copy(image, studies / image.name)
    assert len(list(studies.glob("*.nii.gz"))) == num_studies
    return studies


class Server:
    """``scripts/monailabel.sh start`` on a studies folder, stopped and started again as a user would."""

    def __init__(self, root: Path, studies: Path, bundle: str):
        self.root, self.studies = root, studies
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "MONAILABEL_VENV": str(VENV), "MONAILABEL_WORKSPACE": str(root / "workspace"),
                    "MONAILABEL_PORT": str(self.port), "MONAILABEL_MODELS": bundle, "OMP_NUM_THREADS": "2"}
        self.bundle = root / "workspace" / "apps" / "monaibundle" / "model" / bundle
        self.process: subprocess.Popen | None = None
        self.log = root / "server.log"
        self.starts = 0

    def place(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "place"], env=self.env, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self.starts += 1
        self.log = self.root / f"server{self.starts}.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(["bash", str(SCRIPT), "start", str(self.studies)], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 300
        while True:
            try:
                _get(f"{self.url}/info/", timeout=10)
                return
            except (OSError, ConnectionError):
                if self.process.poll() is not None or time.time() > deadline:
                    pytest.fail(f"MONAI Label did not start (rc={self.process.poll()}):\n"
                                f"{self.log.read_text()[-4000:]}")
                time.sleep(2)

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None
        if os.environ.get("CROSSMATCH_MONAILABEL_LOG"):  # keep the server's output for inspection
            shutil.copy(self.log, os.environ["CROSSMATCH_MONAILABEL_LOG"])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _monailabel_python()
    root = tmp_path_factory.mktemp("monailabel")
    studies = make_studies(root, NUM_STUDIES, seed=2)
    server = Server(root, studies, BUNDLE)
    server.place()
    _update_yaml(server.bundle / "configs" / "train.yaml", TINY_TRAIN)
    _update_yaml(server.bundle / "configs" / "inference.yaml", TINY_INFER)
    # weights a user would have trained; /train below replaces them
    from crossmatch_ext.networks import VNet

    torch.manual_seed(0)
    initial = VNet(in_channels=1, out_channels=2, n_filters=16, normalization="batch").state_dict()
    torch.save(initial, server.bundle / "models" / "model.pt")
    server.start()
    yield {"url": server.url, "studies": studies, "data": root / "data", "bundle": server.bundle, "log": server.log,
           "initial": initial, "root": root}
    server.stop()


def test_info_lists_the_bundle_with_its_label_names(server):
    info = _get(f"{server['url']}/info/")
    model = info["models"][BUNDLE]
    assert model["labels"] == {"left atrium": 1}
    assert model["dimension"] == 3
    assert BUNDLE in info["trainers"]


def test_infer_returns_a_uint8_label_map_on_the_study_grid(server):
    study = sorted(server["studies"].glob("*.nii.gz"))[0]
    image_id = study.name[: -len(".nii.gz")]
    out = server["root"] / "infer.nii.gz"
    _curl("-X", "POST", f"{server['url']}/infer/{BUNDLE}?image={image_id}&output=image", "-F", "params={}",
          "-o", str(out))
    seg, img = nib.load(out), nib.load(study)
    assert seg.shape == img.shape
    np.testing.assert_allclose(seg.affine, img.affine, atol=1e-4)
    assert seg.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1}
    result = json.loads(_curl("-X", "POST", f"{server['url']}/infer/{BUNDLE}?image={image_id}&output=json",
                              "-F", "params={}"))
    assert result["label_names"] == {"left atrium": 1}
    assert "H5Reader: unable to load" not in server["log"].read_text()


def test_train_uses_every_study_without_a_final_label_as_unlabeled(server):
    studies = sorted(server["studies"].glob("*.nii.gz"))
    for study in studies[:NUM_FINAL_LABELS]:
        label = server["data"] / "nifti" / "labelsTr" / study.name
        image_id = study.name[: -len(".nii.gz")]
        _curl("-X", "PUT", f"{server['url']}/datastore/label?image={image_id}&tag=final", "-F", f"label=@{label}")
    datastore = _get(f"{server['url']}/datastore/?output=stats")
    assert datastore["total"] == NUM_STUDIES and datastore["completed"] == NUM_FINAL_LABELS

    params = {"max_epochs": 2, "device": "cpu", "multi_gpu": False, "val_split": 0.2}
    _curl("-X", "POST", f"{server['url']}/train/{BUNDLE}", "-H", "Content-Type: application/json",
          "-d", json.dumps(params))
    deadline = time.time() + 900
    status = {}
    while time.time() < deadline:
        status = _get(f"{server['url']}/train/")
        if status.get("status") in ("DONE", "ERROR"):
            break
        time.sleep(3)
    log = server["log"].read_text()
    assert status.get("status") == "DONE", f"training ended as {status.get('status')}:\n{log[-5000:]}"

    unlabeled = NUM_STUDIES - NUM_FINAL_LABELS
    # the studies folder as the bundle read it: MONAI Label's labeled studies, and all the others as unlabeled
    assert re.search(rf"studies .*: {NUM_FINAL_LABELS} with a final label .* {unlabeled} without \(unlabeled\)", log)
    # what the trainer was given: MONAI Label's training split of the labeled studies, every unlabeled study
    match = re.search(r"training data \(CrossMatch\): (\d+) cases labeled, (\d+) cases unlabeled", log)
    assert match, log[-5000:]
    assert int(match.group(2)) == unlabeled
    assert 1 <= int(match.group(1)) < NUM_FINAL_LABELS  # the rest validates
    trained = torch.load(server["bundle"] / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert trained.keys() == server["initial"].keys()
    assert any(not torch.equal(trained[k], server["initial"][k]) for k in trained)


def test_active_learning_returns_the_most_uncertain_unlabeled_study_and_caches_its_scores(server):
    # runs after the /train test: 3 studies carry a final label, the trained weights are in the app's bundle
    labeled = {s.name[: -len(".nii.gz")] for s in sorted(server["studies"].glob("*.nii.gz"))[:NUM_FINAL_LABELS]}
    first = json.loads(_curl("-X", "POST", f"{server['url']}/activelearning/crossmatch_disagreement",
                             "-H", "Content-Type: application/json", "-d", "{}"))
    assert first["id"] not in labeled and first["strategy"] == "disagreement"
    assert len(first["ranking"]) == NUM_STUDIES - NUM_FINAL_LABELS and first["ranking"][0]["id"] == first["id"]
    scores = [r["score"] for r in first["ranking"]]
    assert scores == sorted(scores, reverse=True) and first["score"] == scores[0]
    assert first["cache"]["misses"] == NUM_STUDIES - NUM_FINAL_LABELS
    second = json.loads(_curl("-X", "POST", f"{server['url']}/activelearning/crossmatch_disagreement",
                              "-H", "Content-Type: application/json", "-d", "{}"))
    assert second["id"] == first["id"] and second["ranking"] == first["ranking"]
    assert second["cache"]["misses"] == 0 and second["cache"]["hits"] == NUM_STUDIES - NUM_FINAL_LABELS
    entropy = json.loads(_curl("-X", "POST", f"{server['url']}/activelearning/crossmatch_entropy",
                               "-H", "Content-Type: application/json", "-d", "{}"))
    assert entropy["id"] not in labeled and entropy["cache"]["misses"] == 0  # one pass scores both strategies
