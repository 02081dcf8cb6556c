"""Import of checkpoints that use the CrossMatch authors' parameter names.

The reference networks below re-create the authors' module naming (LA/code/networks/vnet.py and ACDC/model/unet.py of
AiEson/CrossMatch) from the architecture description: nested ``nn.Sequential`` containers named ``conv`` /
``conv_conv`` / ``maxpool_conv``, so that their ``state_dict`` keys and shapes are those of the authors' checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossmatch_ext.networks import (
    FeaturePerturbation,
    FeaturePerturbedNetwork,
    UNet,
    VNet,
    convert_official_state_dict,
    load_official_checkpoint,
)


class _Seq(nn.Module):
    """A module holding its layers in an ``nn.Sequential`` attribute of a given name."""

    def __init__(self, attribute: str, layers: list[nn.Module]) -> None:
        super().__init__()
        self.attribute = attribute
        setattr(self, attribute, nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.attribute)(x)


def _units(convs: list[nn.Module], channels: int, norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for conv in convs:
        layers.append(conv)
        if norm:
            layers.append(nn.BatchNorm3d(channels))
        layers.append(nn.ReLU())
    return layers


class _AuthorsStyleVNet(nn.Module):
    """Key names: block_one.conv.0.weight, block_one_dw.conv.1.running_mean, block_five_up.conv.0.weight, ..."""

    def __init__(self, in_channels: int, out_channels: int, nf: int, norm: bool) -> None:
        super().__init__()
        ch = [nf, 2 * nf, 4 * nf, 8 * nf, 16 * nf]
        names = ["one", "two", "three", "four", "five"]
        for i, n_convs in enumerate((1, 2, 3, 3, 3)):
            c_in = in_channels if i == 0 else ch[i]
            convs = [nn.Conv3d(c_in if j == 0 else ch[i], ch[i], 3, padding=1) for j in range(n_convs)]
            setattr(self, f"block_{names[i]}", _Seq("conv", _units(convs, ch[i], norm)))
            if i < 4:
                down = nn.Conv3d(ch[i], ch[i + 1], 2, stride=2)
                setattr(self, f"block_{names[i]}_dw", _Seq("conv", _units([down], ch[i + 1], norm)))
        up_names = ["five", "six", "seven", "eight"]
        dec_names = ["six", "seven", "eight", "nine"]
        for i, n_convs in enumerate((3, 3, 2, 1)):
            c = ch[3 - i]
            up = nn.ConvTranspose3d(ch[4 - i], c, 2, stride=2)
            setattr(self, f"block_{up_names[i]}_up", _Seq("conv", _units([up], c, norm)))
            convs = [nn.Conv3d(c, c, 3, padding=1) for _ in range(n_convs)]
            setattr(self, f"block_{dec_names[i]}", _Seq("conv", _units(convs, c, norm)))
        self.out_conv = nn.Conv3d(nf, out_channels, 1)
        self.dropout = nn.Dropout3d(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        x5 = self.block_five(self.block_four_dw(x4))
        x = self.block_six(self.block_five_up(x5) + x4)
        x = self.block_seven(self.block_six_up(x) + x3)
        x = self.block_eight(self.block_seven_up(x) + x2)
        x = self.block_nine(self.block_eight_up(x) + x1)
        return self.out_conv(x)


def _double_conv(c_in: int, c_out: int, p: float) -> _Seq:
    layers = [
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(),
        nn.Dropout(p),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(),
    ]
    return _Seq("conv_conv", layers)


class _AuthorsStyleUpBlock(nn.Module):
    def __init__(self, c_in: int, c_skip: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(c_in, c_skip, 1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = _double_conv(2 * c_skip, c_skip, 0.0)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(self.conv1x1(x))], dim=1))


class _AuthorsStyleUNet(nn.Module):
    """Key names: encoder.in_conv.conv_conv.0.weight, encoder.down1.maxpool_conv.1.conv_conv.1.running_var,
    decoder.up1.conv1x1.weight, decoder.up1.conv.conv_conv.4.weight, decoder.out_conv.weight."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        ch, drop = [16, 32, 64, 128, 256], [0.05, 0.1, 0.2, 0.3, 0.5]
        self.encoder = nn.Module()
        self.encoder.in_conv = _double_conv(in_channels, ch[0], drop[0])
        for k in range(1, 5):
            block = _Seq("maxpool_conv", [nn.MaxPool2d(2), _double_conv(ch[k - 1], ch[k], drop[k])])
            setattr(self.encoder, f"down{k}", block)
        self.decoder = nn.Module()
        for k in range(1, 5):
            setattr(self.decoder, f"up{k}", _AuthorsStyleUpBlock(ch[5 - k], ch[4 - k]))
        self.decoder.out_conv = nn.Conv2d(ch[0], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.encoder
        x0 = e.in_conv(x)
        x1 = e.down1(x0)
        x2 = e.down2(x1)
        x3 = e.down3(x2)
        x4 = e.down4(x3)
        d = self.decoder
        x = d.up4(d.up3(d.up2(d.up1(x4, x3), x2), x1), x0)
        return d.out_conv(x)


def _randomize(module: nn.Module) -> None:
    """Random weights and normalization statistics, different from PyTorch's defaults."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                m.weight.copy_(1 + 0.2 * torch.randn_like(m.weight))
                m.bias.copy_(0.2 * torch.randn_like(m.bias))
                m.running_mean.copy_(0.2 * torch.randn_like(m.running_mean))
                m.running_var.copy_(torch.empty_like(m.running_var).uniform_(0.5, 1.5))
                m.num_batches_tracked.fill_(123)
            elif isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose3d)):
                m.bias.copy_(0.1 * torch.randn_like(m.bias))


def _authors_vnet(norm: bool = True, nf: int = 16) -> _AuthorsStyleVNet:
    torch.manual_seed(1)
    reference = _AuthorsStyleVNet(1, 2, nf, norm)
    _randomize(reference)
    return reference.eval()


def _authors_unet() -> _AuthorsStyleUNet:
    torch.manual_seed(2)
    reference = _AuthorsStyleUNet(1, 4)
    _randomize(reference)
    return reference.eval()


def _max_logit_difference(reference: nn.Module, ours: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (reference(x) - ours.eval()(x)).abs().max().item()


def test_reference_key_names_match_the_authors() -> None:
    vnet_keys = set(_authors_vnet(nf=4).state_dict())
    assert {
        "block_one.conv.0.weight",
        "block_one.conv.1.running_mean",
        "block_one_dw.conv.0.weight",
        "block_five.conv.6.weight",
        "block_five_up.conv.1.num_batches_tracked",
        "block_nine.conv.0.bias",
        "out_conv.weight",
    } <= vnet_keys
    unet_keys = set(_authors_unet().state_dict())
    assert {
        "encoder.in_conv.conv_conv.0.weight",
        "encoder.down4.maxpool_conv.1.conv_conv.5.running_var",
        "decoder.up1.conv1x1.weight",
        "decoder.up4.conv.conv_conv.4.bias",
        "decoder.out_conv.weight",
    } <= unet_keys
    assert sum(p.numel() for p in _authors_unet().parameters()) == 1_813_764
    assert sum(p.numel() for p in _authors_vnet().parameters()) == 9_448_866


def test_vnet_import_matches_logits() -> None:
    reference = _authors_vnet()
    ours = VNet(in_channels=1, out_channels=2, n_filters=16, normalization="batch", dropout_rate=0.5)
    converted = convert_official_state_dict(reference.state_dict(), ours)
    assert set(converted) == set(ours.state_dict())
    ours.load_state_dict(converted)
    x = torch.randn(2, 1, 32, 32, 16)
    assert _max_logit_difference(reference, ours, x) <= 1e-5
    assert ours.encoder[0].block[0].norm.num_batches_tracked.item() == 123


def test_vnet_import_without_normalization() -> None:
    reference = _authors_vnet(norm=False, nf=4)
    ours = VNet(n_filters=4, normalization="none")
    ours.load_state_dict(convert_official_state_dict(reference.state_dict(), ours))
    assert _max_logit_difference(reference, ours, torch.randn(1, 1, 16, 16, 32)) <= 1e-5


def test_unet_import_matches_logits() -> None:
    reference = _authors_unet()
    ours = UNet(in_channels=1, out_channels=4)
    converted = convert_official_state_dict(reference.state_dict(), ours)
    assert set(converted) == set(ours.state_dict())
    ours.load_state_dict(converted)
    assert _max_logit_difference(reference, ours, torch.randn(2, 1, 64, 64)) <= 1e-5


def test_ddp_prefix_and_checkpoint_wrapper() -> None:
    reference = _authors_unet()
    prefixed = {f"module.{k}": v for k, v in reference.state_dict().items()}
    checkpoint = {"model": prefixed, "optimizer": {"state": {}}, "epoch": 299, "previous_best": 88.5}
    ours = UNet()
    plain = convert_official_state_dict(reference.state_dict(), ours)
    for source in (prefixed, checkpoint, {"state_dict": prefixed}):
        converted = convert_official_state_dict(source, ours)
        assert converted.keys() == plain.keys()
        assert all(torch.equal(converted[k], plain[k]) for k in plain)


def test_own_key_names_pass_through() -> None:
    ours = VNet(n_filters=4)
    state = VNet(n_filters=4).state_dict()
    converted = convert_official_state_dict(state, ours)
    assert all(torch.equal(converted[k], state[k]) for k in state)


def test_wrong_key_is_reported() -> None:
    state = dict(_authors_vnet(nf=4).state_dict())
    state["block_ten.conv.0.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"Unexpected keys.*block_ten\.conv\.0\.weight"):
        convert_official_state_dict(state, VNet(n_filters=4))


def test_missing_key_is_reported() -> None:
    state = dict(_authors_unet().state_dict())
    del state["decoder.up2.conv1x1.bias"]
    with pytest.raises(ValueError, match=r"Missing keys.*decoder\.1\.reduce\.bias"):
        convert_official_state_dict(state, UNet())


def test_shape_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match=r"shape mismatch for 'block_one\.conv\.0\.weight'"):
        convert_official_state_dict(_authors_vnet(nf=4).state_dict(), VNet(n_filters=8))


def test_normalization_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match="normalization='none'"):
        convert_official_state_dict(_authors_vnet(nf=4).state_dict(), VNet(n_filters=4, normalization="none"))
    with pytest.raises(ValueError, match=r"no normalization parameters.*normalization='batch'"):
        convert_official_state_dict(_authors_vnet(norm=False, nf=4).state_dict(), VNet(n_filters=4))


def test_transposed_convolution_decoder_is_explained() -> None:
    state = dict(_authors_unet().state_dict())
    state["decoder.up1.up.weight"] = torch.zeros(256, 128, 2, 2)
    with pytest.raises(ValueError, match="bilinear upsampling"):
        convert_official_state_dict(state, UNet())


def test_unsupported_network() -> None:
    with pytest.raises(TypeError, match="VNet"):
        convert_official_state_dict({}, nn.Conv2d(1, 1, 1))


def test_load_official_checkpoint(tmp_path: Path) -> None:
    reference = _authors_unet()
    path = tmp_path / "latest.pth"
    torch.save({"model": {f"module.{k}": v for k, v in reference.state_dict().items()}, "epoch": 3}, path)
    ours = load_official_checkpoint(path, UNet())
    assert _max_logit_difference(reference, ours, torch.randn(1, 1, 32, 48)) <= 1e-5

    wrapped = FeaturePerturbedNetwork(UNet(), FeaturePerturbation(spatial_dims=2))
    load_official_checkpoint(str(path), wrapped)
    assert _max_logit_difference(reference, wrapped.network, torch.randn(1, 1, 32, 32)) <= 1e-5


def test_load_official_checkpoint_non_strict(tmp_path: Path) -> None:
    reference = _authors_vnet(nf=4)
    state = dict(reference.state_dict())
    state["extra_head.weight"] = torch.zeros(3)
    del state["out_conv.bias"]
    path = tmp_path / "iter_100.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"iter_100.pth"):
        load_official_checkpoint(path, VNet(n_filters=4))
    ours = load_official_checkpoint(path, VNet(n_filters=4), strict=False)
    torch.testing.assert_close(ours.out_conv.weight, reference.out_conv.weight, rtol=0, atol=0)


def test_load_official_checkpoint_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing.pth"):
        load_official_checkpoint(tmp_path / "nothing.pth", VNet(n_filters=4))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage.pth"):
        load_official_checkpoint(garbage, VNet(n_filters=4))
    not_a_state_dict = tmp_path / "list.pth"
    torch.save({"epoch": 3, "losses": [1.0]}, not_a_state_dict)
    with pytest.raises(ValueError, match=r"list\.pth.*'model'"):
        load_official_checkpoint(not_a_state_dict, VNet(n_filters=4))


def test_odd_input_uses_padding_not_reference_behaviour() -> None:
    """For sizes divisible by 16 the imported network equals the reference exactly; odd sizes still work."""
    ours = VNet(n_filters=4)
    ours.load_state_dict(convert_official_state_dict(_authors_vnet(nf=4).state_dict(), ours))
    with torch.no_grad():
        out = ours.eval()(torch.randn(1, 1, 17, 18, 19))
    assert out.shape == (1, 2, 17, 18, 19)
    assert F.softmax(out, dim=1).sum(1).allclose(torch.ones(1, 17, 18, 19))
