"""The slice dataset over cached volumes and the HDF5 stack reordering."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, LoadImaged, MapTransform, RandFlipd

from crossmatch_ext.data import (
    H5Reader,
    ReorderHDF5Stackd,
    VolumeSliceDataset,
    acdc_datalists,
    is_hdf5_source,
    load_transforms,
    write_acdc_dataset,
)


def write_stack(path: Path, num_slices: int, height: int = 6, width: int = 5, offset: float = 0.0) -> np.ndarray:
    """An HDF5 stack (S, H, W) whose voxel values encode their position."""
    image = (np.arange(num_slices * height * width, dtype=np.float32).reshape(num_slices, height, width) + offset)
    label = (image.astype(np.int64) % 4).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
        f.create_dataset("label", data=label)
    return image


def stack_load(spacing=None) -> list:
    reorder = ReorderHDF5Stackd(keys=["image", "label"], allow_missing_keys=True)
    return load_transforms("h5", h5_spacing=spacing) + [reorder]


@pytest.fixture
def volumes(tmp_path: Path) -> list[dict]:
    items = []
    for i, s in enumerate((3, 5)):
        path = tmp_path / f"patient00{i}_frame01.h5"
        write_stack(path, s, offset=1000.0 * i)
        items.append({"image": str(path), "label": str(path), "case": path.stem})
    return items


class RecordProcess(MapTransform):
    """Adds the id of the process that ran the transform."""

    def __call__(self, data):
        d = dict(data)
        d["pid"] = os.getpid()
        return d


def test_one_item_per_slice_in_volume_order(volumes):
    dataset = VolumeSliceDataset(volumes, stack_load(), progress=False)
    assert len(dataset) == 3 + 5
    assert dataset.num_slices == [3, 5]
    assert [(int(v), int(k)) for v, k in dataset.index] == [(0, 0), (0, 1), (0, 2)] + [(1, k) for k in range(5)]
    for index in (0, 2, 3, 7):
        item = dataset[index]
        volume, k = (int(x) for x in dataset.index[index])
        cached = dataset.volumes[volume]
        # slice k of the (1, W, H, S) volume, i.e. slice k of the stored (S, H, W) stack, transposed
        assert item["image"].shape == (1, 5, 6)
        torch.testing.assert_close(item["image"], cached["image"].as_tensor()[..., k])
        stored = np.arange(k * 30, (k + 1) * 30, dtype=np.float32).reshape(6, 5) + 1000.0 * volume
        np.testing.assert_array_equal(item["image"][0].numpy(), stored.T)
        assert item["label"].shape == (1, 5, 6)
        assert item["case"] == volumes[volume]["case"] and item["slice"] == k
        assert item["image"].is_contiguous()


def test_volumes_are_cached_once_and_never_copied(volumes):
    dataset = VolumeSliceDataset(volumes, stack_load(), progress=False)
    assert len(dataset.volumes._cache) == 2  # one cache entry per volume, not per slice
    pointer = dataset.volumes[1]["image"].data_ptr()
    before = dataset.volumes[1]["image"].clone()
    for index in range(3, 8):
        item = dataset[index]
        item["image"].fill_(-1.0)  # an item is a copy: changing it leaves the cache intact
    assert dataset.volumes[1]["image"].data_ptr() == pointer
    torch.testing.assert_close(dataset.volumes[1]["image"], before)


def test_random_transform_applies_to_each_slice_in_the_workers(volumes):
    flip = RandFlipd(keys=["image", "label"], prob=1.0, spatial_axis=0)
    dataset = VolumeSliceDataset(volumes, stack_load(), transform=[flip, RecordProcess(keys="image")], progress=False)
    plain = dataset.slice_item(4)
    flipped = dataset[4]
    torch.testing.assert_close(torch.as_tensor(flipped["image"]), torch.flip(plain["image"], dims=[1]))
    torch.testing.assert_close(torch.as_tensor(flipped["label"]), torch.flip(plain["label"], dims=[1]))
    loader = DataLoader(dataset, batch_size=4, num_workers=1, shuffle=False)
    batches = list(loader)
    assert sum(len(b["slice"]) for b in batches) == 8
    assert batches[0]["image"].shape == (4, 1, 5, 6)
    assert all(int(p) != os.getpid() for b in batches for p in b["pid"])


def test_unlabeled_items_and_uncached_volumes(volumes):
    unlabeled = [{"image": v["image"], "case": v["case"]} for v in volumes]
    dataset = VolumeSliceDataset(unlabeled, stack_load(), cache_rate=0.0, progress=False)
    assert len(dataset.volumes._cache) == 0
    assert len(dataset) == 8
    item = dataset[-1]
    assert "label" not in item and item["slice"] == 4 and item["image"].shape == (1, 5, 6)
    with pytest.raises(IndexError, match="out of range"):
        dataset[8]


def test_empty_data_and_errors(tmp_path: Path, volumes):
    assert len(VolumeSliceDataset([], stack_load(), progress=False)) == 0
    with pytest.raises(ValueError, match="slice_axis=3"):
        VolumeSliceDataset(volumes, stack_load(), slice_axis=3, progress=False)
    # an image and a label with different slice counts name the case
    odd = tmp_path / "odd.h5"
    with h5py.File(odd, "w") as f:
        f.create_dataset("image", data=np.zeros((3, 4, 4), np.float32))
        f.create_dataset("label", data=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"'odd'.*different slice counts"):
        VolumeSliceDataset([{"image": str(odd), "label": str(odd), "case": "odd"}], stack_load(), progress=False)


def test_reorder_hdf5_stack_permutes_array_and_affine_and_inverts(tmp_path: Path):
    path = tmp_path / "case.h5"
    stored = write_stack(path, 4)
    pipeline = Compose(stack_load(spacing=[10.0, 1.5, 1.25]))
    item = pipeline({"image": str(path), "label": str(path)})
    assert is_hdf5_source(item["image"])
    assert item["image"].shape == (1, 5, 6, 4)
    np.testing.assert_array_equal(item["image"][0].numpy(), stored.transpose(2, 1, 0))
    affine = item["image"].affine.numpy()
    np.testing.assert_allclose(affine_to_spacing(affine), [1.25, 1.5, 10.0])
    # every voxel keeps its world position: new index (i, j, k) is stored index (k, j, i)
    stored_affine = np.diag([10.0, 1.5, 1.25, 1.0])
    np.testing.assert_allclose(affine @ [3, 2, 1, 1], stored_affine @ [1, 2, 3, 1])
    # the inverse (as Invertd runs it on a prediction) restores the stored order and affine
    pred = {"pred": MetaTensor(torch.rand(4, 5, 6, 4)), "image": item["image"]}
    restored = Invertd(keys="pred", transform=pipeline, orig_keys="image", nearest_interp=False)(pred)["pred"]
    assert restored.shape == (4, 4, 6, 5)
    np.testing.assert_allclose(restored.affine.numpy(), stored_affine)
    torch.testing.assert_close(restored.as_tensor()[0], pred["pred"].as_tensor()[0].permute(2, 1, 0))


def test_reorder_leaves_other_sources_unchanged(tmp_path: Path):
    array = np.random.default_rng(0).random((5, 6, 4)).astype(np.float32)
    affine = np.diag([1.5, 1.5, 10.0, 1.0])
    path = tmp_path / "frame.nii.gz"
    nib.save(nib.Nifti1Image(array, affine), str(path))
    pipeline = Compose([LoadImaged(keys="image", image_only=True), EnsureChannelFirstd(keys="image"),
                        ReorderHDF5Stackd(keys="image")])
    item = pipeline({"image": str(path)})
    assert not is_hdf5_source(item["image"])
    np.testing.assert_allclose(item["image"][0].numpy(), array)
    np.testing.assert_allclose(item["image"].affine.numpy(), affine)
    inverted = pipeline.inverse(item)
    assert inverted["image"].shape == (1, 5, 6, 4) and not inverted["image"].applied_operations
    with pytest.raises(ValueError, match="permutation"):
        ReorderHDF5Stackd(keys="image", order=(0, 0, 1))


def test_hdf5_and_nifti_sources_give_the_same_volume(tmp_path: Path):
    root = write_acdc_dataset(tmp_path / "acdc", num_train_patients=2, num_val_patients=0, labeled_patients=(1,),
                              seed=5, size=(40, 36), num_slices=3, nifti=True)
    h5 = acdc_datalists(root, 1, val_list=None)["labeled"][0]
    raw = acdc_datalists(root / "raw", 1, layout="nifti", val_list=None)["labeled"][0]
    tail = [ReorderHDF5Stackd(keys=["image", "label"], allow_missing_keys=True)]
    from_h5 = Compose(load_transforms("h5") + tail)(h5)
    from_nifti = Compose(load_transforms("nifti", intensity="minmax") + tail)(raw)
    assert from_h5["image"].shape == from_nifti["image"].shape == (1, 36, 40, 3)
    torch.testing.assert_close(from_h5["label"].as_tensor(), from_nifti["label"].as_tensor())
    torch.testing.assert_close(from_h5["image"].as_tensor(), from_nifti["image"].as_tensor(), atol=1e-5, rtol=0)
    assert float(from_nifti["image"].min()) == 0.0 and float(from_nifti["image"].max()) == 1.0


def test_h5_reader_alone_is_not_reordered(tmp_path: Path):
    """Without ReorderHDF5Stackd the stored order is kept: the reordering is an explicit pipeline step."""
    path = tmp_path / "case.h5"
    write_stack(path, 2)
    item = LoadImaged(keys="image", reader=H5Reader(dataset="image"), image_only=True)({"image": str(path)})
    assert item["image"].shape == (2, 6, 5)
