from __future__ import annotations

import pytest
import torch

from crossmatch_ext.networks import FeaturePerturbation, FeaturePerturbedNetwork, UNet, VNet


def _zeroed_channel_fraction(x: torch.Tensor) -> float:
    return (x.flatten(2).abs().amax(-1) == 0).float().mean().item()


@pytest.mark.parametrize("gap", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_rates_measured(gap: float) -> None:
    torch.manual_seed(0)
    perturbation = FeaturePerturbation(gap=gap).train()
    assert perturbation.weak_rate == pytest.approx(0.5 - gap / 2)
    assert perturbation.strong_rate == pytest.approx(0.5 + gap / 2)
    x = torch.ones(64, 128, 2, 2, 2)  # 8192 channels
    weak, strong = perturbation([x])
    for out, rate in ((weak[0], perturbation.weak_rate), (strong[0], perturbation.strong_rate)):
        assert _zeroed_channel_fraction(out) == pytest.approx(rate, abs=0.03)
        if rate < 1:
            survivors = out[out != 0]
            torch.testing.assert_close(survivors, torch.full_like(survivors, 1 / (1 - rate)))


def test_two_dimensional_channel_dropout() -> None:
    torch.manual_seed(0)
    perturbation = FeaturePerturbation(gap=0.5, spatial_dims=2).train()
    assert isinstance(perturbation.weak, torch.nn.Dropout2d)
    weak, strong = perturbation([torch.ones(64, 128, 3, 3)])
    assert _zeroed_channel_fraction(weak[0]) == pytest.approx(0.25, abs=0.03)
    assert _zeroed_channel_fraction(strong[0]) == pytest.approx(0.75, abs=0.03)


@pytest.mark.parametrize("kind", ["dropout", "alpha", "feature_alpha"])
def test_identity_in_eval_mode_and_active_in_train_mode(kind: str) -> None:
    perturbation = FeaturePerturbation(gap=0.5, kind=kind)
    assert {type(m) for m in perturbation.children()} <= {
        torch.nn.Dropout3d,
        torch.nn.AlphaDropout,
        torch.nn.FeatureAlphaDropout,
    }
    features = [torch.randn(2, 8, 4, 4, 4), torch.randn(2, 16, 2, 2, 2)]
    perturbation.train()
    weak, strong = perturbation(features)
    assert not torch.equal(weak[0], features[0]) and not torch.equal(strong[1], features[1])
    perturbation.eval()
    assert not perturbation.weak.training and not perturbation.strong.training
    weak, strong = perturbation(features)
    for out in (*weak, *strong):
        assert any(torch.equal(out, f) for f in features)


def test_feature_alpha_is_channel_wise() -> None:
    torch.manual_seed(0)
    perturbation = FeaturePerturbation(kind="feature_alpha").train()
    _, strong = perturbation([torch.randn(4, 64, 3, 3, 3)])
    flat = strong[0].flatten(2)
    constant = (flat.amax(-1) - flat.amin(-1)).abs() < 1e-6  # dropped channels are set to one value
    assert 0.6 < constant.float().mean().item() < 0.9


def test_independent_masks_per_level_and_strength() -> None:
    torch.manual_seed(0)
    perturbation = FeaturePerturbation(gap=0.0).train()  # both rates 0.5
    x = torch.ones(8, 64, 2, 2, 2)
    weak, strong = perturbation([x, x.clone()])
    masks = [out.flatten(2).amax(-1) > 0 for out in (weak[0], weak[1], strong[0], strong[1])]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.equal(masks[i], masks[j])


def test_bottleneck_level_only() -> None:
    torch.manual_seed(0)
    perturbation = FeaturePerturbation(levels="bottleneck").train()
    features = [torch.ones(4, 32, 2, 2, 2) for _ in range(5)]
    weak, strong = perturbation(features)
    for level in range(4):
        assert weak[level] is features[level] and strong[level] is features[level]
    assert _zeroed_channel_fraction(weak[4]) > 0 and _zeroed_channel_fraction(strong[4]) > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gap": 1.5}, "gap"),
        ({"gap": -0.1}, "gap"),
        ({"kind": "feature"}, "kind"),
        ({"levels": "skip"}, "levels"),
        ({"spatial_dims": 1}, "spatial_dims"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FeaturePerturbation(**kwargs)


def _vnet_model(**kwargs: object) -> FeaturePerturbedNetwork:
    return FeaturePerturbedNetwork(VNet(n_filters=4, **kwargs), FeaturePerturbation(gap=0.5))


def test_batch_layout_eval_mode() -> None:
    torch.manual_seed(0)
    model = _vnet_model().eval()
    x = torch.randn(3, 1, 16, 16, 16)
    with torch.no_grad():
        plain = model.network(x)
        torch.testing.assert_close(model(x), plain, rtol=0, atol=0)
        out = model(x, perturbed=2)
    assert out.shape == (7, 2, 16, 16, 16)
    clean, weak, strong = FeaturePerturbedNetwork.split(out, batch=3, perturbed=2)
    torch.testing.assert_close(clean, plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(weak, plain[1:], rtol=0, atol=1e-5)
    torch.testing.assert_close(strong, plain[1:], rtol=0, atol=1e-5)


def test_perturbed_rows_differ_when_perturbation_active() -> None:
    torch.manual_seed(0)
    model = _vnet_model().eval()
    model.perturbation.train()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        plain = model.network(x)
        clean, weak, strong = FeaturePerturbedNetwork.split(model(x, perturbed=1), 2, 1)
    torch.testing.assert_close(clean, plain, rtol=0, atol=1e-5)
    assert (weak - plain[1:]).abs().max() > 1e-3
    assert (strong - plain[1:]).abs().max() > 1e-3
    assert (weak - strong).abs().max() > 1e-3


def test_shared_bottleneck_mask_and_no_head_dropout() -> None:
    """Train mode, no normalization: clean and (identity-)perturbed rows share the bottleneck dropout mask."""
    torch.manual_seed(0)
    model = _vnet_model(normalization="none", dropout_rate=0.5).train()
    model.perturbation.eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        clean, weak, strong = FeaturePerturbedNetwork.split(model(x, perturbed=2), 2, 2)
    torch.testing.assert_close(weak, clean, rtol=0, atol=1e-6)
    torch.testing.assert_close(strong, clean, rtol=0, atol=1e-6)


def test_unet_layout_and_gradients() -> None:
    torch.manual_seed(0)
    model = FeaturePerturbedNetwork(UNet(features=(4, 8, 16, 32, 64)), FeaturePerturbation(spatial_dims=2)).train()
    x = torch.randn(4, 1, 32, 32)
    out = model(x, perturbed=2)
    assert out.shape == (8, 4, 32, 32)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_invalid_perturbed_count() -> None:
    model = _vnet_model().eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="perturbed"):
        model(x, perturbed=3)
    with pytest.raises(ValueError, match="perturbed"):
        model(x, perturbed=-1)
    with pytest.raises(ValueError, match="rows"):
        FeaturePerturbedNetwork.split(torch.zeros(5, 1), batch=2, perturbed=2)


def test_network_without_encode() -> None:
    with pytest.raises(TypeError, match="encode"):
        FeaturePerturbedNetwork(torch.nn.Conv3d(1, 1, 1), FeaturePerturbation())
