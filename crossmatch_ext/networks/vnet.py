"""3D V-Net of the CrossMatch left-atrium experiments, split into an encoder and a decoder."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["VNet", "match_spatial_size"]

_NORMALIZATIONS = ("batch", "group", "instance", "none")


def match_spatial_size(x: Tensor, reference: Tensor) -> Tensor:
    """Zero-pad or crop ``x`` at the end of each spatial axis so that it has the spatial size of ``reference``.

    Args:
        x: tensor of shape ``(N, C, *spatial)``.
        reference: tensor of shape ``(N', C', *spatial')`` with ``len(spatial') == len(spatial)``.

    Returns:
        ``x`` itself when the sizes already agree, otherwise a padded (zeros) or cropped copy.
    """
    if x.shape[2:] == reference.shape[2:]:
        return x
    pad: list[int] = []
    # F.pad lists the last axis first; a negative amount crops.
    for axis in range(x.dim() - 1, 1, -1):
        pad += [0, reference.shape[axis] - x.shape[axis]]
    return F.pad(x, pad)


def _make_norm(normalization: str, channels: int) -> nn.Module:
    if normalization == "batch":
        return nn.BatchNorm3d(channels)
    if normalization == "group":
        return nn.GroupNorm(num_groups=math.gcd(16, channels), num_channels=channels)
    if normalization == "instance":
        return nn.InstanceNorm3d(channels)
    return nn.Identity()


class _ConvNormAct(nn.Module):
    """Convolution (or transposed convolution) -> normalization -> ReLU."""

    def __init__(self, conv: nn.Module, normalization: str, out_channels: int) -> None:
        super().__init__()
        self.conv = conv
        self.norm = _make_norm(normalization, out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


def _conv_stack(n_convs: int, in_channels: int, out_channels: int, normalization: str) -> nn.Sequential:
    units = []
    for i in range(n_convs):
        conv = nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, kernel_size=3, padding=1)
        units.append(_ConvNormAct(conv, normalization, out_channels))
    return nn.Sequential(*units)


class _EncoderStage(nn.Module):
    """Optional stride-2 down convolution followed by a stack of 3x3x3 convolutions."""

    def __init__(self, down: nn.Module, block: nn.Sequential) -> None:
        super().__init__()
        self.down = down
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return self.block(self.down(x))


class _DecoderStage(nn.Module):
    """Stride-2 transposed convolution, additive skip connection, then a stack of 3x3x3 convolutions."""

    def __init__(self, up: nn.Module, block: nn.Sequential) -> None:
        super().__init__()
        self.up = up
        self.block = block

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = match_spatial_size(self.up(x), skip)
        return self.block(x + skip)


class VNet(nn.Module):
    """V-Net with plain convolution blocks and additive skip connections (CrossMatch, left atrium).

    The topology is the one of the CrossMatch authors' LA network: encoder stages of 1, 2, 3, 3, 3 convolutions
    (``Conv3d`` 3x3x3 with bias -> normalization -> ReLU) with ``n_filters * (1, 2, 4, 8, 16)`` channels, joined by
    2x2x2 stride-2 convolutions; decoder stages of 3, 3, 2, 1 convolutions, each preceded by a 2x2x2 stride-2
    ``ConvTranspose3d`` whose output is *added* to the encoder feature of the same resolution; a 1x1x1 output
    convolution. With the defaults the network has 9,448,866 parameters (9,443,266 with ``normalization="none"``).

    The network exposes :meth:`encode` and :meth:`decode` so that feature perturbation can be applied between
    them (see :class:`~crossmatch_ext.networks.FeaturePerturbedNetwork`); :meth:`forward` is
    ``decode(encode(x))`` and is TorchScript-compatible.

    MONAI's ``monai.networks.nets.VNet`` is not used because it is a different network of the same name: Milletari
    et al.'s V-Net, with 5x5x5 convolutions, a residual addition in every stage, ELU or PReLU activations, skip
    features *concatenated* in the decoder and dropout inside the down and up transitions, and without an
    encoder/decoder split. The CrossMatch LA results (and the authors' weights) are those of this network.

    Any spatial size of at least 16 per axis is accepted: in the decoder each upsampled tensor is zero-padded at the
    end of each axis (or cropped) to the size of its skip feature, so the logits always have the input's spatial
    size. For sizes divisible by 16 this is exactly the original network.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels (classes, background included).
        n_filters: channels of the first stage; stage ``i`` has ``n_filters * 2**i`` channels.
        normalization: ``"batch"`` (``BatchNorm3d``), ``"group"`` (``GroupNorm`` with 16 groups, fewer when the
            channel count is not divisible by 16), ``"instance"`` (``InstanceNorm3d`` without affine parameters) or
            ``"none"``.
        dropout_rate: when positive, channel-wise ``Dropout3d`` with this rate is applied to the bottleneck
            feature (the last output of :meth:`encode`) and to the last decoder feature before the output
            convolution. The CrossMatch training network uses 0.5; inference networks use 0.

    Raises:
        ValueError: if ``normalization`` is unknown, a channel count is not positive or ``dropout_rate`` is not in
            ``[0, 1)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        normalization: str = "batch",
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"VNet: `normalization` must be one of {_NORMALIZATIONS}, got {normalization!r}.")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("n_filters", n_filters)):
            if value < 1:
                raise ValueError(f"VNet: `{name}` must be a positive integer, got {value}.")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"VNet: `dropout_rate` must be in [0, 1), got {dropout_rate}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.n_filters = n_filters
        self.normalization = normalization
        self.dropout_rate = float(dropout_rate)

        channels = [n_filters * 2**i for i in range(5)]
        encoder_convs = (1, 2, 3, 3, 3)
        decoder_convs = (3, 3, 2, 1)

        stages = [_EncoderStage(nn.Identity(), _conv_stack(encoder_convs[0], in_channels, channels[0], normalization))]
        for i in range(1, 5):
            down = _ConvNormAct(
                nn.Conv3d(channels[i - 1], channels[i], kernel_size=2, stride=2, padding=0), normalization, channels[i]
            )
            stages.append(_EncoderStage(down, _conv_stack(encoder_convs[i], channels[i], channels[i], normalization)))
        self.encoder = nn.ModuleList(stages)

        up_stages = []
        for i, n_convs in enumerate(decoder_convs):
            c_in, c_out = channels[4 - i], channels[3 - i]
            up = _ConvNormAct(nn.ConvTranspose3d(c_in, c_out, kernel_size=2, stride=2, padding=0), normalization, c_out)
            up_stages.append(_DecoderStage(up, _conv_stack(n_convs, c_out, c_out, normalization)))
        self.decoder = nn.ModuleList(up_stages)

        self.out_conv = nn.Conv3d(channels[0], out_channels, kernel_size=1, padding=0)
        self.bottleneck_dropout: nn.Module = nn.Dropout3d(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.head_dropout: nn.Module = nn.Dropout3d(dropout_rate) if dropout_rate > 0 else nn.Identity()

    @torch.jit.export
    def encode(self, x: Tensor) -> list[Tensor]:
        """Run the encoder.

        Args:
            x: input of shape ``(N, in_channels, H, W, D)`` with every spatial size at least 16.

        Returns:
            The five encoder features ``[x1, x2, x3, x4, x5]`` (full resolution first, bottleneck last, with
            ``n_filters * (1, 2, 4, 8, 16)`` channels); ``x5`` has been through the bottleneck dropout.

        Raises:
            ValueError: if ``x`` has not ``in_channels`` channels, is not 5-dimensional or a spatial size is
                smaller than 16.
        """
        if x.dim() != 5:
            raise ValueError("VNet.encode: expected a 5D input (N, C, H, W, D), got shape " + str(list(x.shape)) + ".")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                "VNet: the model takes " + str(self.in_channels) + "-channel images (in_channels), got an input with "
                + str(x.shape[1]) + " channels (shape " + str(list(x.shape)) + "): give single-modality images, or "
                "train a model with a matching in_channels."
            )
        if min(x.shape[2:]) < 16:
            raise ValueError(
                "VNet.encode: every spatial size must be at least 16, got " + str(list(x.shape[2:])) + "."
            )
        features: list[Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            features.append(x)
        features[-1] = self.bottleneck_dropout(features[-1])
        return features

    @torch.jit.export
    def decode(self, features: list[Tensor], head_dropout: bool = True) -> Tensor:
        """Run the decoder.

        Args:
            features: the five features returned by :meth:`encode` (possibly perturbed, batch sizes equal).
            head_dropout: apply the dropout before the output convolution (only present when
                ``dropout_rate > 0``, active in training mode). CrossMatch disables it on the feature-perturbed
                path.

        Returns:
            Logits of shape ``(N, out_channels, *spatial)`` with the spatial size of ``features[0]``.

        Raises:
            ValueError: if the number of features is not 5.
        """
        if len(features) != 5:
            raise ValueError("VNet.decode: expected 5 features, got " + str(len(features)) + ".")
        x = features[4]
        for i, stage in enumerate(self.decoder):
            x = stage(x, features[3 - i])
        if head_dropout:
            x = self.head_dropout(x)
        return self.out_conv(x)

    def forward(self, x: Tensor) -> Tensor:
        """Compute ``decode(encode(x))``.

        Args:
            x: input of shape ``(N, in_channels, H, W, D)``.

        Returns:
            Logits of shape ``(N, out_channels, H, W, D)``.
        """
        return self.decode(self.encode(x), True)
