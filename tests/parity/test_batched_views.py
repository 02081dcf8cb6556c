"""Device views against the per-sample pipeline they replace: the same distributions.

The bundles' own strong augmentations (parsed from their train.yaml) run per sample, as the DataLoader workers run
them, and batched through :class:`crossmatch_ext.transforms.BatchedUnlabeledViews`; statistics over many samples
must agree (the draws differ by design: NumPy per worker against a ``torch.Generator`` per device). Equality of
each operation for a given draw is tested in tests/transforms/test_batched.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from crossmatch_ext.transforms import sample_cutmix_box, sample_cutmix_boxes, translate_strong_augmentation

ROOT = Path(__file__).resolve().parents[2] / "bundles"
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _parsed(bundle: str, key: str, **overrides):
    parser = ConfigParser()
    parser.read_config(str(ROOT / bundle / "configs" / "train.yaml"))
    parser.update(overrides)
    return parser.get_parsed_content(key)


def _per_sample(transform, image: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` outputs of the per-sample transform (as a worker makes them), stacked."""
    transform.set_random_state(seed)
    return torch.stack([torch.as_tensor(transform(image.clone())).float() for _ in range(n)])


def _batched(transform, image: torch.Tensor, n: int, seed: int = 1) -> torch.Tensor:
    """``n`` samples of the batched translation on ``n`` copies of ``image``, in one batch."""
    batched = translate_strong_augmentation(transform)
    x = image[None].repeat((n,) + (1,) * image.ndim)
    return batched(x, torch.ones(n, dtype=torch.bool), torch.Generator().manual_seed(seed))


def _assert_same_quantiles(a: np.ndarray, b: np.ndarray, tolerance: float, what: str) -> None:
    for q in QUANTILES:
        qa, qb = np.quantile(a, q), np.quantile(b, q)
        assert abs(qa - qb) < tolerance, f"{what}: quantile {q} per-sample {qa:.4f} vs batched {qb:.4f}"


# ---------------------------------------------------------------------------------------------- ACDC
def test_acdc_brightness_share_untouched_and_8_bit_lattice():
    """Constant slice: contrast and blur keep the centre, so it carries the brightness factor (or 1)."""
    transform = _parsed("crossmatch_acdc", "train::strong_augmentation")
    value = 100 / 255
    image = torch.full((1, 32, 32), value)
    factors = {}
    for name, out in (
        ("per-sample", _per_sample(transform, image, 1500)),
        ("batched", _batched(transform, image, 1500)),
    ):
        levels = out * 255
        assert torch.allclose(levels, levels.round(), atol=1e-4), name  # on the 8-bit lattice
        factors[name] = (out[:, 0, 16, 16] / value).numpy()
    for name, f in factors.items():
        unchanged = np.isclose(f, 1.0, atol=0.006)
        assert abs(unchanged.mean() - 0.2) < 0.05, name  # the 20 % without jitter (plus factors near 1)
        assert f[~unchanged].min() >= 0.5 - 0.01 and f[~unchanged].max() <= 1.5 + 0.01, name
    a, b = factors["per-sample"], factors["batched"]
    assert abs(np.isclose(a, 1.0, atol=0.006).mean() - np.isclose(b, 1.0, atol=0.006).mean()) < 0.05
    _assert_same_quantiles(a, b, 0.05, "brightness factor")


def test_acdc_brightness_and_contrast_in_random_order_with_clipping():
    """Two grey levels far from the borders: their difference carries the contrast factor (and the clip at 1 of
    the brighter one, which depends on the order of brightness and contrast); blur and quantisation off."""
    transform = _parsed("crossmatch_acdc", "train::strong_augmentation", unlabeled_bits=0)
    transform.transforms[1].prob = 0.0  # the blur (tested below), off
    image = torch.full((1, 48, 48), 0.5)
    image[:, :, 24:] = 0.9
    results = {}
    for name, out in (
        ("per-sample", _per_sample(transform, image, 2000)),
        ("batched", _batched(transform, image, 2000)),
    ):
        left, right = out[:, 0, 24, 10].numpy(), out[:, 0, 24, 38].numpy()
        assert out.min() >= 0.0 and out.max() <= 1.0, name
        results[name] = (right - left, (right + left) / 2, (right >= 1.0 - 1e-6).mean())
    (d_a, m_a, clip_a), (d_b, m_b, clip_b) = results["per-sample"], results["batched"]
    _assert_same_quantiles(d_a, d_b, 0.02, "grey-level difference")
    _assert_same_quantiles(m_a, m_b, 0.02, "mean grey level")
    # the brighter level clipped at 1: 0.8 x (32 % in random order, 24 % brightness first, 38 % contrast first)
    assert abs(clip_a - clip_b) < 0.04 and 0.22 < clip_a < 0.29


@pytest.mark.parametrize("blur", ["isotropic", "per_axis"])
def test_acdc_blur_probability_and_sigma(blur):
    """An impulse: blurred or exactly unchanged (p 0.5); its spread along each axis is sigma^2 (+ 1/12)."""
    transform = _parsed("crossmatch_acdc", f"train::blurs::{blur}")
    image = torch.zeros(1, 41, 41)
    image[0, 20, 20] = 1.0
    offsets = (torch.arange(41) - 20.0) ** 2
    spread = {}
    for name, out in (
        ("per-sample", _per_sample(transform, image, 2000)),
        ("batched", _batched(transform, image, 2000)),
    ):
        out = out[:, 0].double()
        blurred = (out != image[0].double()).flatten(1).any(1).numpy()
        assert abs(blurred.mean() - 0.5) < 0.04, name
        out = out[blurred]
        mass = out.sum((1, 2))
        var_y = ((out.sum(2) * offsets).sum(1) / mass).numpy()
        var_x = ((out.sum(1) * offsets).sum(1) / mass).numpy()
        for var in (var_y, var_x):  # sigma in [0.1, 2]: the spread of an erf kernel is about sigma^2 + 1/12
            assert var.min() >= 0.0 and var.max() <= 4.0 + 1 / 12 + 0.05, name
        if blur == "isotropic":
            np.testing.assert_allclose(var_y, var_x, rtol=1e-5, atol=1e-7)  # one sigma for both axes
        else:
            assert abs(np.corrcoef(var_y, var_x)[0, 1]) < 0.1, name  # independent per axis
        spread[name] = [np.sqrt(var) for var in (var_y, var_x)]  # about sigma for sigma >~ 0.5
    for axis in range(2):  # 1000 blurred samples each: these quantiles have a standard error of about 0.03
        a, b = spread["per-sample"][axis], spread["batched"][axis]
        _assert_same_quantiles(a, b, 0.12, f"spread along axis {axis}")
        assert abs(a.mean() - b.mean()) < 0.06, axis


# ---------------------------------------------------------------------------------------------- LA
def test_la_signed_gamma_log_gamma_is_uniform():
    """Constant image 2: sign(x)|x|^gamma = 2^gamma, so log(log2(out)) = log(gamma) ~ U(-0.5, 0.5)."""
    transform = _parsed("crossmatch_la", "train::gammas::signed")
    image = torch.full((1, 6, 6, 4), 2.0)
    logs = {}
    for name, out in (
        ("per-sample", _per_sample(transform, image, 2000)),
        ("batched", _batched(transform, image, 2000)),
    ):
        log_gamma = np.log(np.log2(out[:, 0, 3, 3, 2].double().numpy()))
        assert log_gamma.min() >= -0.5 - 1e-5 and log_gamma.max() <= 0.5 + 1e-5, name
        assert abs(log_gamma.mean()) < 0.02 and abs(log_gamma.std() - 1 / math.sqrt(12)) < 0.015, name
        logs[name] = log_gamma
    _assert_same_quantiles(logs["per-sample"], logs["batched"], 0.04, "log gamma")


def test_la_rescaled_gamma_range():
    """MONAI's gamma on an image spanning [0, 1]: the voxel at 0.5 becomes 0.5^gamma, gamma ~ U(0.6065, 1.6487)."""
    transform = _parsed("crossmatch_la", "train::gammas::rescaled")
    image = torch.full((1, 6, 6, 4), 0.5)
    image[0, 0, 0, 0], image[0, -1, -1, -1] = 0.0, 1.0
    gammas = {}
    for name, out in (
        ("per-sample", _per_sample(transform, image, 2000)),
        ("batched", _batched(transform, image, 2000)),
    ):
        gamma = np.log(out[:, 0, 3, 3, 2].double().numpy()) / np.log(0.5 / (1 + 1e-7))
        assert gamma.min() >= 0.6065 - 1e-4 and gamma.max() <= 1.6487 + 1e-4, name
        assert abs(gamma.mean() - (0.6065 + 1.6487) / 2) < 0.03, name
        gammas[name] = gamma
    _assert_same_quantiles(gammas["per-sample"], gammas["batched"], 0.06, "gamma")


def test_la_bias_field_distribution():
    """Constant image 1: log(out) is the field; |field| <= 20 * 0.5 (20 Legendre terms, |P| <= 1)."""
    transform = _parsed("crossmatch_la", "train::bias_and_gamma").transforms[0]
    assert type(transform).__name__ == "RandBiasField"
    image = torch.ones(1, 12, 10, 8)
    fields = {}
    for name, out in (
        ("per-sample", _per_sample(transform, image, 1500)),
        ("batched", _batched(transform, image, 1500)),
    ):
        field = torch.log(out[:, 0].double()).numpy()
        assert np.abs(field).max() <= 10.0, name
        fields[name] = field
    for point in ((6, 5, 4), (0, 0, 0), (11, 0, 7), (3, 9, 0)):
        a, b = fields["per-sample"][(slice(None), *point)], fields["batched"][(slice(None), *point)]
        spread = max(a.std(), b.std())
        _assert_same_quantiles(a, b, 0.12 * spread + 0.02, f"field at {point}")
        assert abs(a.std() - b.std()) < 0.1 * spread, point


def test_la_strong_view_share_untouched():
    """The whole LA strong view on a constant volume: the 20 % OneOf identity leaves the centre unchanged (blur of
    a constant keeps it); bias field and gamma change it."""
    transform = _parsed("crossmatch_la", "train::strong_augmentation")
    image = torch.full((1, 20, 20, 20), 1.5)
    shares = {}
    centres = {}
    for name, out in (
        ("per-sample", _per_sample(transform, image, 1200)),
        ("batched", _batched(transform, image, 1200)),
    ):
        centre = out[:, 0, 10, 10, 10].numpy()
        shares[name] = np.isclose(centre, 1.5, rtol=0, atol=1e-4).mean()
        assert abs(shares[name] - 0.2) < 0.04, name
        centres[name] = centre
    assert abs(shares["per-sample"] - shares["batched"]) < 0.05
    _assert_same_quantiles(np.log(centres["per-sample"]), np.log(centres["batched"]), 0.12, "log of the centre")


# ---------------------------------------------------------------------------------------------- CutMix boxes
def _box_sets(shape, n: int = 3000, legacy: bool = False):
    rng = np.random.RandomState(7)
    ours = np.stack([sample_cutmix_box(rng, shape, 0.5, legacy_axis_order=legacy) for _ in range(n)])
    generator = torch.Generator().manual_seed(8)
    chunks = [
        sample_cutmix_boxes(500, shape, generator, "cpu", 0.5, legacy_axis_order=legacy)[:, 0] for _ in range(n // 500)
    ]
    return ours, torch.cat(chunks).numpy()


def _compare_boxes(per_sample: np.ndarray, batched: np.ndarray, empty: float | None = 0.5) -> None:
    axes = tuple(range(1, per_sample.ndim))
    for boxes in (per_sample, batched):
        assert set(np.unique(boxes)) <= {0.0, 1.0}
    empty_a, empty_b = (per_sample.sum(axes) == 0).mean(), (batched.sum(axes) == 0).mean()
    assert abs(empty_a - empty_b) < 0.04
    if empty is not None:
        assert abs(empty_a - empty) < 0.04 and abs(empty_b - empty) < 0.04
    area_a = per_sample.mean(axes)[per_sample.sum(axes) > 0]
    area_b = batched.mean(axes)[batched.sum(axes) > 0]
    assert abs(area_a.mean() - area_b.mean()) < 0.01
    _assert_same_quantiles(area_a, area_b, 0.02, "box area / volume fraction")
    for axis in axes:  # extent along each axis: catches an exchanged axis order
        other = tuple(a for a in axes if a != axis)
        ext_a = per_sample.max(other).sum(1)[per_sample.sum(axes) > 0]
        ext_b = batched.max(other).sum(1)[batched.sum(axes) > 0]
        assert abs(ext_a.mean() - ext_b.mean()) < 0.04 * per_sample.shape[axis], axis
    assert np.abs(per_sample.mean(0) - batched.mean(0)).mean() < 0.02  # coverage maps


def test_2d_boxes_match_sample_cutmix_box():
    _compare_boxes(*_box_sets((64, 48)))


@pytest.mark.parametrize("legacy", [False, True])
def test_3d_boxes_match_sample_cutmix_box(legacy):
    per_sample, batched = _box_sets((20, 16, 12), legacy=legacy)
    # the legacy rule writes axis 0's range on the shorter last axis: some boxes fall outside, more are empty
    _compare_boxes(per_sample, batched, empty=None if legacy else 0.5)
    other, _ = _box_sets((20, 16, 12), n=1000, legacy=not legacy)
    assert np.abs(other.mean(0) - batched.mean(0)).mean() > 0.03  # the comparison tells the two rules apart
