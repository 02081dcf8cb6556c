"""End-to-end tests of the LA bundle through MONAI's own entry points, on generated data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, verify_metadata, verify_net_in_out

from crossmatch_ext.data import la_datalists, load_transforms, write_la_dataset

from bundle_helpers import REPO_ROOT, SHARED_DATA, run_bundle_cli

BUNDLE = REPO_ROOT / "bundles" / "crossmatch_la"
CONFIGS = BUNDLE / "configs"
TINY = {"patch_size": [32, 32, 16], "eval_strides": [16, 16, 8], "num_workers": 0, "batch_size": 2,
        "num_labeled": 2, "log_interval": 1}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("la")
    return write_la_dataset(root / "data", num_train=6, num_val=2, num_labeled=(2,), seed=3, shape=(40, 40, 24),
                            nifti=True, nrrd=True)


def _workflow(config_files, workflow_type: str, **override) -> ConfigWorkflow:
    wf = ConfigWorkflow(config_file=[str(CONFIGS / f) for f in config_files], meta_file=str(CONFIGS / "metadata.json"),
                        logging_file=False, workflow_type=workflow_type, bundle_root=str(BUNDLE), **override)
    wf.initialize()
    assert wf.check_properties() == []
    return wf


def test_train_evaluate_infer_through_config_workflow(dataset: Path, tmp_path: Path):
    out = {"dataset_dir": str(dataset), "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval")}
    train = _workflow(["train.yaml"], "train", num_iterations=4, val_interval=2, **TINY, **out)
    train.run()
    terms = train.trainer.state.output[0]
    assert {"loss_supervised", "loss_strong1", "loss_kd", "mask_ratio"} <= set(terms)
    assert train.trainer.state.iteration == 4
    train.finalize()
    for name in ("model.pt", "model_best.pt", "resume/last.pt"):
        assert (tmp_path / "models" / name).is_file(), name
    assert list((tmp_path / "eval" / "tensorboard").glob("events.*"))

    evaluate = _workflow(["train.yaml", "evaluate.yaml"], "train", **TINY, **out)
    evaluate.run()
    evaluate.finalize()
    rows = (tmp_path / "eval" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["case", "dice", "jaccard", "hd95", "asd"]
    assert len(rows) == 1 + 2
    protocol = json.loads((tmp_path / "eval" / "metrics_protocol.json").read_text())
    assert "val.list" in json.dumps(protocol) and "voxel" in json.dumps(protocol)
    training = protocol["protocol"]["training"]  # models/training_summary.json of the run above
    assert training["iterations"] == 4 and training["skipped_steps"] == 0
    assert (tmp_path / "eval" / "metrics_mm.csv").is_file()

    images = dataset / "nifti" / "imagesTr"
    infer = _workflow(["inference.yaml"], "infer", dataset_dir=str(images), patch_size=[32, 32, 16],
                      eval_strides=[16, 16, 8], checkpoint=str(tmp_path / "models" / "model.pt"),
                      output_dir=str(tmp_path / "seg"), largest_component=True)
    infer.run()
    infer.finalize()
    source = sorted(images.glob("*.nii.gz"))[0]
    seg_path = tmp_path / "seg" / source.name.replace(".nii.gz", "_seg.nii.gz")
    assert seg_path.is_file()
    seg, img = nib.load(seg_path), nib.load(source)
    assert seg.shape == img.shape
    np.testing.assert_allclose(seg.affine, img.affine, atol=1e-4)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}


def test_cli_training_run_ids_and_supervised_mode(dataset: Path, tmp_path: Path):
    common = ["--config_file", "bundles/crossmatch_la/configs/train.yaml", "--dataset_dir", str(dataset),
              "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval"),
              "--patch_size", "[32,32,16]", "--eval_strides", "[16,16,8]", "--num_workers", "0", "--num_labeled", "2",
              "--log_interval", "1"]
    result = run_bundle_cli("run", "training", *common, "--num_iterations", "2", "--val_interval", "2")
    assert "loss_kd" in result.stdout + result.stderr
    assert (tmp_path / "models" / "model.pt").is_file()
    # the model-zoo default run id and the supervised baseline
    run_bundle_cli("run", *common, "--num_iterations", "2", "--val_interval", "2", "--mode", "supervised")


def test_metadata_and_network_io(tmp_path: Path):
    schema = tmp_path / "schema.json"
    shutil.copy(REPO_ROOT / "tests" / "bundles" / "meta_schema.json", schema)
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(schema))
    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"),
                      config_file=str(CONFIGS / "inference.yaml"), bundle_root=str(BUNDLE), n=2, device="cpu")


def test_torchscript_export_matches_the_checkpoint(tmp_path: Path):
    torch.manual_seed(0)
    from crossmatch_ext.networks import VNet

    net = VNet(1, 2).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    run_bundle_cli("ckpt_export", "network_def", "--filepath", str(tmp_path / "model.ts"),
                   "--ckpt_file", str(tmp_path / "model.pt"), "--meta_file", str(CONFIGS / "metadata.json"),
                   "--config_file", str(CONFIGS / "inference.yaml"), "--bundle_root", str(BUNDLE))
    extra = {"metadata.json": ""}
    scripted = torch.jit.load(str(tmp_path / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["name"].startswith("CrossMatch")
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_raw_nrrd_layout_is_binarised_and_normalised(dataset: Path):
    lists = la_datalists(dataset / "raw", num_labeled=2, layout="nrrd")
    assert lists["labeled"][0]["image"].endswith("lgemri.nrrd")
    from monai.transforms import Compose

    item = Compose(load_transforms("nrrd", intensity="zscore", binarize_label=True))(lists["labeled"][0])
    assert item["image"].shape[0] == 1 and item["label"].shape == item["image"].shape
    assert set(torch.unique(item["label"]).tolist()) == {0.0, 1.0}
    assert abs(float(item["image"].mean())) < 1e-3 and abs(float(item["image"].std()) - 1) < 1e-2


@pytest.mark.real_data
def test_one_real_case_loads_through_the_bundle_transforms():
    if not (SHARED_DATA / "la" / "train.list").is_file():
        pytest.skip(f"real LA data not found at {SHARED_DATA / 'la'}")
    from monai.transforms import Compose

    lists = la_datalists(SHARED_DATA / "la", num_labeled=4)
    assert len(lists["labeled"]) == 4 and len(lists["labeled"]) + len(lists["unlabeled"]) == 30
    item = Compose(load_transforms("h5", h5_spacing=[0.625] * 3))(lists["labeled"][0])
    assert item["image"].shape[0] == 1 and item["image"].shape[-1] == 88
    assert set(torch.unique(item["label"]).tolist()) == {0.0, 1.0}
    assert item["image"].affine[0, 0] == pytest.approx(0.625)
