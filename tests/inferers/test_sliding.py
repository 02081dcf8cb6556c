"""Tests of the strided sliding-window inferer (the LA papers' evaluation protocol on MONAI's sliding window)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.inferers.utils import _get_scan_interval

from crossmatch_ext.inferers import StridedSlidingWindowInferer

ROI = (8, 8, 6)
STRIDES = (4, 3, 2)


def _network() -> torch.nn.Module:
    """A position-sensitive network: zero padding at the window border makes overlapping windows disagree."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(3, 3, 3, padding=1))
    return net.eval()


def _reference(image: torch.Tensor, net: torch.nn.Module, roi, strides, softmax: bool = True) -> torch.Tensor:
    """The UA-MT / CrossMatch ``test_single_case`` loop: symmetric zero padding, windows at min(i * stride, size -
    patch), uniform average of per-window softmax probabilities, crop back to the input."""
    size = image.shape[2:]
    pads = [max(r - s, 0) for r, s in zip(roi, size)]
    padding = []
    for p in reversed(pads):
        padding += [p // 2, p - p // 2]
    padded = F.pad(image, padding)
    full = padded.shape[2:]
    scores = torch.zeros((1, 3, *full))
    counts = torch.zeros((1, 1, *full))
    steps = [math.ceil((f - r) / s) + 1 for f, r, s in zip(full, roi, strides)]
    for i in range(steps[0]):
        x = min(strides[0] * i, full[0] - roi[0])
        for j in range(steps[1]):
            y = min(strides[1] * j, full[1] - roi[1])
            for k in range(steps[2]):
                z = min(strides[2] * k, full[2] - roi[2])
                window = padded[:, :, x : x + roi[0], y : y + roi[1], z : z + roi[2]]
                out = net(window)
                out = torch.softmax(out, dim=1) if softmax else out
                scores[:, :, x : x + roi[0], y : y + roi[1], z : z + roi[2]] += out
                counts[:, :, x : x + roi[0], y : y + roi[1], z : z + roi[2]] += 1
    mean = scores / counts
    crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pads, size))
    return mean[(slice(None), slice(None), *crop)]


@pytest.mark.parametrize("shape", [(20, 14, 11), (6, 8, 4)], ids=["larger", "smaller-than-window"])
@pytest.mark.parametrize("softmax", [True, False])
def test_matches_the_papers_sliding_window_loop(shape, softmax):
    net = _network()
    image = torch.randn(1, 1, *shape)
    inferer = StridedSlidingWindowInferer(ROI, STRIDES, sw_batch_size=3, softmax=softmax)
    with torch.no_grad():
        out = inferer(image, net)
        expected = _reference(image, net, ROI, STRIDES, softmax=softmax)
    assert out.shape == (1, 3, *shape)
    torch.testing.assert_close(out.as_tensor() if hasattr(out, "as_tensor") else out, expected, atol=1e-5, rtol=1e-5)
    if softmax:
        torch.testing.assert_close(out.sum(dim=1), torch.ones(1, *shape), atol=1e-5, rtol=0)


def test_window_count_follows_the_strides():
    calls = []

    def net(x):
        calls.append(x.shape[0])
        return torch.zeros(x.shape[0], 2, *x.shape[2:])

    StridedSlidingWindowInferer(ROI, STRIDES, sw_batch_size=1)(torch.zeros(1, 1, 20, 14, 11), net)
    # (20 - 8) / 4 -> 4 positions, ceil((14 - 8) / 3) + 1 = 3, ceil((11 - 6) / 2) + 1 = 4
    assert len(calls) == 4 * 3 * 4


@pytest.mark.parametrize("roi", [80, 112, 7])
def test_every_stride_is_reproduced_exactly_by_monai_scan_interval(roi):
    for stride in range(1, roi + 1):
        inferer = StridedSlidingWindowInferer((roi,), (stride,))
        assert _get_scan_interval((roi + 50,), (roi,), 1, inferer.overlap) == (stride,)


@pytest.mark.parametrize("strides", [(0, 4, 2), (9, 4, 2), (4, 4)])
def test_invalid_strides_are_rejected(strides):
    with pytest.raises(ValueError, match="strides"):
        StridedSlidingWindowInferer(ROI, strides)
