"""crossmatch_ext.transforms.Spacingd: MONAI's resampling beside the string entries MONAI Label puts in the data."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, LoadImaged
from monai.transforms import Spacingd as MonaiSpacingd

from crossmatch_ext.transforms import Spacingd


def _study(tmp_path):
    path = tmp_path / "study.nii.gz"
    image = np.random.default_rng(0).normal(size=(12, 10, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.diag([1.0, 1.0, 3.0, 1.0])), path)
    return path


def test_monai_label_image_path_is_kept_and_the_image_resampled(tmp_path):
    path = _study(tmp_path)
    read = Compose([LoadImaged(keys="image", image_only=True), EnsureChannelFirstd(keys="image")])
    # MONAI Label's data dictionary: the study's path beside the image, as a string
    data = {"image": str(path), "image_path": str(path)}
    with pytest.raises(AttributeError, match="'str' object has no attribute 'update'"):
        MonaiSpacingd(keys="image", pixdim=(1.0, 1.0, 1.5))(read(dict(data)))
    spacing = Spacingd(keys="image", pixdim=(1.0, 1.0, 1.5))
    out = spacing(read(dict(data)))
    assert out["image_path"] == str(path)
    assert out["image"].shape[1:] == (12, 10, 11) and out["image"].pixdim.tolist() == [1.0, 1.0, 1.5]
    # the inverse is MONAI's: back to the study's grid
    out["pred"] = out["image"].clone()
    restored = Invertd(keys="pred", transform=Compose([spacing]), orig_keys="image")(out)
    assert restored["pred"].shape[1:] == (12, 10, 6) and restored["image_path"] == str(path)
    assert torch.allclose(restored["pred"].affine.float(), torch.as_tensor(np.diag([1.0, 1.0, 3.0, 1.0])).float())
