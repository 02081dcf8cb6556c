from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SimpleInferer, SlidingWindowInferer

from crossmatch_ext.inferers import ResampledInferer, resampled_shape


def _threshold_net(x: torch.Tensor) -> torch.Tensor:
    """Two-class logits: foreground where the intensity is above 0.5."""
    return torch.cat([0.5 - x, x - 0.5], dim=1) * 10


def test_resampled_shape():
    assert resampled_shape((183, 140, 88), 0.5) == (92, 70, 44)
    assert resampled_shape((10, 10), (0.5, 1.0)) == (5, 10)
    with pytest.raises(ValueError, match="one factor per spatial axis"):
        resampled_shape((4, 4, 4), (0.5, 0.5))


def test_identity_scale_runs_the_inner_inferer_unchanged():
    calls = []

    def net(x):
        calls.append(tuple(x.shape))
        return _threshold_net(x)

    x = torch.rand(1, 1, 12, 10, 8)
    out = ResampledInferer(SimpleInferer(), 1.0)(x, net)
    assert calls == [(1, 1, 12, 10, 8)]
    torch.testing.assert_close(out, _threshold_net(x))


def test_prediction_is_returned_on_the_input_grid():
    image = torch.zeros(1, 1, 48, 40, 24)
    image[..., 10:34, 8:30, 4:20] = 1.0  # a box, even-aligned so the half-resolution grid represents it
    seen = []

    def net(x):
        seen.append(tuple(x.shape))
        return _threshold_net(x)

    inferer = ResampledInferer(SlidingWindowInferer(roi_size=(16, 16, 8), sw_batch_size=2, overlap=0.25), 0.5)
    out = inferer(MetaTensor(image, affine=torch.diag(torch.tensor([0.625, 0.625, 0.625, 1.0]))), net)
    assert out.shape == (1, 2, 48, 40, 24)
    assert all(s[2:] == (16, 16, 8) for s in seen)  # windows at the coarse resolution
    assert isinstance(out, MetaTensor) and torch.allclose(out.affine[0, 0], torch.tensor(0.625, dtype=out.affine.dtype))
    pred, truth = out.argmax(1)[0], image[0, 0] > 0.5
    dice = 2 * (pred.bool() & truth).sum() / (pred.sum() + truth.sum())
    assert dice > 0.95


def test_2d_resampling():
    image = torch.zeros(2, 1, 20, 20)
    image[:, :, 4:16, 6:14] = 1
    out = ResampledInferer(SimpleInferer(), 0.5, antialias=False)(image, _threshold_net)
    assert out.shape == (2, 2, 20, 20)
    assert (out.argmax(1) == (image[:, 0] > 0.5).long()).float().mean() > 0.95
