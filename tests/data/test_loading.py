"""The intensity step of the loading transforms: named modes, none, and MONAI transforms (a CT window)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import (
    Compose,
    NormalizeIntensity,
    RandGaussianNoised,
    ScaleIntensityRange,
    ScaleIntensityRanged,
)

from crossmatch_ext.data import load_transforms
from crossmatch_ext.data.loading import intensity_transforms
from crossmatch_ext.errors import SettingError


@pytest.fixture
def ct_item(tmp_path: Path) -> dict[str, str]:
    """A CT-like volume in Hounsfield units (-1000 .. 2000) and its label."""
    rng = np.random.default_rng(0)
    image = rng.uniform(-1000, 2000, size=(8, 7, 5)).astype(np.float32)
    image[0, 0, 0], image[0, 0, 1] = -1000.0, 2000.0
    label = (image > 0).astype(np.uint8)
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(tmp_path / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(tmp_path / "ct_label.nii.gz"))
    return {"image": str(tmp_path / "ct.nii.gz"), "label": str(tmp_path / "ct_label.nii.gz")}


def _load(item: dict[str, str], intensity) -> dict:
    return Compose(load_transforms("nifti", intensity=intensity))(item)


def test_hounsfield_window_as_dictionary_and_as_array_transform(ct_item: dict[str, str]) -> None:
    raw = _load(ct_item, None)["image"]
    assert float(raw.min()) == -1000.0 and float(raw.max()) == 2000.0
    window = {"a_min": -200.0, "a_max": 300.0, "b_min": 0.0, "b_max": 1.0, "clip": True}
    expected = torch.clamp((raw - -200.0) / 500.0, 0.0, 1.0)
    as_dict = _load(ct_item, [ScaleIntensityRanged(keys="image", **window)])
    as_array = _load(ct_item, [ScaleIntensityRange(**window)])
    for loaded in (as_dict, as_array):
        image = loaded["image"]
        assert image.shape == raw.shape and float(image.min()) == 0.0 and float(image.max()) == 1.0
        torch.testing.assert_close(torch.as_tensor(image), torch.as_tensor(expected))
        assert str(image.meta["filename_or_obj"]).endswith("ct.nii.gz")  # still a MetaTensor with its metadata
        torch.testing.assert_close(torch.as_tensor(loaded["label"]), torch.as_tensor(raw > 0).to(loaded["label"].dtype))
    chained = _load(ct_item, (ScaleIntensityRange(**window), NormalizeIntensity()))["image"]  # applied in order
    assert abs(float(chained.mean())) < 1e-5 and abs(float(chained.std(unbiased=False)) - 1.0) < 1e-4
    single = _load(ct_item, ScaleIntensityRange(**window))["image"]  # one transform without a list
    torch.testing.assert_close(torch.as_tensor(single), torch.as_tensor(expected))


def test_named_modes_and_none(ct_item: dict[str, str]) -> None:
    zscore = _load(ct_item, "zscore")["image"]
    assert abs(float(zscore.mean())) < 1e-5
    minmax = _load(ct_item, "minmax")["image"]
    assert float(minmax.min()) == 0.0 and float(minmax.max()) == 1.0
    raw = _load(ct_item, "none")["image"]
    assert float(raw.max()) == 2000.0
    assert intensity_transforms(None) == [] and intensity_transforms("None") == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("hu", r"config key 'intensity' must be 'zscore', 'minmax', None or a list of MONAI transforms, got the text "
               r"'hu'"),
        ({"a_min": -200}, r"config key 'intensity' must be .*, got \{'a_min': -200\} \(dict\)"),
        ([ScaleIntensityRange], r"item 0, .*ScaleIntensityRange.*, is a class, not a transform \(instantiate it\)"),
        ([NormalizeIntensity(), 3], r"item 1, 3 \(int\), is not a transform"),
        ([RandGaussianNoised(keys="image")], r"item 0, RandGaussianNoised, is random; .* put random transforms with"),
        (5, r"item 0, 5 \(int\), is not a transform"),
    ],
)
def test_other_values_are_setting_errors(value, message: str) -> None:
    with pytest.raises(SettingError, match=message):
        load_transforms("nifti", intensity=value)
    with pytest.raises(SettingError, match=message):  # checked for every layout, also where it is not applied
        load_transforms("h5", intensity=value)


def test_a_dataset_module_layout_reads_through_monai_readers(ct_item: dict[str, str]) -> None:
    loaded = Compose(load_transforms("msd", intensity=None))(ct_item)
    assert tuple(loaded["image"].shape) == (1, 8, 7, 5) and tuple(loaded["label"].shape) == (1, 8, 7, 5)
    with pytest.raises(ValueError, match="resolved layout"):
        load_transforms("auto")
