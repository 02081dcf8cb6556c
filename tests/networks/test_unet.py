from __future__ import annotations

import pytest
import torch

from crossmatch_ext.networks import UNet


def test_parameter_count() -> None:
    net = UNet(in_channels=1, out_channels=4)
    assert sum(p.numel() for p in net.parameters()) == 1_813_764
    assert sum(p.numel() for p in net.encoder.parameters()) == 1_180_464


@pytest.mark.parametrize("shape", [(64, 64), (65, 63)])
def test_encode_decode_shapes(shape: tuple[int, int]) -> None:
    net = UNet(in_channels=2, out_channels=3, features=(4, 8, 16, 32, 64)).eval()
    x = torch.randn(2, 2, *shape)
    with torch.no_grad():
        features = net.encode(x)
        logits = net.decode(features)
    assert len(features) == 5
    sizes = [list(shape)]
    for _ in range(4):
        sizes.append([s // 2 for s in sizes[-1]])
    for level, feature in enumerate(features):
        assert feature.shape[:2] == (2, 4 * 2**level)
        assert list(feature.shape[2:]) == sizes[level]
    assert logits.shape == (2, 3, *shape)


@pytest.mark.parametrize("shape", [(64, 64), (65, 63)])
def test_scripted_forward_equals_eager(shape: tuple[int, int]) -> None:
    net = UNet().eval()
    scripted = torch.jit.script(net)
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        eager = net(x)
        torch.testing.assert_close(scripted(x), eager, rtol=0, atol=1e-6)
        torch.testing.assert_close(scripted.decode(scripted.encode(x)), eager, rtol=0, atol=1e-6)
    assert eager.shape == (2, 4, *shape)


def test_head_dropout_has_no_effect_and_encoder_dropout_is_active() -> None:
    torch.manual_seed(0)
    net = UNet(features=(4, 8, 16, 32, 64)).train()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        features = net.encode(x)
        torch.testing.assert_close(net.decode(features, head_dropout=False), net.decode(features), rtol=0, atol=0)
        assert not torch.equal(net.encode(x)[0], net.encode(x)[0])  # element-wise encoder dropout
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)


def test_dropout_layers() -> None:
    net = UNet()
    rates = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates == [0.05, 0.1, 0.2, 0.3, 0.5]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": (16, 32, 64, 128)}, "features"),
        ({"dropout": (0.1,) * 4}, "dropout"),
        ({"dropout": (1.0,) * 5}, "dropout"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_too_small_input() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        UNet()(torch.randn(1, 1, 15, 32))
