"""H5Reader through MONAI's LoadImage(d), and the challenge NRRD files through MONAI's ITK reader."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import AsDiscreted, Compose, EnsureChannelFirstd, LoadImage, LoadImaged, NormalizeIntensityd

from crossmatch_ext.data import H5Reader, list_h5_datasets

# importing itk's SWIG bindings emits these on Python 3.11+
pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute:DeprecationWarning")


def shared_data() -> Path:
    env = os.environ.get("CROSSMATCH_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def write_h5(path: Path, image: np.ndarray, label: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
        if label is not None:
            f.create_dataset("label", data=label)
    return path


@pytest.fixture()
def la_like(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(9, 7, 5)).astype(np.float32)
    label = (image > 0.5).astype(np.uint8)
    return write_h5(tmp_path / "CASE01" / "mri_norm2.h5", image, label), image, label


def test_per_key_loadimaged_reads_image_and_label(la_like: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, image, label = la_like
    load = Compose(
        [
            LoadImaged(keys="image", reader=H5Reader(dataset="image", spacing=0.625)),
            LoadImaged(keys="label", reader=H5Reader(dataset="label", spacing=0.625), dtype=None),
        ]
    )
    data = load({"image": str(path), "label": str(path), "case": "CASE01"})
    assert tuple(data["image"].shape) == (9, 7, 5)  # as stored: no channel, no axis reordering
    np.testing.assert_allclose(data["image"].numpy(), image)
    np.testing.assert_array_equal(data["label"].numpy(), label)
    assert data["label"].dtype == torch.uint8
    expected_affine = np.diag([0.625, 0.625, 0.625, 1.0])
    np.testing.assert_allclose(data["image"].affine.numpy(), expected_affine)
    meta = data["image"].meta
    np.testing.assert_allclose(meta["original_affine"], expected_affine)
    assert list(meta["spatial_shape"]) == [9, 7, 5]
    assert math.isnan(meta["original_channel_dim"])
    assert meta["filename_or_obj"] == str(path)
    assert meta["h5_dataset"] == "image" and data["label"].meta["h5_dataset"] == "label"
    assert data["case"] == "CASE01"

    channel_first = EnsureChannelFirstd(keys=["image", "label"])(data)
    assert tuple(channel_first["image"].shape) == (1, 9, 7, 5)


def test_identity_affine_anisotropic_spacing_and_class_reader(la_like: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, image, _ = la_like
    plain = LoadImage(reader=H5Reader(dataset="image"), image_only=True)(path)
    np.testing.assert_allclose(plain.affine.numpy(), np.eye(4))
    aniso = LoadImage(reader=H5Reader(dataset="image", spacing=(1.0, 1.5, 10.0)), image_only=True)(path)
    np.testing.assert_allclose(np.diag(aniso.affine.numpy()), [1.0, 1.5, 10.0, 1.0])
    dotted = LoadImage(reader="crossmatch_ext.data.H5Reader", image_only=True)(path)  # as a YAML string
    np.testing.assert_allclose(dotted.numpy(), image)
    with pytest.raises(ValueError, match="has 3 axes"):
        LoadImage(reader=H5Reader(dataset="image", spacing=(1.0, 1.0)), image_only=True)(path)
    with pytest.raises(ValueError, match="positive"):
        H5Reader(spacing=(1.0, -1.0))


def test_several_files_are_stacked_as_channels(tmp_path: Path) -> None:
    a = write_h5(tmp_path / "a.h5", np.zeros((4, 3), np.float32))
    b = write_h5(tmp_path / "b.hdf5", np.ones((4, 3), np.float32))
    stacked = LoadImage(reader=H5Reader(), image_only=True)([a, b])
    assert tuple(stacked.shape) == (2, 4, 3)
    assert stacked.meta["original_channel_dim"] == 0
    np.testing.assert_array_equal(stacked[1].numpy(), np.ones((4, 3)))


def test_nested_dataset_and_listing(tmp_path: Path) -> None:
    path = tmp_path / "nested.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("group/volume", data=np.arange(6, dtype=np.int16).reshape(2, 3))
        f.create_dataset("label", data=np.zeros((2, 3), np.uint8))
    assert sorted(list_h5_datasets(path)) == ["group/volume", "label"]
    out = LoadImage(reader=H5Reader(dataset="group/volume"), image_only=True, dtype=None)(path)
    assert out.numpy().tolist() == [[0, 1, 2], [3, 4, 5]]


def test_verify_suffix() -> None:
    reader = H5Reader()
    assert reader.verify_suffix("x/mri_norm2.h5") and reader.verify_suffix(["a.h5", "b.hdf5"])
    assert not reader.verify_suffix("x.nii.gz") and not reader.verify_suffix(["a.h5", "b.nrrd"])


def test_errors_name_the_file_and_are_not_hidden_by_fallback_readers(tmp_path: Path) -> None:
    path = write_h5(tmp_path / "only_image.h5", np.zeros((3, 3), np.float32))
    loader = LoadImaged(keys="label", reader=H5Reader(dataset="label"))
    with pytest.raises(KeyError, match=r"only_image\.h5 has no dataset 'label'; datasets present: \['image'\]"):
        loader({"label": str(path)})
    with pytest.raises(FileNotFoundError, match=r"missing.h5"):
        LoadImage(reader=H5Reader())(tmp_path / "missing.h5")
    broken = tmp_path / "broken.h5"
    broken.write_text("not an HDF5 file")
    with pytest.raises(OSError, match=r"cannot read .*broken\.h5 as an HDF5 file"):
        LoadImage(reader=H5Reader())(broken)
    with pytest.raises(ValueError, match="non-empty dataset name"):
        H5Reader(dataset="")


def test_same_transform_falls_back_to_monai_readers_for_nifti(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    path = tmp_path / "patient001_frame01.nii.gz"
    nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 10.0, 1.0])), str(path))
    out = LoadImaged(keys="image", reader=H5Reader(dataset="image"))({"image": str(path)})["image"]
    np.testing.assert_allclose(out.numpy(), array)
    np.testing.assert_allclose(np.abs(np.diag(out.affine.numpy())), [1.5, 1.5, 10.0, 1.0])


def test_challenge_nrrd_through_itk_binarised_and_normalised(tmp_path: Path) -> None:
    itk = pytest.importorskip("itk")
    rng = np.random.default_rng(1)
    image_zyx = (rng.normal(100.0, 20.0, size=(6, 8, 10))).astype(np.float32)  # ITK arrays are (z, y, x)
    label_zyx = np.zeros((6, 8, 10), dtype=np.uint8)
    label_zyx[2:4, 3:6, 4:8] = 255
    case = tmp_path / "CASE01"
    case.mkdir()
    for name, array in (("lgemri.nrrd", image_zyx), ("laendo.nrrd", label_zyx)):
        itk_image = itk.image_from_array(array)
        itk_image.SetSpacing([0.625, 0.625, 0.625])
        itk.imwrite(itk_image, str(case / name))
    pipeline = Compose(
        [
            LoadImaged(keys=["image", "label"]),  # MONAI's default readers: ITK for .nrrd
            EnsureChannelFirstd(keys=["image", "label"]),
            AsDiscreted(keys="label", threshold=0.5),
            NormalizeIntensityd(keys="image"),
        ]
    )
    data = pipeline({"image": str(case / "lgemri.nrrd"), "label": str(case / "laendo.nrrd")})
    assert tuple(data["image"].shape) == (1, 10, 8, 6)  # MONAI's ITK reader returns (x, y, z)
    assert set(np.unique(data["label"].numpy()).tolist()) == {0.0, 1.0}
    assert int(data["label"].sum()) == 2 * 3 * 4
    np.testing.assert_array_equal(data["label"][0].numpy(), (label_zyx > 0).transpose(2, 1, 0).astype(np.float32))
    assert float(data["image"].mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(data["image"].std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(np.abs(np.diag(data["image"].affine.numpy()))[:3], [0.625] * 3)


@pytest.mark.real_data
def test_real_la_case_and_acdc_volume() -> None:
    root = shared_data()
    if not (root / "la" / "train.list").is_file() or not (root / "acdc" / "volumes").is_dir():
        pytest.skip(f"real data not found at {root}")
    case = (root / "la" / "train.list").read_text().split()[0]
    la_path = str(root / "la" / case / "mri_norm2.h5")
    load = Compose(
        [
            LoadImaged(keys="image", reader=H5Reader(dataset="image", spacing=0.625)),
            LoadImaged(keys="label", reader=H5Reader(dataset="label", spacing=0.625)),
        ]
    )
    la = load({"image": la_path, "label": la_path})
    assert la["image"].ndim == 3 and la["image"].shape[2] == 88  # (x, y, z), slice axis last
    assert la["image"].shape == la["label"].shape
    assert set(np.unique(la["label"].numpy()).tolist()) == {0.0, 1.0}
    assert float(la["image"].affine[0, 0]) == pytest.approx(0.625)

    volume = sorted((root / "acdc" / "volumes").glob("*.h5"))[0]
    acdc = LoadImage(reader=H5Reader(dataset="label"), image_only=True, dtype=None)(volume)
    image = LoadImage(reader=H5Reader(dataset="image"), image_only=True)(volume)
    assert acdc.ndim == 3 and 6 <= acdc.shape[0] <= 18  # (slices, H, W), slice axis first
    assert acdc.shape == image.shape
    assert set(np.unique(acdc.numpy()).tolist()) <= {0, 1, 2, 3}
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_fallback_to_nifti_reader_logs_no_failure_notice(tmp_path: Path, caplog):
    path = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((6, 5, 4), dtype=np.float32), np.eye(4)), path)
    caplog.set_level(logging.INFO)
    loaded = LoadImaged(keys="image", reader=H5Reader(dataset="image"), image_only=True)({"image": str(path)})
    assert tuple(loaded["image"].shape) == (6, 5, 4)
    assert not [r for r in caplog.records if "unable to load" in r.getMessage()]


def test_a_file_no_reader_can_load_still_reports_every_reader(tmp_path: Path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"not an image")
    with pytest.raises(RuntimeError, match="cannot find a suitable reader") as info:
        LoadImage(reader=H5Reader(dataset="image"), image_only=True)(str(path))
    assert "H5Reader reads .h5/.hdf5 files only" in str(info.value)
