from __future__ import annotations

import pytest
import torch

from crossmatch_ext.networks import VNet, match_spatial_size


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("normalization", "expected"),
    [("batch", 9_448_866), ("none", 9_443_266), ("group", 9_448_866), ("instance", 9_443_266)],
)
def test_parameter_count(normalization: str, expected: int) -> None:
    assert _count(VNet(in_channels=1, out_channels=2, n_filters=16, normalization=normalization)) == expected


def test_dropout_adds_no_parameters() -> None:
    assert _count(VNet(dropout_rate=0.5)) == 9_448_866


@pytest.mark.parametrize("shape", [(32, 32, 16), (33, 35, 17)])
def test_encode_decode_shapes(shape: tuple[int, int, int]) -> None:
    net = VNet(in_channels=2, out_channels=3, n_filters=4).eval()
    x = torch.randn(2, 2, *shape)
    with torch.no_grad():
        features = net.encode(x)
        logits = net.decode(features)
    assert len(features) == 5
    expected_sizes = [list(shape)]
    for _ in range(4):
        expected_sizes.append([s // 2 for s in expected_sizes[-1]])
    for level, feature in enumerate(features):
        assert feature.shape[:2] == (2, 4 * 2**level)
        assert list(feature.shape[2:]) == expected_sizes[level]
    assert logits.shape == (2, 3, *shape)


@pytest.mark.parametrize("shape", [(32, 32, 16), (33, 35, 17)])
def test_scripted_forward_equals_eager(shape: tuple[int, int, int]) -> None:
    net = VNet(n_filters=8, dropout_rate=0.5).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, *shape)
    with torch.no_grad():
        eager = net(x)
        script_out = scripted(x)
        script_split = scripted.decode(scripted.encode(x))
    assert eager.shape == (1, 2, *shape)
    torch.testing.assert_close(script_out, eager, rtol=0, atol=1e-6)
    torch.testing.assert_close(script_split, eager, rtol=0, atol=1e-6)


def test_forward_is_decode_of_encode() -> None:
    net = VNet(n_filters=4).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.decode(net.encode(x)), rtol=0, atol=0)


def test_bottleneck_dropout_in_encode() -> None:
    torch.manual_seed(0)
    net = VNet(n_filters=8, normalization="none", dropout_rate=0.5).train()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        h = x
        for stage in net.encoder:
            h = stage(h)
        features = net.encode(x)
    # Channel-wise: each bottleneck channel is either zeroed or scaled by 1 / (1 - 0.5).
    zeroed = features[-1].flatten(2).abs().amax(-1) == 0
    assert zeroed.any() and (~zeroed).any()
    torch.testing.assert_close(features[-1][~zeroed], 2 * h[~zeroed])
    torch.testing.assert_close(features[3], net.encoder[3](net.encoder[2](net.encoder[1](net.encoder[0](x)))))


def test_head_dropout_switch() -> None:
    torch.manual_seed(0)
    net = VNet(n_filters=4, normalization="none", dropout_rate=0.5).train()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        features = net.encode(x)
        without = [net.decode(features, head_dropout=False) for _ in range(2)]
        with_dropout = [net.decode(features) for _ in range(2)]
    torch.testing.assert_close(without[0], without[1], rtol=0, atol=0)
    assert not torch.equal(with_dropout[0], with_dropout[1])
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)


def test_no_dropout_modules_without_rate() -> None:
    net = VNet(n_filters=4)
    assert not any(isinstance(m, torch.nn.Dropout3d) for m in net.modules())
    assert sum(isinstance(m, torch.nn.Dropout3d) for m in VNet(n_filters=4, dropout_rate=0.5).modules()) == 2


def test_match_spatial_size_pads_and_crops() -> None:
    x = torch.ones(1, 2, 4, 6, 5)
    ref = torch.zeros(1, 3, 5, 4, 5)
    out = match_spatial_size(x, ref)
    assert out.shape == (1, 2, 5, 4, 5)
    assert out[:, :, 4].abs().sum() == 0  # padded at the end of axis 0
    assert out[:, :, :4].min() == 1
    assert match_spatial_size(x, x) is x


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"normalization": "batchnorm"}, "normalization"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"n_filters": 0}, "n_filters"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VNet(**kwargs)


def test_too_small_input() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        VNet(n_filters=4)(torch.randn(1, 1, 16, 15, 16))
    with pytest.raises(ValueError, match="5D"):
        VNet(n_filters=4).encode(torch.randn(1, 16, 16, 16))
