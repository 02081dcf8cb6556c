"""2D U-Net of the CrossMatch ACDC experiments, split into an encoder and a decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from crossmatch_ext.networks.vnet import match_spatial_size

__all__ = ["UNet"]


class _ConvNormAct2d(nn.Module):
    """``Conv2d`` 3x3 (padding 1, bias) -> ``BatchNorm2d`` -> ``LeakyReLU(0.01)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class _DoubleConv(nn.Module):
    """Two convolution units with element-wise dropout between them."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.first = _ConvNormAct2d(in_channels, out_channels)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.second = _ConvNormAct2d(out_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.dropout(self.first(x)))


class _EncoderStage(nn.Module):
    """Optional 2x2 max pooling followed by a double convolution."""

    def __init__(self, pool: nn.Module, block: _DoubleConv) -> None:
        super().__init__()
        self.pool = pool
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return self.block(self.pool(x))


class _DecoderStage(nn.Module):
    """1x1 convolution to the skip's channel count, bilinear x2 upsampling, concatenation ``[skip, upsampled]``,
    double convolution."""

    def __init__(self, in_channels: int, skip_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, skip_channels, kernel_size=1)
        self.up = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True)
        self.block = _DoubleConv(2 * skip_channels, skip_channels, 0.0)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = match_spatial_size(self.up(self.reduce(x)), skip)
        return self.block(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """2D U-Net with encoder dropout (CrossMatch, ACDC).

    The topology is the one of the CrossMatch authors' ACDC network: five encoder stages (the first without
    pooling, the others after a 2x2 max pooling), each a double convolution ``Conv2d`` 3x3 -> ``BatchNorm2d`` ->
    ``LeakyReLU(0.01)`` -> ``Dropout(p)`` (element-wise) -> ``Conv2d`` 3x3 -> ``BatchNorm2d`` -> ``LeakyReLU``;
    four decoder stages, each a 1x1 ``Conv2d`` to the skip's channel count, bilinear x2 upsampling
    (``align_corners=True``), concatenation ``[skip, upsampled]`` and a double convolution without dropout; a 3x3
    output convolution. With the defaults the network has 1,813,764 parameters.

    The authors' configuration says ``bilinear=False``, but their decoder never passes it on, so their up blocks
    use the 1x1 convolution and bilinear upsampling (not a transposed convolution); this network reproduces that.

    MONAI's ``monai.networks.nets.UNet`` is not used because it is another architecture (residual units,
    strided-convolution downsampling, transposed-convolution upsampling); the closest MONAI network,
    ``BasicUNet``, applies one dropout rate after both convolutions of every encoder *and* decoder block, where the
    authors use a rate per encoder stage (0.05 to 0.5) between the two convolutions only, and it ends with a 1x1
    output convolution instead of a 3x3 one. Neither exposes an encoder/decoder split for feature perturbation.

    The network exposes :meth:`encode` and :meth:`decode` so that feature perturbation can be applied between
    them; :meth:`forward` is ``decode(encode(x))`` and is TorchScript-compatible. Any spatial size of at least 16
    per axis is accepted: each upsampled tensor is zero-padded at the end of each axis (or cropped) to its skip's
    size, so the logits have the input's spatial size; for sizes divisible by 16 this is the original network.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels (classes, background included).
        features: channels of the five encoder stages.
        dropout: element-wise dropout rate inside each of the five encoder stages.

    Raises:
        ValueError: if ``features`` or ``dropout`` do not have 5 entries, a channel count is not positive or a
            dropout rate is not in ``[0, 1)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 4,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
    ) -> None:
        super().__init__()
        features = tuple(int(f) for f in features)
        dropout = tuple(float(p) for p in dropout)
        if len(features) != 5:
            raise ValueError(f"UNet: `features` must have 5 entries, got {len(features)}: {features}.")
        if len(dropout) != 5:
            raise ValueError(f"UNet: `dropout` must have 5 entries, got {len(dropout)}: {dropout}.")
        if min((in_channels, out_channels) + features) < 1:
            raise ValueError(
                "UNet: `in_channels`, `out_channels` and `features` must be positive, got "
                f"in_channels={in_channels}, out_channels={out_channels}, features={features}."
            )
        if any(not 0.0 <= p < 1.0 for p in dropout):
            raise ValueError(f"UNet: every `dropout` rate must be in [0, 1), got {dropout}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = features
        self.dropout = dropout

        stages = []
        for i in range(5):
            pool: nn.Module = nn.Identity() if i == 0 else nn.MaxPool2d(2)
            c_in = in_channels if i == 0 else features[i - 1]
            stages.append(_EncoderStage(pool, _DoubleConv(c_in, features[i], dropout[i])))
        self.encoder = nn.ModuleList(stages)
        self.decoder = nn.ModuleList([_DecoderStage(features[4 - i], features[3 - i]) for i in range(4)])
        self.out_conv = nn.Conv2d(features[0], out_channels, kernel_size=3, padding=1)

    @torch.jit.export
    def encode(self, x: Tensor) -> list[Tensor]:
        """Run the encoder.

        Args:
            x: input of shape ``(N, in_channels, H, W)`` with both spatial sizes at least 16.

        Returns:
            The five encoder features ``[x0, x1, x2, x3, x4]`` (full resolution first, bottleneck last).

        Raises:
            ValueError: if ``x`` has not ``in_channels`` channels, is not 4-dimensional or a spatial size is
                smaller than 16.
        """
        if x.dim() != 4:
            raise ValueError("UNet.encode: expected a 4D input (N, C, H, W), got shape " + str(list(x.shape)) + ".")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                "UNet: the model takes " + str(self.in_channels) + "-channel images (in_channels), got an input with "
                + str(x.shape[1]) + " channels (shape " + str(list(x.shape)) + "): give single-modality images, or "
                "train a model with a matching in_channels."
            )
        if min(x.shape[2:]) < 16:
            raise ValueError(
                "UNet.encode: every spatial size must be at least 16, got " + str(list(x.shape[2:])) + "."
            )
        features: list[Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            features.append(x)
        return features

    @torch.jit.export
    def decode(self, features: list[Tensor], head_dropout: bool = True) -> Tensor:
        """Run the decoder.

        Args:
            features: the five features returned by :meth:`encode` (possibly perturbed, batch sizes equal).
            head_dropout: accepted for an interface shared with :class:`~crossmatch_ext.networks.VNet`; it has no
                effect because this decoder has no dropout.

        Returns:
            Logits of shape ``(N, out_channels, H, W)`` with the spatial size of ``features[0]``.

        Raises:
            ValueError: if the number of features is not 5.
        """
        if len(features) != 5:
            raise ValueError("UNet.decode: expected 5 features, got " + str(len(features)) + ".")
        x = features[4]
        for i, stage in enumerate(self.decoder):
            x = stage(x, features[3 - i])
        return self.out_conv(x)

    def forward(self, x: Tensor) -> Tensor:
        """Compute ``decode(encode(x))``.

        Args:
            x: input of shape ``(N, in_channels, H, W)``.

        Returns:
            Logits of shape ``(N, out_channels, H, W)``.
        """
        return self.decode(self.encode(x), True)
