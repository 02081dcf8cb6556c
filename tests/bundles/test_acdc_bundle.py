"""End-to-end tests of the ACDC bundle through MONAI's own entry points, on generated data."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out
from monai.transforms import Compose

from crossmatch_ext.data import VolumeSliceDataset, acdc_datalists, write_acdc_dataset

from bundle_helpers import REPO_ROOT, SHARED_DATA, run_bundle_cli

BUNDLE = REPO_ROOT / "bundles" / "crossmatch_acdc"
CONFIGS = BUNDLE / "configs"
TINY = {"image_size": [32, 32], "num_workers": 0, "batch_size": 2, "num_labeled_patients": 1, "log_interval": 1,
        "sw_batch_size": 4}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("acdc")
    return write_acdc_dataset(root / "data", num_train_patients=3, num_val_patients=1, labeled_patients=(1,), seed=4,
                              size=((36, 32), (44, 40)), num_slices=(3, 4), nifti=True)


def _workflow(config_files, workflow_type: str, **override) -> ConfigWorkflow:
    wf = ConfigWorkflow(config_file=[str(CONFIGS / f) for f in config_files], meta_file=str(CONFIGS / "metadata.json"),
                        logging_file=False, workflow_type=workflow_type, bundle_root=str(BUNDLE), **override)
    wf.initialize()
    assert wf.check_properties() == []
    return wf


def _parsed(key: str, **override):
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser.update({"bundle_root": str(BUNDLE), **override})
    return parser.get_parsed_content(key)


def test_train_evaluate_infer_through_config_workflow(dataset: Path, tmp_path: Path, capsys):
    out = {"dataset_dir": str(dataset), "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval")}
    train = _workflow(["train.yaml"], "train", num_iterations=4, val_interval=2, **TINY, **out)
    # one training item per slice of every labeled / unlabeled volume
    lists = acdc_datalists(dataset, 1)
    labeled_slices = sum(h5py.File(i["image"])["image"].shape[0] for i in lists["labeled"])
    assert len(train.train_dataset) == labeled_slices == sum(train.train_dataset.num_slices)
    assert len(train.train_dataset.volumes._cache) == len(lists["labeled"]) == 2
    train.run()
    terms = train.trainer.state.output[0]
    assert {"loss_supervised", "loss_strong1", "loss_kd", "mask_ratio"} <= set(terms)
    assert terms["confidence_threshold"] == pytest.approx(0.95)
    assert train.trainer.state.iteration == 4
    assert 0.0 <= train.evaluator.state.metrics["val_mean_dice"] <= 1.0
    optimizer = train.parser.get_parsed_content("optimizer")
    assert optimizer.defaults["nesterov"] is True and optimizer.defaults["momentum"] == 0.9
    train.finalize()
    for name in ("model.pt", "model_best.pt", "resume/last.pt"):
        assert (tmp_path / "models" / name).is_file(), name

    evaluate = _workflow(["train.yaml", "evaluate.yaml"], "train", **TINY, **out)
    evaluate.run()
    evaluate.finalize()
    printed = capsys.readouterr().out
    assert "val.list" in printed and "class 3" in printed
    with open(tmp_path / "eval" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["case", "class", "dice", "jaccard", "hd95", "asd"]
    assert len(rows) == 2 * 3  # two validation volumes x (RV, Myo, LV)
    assert {r["class"] for r in rows} == {"1", "2", "3"}
    protocol = json.loads((tmp_path / "eval" / "metrics_protocol.json").read_text())
    assert protocol["protocol"]["split"] == "val.list" and "pixel" in protocol["protocol"]["units"]
    assert protocol["protocol"]["classes"]["2"] == "myocardium"
    # the training run's end, read from models/training_summary.json: 4 iterations, no step skipped
    assert protocol["protocol"]["training"]["iterations"] == 4
    assert protocol["protocol"]["training"]["skipped_steps"] == 0
    dice = np.mean([float(r["dice"]) for r in rows])
    assert protocol["summary"]["dice"]["mean"] == pytest.approx(dice, abs=1e-5)
    assert protocol["protocol"]["postprocessing"] == "argmax, no connected-component filtering"
    # the same weights with connected-component filtering, into another folder: recorded in the protocol
    kept = _workflow(["train.yaml", "evaluate.yaml"], "train", largest_component=True,
                     metrics_output=str(tmp_path / "eval_kept"), **TINY, **out)
    kept.run()
    kept.finalize()
    kept_protocol = json.loads((tmp_path / "eval_kept" / "metrics_protocol.json").read_text())["protocol"]
    assert kept_protocol["postprocessing"] == "argmax, then the largest connected component of each class"
    with open(tmp_path / "eval_kept" / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)

    # inference on the raw NIfTI frames and on the HDF5 stacks of the same volumes
    common = {"checkpoint": str(tmp_path / "models" / "model.pt"), "image_size": [32, 32], "sw_batch_size": 4}
    for name, folder in (("nifti", dataset / "raw"), ("h5", dataset / "volumes")):
        infer = _workflow(["inference.yaml"], "infer", dataset_dir=str(folder), output_dir=str(tmp_path / name),
                          **common)
        infer.run()
        infer.finalize()
    raw_image = sorted((dataset / "raw").glob("patient*/patient*_frame01.nii.gz"))[0]
    seg_nifti = nib.load(tmp_path / "nifti" / raw_image.parent.name / raw_image.name.replace(".nii.gz", "_seg.nii.gz"))
    image = nib.load(raw_image)
    assert seg_nifti.shape == image.shape
    np.testing.assert_allclose(seg_nifti.affine, image.affine, atol=1e-4)
    labels = np.asarray(seg_nifti.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2, 3}
    stem = raw_image.parent.name + "_frame01"
    seg_h5 = nib.load(tmp_path / "h5" / f"{stem}_seg.nii.gz")
    with h5py.File(dataset / "volumes" / f"{stem}.h5") as f:
        assert seg_h5.shape == f["image"].shape  # the stored (slices, H, W) order
    # the same volume gives the same segmentation from either source
    np.testing.assert_array_equal(np.asarray(seg_h5.dataobj).transpose(2, 1, 0), labels)


def test_cli_training_run_ids_and_supervised_mode(dataset: Path, tmp_path: Path):
    common = ["--config_file", "bundles/crossmatch_acdc/configs/train.yaml", "--ckpt_dir", str(tmp_path / "models"),
              "--output_dir", str(tmp_path / "eval"), "--image_size", "[32,32]", "--num_workers", "0",
              "--num_labeled_patients", "1", "--batch_size", "2", "--num_iterations", "2", "--val_interval", "2",
              "--log_interval", "1"]
    result = run_bundle_cli("run", "training", *common, "--dataset_dir", str(dataset / "raw"), "--data_layout", "nifti")
    assert "nifti layout" in result.stdout + result.stderr
    assert "loss_kd" in result.stdout + result.stderr
    assert (tmp_path / "models" / "model.pt").is_file()
    # the model-zoo default run id, the supervised baseline and a datalist JSON
    shutil.rmtree(tmp_path / "models")
    result = run_bundle_cli("run", *common, "--mode", "supervised", "--dataset_dir",
                            str(dataset / "raw" / "datalist.json"))
    assert "json layout" in result.stdout + result.stderr and "loss_kd" not in result.stdout
    assert (tmp_path / "models" / "model.pt").is_file()


def test_supervised_baseline_uses_plain_momentum(dataset: Path):
    optimizer = _parsed("optimizer", dataset_dir=str(dataset), mode="supervised")
    assert optimizer.defaults["nesterov"] is False
    assert _parsed("train::unlabeled_dataset", dataset_dir=str(dataset), mode="supervised", num_workers=0).data == []


def test_metadata_and_network_io(tmp_path: Path):
    schema = tmp_path / "schema.json"
    shutil.copy(REPO_ROOT / "tests" / "bundles" / "meta_schema.json", schema)
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(schema))
    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"),
                      config_file=str(CONFIGS / "inference.yaml"), bundle_root=str(BUNDLE), device="cpu")
    broken = json.loads((CONFIGS / "metadata.json").read_text())
    del broken["network_data_format"]["outputs"]["pred"]["channel_def"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="channel_def"):
        verify_metadata(meta_file=str(tmp_path / "broken.json"), filepath=str(schema))


def test_torchscript_export_matches_the_checkpoint(tmp_path: Path):
    torch.manual_seed(0)
    from crossmatch_ext.networks import UNet

    net = UNet(1, 4).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    ckpt_export(net_id="network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(tmp_path / "model.pt"),
                meta_file=str(CONFIGS / "metadata.json"), config_file=str(CONFIGS / "inference.yaml"),
                bundle_root=str(BUNDLE))
    extra = {"metadata.json": ""}
    scripted = torch.jit.load(str(tmp_path / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["network_data_format"]["outputs"]["pred"]["num_channels"] == 4
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_raw_nifti_layout_through_the_bundle_transforms(dataset: Path):
    raw = dataset / "raw"
    lists = acdc_datalists(raw, 1, layout="nifti")
    item = lists["labeled"][0]
    assert item["image"].endswith(".nii.gz") and item["label"].endswith("_gt.nii.gz")
    load = _parsed("train::load", dataset_dir=str(raw))
    volume = Compose(load)(item)
    assert volume["image"].shape[1:] == nib.load(item["image"]).shape  # (x, y, slices), slice axis last
    assert float(volume["image"].min()) == 0.0 and float(volume["image"].max()) == 1.0
    assert set(torch.unique(volume["label"]).tolist()) <= {0, 1, 2, 3}
    geometric = _parsed("train::preprocessing", dataset_dir=str(raw), image_size=[24, 24])
    slices = VolumeSliceDataset(lists["labeled"], load, transform=geometric, progress=False)
    assert len(slices) == sum(nib.load(i["image"]).shape[-1] for i in lists["labeled"])
    sample = slices[1]
    assert sample["image"].shape == sample["label"].shape == (1, 24, 24) and sample["slice"] == 1


def test_unlabeled_pipeline_produces_views_and_boxes(dataset: Path):
    dataset_obj = _parsed("train::unlabeled_dataset", dataset_dir=str(dataset), num_workers=0, image_size=[32, 32],
                          num_labeled_patients=1, cutmix_prob=1.0)
    item = dataset_obj[0]
    assert "label" not in item
    for key in ("image", "image_s1", "image_s2"):
        assert item[key].shape == (1, 32, 32)
        assert float(item[key].min()) >= 0.0 and float(item[key].max()) <= 1.0
    for key in ("cutmix_box_s1", "cutmix_box_s2"):
        assert item[key].shape == (1, 32, 32) and 0 < float(item[key].mean()) <= 0.41


@pytest.mark.real_data
def test_one_real_volume_through_the_bundle_transforms():
    root = SHARED_DATA / "acdc"
    if not (root / "train.list").is_file():
        pytest.skip(f"real ACDC data not found at {root}")
    lists = acdc_datalists(root, 3)
    assert len(lists["labeled"]) == 6 and len(lists["labeled"]) + len(lists["unlabeled"]) == 140
    first = lists["labeled"][0]
    load = _parsed("train::load", dataset_dir=str(root))
    volume = Compose(load)(first)
    with h5py.File(first["image"]) as f:
        stored = f["image"].shape
    assert volume["image"].shape == (1, *stored[::-1])  # (S, H, W) -> (1, W, H, S)
    assert volume["image"].dtype == torch.float32
    assert set(torch.unique(volume["label"]).tolist()) == {0, 1, 2, 3}
    geometric = _parsed("train::preprocessing", dataset_dir=str(root), image_size=[64, 64])
    slices = VolumeSliceDataset([first], load, transform=geometric, progress=False)
    assert len(slices) == stored[0]
    item = slices[stored[0] // 2]
    assert item["image"].shape == item["label"].shape == (1, 64, 64)
    assert item["case"] == first["case"]
