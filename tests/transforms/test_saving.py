"""SaveLabelMapd: label maps written as uint8 NIfTI with the input's geometry."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.transforms import EnsureChannelFirstd, LoadImaged, SaveImaged

from crossmatch_ext.transforms import SaveLabelMapd


def _loaded(path: Path) -> dict:
    item = LoadImaged(keys="image", image_only=True)({"image": str(path)})
    return EnsureChannelFirstd(keys="image")(item)


def test_label_map_keeps_the_input_geometry_and_sub_folder(tmp_path: Path):
    inputs = tmp_path / "in" / "patient001"
    inputs.mkdir(parents=True)
    affine = np.array([[0.0, -1.2, 0, 10], [0.9, 0, 0, -5], [0, 0, 2.5, 3], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32), affine),
             inputs / "scan.nii.gz")
    item = _loaded(inputs / "scan.nii.gz")
    pred = torch.zeros_like(item["image"])
    pred[0, 1:3, 2:4, 1] = 1
    item["pred"] = pred.as_subclass(type(item["image"]))
    item["pred"].meta = dict(item["image"].meta)

    SaveLabelMapd(keys="pred", output_dir=tmp_path / "out", input_dir=tmp_path / "in")(item)

    written = nib.load(tmp_path / "out" / "patient001" / "scan_seg.nii.gz")
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    assert written.shape == (6, 5, 4)
    assert int(np.asarray(written.dataobj).sum()) == 4


def test_a_single_input_file_writes_into_the_output_folder(tmp_path: Path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), np.eye(4)), tmp_path / "one.nii.gz")
    item = _loaded(tmp_path / "one.nii.gz")
    item["pred"] = item["image"].clone()
    SaveLabelMapd(keys="pred", output_dir=tmp_path / "out", input_dir=tmp_path / "one.nii.gz")(item)
    assert (tmp_path / "out" / "one_seg.nii.gz").is_file()


def test_tools_that_drop_saveimaged_drop_it_too():
    assert isinstance(SaveLabelMapd(keys="pred", output_dir="."), SaveImaged)  # MONAI Label filters by this class
