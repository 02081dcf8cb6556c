"""A third dataset needs no edit to the package: the README's "How to add a dataset" recipe, written out as a bundle
in a temporary folder, trains on generated CT volumes through MONAI's CLI.

The files are taken from the README itself (each recipe block is marked ``<!-- recipe: <path> -->``), so the
documentation and this test cannot drift apart.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import verify_metadata

from bundle_helpers import REPO_ROOT, run_bundle_cli

_RECIPE_BLOCK = re.compile(r"<!-- recipe: (?P<path>[\w./]+) -->\n```\w*\n(?P<text>.*?)```", re.DOTALL)
_SECTION = "## How to add a dataset"


def recipe_files() -> dict[str, str]:
    """``{path in the bundle: text}`` of the README's recipe section."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert _SECTION in readme, f"README.md has no {_SECTION!r} section"
    section = readme.split(_SECTION, 1)[1].split("\n## ", 1)[0]
    return {m["path"]: m["text"] for m in _RECIPE_BLOCK.finditer(section)}


def write_ct_dataset(root: Path, num_cases: int = 7, unlabeled: int = 2, seed: int = 0) -> Path:
    """Decathlon-style CT folders: a body (soft tissue, HU about 40) in air (-1000) with one brighter organ
    (HU about 120) per scan, anisotropic voxels (0.8 x 0.8 x 2.5 mm); the last ``unlabeled`` cases have no label
    file; ``val.list`` names the first two labeled cases after the training ones."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    shape = (48, 44, 14)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    cases = [f"ct_{k:03d}" for k in range(num_cases)]
    for k, case in enumerate(cases):
        center = np.array(shape, dtype=np.float32)[:, None, None, None] / 2
        body = (((grid - center) / np.array([20, 18, 40])[:, None, None, None]) ** 2).sum(0) < 1
        organ_center = center + rng.uniform(-5, 5, (3, 1, 1, 1)) * np.array([1, 1, 0.3])[:, None, None, None]
        organ = (((grid - organ_center) / np.array([8, 7, 4])[:, None, None, None]) ** 2).sum(0) < 1
        image = np.where(body, 40.0, -1000.0) + np.where(organ, 80.0, 0.0) + rng.normal(0, 15, shape)
        nib.save(nib.Nifti1Image(image.astype(np.int16), affine), root / "imagesTr" / f"{case}.nii.gz")
        if k < num_cases - unlabeled:
            nib.save(nib.Nifti1Image(organ.astype(np.uint8), affine), root / "labelsTr" / f"{case}.nii.gz")
    labeled = cases[: num_cases - unlabeled]
    (root / "val.list").write_text("\n".join(labeled[-2:]) + "\n")
    (root / "train.list").write_text("\n".join(labeled[:-2] + cases[num_cases - unlabeled:]) + "\n")
    return root


def test_the_recipe_lists_the_files_a_dataset_needs(tmp_path: Path):
    files = recipe_files()
    assert set(files) == {"scripts/dataset.py", "configs/train.yaml", "configs/metadata.json"}
    assert "dataset_module: scripts.dataset" in files["configs/train.yaml"]
    # the metadata is valid for MONAI's bundle schema (the copy the package's bundles are checked against)
    (tmp_path / "metadata.json").write_text(files["configs/metadata.json"])
    shutil.copy(REPO_ROOT / "tests" / "bundles" / "meta_schema.json", tmp_path / "schema.json")
    verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(tmp_path / "schema.json"))


def test_a_bundle_built_from_the_recipe_trains_through_the_cli(tmp_path: Path):
    bundle = tmp_path / "crossmatch_ct_organ"
    for path, text in recipe_files().items():
        (bundle / path).parent.mkdir(parents=True, exist_ok=True)
        (bundle / path).write_text(text)
    (bundle / "scripts" / "__init__.py").write_text("")
    shutil.copy(REPO_ROOT / "bundles" / "crossmatch_la" / "configs" / "logging.conf", bundle / "configs")
    package = sorted((p, p.stat().st_mtime_ns) for p in (REPO_ROOT / "crossmatch_ext").rglob("*.py"))
    data = write_ct_dataset(tmp_path / "ct")

    # run from the repository root, with no --bundle_root: the bundle is found from its config files
    result = run_bundle_cli(
        "run", "training", "--config_file", str(bundle / "configs" / "train.yaml"), "--dataset_dir", str(data),
        "--num_iterations", "2", "--val_interval", "2", "--log_interval", "1", "--num_labeled", "2",
        "--batch_size", "2", "--patch_size", "[32,32,16]", "--spacing", "[1.6,1.6,2.5]", "--num_workers", "0",
        "--cache_rate", "0.0", "--device", "$torch.device('cpu')", timeout=600,
    )
    log = result.stdout + result.stderr
    assert "training data (CrossMatch): 2 cases labeled, 3 cases unlabeled" in log
    assert (bundle / "models" / "model.pt").is_file()
    records = [json.loads(line) for line in (bundle / "eval" / "training_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "loss" in r] == [1, 2]
    assert any("val_mean_dice" in r for r in records)  # the in-training validation ran on val.list
    settings = json.loads((bundle / "models" / "run_settings.json").read_text())
    assert settings["bundle"] == "crossmatch_ct_organ" and settings["settings"]["resolved_layout"] == "msd"
    # the trained weights export to TorchScript with MONAI's own command, as for the bundles of the package
    configs = bundle / "configs"
    run_bundle_cli("ckpt_export", "network_def", "--filepath", str(tmp_path / "model.ts"),
                   "--ckpt_file", str(bundle / "models" / "model.pt"), "--meta_file", str(configs / "metadata.json"),
                   "--config_file", str(configs / "train.yaml"))
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    assert scripted(torch.zeros(1, 1, 32, 32, 16)).shape == (1, 2, 32, 32, 16)
    # nothing in the package was touched to add the dataset
    assert package == sorted((p, p.stat().st_mtime_ns) for p in (REPO_ROOT / "crossmatch_ext").rglob("*.py"))
