"""Slice-by-slice inference with the resize to a fixed slice size and back (the ACDC protocol)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from scipy.ndimage import zoom

from crossmatch_ext.inferers import ResizedSliceInferer, resize_slices, zoom_nearest_indices


class CountingNetwork(torch.nn.Module):
    """A fixed random 1 -> 4 channel convolution that counts its calls and the slices it sees."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, kernel_size=3, padding=1)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return self.conv(x)


@pytest.mark.parametrize("in_size,out_size", [(7, 16), (16, 7), (256, 154), (154, 256), (215, 82), (26, 294), (5, 5)])
def test_nearest_resize_equals_scipy_zoom_order_0(in_size, out_size):
    rng = np.random.default_rng(in_size * 1000 + out_size)
    image = rng.integers(1, 50, (in_size, in_size + 3)).astype(np.float32)
    expected = zoom(image, (out_size / in_size, out_size / (in_size + 3)), order=0)
    actual = resize_slices(torch.from_numpy(image)[None, None], (out_size, out_size), "nearest")[0, 0].numpy()
    np.testing.assert_array_equal(actual, expected)


def test_zoom_indices_mark_the_rounding_edge():
    indices, inside = zoom_nearest_indices(215, 82)
    assert indices[0] == 0 and indices[-1] == 214
    assert not bool(inside[-1]) and bool(inside[:-1].all())  # SciPy writes cval 0 there
    indices, inside = zoom_nearest_indices(10, 1)
    assert indices.tolist() == [0] and inside.tolist() == [True]
    with pytest.raises(ValueError, match="positive"):
        zoom_nearest_indices(0, 4)


def test_round_trip_of_an_identity_network_keeps_shape_and_values():
    volume = torch.rand(2, 1, 20, 18, 5)
    inferer = ResizedSliceInferer(roi_size=(40, 36), sw_batch_size=3, mode="nearest")
    out = inferer(volume, lambda x: x)
    assert out.shape == volume.shape
    torch.testing.assert_close(out, volume)  # nearest up-sampling and back is exact
    two_channels = inferer(volume, lambda x: torch.cat([x, 1 - x], dim=1))
    assert two_channels.shape == (2, 2, 20, 18, 5)


def test_nearest_reproduces_argmax_then_order_0_zoom_back():
    rng = np.random.default_rng(1)
    volume = rng.random((1, 1, 23, 17, 4)).astype(np.float32)
    network = CountingNetwork().eval()
    roi = (32, 32)
    expected = np.zeros((23, 17, 4), dtype=np.int64)
    with torch.no_grad():
        for k in range(4):  # the authors' test script, slice by slice
            image = volume[0, 0, :, :, k]
            resized = zoom(image, (roi[0] / image.shape[0], roi[1] / image.shape[1]), order=0)
            logits = network(torch.from_numpy(resized)[None, None])
            label = logits.argmax(1)[0].numpy()
            expected[:, :, k] = zoom(label, (image.shape[0] / roi[0], image.shape[1] / roi[1]), order=0)
        out = ResizedSliceInferer(roi_size=roi, sw_batch_size=2)(torch.from_numpy(volume), network)
    assert out.shape == (1, 4, 23, 17, 4)
    np.testing.assert_array_equal(out.argmax(1)[0].numpy(), expected)


def test_slices_are_batched_sw_batch_size_at_a_time():
    network = CountingNetwork()
    ResizedSliceInferer(roi_size=(16, 16), sw_batch_size=4)(torch.rand(2, 1, 10, 12, 5), network)
    assert [c[0] for c in network.calls] == [4, 4, 2]  # 2 volumes x 5 slices
    assert all(c[1:] == (1, 16, 16) for c in network.calls)


@pytest.mark.parametrize("spatial_dim", [0, 1, 2, -1])
def test_slicing_axis(spatial_dim):
    volume = torch.rand(1, 1, 9, 10, 11)
    network = CountingNetwork()
    out = ResizedSliceInferer(roi_size=(16, 16), spatial_dim=spatial_dim)(volume, network)
    assert out.shape == (1, 4, 9, 10, 11)
    axis = 2 + spatial_dim % 3
    reference = ResizedSliceInferer(roi_size=(16, 16), spatial_dim=2)(volume.movedim(axis, -1), network)
    torch.testing.assert_close(out, reference.movedim(-1, axis))


def test_bilinear_mode_matches_the_in_training_validation():
    volume = torch.rand(1, 1, 12, 10, 2)
    network = CountingNetwork()
    out = ResizedSliceInferer(roi_size=(32, 32), mode="bilinear")(volume, network)
    slices = volume[0].permute(3, 0, 1, 2)  # (S, 1, H, W)
    logits = network(F.interpolate(slices, size=(32, 32), mode="bilinear", align_corners=False))
    expected = F.interpolate(logits, size=(12, 10), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[0].permute(3, 0, 1, 2), expected)


def test_softmax_output_and_two_dimensional_input():
    network = CountingNetwork()
    out = ResizedSliceInferer(roi_size=(16, 16), softmax=True)(torch.rand(3, 1, 9, 7), network)
    assert out.shape == (3, 4, 9, 7)
    torch.testing.assert_close(out.sum(1), torch.ones(3, 9, 7))


def test_metatensor_input_keeps_its_metadata():
    affine = torch.diag(torch.tensor([1.5, 1.5, 10.0, 1.0], dtype=torch.float64))
    volume = MetaTensor(torch.rand(1, 1, 8, 8, 3), affine=affine, meta={"filename_or_obj": "frame.nii.gz"})
    out = ResizedSliceInferer(roi_size=(16, 16))(volume, CountingNetwork())
    assert isinstance(out, MetaTensor)
    torch.testing.assert_close(out.affine, affine)
    assert out.meta["filename_or_obj"] == "frame.nii.gz"


def test_invalid_arguments():
    with pytest.raises(ValueError, match="mode"):
        ResizedSliceInferer(mode="linear")
    with pytest.raises(ValueError, match="roi_size"):
        ResizedSliceInferer(roi_size=(256,))
    with pytest.raises(ValueError, match="sw_batch_size"):
        ResizedSliceInferer(sw_batch_size=0)
    with pytest.raises(ValueError, match="spatial_dim"):
        ResizedSliceInferer(spatial_dim=3)
    with pytest.raises(ValueError, match="volumes"):
        ResizedSliceInferer()(torch.rand(1, 8, 8), CountingNetwork())
