"""End-to-end tests of the self-configuring bundle through MONAI's own entry points, on generated Decathlon folders:
a CT-like one (Hounsfield units, isotropic voxels: planned 3D) and an MR-like one (few thick slices: planned 2D), each
with 4 of 20 training cases labeled."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from scipy import ndimage

from crossmatch_ext.data.decathlon import write_decathlon_dataset
from crossmatch_ext.planning import read_plan

from bundle_helpers import REPO_ROOT, run_bundle_cli

BUNDLE = REPO_ROOT / "bundles" / "crossmatch_auto"
CONFIGS = BUNDLE / "configs"
TRAIN = str(CONFIGS / "train.yaml")
EVALUATE = f"['{CONFIGS / 'train.yaml'}','{CONFIGS / 'evaluate.yaml'}']"
INFERENCE = str(CONFIGS / "inference.yaml")
FAST = ("--num_workers", "0", "--amp", "False", "--log_interval", "1")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decathlon")
    # 3 labeled + 1 validation case of 20 training cases, one test image
    folders = {
        "ct": write_decathlon_dataset(root / "ct", "ct", num_labeled=3, num_validation=1, num_unlabeled=16,
                                      shape=(48, 48, 36), seed=1),
        "mr": write_decathlon_dataset(root / "mr", "mr", num_labeled=3, num_validation=1, num_unlabeled=16,
                                      shape=(40, 36, 6), seed=2),
    }
    # the CT validation case is stored on a coarser grid along axis 0: the network sees it resampled to the plan's
    # voxel size, the evaluation scores it on its own grid
    for folder in ("imagesTr", "labelsTr"):
        path = folders["ct"] / folder / "ct_003.nii.gz"
        stored = nib.load(path)
        affine = stored.affine.copy()
        affine[0, 0] *= 2
        nib.save(nib.Nifti1Image(np.asarray(stored.dataobj)[::2], affine), path)
    return folders


def _run(config: str, data: Path, run: Path, *args: str, run_id: str | None = None) -> str:
    cli = ["run", *([run_id] if run_id else []), "--config_file", config, "--dataset_dir", str(data),
           "--ckpt_dir", str(run / "models"), "--output_dir", str(run / "eval"), *args]
    result = run_bundle_cli(*cli, timeout=600)
    return result.stdout + result.stderr


@pytest.mark.parametrize(("kind", "dims", "network"), [("ct", 3, "VNet"), ("mr", 2, "UNet")])
def test_plan_train_evaluate_infer_export_through_the_cli(folders, tmp_path: Path, kind: str, dims: int,
                                                          network: str):
    data, run = folders[kind], tmp_path / "run"
    # the plan alone: printed and saved, no training
    log = _run(TRAIN, data, run, run_id="planning")
    plan = read_plan(run / "models")
    assert plan.spatial_dims.value == dims and plan.network.value == network
    assert "spatial_dims" in log and plan.spatial_dims.reason in log and "plan.json" in log
    assert (run / "models" / "fingerprint.json").is_file() and not (run / "models" / "model.pt").exists()
    if kind == "ct":
        assert plan.normalization.value["scheme"] == "ct" and plan.recipe.value == "la"
    else:
        assert plan.normalization.value == {"scheme": "zscore"} and plan.slice_axis.value == 2
        assert plan.recipe.value == "acdc" and "2D: slice spacing 8 mm" in plan.spatial_dims.reason
    assert plan.data["labeled"] == 3 and plan.data["unlabeled"] == 16 and plan.data["validation"] == 1

    # training with no hand-written config: 2 iterations, a plan key overridden on the command line
    log = _run(TRAIN, data, run, "--num_iterations", "2", "--batch_size", "2", *FAST, run_id="training")
    trained = read_plan(run / "models")
    assert trained.num_iterations.value == 2 and "override" in trained.num_iterations.reason
    assert trained.batch_size.value == 2 and trained.patch_size.value == plan.patch_size.value
    assert "CrossMatch plan for" in log and "training finished after 2 iterations" in log
    settings = json.loads((run / "models" / "run_settings.json").read_text())
    assert settings["bundle"] == "crossmatch_auto" and settings["settings"]["patch_size"] == plan.patch_size.value
    assert (run / "models" / "model.pt").is_file()

    # evaluation with the saved plan: per-case metrics of every foreground class
    _run(EVALUATE, data, run)
    with open(run / "eval" / "metrics.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert {row["class"] for row in rows} >= {"1", "2"}
    protocol = json.loads((run / "eval" / "metrics_protocol.json").read_text())["protocol"]
    assert protocol["plan"].endswith("plan.json") and protocol["num_cases"] == 1
    assert protocol["grid"].startswith("each case on its own voxel grid")

    # inference on new images: a label map with each input's geometry, also for an image in another orientation
    # and voxel size (resampled to the plan and back)
    images = tmp_path / "new"
    images.mkdir()
    test_image = next((data / "imagesTs").iterdir())
    shutil.copy(test_image, images / test_image.name)
    source = nib.load(test_image)
    flipped = np.diag([-1.3, 1.1, 1.0, 1.0]) @ source.affine
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj)[:-3], flipped), images / "other_grid.nii.gz")
    out = tmp_path / "predictions"
    run_bundle_cli("run", "--config_file", INFERENCE, "--dataset_dir", str(images), "--ckpt_dir", str(run / "models"),
                   "--output_dir", str(out), timeout=600)
    for image in images.iterdir():
        name = image.name.replace(".nii.gz", "")
        seg, original = nib.load(out / f"{name}_seg.nii.gz"), nib.load(image)
        assert seg.shape == original.shape and np.allclose(seg.affine, original.affine, atol=1e-4)
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2}
    if kind == "mr":
        # the connected-component switch: one piece per foreground class, in inference and in the evaluation
        kept = tmp_path / "kept"
        run_bundle_cli("run", "--config_file", INFERENCE, "--dataset_dir", str(images), "--ckpt_dir",
                       str(run / "models"), "--output_dir", str(kept), "--largest_component", "True", timeout=600)
        for image in images.iterdir():
            name = image.name.replace(".nii.gz", "")
            plain = np.asarray(nib.load(out / f"{name}_seg.nii.gz").dataobj)
            filtered = np.asarray(nib.load(kept / f"{name}_seg.nii.gz").dataobj)
            for label in (1, 2):
                pieces = ndimage.label(filtered == label, structure=np.ones((3, 3, 3)))[1]
                assert pieces <= 1 and np.all((filtered == label) <= (plain == label))
        _run(EVALUATE, data, run, "--largest_component", "True", "--metrics_output", str(tmp_path / "eval_kept"))
        kept_protocol = json.loads((tmp_path / "eval_kept" / "metrics_protocol.json").read_text())["protocol"]
        assert kept_protocol["postprocessing"].startswith("argmax, then the largest connected component")
        assert protocol["postprocessing"] == "argmax, no connected-component filtering"

    # TorchScript export of the planned network, loadable with torch alone, equal to the checkpoint
    exported = tmp_path / "model.ts"
    run_bundle_cli("ckpt_export", "network_def", "--filepath", str(exported), "--ckpt_file",
                   str(run / "models" / "model.pt"), "--meta_file", str(CONFIGS / "metadata.json"), "--config_file",
                   INFERENCE, "--ckpt_dir", str(run / "models"), timeout=600)
    scripted = torch.jit.load(str(exported)).eval()
    from crossmatch_ext.bundle.auto import plan_network

    eager = plan_network(network, 1, 3).eval()
    eager.load_state_dict(torch.load(run / "models" / "model.pt", map_location="cpu"))
    x = torch.randn(1, 1, *plan.patch_size.value)
    with torch.no_grad():
        assert torch.allclose(scripted(x), eager(x), atol=1e-5)


def test_bundle_properties_of_monai_workflows(folders, tmp_path: Path):
    """MONAI's required properties of a train and an infer workflow resolve (as MONAI Label and the model zoo read
    them)."""
    run = tmp_path / "run"
    train = ConfigWorkflow(config_file=TRAIN, meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
                           workflow_type="train", bundle_root=str(BUNDLE), dataset_dir=str(folders["ct"]),
                           ckpt_dir=str(run / "models"), output_dir=str(run / "eval"), num_workers=0, amp=False)
    train.initialize()
    assert train.check_properties() == []
    assert train.parser.get_parsed_content("patch_size") == [48, 48, 48]


@pytest.mark.parametrize("kind", ["ct", "mr"])
def test_every_labeled_sample_holds_a_uint8_label(folders, tmp_path: Path, kind: str):
    """A batch must hold one label dtype: the 2D recipe's random rotation returns float labels, the other branches
    uint8 ones, so the datasets cast every label back after the random geometry."""
    from monai.data import list_data_collate

    run = tmp_path / "run"
    train = ConfigWorkflow(config_file=TRAIN, meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
                           workflow_type="train", bundle_root=str(BUNDLE), dataset_dir=str(folders[kind]),
                           ckpt_dir=str(run / "models"), output_dir=str(run / "eval"), num_workers=0, amp=False)
    train.initialize()
    dataset = train.parser.get_parsed_content("train::dataset")
    samples = [dataset[i % len(dataset)] for i in range(48)]  # the rotation branch is drawn with p 0.25 in 2D
    assert {sample["label"].dtype for sample in samples} == {torch.uint8}
    assert list_data_collate(samples[:8])["label"].dtype == torch.uint8


def test_resume_keeps_the_plan_and_rejects_a_different_one(folders, tmp_path: Path):
    data, run = folders["ct"], tmp_path / "run"
    _run(TRAIN, data, run, "--num_iterations", "2", "--val_interval", "1", *FAST, run_id="training")
    saved = (run / "models" / "plan.json").read_text()
    # a plan key that disagrees with the plan of the run to resume is refused before training
    log = _failing(TRAIN, data, run, "--patch_size", "[64,64,48]", "--num_iterations", "2", "--resume", "True", *FAST)
    assert "--resume True uses the plan saved in" in log and "patch_size [64, 64, 48]" in log
    # a resumed run continues with the saved plan as it is (not made again)
    log = _run(TRAIN, data, run, "--num_iterations", "2", "--val_interval", "1", "--resume", "True", *FAST,
               run_id="training")
    assert "resuming with the plan of" in log and "CrossMatch plan for" not in log
    assert (run / "models" / "plan.json").read_text() == saved


def _failing(config: str, data: Path, run: Path, *args: str, run_id: str = "training") -> str:
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config, "--dataset_dir", str(data),
         "--ckpt_dir", str(run / "models"), "--output_dir", str(run / "eval"), *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode != 0, result.stdout[-3000:]
    return result.stdout + result.stderr


def _bad_label_shape(root: Path) -> str:
    label = root / "labelsTr" / "ct_001.nii.gz"
    image = nib.load(label)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:-2], image.affine), label)
    return "ct_001"


def _label_value_outside_classes(root: Path) -> str:
    label = root / "labelsTr" / "ct_002.nii.gz"
    image = nib.load(label)
    values = np.asarray(image.dataobj).copy()
    values[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(values, image.affine), label)
    return "7"


def _missing_file(root: Path) -> str:
    (root / "imagesTr" / "ct_005.nii.gz").unlink()
    return "ct_005"


def _nan_image(root: Path) -> str:
    path = root / "imagesTr" / "ct_000.nii.gz"
    image = nib.load(path)
    values = np.asarray(image.dataobj).astype(np.float32)
    values[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(values, image.affine), path)
    return "NaN"


@pytest.mark.parametrize("spoils", [(_bad_label_shape, _label_value_outside_classes, _nan_image), (_missing_file,)])
def test_bad_input_is_named_before_anything_is_written(tmp_path: Path, spoils):
    """The problems of the folder's files are listed together, one line each naming the file; a file missing from
    the folder's structure is found first; nothing is written."""
    data = write_decathlon_dataset(tmp_path / "data", "ct", num_labeled=4, num_unlabeled=3, shape=(32, 32, 24))
    expected = [spoil(data) for spoil in spoils]
    run = tmp_path / "run"
    log = _failing(TRAIN, data, run, *FAST)
    assert all(text in log for text in expected) and f"{len(spoils)} problem" in log and "Traceback" not in log
    assert not (run / "models").exists()


def test_evaluation_without_validation_cases_says_what_to_do(tmp_path: Path):
    data = write_decathlon_dataset(tmp_path / "data", "mr", num_labeled=2, num_validation=0, num_unlabeled=2,
                                   shape=(32, 32, 4))
    run = tmp_path / "run"
    plan_log = _run(TRAIN, data, run, run_id="planning")
    assert "every labeled case trains and the run keeps its final weights" in plan_log
    log = _failing(EVALUATE, data, run, run_id="run")
    assert "nothing to evaluate" in log and "--validation_list" in log


def test_torchrun_plans_once_for_every_process(tmp_path: Path):
    """Under torchrun the first process plans and writes plan.json; the others read it (one plan for the run)."""
    import os
    import subprocess
    import sys

    data = write_decathlon_dataset(tmp_path / "data", "mr", num_labeled=2, num_validation=2, num_unlabeled=2,
                                   shape=(32, 32, 4))
    run = tmp_path / "run"
    configs = f"['{CONFIGS / 'train.yaml'}','{CONFIGS / 'multi_gpu_train.yaml'}']"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m",
         "monai.bundle", "run", "training", "--config_file", configs, "--dataset_dir", str(data), "--ckpt_dir",
         str(run / "models"), "--output_dir", str(run / "eval"), "--num_iterations", "2", "--batch_size", "2", *FAST],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert log.count("plan saved to") == 1 and log.count("training finished after 2 iterations") == 2
    assert read_plan(run / "models").spatial_dims.value == 2 and (run / "models" / "model.pt").is_file()
