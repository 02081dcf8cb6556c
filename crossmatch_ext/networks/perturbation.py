"""CrossMatch feature perturbation: weak and strong dropout of encoder features, and a network wrapper applying it."""

from __future__ import annotations

from typing import Protocol, cast

import torch
from torch import Tensor, nn

__all__ = ["EncoderDecoder", "FeaturePerturbation", "FeaturePerturbedNetwork"]


class EncoderDecoder(Protocol):
    """A segmentation network split at its encoder's output (:class:`VNet`, :class:`UNet`)."""

    def encode(self, x: Tensor) -> list[Tensor]:
        """Features of every encoder level, the bottleneck last."""
        ...

    def decode(self, features: list[Tensor], head_dropout: bool = True) -> Tensor:
        """Logits from the encoder features."""
        ...

_KINDS = ("dropout", "alpha", "feature_alpha")
_LEVELS = ("all", "bottleneck")


def _make_dropout(kind: str, rate: float, spatial_dims: int) -> nn.Module:
    if kind == "dropout":
        return nn.Dropout3d(rate) if spatial_dims == 3 else nn.Dropout2d(rate)
    if kind == "alpha":
        return nn.AlphaDropout(rate)
    return nn.FeatureAlphaDropout(rate)


class FeaturePerturbation(nn.Module):
    """Weak and strong dropout of encoder features (CrossMatch's feature-level perturbation).

    The weak rate is ``0.5 - gap / 2`` and the strong rate ``0.5 + gap / 2`` (gap 0.5 gives 0.25 / 0.75, the
    paper's "performance gap"). Each feature level and each strength draws its own independent mask.

    The two dropout modules are registered submodules, so ``.eval()`` switches the perturbation off like any other
    dropout. (The authors' implementation keeps them in a plain Python list, out of reach of ``.eval()``, so their
    perturbation is active even in evaluation mode; that behaviour is deliberately not reproduced. Keep the module in
    training mode wherever perturbed predictions are wanted.)

    Args:
        gap: difference between the strong and the weak dropout rate, in ``[0, 1]``.
        kind: ``"dropout"`` (channel-wise ``Dropout2d`` / ``Dropout3d``, the authors' default), ``"alpha"``
            (``AlphaDropout``, element-wise) or ``"feature_alpha"`` (``FeatureAlphaDropout``, channel-wise).
        levels: ``"all"`` perturbs every encoder level (skip features and bottleneck), as the authors' code does;
            ``"bottleneck"`` perturbs only the last feature, as the paper's text describes, and passes the other
            levels through unchanged.
        spatial_dims: 2 or 3, selects ``Dropout2d`` or ``Dropout3d`` for ``kind="dropout"``.

    Raises:
        ValueError: if an argument is outside its allowed values.
    """

    def __init__(self, gap: float = 0.5, kind: str = "dropout", levels: str = "all", spatial_dims: int = 3) -> None:
        super().__init__()
        if not 0.0 <= gap <= 1.0:
            raise ValueError(f"FeaturePerturbation: `gap` must be in [0, 1], got {gap}.")
        if kind not in _KINDS:
            raise ValueError(f"FeaturePerturbation: `kind` must be one of {_KINDS}, got {kind!r}.")
        if levels not in _LEVELS:
            raise ValueError(f"FeaturePerturbation: `levels` must be one of {_LEVELS}, got {levels!r}.")
        if spatial_dims not in (2, 3):
            raise ValueError(f"FeaturePerturbation: `spatial_dims` must be 2 or 3, got {spatial_dims}.")
        self.gap = float(gap)
        self.kind = kind
        self.levels = levels
        self.spatial_dims = spatial_dims
        self.weak = _make_dropout(kind, self.weak_rate, spatial_dims)
        self.strong = _make_dropout(kind, self.strong_rate, spatial_dims)

    @property
    def weak_rate(self) -> float:
        """Dropout rate of the weak perturbation, ``0.5 - gap / 2``."""
        return 0.5 - self.gap / 2

    @property
    def strong_rate(self) -> float:
        """Dropout rate of the strong perturbation, ``0.5 + gap / 2``."""
        return 0.5 + self.gap / 2

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Perturb a list of encoder features twice, weakly and strongly.

        Args:
            features: encoder features, full resolution first and bottleneck last.

        Returns:
            ``(weak_features, strong_features)``, two lists as long as ``features``. With ``levels="bottleneck"``
            all but the last entry are the input tensors themselves.
        """
        last = len(features) - 1
        weak: list[Tensor] = []
        strong: list[Tensor] = []
        for i, feature in enumerate(features):
            if self.levels == "bottleneck" and i != last:
                weak.append(feature)
                strong.append(feature)
            else:
                weak.append(self.weak(feature))
                strong.append(self.strong(feature))
        return weak, strong

    def extra_repr(self) -> str:
        return (
            f"gap={self.gap}, kind={self.kind!r}, levels={self.levels!r}, spatial_dims={self.spatial_dims}, "
            f"weak_rate={self.weak_rate}, strong_rate={self.strong_rate}"
        )


class FeaturePerturbedNetwork(nn.Module):
    """An encoder-decoder network whose forward pass can append feature-perturbed predictions to the batch.

    This is the module a trainer (and ``DistributedDataParallel``) wraps, so that every pass, clean or perturbed,
    goes through :meth:`forward`. With ``perturbed = k > 0`` the encoder runs once on the whole batch of ``N``
    samples; the features of the last ``k`` samples are perturbed weakly and strongly, appended to the clean
    features along the batch dimension, and the decoder runs once on the ``N + 2k`` rows:

    - rows ``[0, N)``: clean predictions of all inputs,
    - rows ``[N, N + k)``: weakly perturbed predictions of the last ``k`` inputs,
    - rows ``[N + k, N + 2k)``: strongly perturbed predictions of the last ``k`` inputs.

    With ``N = 2k`` this is the authors' ``need_fp`` layout ``(pred_A, pred_B, pred_B_weak, pred_B_strong)``. As in
    their code, the clean and the perturbed rows share the encoder's output, including the mask of the network's
    bottleneck dropout (it is drawn once, inside :meth:`encode`), and the dropout before the output convolution is
    skipped on the perturbed path (``decode(..., head_dropout=False)``). On the clean path (``perturbed=0``) the
    network runs exactly as ``network.decode(network.encode(x))``.

    Args:
        network: a network with ``encode(x) -> list[Tensor]`` and ``decode(features, head_dropout=True)``, such as
            :class:`~crossmatch_ext.networks.VNet` or :class:`~crossmatch_ext.networks.UNet`.
        perturbation: the feature perturbation applied between encoder and decoder.

    Raises:
        TypeError: if ``network`` has no ``encode`` / ``decode`` methods.
    """

    def __init__(self, network: nn.Module, perturbation: FeaturePerturbation) -> None:
        super().__init__()
        for method in ("encode", "decode"):
            if not callable(getattr(network, method, None)):
                raise TypeError(
                    f"FeaturePerturbedNetwork: `network` must provide an `{method}` method, "
                    f"got {type(network).__name__}."
                )
        self.network = network
        self.perturbation = perturbation

    def forward(self, x: Tensor, perturbed: int = 0) -> Tensor:
        """Predict ``x``, optionally appending weakly and strongly perturbed predictions of its last rows.

        Args:
            x: input batch of ``N`` samples.
            perturbed: number ``k`` of trailing samples whose features are perturbed; 0 for a plain forward pass.

        Returns:
            Logits with ``N + 2k`` rows laid out as described in the class docstring.

        Raises:
            ValueError: if ``perturbed`` is negative or larger than the batch size.
        """
        batch = x.shape[0]
        if perturbed < 0 or perturbed > batch:
            raise ValueError(
                f"FeaturePerturbedNetwork: `perturbed` must be in [0, batch size = {batch}], got {perturbed}."
            )
        network = cast(EncoderDecoder, self.network)  # checked in __init__
        features = network.encode(x)
        if perturbed == 0:
            return network.decode(features)
        weak, strong = self.perturbation([f[batch - perturbed :] for f in features])
        stacked = [torch.cat([f, w, s], dim=0) for f, w, s in zip(features, weak, strong)]
        return network.decode(stacked, head_dropout=False)

    @staticmethod
    def split(output: Tensor, batch: int, perturbed: int) -> tuple[Tensor, Tensor, Tensor]:
        """Split the output of ``forward(x, perturbed)`` into its three parts.

        Args:
            output: logits with ``batch + 2 * perturbed`` rows.
            batch: number ``N`` of input samples.
            perturbed: number ``k`` of perturbed samples.

        Returns:
            ``(clean, weak, strong)`` with ``N``, ``k`` and ``k`` rows (views of ``output``).

        Raises:
            ValueError: if the number of rows of ``output`` is not ``batch + 2 * perturbed``.
        """
        if output.shape[0] != batch + 2 * perturbed:
            raise ValueError(
                f"FeaturePerturbedNetwork.split: expected {batch} + 2 * {perturbed} = {batch + 2 * perturbed} rows, "
                f"got {output.shape[0]}."
            )
        return output[:batch], output[batch : batch + perturbed], output[batch + perturbed :]
