"""The bundles' own strong-view pipelines (parsed from their train.yaml) against the authors' distributions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parents[2] / "bundles"


def _parsed(bundle: str, key: str, **overrides):
    parser = ConfigParser()
    parser.read_config(str(ROOT / bundle / "configs" / "train.yaml"))
    parser.update(overrides)
    return parser.get_parsed_content(key)


def test_acdc_strong_view_brightness_contrast_blur_and_8_bits():
    """Authors: p 0.8 ColorJitter(brightness 0.5, contrast 0.5) on an 8-bit slice, blur p 0.5, back to [0, 1]."""
    transform = _parsed("crossmatch_acdc", "train::strong_augmentation")
    transform.set_random_state(0)
    value = 100 / 255
    image = torch.full((1, 32, 32), value)
    factors = []
    for _ in range(600):
        out = torch.as_tensor(transform(image.clone()))
        levels = out * 255
        assert torch.allclose(levels, levels.round(), atol=1e-4)  # on the 8-bit lattice
        factors.append(float(out[0, 16, 16]) / value)  # a constant image: contrast and blur keep it constant
    factors = np.asarray(factors)
    unchanged = np.isclose(factors, 1.0, atol=0.006).mean()
    assert abs(unchanged - 0.2) < 0.06  # the 20 % without colour jitter (plus jitter factors that land near 1)
    jittered = factors[~np.isclose(factors, 1.0, atol=0.006)]
    assert jittered.min() >= 0.5 - 0.01 and jittered.max() <= 1.5 + 0.01
    assert abs(np.mean(jittered) - 1.0) < 0.05


def test_acdc_previous_strong_view_is_still_selectable():
    transform = _parsed("crossmatch_acdc", "train::strong_augmentation", strong_blur="per_axis", unlabeled_bits=0)
    names = [type(t).__name__ for t in transform.transforms]
    assert "RandGaussianSmooth" in names and "RandIsotropicGaussianSmooth" not in names


@pytest.mark.parametrize("choice, name", [("signed", "RandSignedGamma"), ("rescaled", "RandAdjustContrast")])
def test_la_strong_gamma_choice(choice, name):
    transform = _parsed("crossmatch_la", "train::strong_augmentation", strong_gamma=choice)
    inner = transform.transforms[0].transforms[0].transforms  # OneOf -> Compose(bias field, gamma)
    assert type(inner[1]).__name__ == name


def test_la_signed_gamma_keeps_the_background_of_a_zscored_crop():
    """On a z-scored crop (negative background) the authors' gamma keeps negative voxels negative; MONAI's
    RandAdjustContrast (rescaled to [0, 1] first) does not preserve the sign pattern."""
    image = torch.linspace(-0.8, 6.0, 1000).reshape(1, 10, 10, 10)
    signed = _parsed("crossmatch_la", "train::gammas::signed")
    signed.set_random_state(1)
    out = torch.as_tensor(signed(image))
    assert torch.equal(out < 0, image < 0)
