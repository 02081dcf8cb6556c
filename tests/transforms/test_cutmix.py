from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose, RandGaussianNoise

from crossmatch_ext.transforms import RandCutMixBoxd, StrongViewsd, sample_cutmix_box


@pytest.mark.parametrize("shape", [(64, 48, 32), (40, 40)])
def test_box_volume_fraction_and_probability(shape):
    rng = np.random.RandomState(0)
    boxes = [sample_cutmix_box(rng, shape, prob=0.5) for _ in range(1000)]
    applied = [b for b in boxes if b.any()]
    assert 0.4 < len(applied) / len(boxes) < 0.6
    fractions = np.array([b.mean() for b in applied])
    assert fractions.min() > 0.005 and fractions.max() <= 0.41
    assert 0.15 < fractions.mean() < 0.25  # U(0.02, 0.4) has mean 0.21 before rounding down
    # a box is one axis-aligned block
    b = applied[0]
    nz = np.nonzero(b)
    block = b[tuple(slice(n.min(), n.max() + 1) for n in nz)]
    assert block.all()


def test_legacy_axis_order_reproduces_clipped_boxes():
    rng = np.random.RandomState(1)
    correct = np.mean([sample_cutmix_box(rng, (112, 112, 80), 1.0).mean() for _ in range(800)])
    legacy = np.mean([sample_cutmix_box(rng, (112, 112, 80), 1.0, legacy_axis_order=True).mean() for _ in range(800)])
    assert legacy < correct - 0.02  # the authors' bug makes boxes ~17 % of the patch instead of ~20 %


def test_rand_cutmix_boxd_independent_and_deterministic():
    item = {"image": torch.zeros(1, 16, 16, 8)}
    t = RandCutMixBoxd(["box1", "box2"], prob=1.0)
    t.set_random_state(3)
    out = t(item)
    assert out["box1"].shape == (1, 16, 16, 8) and out["box1"].dtype == torch.float32
    assert not torch.equal(out["box1"], out["box2"])
    t.set_random_state(3)
    assert torch.equal(t(item)["box1"], out["box1"])
    with pytest.raises(KeyError, match="reference key"):
        t({"other": torch.zeros(1, 4, 4)})


def test_strong_views_are_independent_copies_of_the_source():
    source = torch.zeros(1, 8, 8)
    t = StrongViewsd("image", ["s1", "s2"], Compose([RandGaussianNoise(prob=1.0, std=1.0)]))
    t.set_random_state(0)
    out = t({"image": source})
    assert torch.equal(out["image"], source)  # the weak view is untouched
    assert out["s1"].shape == source.shape and not torch.equal(out["s1"], out["s2"])
    t.set_random_state(0)
    again = t({"image": source})
    assert torch.equal(again["s1"], out["s1"])
