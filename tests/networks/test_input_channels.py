"""A 2-channel image given to a 1-channel model fails with a clear message, eagerly and in TorchScript."""

from __future__ import annotations

import pytest
import torch

from crossmatch_ext.networks import UNet, VNet


@pytest.mark.parametrize("net, shape", [(VNet(1, 2, n_filters=4), (1, 2, 16, 16, 16)), (UNet(1, 4), (1, 2, 32, 32))])
def test_wrong_channel_count(net: torch.nn.Module, shape: tuple[int, ...]):
    net.eval()
    name = type(net).__name__
    expected = rf"{name}: the model takes 1-channel images \(in_channels\), got an input with 2 channels \(shape"
    with pytest.raises(ValueError, match=expected):
        net(torch.zeros(shape))
    scripted = torch.jit.script(net)
    with pytest.raises(Exception, match=expected):  # torch.jit.Error carries the message
        scripted(torch.zeros(shape))
    ok = list(shape)
    ok[1] = 1
    assert scripted(torch.zeros(ok)).shape[1] == net.out_conv.out_channels
