"""Tests of the largest-connected-component post-processing (array function and dictionary transform)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from crossmatch_ext.transforms import KeepLargestComponentd, keep_largest_component


def _two_blobs() -> np.ndarray:
    labels = np.zeros((10, 10), dtype=np.int64)
    labels[1:4, 1:4] = 1  # 9 pixels, kept
    labels[7:9, 7:9] = 1  # 4 pixels, removed
    labels[5, 5] = 2  # a single pixel of another label
    return labels


def test_keeps_the_largest_component_of_each_applied_label_only():
    labels = _two_blobs()
    out = keep_largest_component(labels, [1])
    assert out[1:4, 1:4].all() and out[7:9, 7:9].sum() == 0
    assert out[5, 5] == 2  # a label not applied is untouched
    assert labels[7:9, 7:9].all()  # the input is not modified


def test_each_applied_label_is_filtered_independently():
    labels = np.zeros((3, 12, 12), dtype=np.uint8)
    labels[0, 0:4, 0:4] = 1  # label 1: 16 voxels, kept
    labels[2, 10, 10] = 1  # removed
    labels[1, 6:8, 0:2] = 2  # label 2: 4 voxels, removed
    labels[1, 6:11, 6:11] = 2  # 25 voxels, kept (smaller than label 1's largest: sizes compare within a label)
    out = keep_largest_component(labels, [1, 2])
    assert (out == 1).sum() == 16 and (out == 2).sum() == 25
    assert out[2, 10, 10] == 0 and out[1, 6:8, 0:2].sum() == 0
    assert out.dtype == labels.dtype


def test_components_touch_across_corners_full_connectivity():
    diagonal = np.zeros((4, 4, 4), dtype=np.int64)
    for i in range(4):
        diagonal[i, i, i] = 1  # joined only through corners
    diagonal[0, 3, 3] = 1  # an isolated voxel
    out = keep_largest_component(diagonal, [1])
    assert out.sum() == 4 and out[0, 3, 3] == 0


def test_dictionary_transform_keeps_type_and_metadata():
    labels = _two_blobs()
    expected = keep_largest_component(labels, [1])
    tensor = MetaTensor(torch.as_tensor(labels)[None].float(), meta={"filename_or_obj": "case.nii.gz"})
    item = KeepLargestComponentd(["pred", "other"], [1], allow_missing_keys=True)({"pred": tensor})
    assert isinstance(item["pred"], MetaTensor) and item["pred"].meta["filename_or_obj"] == "case.nii.gz"
    assert item["pred"].dtype == torch.float32
    assert torch.equal(item["pred"][0].as_tensor(), torch.as_tensor(expected).float())
    assert tensor[0, 7, 7] == 1  # the input tensor is not modified
    array_item = KeepLargestComponentd("pred", [1])({"pred": labels[None]})
    assert isinstance(array_item["pred"], np.ndarray) and np.array_equal(array_item["pred"][0], expected)


def test_dictionary_transform_rejects_several_channels():
    with pytest.raises(ValueError, match="one-channel label map for 'pred'"):
        KeepLargestComponentd("pred", [1])({"pred": torch.zeros(2, 4, 4)})
    with pytest.raises(KeyError):
        KeepLargestComponentd("pred", [1])({"label": torch.zeros(1, 4, 4)})
