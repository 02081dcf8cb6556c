"""Bad inputs found by the pre-training data check: each message names the case / file, what was expected, and what
was found."""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from crossmatch_ext.data import (
    MapLabelValuesStrictd,
    la_datalists,
    validate_datalists,
    validate_item,
)
from crossmatch_ext.errors import InputError, InputFileNotFoundError, InputValueError


def _h5(path: Path, image: np.ndarray | None = None, label: np.ndarray | None = None, shape=(24, 24, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        if image is not False:
            f.create_dataset("image", data=rng.normal(size=shape).astype(np.float32) if image is None else image)
        if label is not False:
            lab = np.zeros(shape, np.uint8)
            lab[4:10, 4:10, 4:8] = 1
            f.create_dataset("label", data=lab if label is None else label)
    return path


def _item(path: Path, case: str = "c1", label: bool = True) -> dict:
    return {"image": str(path), **({"label": str(path)} if label else {}), "case": case}


def _lists(tmp_path: Path, n: int = 3) -> dict:
    files = [_h5(tmp_path / f"c{i}" / "mri_norm2.h5") for i in range(n)]
    return {"labeled": [_item(files[0], "c0")], "unlabeled": [_item(f, f"c{i + 1}", False) for i, f in
                                                            enumerate(files[1:])],
            "validation": [_item(files[-1], f"c{n - 1}")]}


def test_a_clean_dataset_passes(tmp_path: Path):
    report = validate_datalists(_lists(tmp_path), label_values=[0, 1], patch_size=[16, 16, 16])
    assert report["cases"] == 3 and report["padded"] == []
    assert report["shapes"]["c0"] == (24, 24, 16)


def test_missing_file_names_the_case_and_the_list(tmp_path: Path):
    with pytest.raises(InputFileNotFoundError, match=r"case 'x': image file not found: .*nope\.h5 \(listed in the "
                                                     r"labeled list\): add the file or remove the case"):
        validate_item({"image": str(tmp_path / "nope.h5"), "case": "x"}, spatial_dims=3, source="the labeled list")


def test_truncated_hdf5(tmp_path: Path):
    good = _h5(tmp_path / "a.h5", shape=(32, 32, 32))
    data = good.read_bytes()
    bad = tmp_path / "bad.h5"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputValueError, match=r"case 'c1': cannot read .*bad\.h5.*truncated or corrupt"):
        validate_item(_item(bad), spatial_dims=3)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(InputValueError, match=r"junk\.h5 as an HDF5 file"):
        validate_item(_item(junk), spatial_dims=3)


@pytest.mark.parametrize("missing", ["image", "label"])
def test_hdf5_without_a_dataset(tmp_path: Path, missing: str):
    path = _h5(tmp_path / "a.h5", **{missing: False})
    present = "label" if missing == "image" else "image"
    with pytest.raises(InputValueError, match=rf"has no dataset '{missing}' \(expected 'image' and 'label'; found "
                                              rf"\['{present}'\]\)"):
        validate_item(_item(path), spatial_dims=3)


def test_image_and_label_shapes_differ(tmp_path: Path):
    path = _h5(tmp_path / "a.h5", label=np.zeros((24, 24, 15), np.uint8))
    with pytest.raises(InputValueError, match=r"image and label shapes differ: image \[24, 24, 16\] .* label "
                                              r"\[24, 24, 15\]"):
        validate_item(_item(path), spatial_dims=3)


def test_label_values_outside_the_classes(tmp_path: Path):
    label = np.zeros((24, 24, 16), np.uint8)
    label[0, 0, 0] = 2
    path = _h5(tmp_path / "a.h5", label=label)
    with pytest.raises(InputValueError, match=r"holds values \[2\] outside the classes \[0, 1\] of this bundle"):
        validate_item(_item(path), spatial_dims=3, label_values=[0, 1])
    # the raw LA 0/255 labels are accepted only through the explicit map
    label[0, 0, 0] = 255
    path = _h5(tmp_path / "b.h5", label=label)
    with pytest.raises(InputValueError, match=r"values \[255\]"):
        validate_item(_item(path), spatial_dims=3, label_values=[0, 1])
    validate_item(_item(path), spatial_dims=3, label_values=[0, 1], raw_label_map={0: 0, 255: 1})
    label[1, 0, 0] = 128
    path = _h5(tmp_path / "c.h5", label=label)
    with pytest.raises(InputValueError, match=r"values \[128\] outside the classes \[0, 1\] or the raw values "
                                              r"\[0, 255\]"):
        validate_item(_item(path), spatial_dims=3, label_values=[0, 1], raw_label_map={0: 0, 255: 1})


def test_strict_label_map_transform():
    from monai.data import MetaTensor

    label = MetaTensor(torch.tensor([[0.0, 255.0, 255.0]]), meta={"filename_or_obj": "/d/laendo.nrrd"})
    out = MapLabelValuesStrictd("label", {0: 0, 255: 1})({"label": label})["label"]
    assert out.tolist() == [[0.0, 1.0, 1.0]]
    bad = MetaTensor(torch.tensor([[0.0, 255.0, 7.0]]), meta={"filename_or_obj": "/d/laendo.nrrd"})
    with pytest.raises(InputValueError, match=r"label /d/laendo\.nrrd holds values \[7\]; expected only \[0, 255\]"):
        MapLabelValuesStrictd("label", {0: 0, 255: 1})({"label": bad})


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_in_an_image(tmp_path: Path, value: float):
    image = np.zeros((24, 24, 16), np.float32)
    image[1, 2, 3] = value
    path = _h5(tmp_path / "a.h5", image=image)
    with pytest.raises(InputValueError, match=r"holds 1 NaN or Inf voxel\(s\); expected finite intensities"):
        validate_item(_item(path), spatial_dims=3)


def test_multichannel_image_file(tmp_path: Path):
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 16, 2), np.float32), np.eye(4)), path)
    with pytest.raises(InputValueError, match=r"shape \[20, 20, 16, 2\], expected a single-channel 3D volume"):
        validate_item({"image": str(path), "case": "x"}, spatial_dims=3)


def test_corrupt_nifti(tmp_path: Path):
    path = tmp_path / "img.nii.gz"
    path.write_bytes(b"\x1f\x8b broken")
    with pytest.raises(InputValueError, match=r"case 'x': cannot read .*img\.nii\.gz"):
        validate_item({"image": str(path), "case": "x"}, spatial_dims=3)


def test_volume_smaller_than_the_patch_is_reported(tmp_path: Path):
    report = validate_datalists(_lists(tmp_path), label_values=[0, 1], patch_size=[32, 32, 16])
    assert report["padded"] == ["c0", "c1", "c2"]


def test_overlapping_labeled_and_unlabeled_lists(tmp_path: Path):
    lists = _lists(tmp_path)
    lists["unlabeled"].append({"image": lists["labeled"][0]["image"], "case": "c0-again"})
    with pytest.raises(InputValueError, match=r"1 case\(s\) are both labeled and unlabeled: \['c0'\]; .*"
                                              r"--allow_overlap True"):
        validate_datalists(lists)
    validate_datalists(lists, allow_overlap=True)


def test_no_labeled_or_no_unlabeled_cases(tmp_path: Path):
    lists = _lists(tmp_path)
    with pytest.raises(InputValueError, match="no labeled cases: the labeled list is empty"):
        validate_datalists({**lists, "labeled": []})
    with pytest.raises(InputValueError, match=r"no unlabeled cases: .* --mode supervised"):
        validate_datalists({**lists, "unlabeled": []})
    validate_datalists({**lists, "unlabeled": []}, mode="supervised")


def test_empty_train_list_and_too_many_labeled(tmp_path: Path):
    root = tmp_path / "la"
    for i in range(3):
        _h5(root / f"c{i}" / "mri_norm2.h5")
    (root / "train.list").write_text("")
    with pytest.raises(InputValueError, match=r"no labeled cases: .*train\.list lists none"):
        la_datalists(root, num_labeled=1, val_list=None)
    (root / "train.list").write_text("c0\nc1\n")
    with pytest.raises(InputValueError, match=r"between 1 and 2 .* got 3: set --num_labeled in that range"):
        la_datalists(root, num_labeled=3, val_list=None)


def test_input_errors_are_also_builtin_errors():
    assert issubclass(InputValueError, ValueError) and issubclass(InputFileNotFoundError, FileNotFoundError)
    assert issubclass(InputValueError, InputError)


def test_channel_count_check_names_the_file():
    from monai.data import MetaTensor

    from crossmatch_ext.data import CheckChannelCountd

    image = MetaTensor(torch.zeros(2, 8, 8, 8), meta={"filename_or_obj": "/d/two_channels.nii.gz"})
    with pytest.raises(InputValueError, match=r"image /d/two_channels\.nii\.gz has 2 channels \(shape \[2, 8, 8, 8\], "
                                              r"channel first\), but the model takes 1 \(network_def::in_channels\)"):
        CheckChannelCountd("image", 1)({"image": image})
    assert CheckChannelCountd("image", 2)({"image": image})["image"] is image
