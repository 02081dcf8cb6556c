"""Data lists from a MONAI Label studies folder (labeled = a final label exists, unlabeled = every other study)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import Compose

from crossmatch_ext.data import (
    acdc_datalists,
    detect_acdc_layout,
    detect_la_layout,
    is_studies_folder,
    la_datalists,
    load_transforms,
    monailabel_studies,
    studies_datalists,
)


def _studies(root: Path, num_images: int, labeled: list[int]) -> Path:
    (root / "labels" / "final").mkdir(parents=True)
    (root / "labels" / "original").mkdir(parents=True)
    for i in range(num_images):
        image = np.random.default_rng(i).normal(size=(12, 10, 6)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / f"case{i:02d}.nii.gz")
        if i in labeled:
            label = (image > 0).astype(np.uint8)
            nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labels" / "final" / f"case{i:02d}.nii.gz")
    # what else MONAI Label keeps there, none of it a study
    (root / "datastore_v2.json").write_text("{}")
    (root / "labels" / "original" / "case04.nii.gz").write_bytes(b"")
    return root


def test_final_labels_are_labeled_every_other_study_is_unlabeled(tmp_path: Path):
    root = _studies(tmp_path / "studies", num_images=7, labeled=[1, 3, 5])
    lists = studies_datalists(root)
    assert [i["case"] for i in lists["labeled"] + lists["validation"]] == ["case01", "case03", "case05"]
    assert len(lists["validation"]) == 1  # MONAI Label's default 20 % validation split, at least one
    assert [i["case"] for i in lists["unlabeled"]] == ["case00", "case02", "case04", "case06"]
    assert all("label" not in i for i in lists["unlabeled"])
    assert lists["labeled"][0]["label"] == str(root / "labels" / "final" / "case01.nii.gz")


def test_one_labeled_study_trains_without_validation(tmp_path: Path):
    lists = studies_datalists(_studies(tmp_path / "s", num_images=3, labeled=[2]))
    assert [i["case"] for i in lists["labeled"]] == ["case02"] and lists["validation"] == []


def test_layout_detection_and_bundle_datalists(tmp_path: Path):
    root = _studies(tmp_path / "studies", num_images=4, labeled=[0, 1])
    assert is_studies_folder(root) and not is_studies_folder(tmp_path)
    assert detect_la_layout(root) == detect_acdc_layout(root) == "studies"
    la = la_datalists(root, num_labeled=8)  # num_labeled does not apply: the final labels decide
    assert len(la["labeled"]) + len(la["validation"]) == 2 and len(la["unlabeled"]) == 2
    assert acdc_datalists(root, num_labeled_patients=3) == la
    item = Compose(load_transforms("studies", intensity="zscore"))(la["labeled"][0])
    assert tuple(item["image"].shape) == tuple(item["label"].shape) == (1, 12, 10, 6)
    assert abs(float(item["image"].mean())) < 1e-5


def test_errors_name_the_folder(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="studies folder not found"):
        studies_datalists(tmp_path / "missing")
    (tmp_path / "empty" / "labels" / "final").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no study found in .*empty"):
        studies_datalists(tmp_path / "empty")


def test_monailabel_studies_reads_the_server_setting(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MONAI_LABEL_STUDIES", raising=False)
    assert monailabel_studies() is None
    monkeypatch.setenv("MONAI_LABEL_STUDIES", str(tmp_path))
    assert monailabel_studies() == str(tmp_path)
    monkeypatch.setenv("MONAI_LABEL_STUDIES", "http://127.0.0.1:8042/dicom-web")  # a remote datastore
    assert monailabel_studies() is None
