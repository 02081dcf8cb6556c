"""Import of the CrossMatch authors' checkpoints (LA V-Net and ACDC U-Net) into this package's networks.

The authors' parameter names (AiEson/CrossMatch, ``LA/code/networks/vnet.py`` and ``ACDC/model/unet.py``) are
mapped onto :class:`~crossmatch_ext.networks.VNet` and :class:`~crossmatch_ext.networks.UNet`:

======================================================  ==============================================
authors' LA V-Net                                       :class:`VNet`
======================================================  ==============================================
``block_one.conv.{j}``                                  ``encoder.0.block.{unit}.{conv|norm}``
``block_{two..five}.conv.{j}``                          ``encoder.{1..4}.block.{unit}.{conv|norm}``
``block_{one..four}_dw.conv.{0|1}``                     ``encoder.{1..4}.down.{conv|norm}``
``block_{five..eight}_up.conv.{0|1}``                   ``decoder.{0..3}.up.{conv|norm}``
``block_{six..nine}.conv.{j}``                          ``decoder.{0..3}.block.{unit}.{conv|norm}``
``out_conv``                                            ``out_conv``
======================================================  ==============================================

In the authors' blocks each convolution unit occupies three ``nn.Sequential`` slots (conv, norm, ReLU), or two
without normalization (conv, ReLU), so ``unit = j // 3`` (``j // 2``).

======================================================  ==============================================
authors' ACDC U-Net                                     :class:`UNet`
======================================================  ==============================================
``encoder.in_conv.conv_conv.{j}``                       ``encoder.0.block.{first|second}.{conv|norm}``
``encoder.down{k}.maxpool_conv.1.conv_conv.{j}``        ``encoder.{k}.block.{first|second}.{conv|norm}``
``decoder.up{k}.conv1x1``                               ``decoder.{k-1}.reduce``
``decoder.up{k}.conv.conv_conv.{j}``                    ``decoder.{k-1}.block.{first|second}.{conv|norm}``
``decoder.out_conv``                                    ``out_conv``
======================================================  ==============================================

with ``conv_conv`` slots 0, 1, 4, 5 = first conv, first norm, second conv, second norm (2, 3, 6 are the
activation and dropout slots, which hold no parameters).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from crossmatch_ext.networks.perturbation import FeaturePerturbedNetwork
from crossmatch_ext.networks.unet import UNet
from crossmatch_ext.networks.vnet import VNet

__all__ = ["convert_official_state_dict", "load_official_checkpoint"]

_WRAPPER_KEYS = ("model", "state_dict", "net", "network")
_DDP_PREFIX = "module."
_MAX_LISTED = 12

_VNET_ENCODER_BLOCKS = {"block_one": 0, "block_two": 1, "block_three": 2, "block_four": 3, "block_five": 4}
_VNET_DOWN_BLOCKS = {"block_one_dw": 1, "block_two_dw": 2, "block_three_dw": 3, "block_four_dw": 4}
_VNET_UP_BLOCKS = {"block_five_up": 0, "block_six_up": 1, "block_seven_up": 2, "block_eight_up": 3}
_VNET_DECODER_BLOCKS = {"block_six": 0, "block_seven": 1, "block_eight": 2, "block_nine": 3}
_VNET_KEY = re.compile(r"^(block_[a-z_]+?)\.conv\.(\d+)\.(\w+)$")

_UNET_SLOTS = {0: "first.conv", 1: "first.norm", 4: "second.conv", 5: "second.norm"}
_UNET_PARAMETER_FREE_SLOTS = (2, 3, 6)
_UNET_IN_CONV = re.compile(r"^encoder\.in_conv\.conv_conv\.(\d+)\.(\w+)$")
_UNET_DOWN = re.compile(r"^encoder\.down([1-4])\.maxpool_conv\.1\.conv_conv\.(\d+)\.(\w+)$")
_UNET_UP_REDUCE = re.compile(r"^decoder\.up([1-4])\.conv1x1\.(weight|bias)$")
_UNET_UP_CONV = re.compile(r"^decoder\.up([1-4])\.conv\.conv_conv\.(\d+)\.(\w+)$")
_UNET_UP_TRANSPOSED = re.compile(r"^decoder\.up([1-4])\.up\.(weight|bias)$")

# Marks a key of a module that holds no parameters (activation, dropout): it is dropped.
_IGNORED = ""


def _unwrap(checkpoint: Mapping[str, object]) -> Mapping[str, object]:
    """Return the state dict inside a training checkpoint, or the mapping itself when it is already one."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"expected a state dict (a mapping of names to tensors), got {type(checkpoint).__name__}.")
    if all(isinstance(v, Tensor) for v in checkpoint.values()):
        return checkpoint
    for key in _WRAPPER_KEYS:
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping):
            return inner
    raise ValueError(
        "expected a state dict or a checkpoint dict holding one under one of the keys "
        f"{list(_WRAPPER_KEYS)}; found top-level keys {sorted(map(str, checkpoint))[:_MAX_LISTED]}."
    )


def _strip_ddp_prefix(key: str) -> str:
    while key.startswith(_DDP_PREFIX):
        key = key[len(_DDP_PREFIX) :]
    return key


def _vnet_target(key: str, normalization: str) -> str | None:
    """Map one authors' LA V-Net key onto :class:`VNet`; ``None`` when the key is not of that naming."""
    if key in ("out_conv.weight", "out_conv.bias"):
        return key
    if key.startswith(("dropout.", "pert.")):
        return _IGNORED
    match = _VNET_KEY.match(key)
    if match is None:
        return None
    block, slot, name = match.group(1), int(match.group(2)), match.group(3)
    slots_per_unit = 2 if normalization == "none" else 3
    unit, position = divmod(slot, slots_per_unit)
    if position == slots_per_unit - 1:  # the ReLU slot
        return _IGNORED
    layer = "conv" if position == 0 else "norm"
    if block in _VNET_ENCODER_BLOCKS:
        return f"encoder.{_VNET_ENCODER_BLOCKS[block]}.block.{unit}.{layer}.{name}"
    if block in _VNET_DECODER_BLOCKS:
        return f"decoder.{_VNET_DECODER_BLOCKS[block]}.block.{unit}.{layer}.{name}"
    if unit != 0:
        return None
    if block in _VNET_DOWN_BLOCKS:
        return f"encoder.{_VNET_DOWN_BLOCKS[block]}.down.{layer}.{name}"
    if block in _VNET_UP_BLOCKS:
        return f"decoder.{_VNET_UP_BLOCKS[block]}.up.{layer}.{name}"
    return None


def _check_vnet_normalization(source: Mapping[str, object], normalization: str) -> None:
    """Reject a checkpoint whose normalization layers do not fit ``normalization`` (the slot layout depends on it)."""
    norm_keys = [
        str(k)
        for k, v in source.items()
        if isinstance(v, Tensor)
        and _VNET_KEY.match(_strip_ddp_prefix(str(k))) is not None
        and (str(k).endswith(".running_mean") or (str(k).endswith(".weight") and v.dim() == 1))
    ]
    block_keys = [k for k in source if _VNET_KEY.match(_strip_ddp_prefix(str(k))) is not None]
    if norm_keys and normalization in ("none", "instance"):
        raise ValueError(
            f"the checkpoint has normalization parameters (e.g. {norm_keys[0]!r}) but the network was built with "
            f"normalization={normalization!r}; build it with normalization='batch' (the authors' training setting) "
            "or 'group' to match the checkpoint."
        )
    if block_keys and not norm_keys and normalization in ("batch", "group"):
        raise ValueError(
            "the checkpoint has no normalization parameters (authors' normalization 'none' or 'instancenorm') but the "
            f"network was built with normalization={normalization!r}; build it with normalization='none' or "
            "'instance' to match the checkpoint."
        )


def _unet_block_target(module: str, slot: int, name: str) -> str | None:
    """Map slot ``slot`` of an authors' ``conv_conv`` container onto ``{module}.{first|second}.{conv|norm}``."""
    if slot in _UNET_PARAMETER_FREE_SLOTS:
        return _IGNORED
    if slot not in _UNET_SLOTS:
        return None
    return f"{module}.{_UNET_SLOTS[slot]}.{name}"


def _unet_target(key: str) -> str | None:
    """Map one authors' ACDC U-Net key onto :class:`UNet`; ``None`` when the key is not of that naming."""
    if key in ("decoder.out_conv.weight", "decoder.out_conv.bias"):
        return key[len("decoder.") :]
    if key.startswith("pert."):
        return _IGNORED
    match = _UNET_IN_CONV.match(key)
    if match is not None:
        return _unet_block_target("encoder.0.block", int(match.group(1)), match.group(2))
    match = _UNET_DOWN.match(key)
    if match is not None:
        return _unet_block_target(f"encoder.{match.group(1)}.block", int(match.group(2)), match.group(3))
    match = _UNET_UP_REDUCE.match(key)
    if match is not None:
        return f"decoder.{int(match.group(1)) - 1}.reduce.{match.group(2)}"
    match = _UNET_UP_CONV.match(key)
    if match is not None:
        return _unet_block_target(f"decoder.{int(match.group(1)) - 1}.block", int(match.group(2)), match.group(3))
    return None


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return f"{len(keys)}: [{shown}{more}]"


def _convert(state_dict: Mapping[str, object], network: nn.Module, strict: bool) -> dict[str, Tensor]:
    prefix = ""
    target_network = network
    if isinstance(network, FeaturePerturbedNetwork):
        prefix, target_network = "network.", network.network
    if isinstance(target_network, VNet):
        description = "the authors' LA V-Net (LA/code/networks/vnet.py)"
        normalization = target_network.normalization

        def target_of(key: str) -> str | None:
            return _vnet_target(key, normalization)

    elif isinstance(target_network, UNet):
        description = "the authors' ACDC U-Net (ACDC/model/unet.py)"
        target_of = _unet_target
    else:
        raise TypeError(
            f"convert_official_state_dict: `network` must be a VNet, a UNet or a FeaturePerturbedNetwork around one, "
            f"got {type(target_network).__name__}."
        )

    expected = target_network.state_dict()
    source = _unwrap(state_dict)
    if isinstance(target_network, VNet):
        _check_vnet_normalization(source, target_network.normalization)
    converted: dict[str, Tensor] = {}
    unexpected: list[str] = []
    hints: list[str] = []
    for raw_key, value in source.items():
        key = _strip_ddp_prefix(str(raw_key))
        if not isinstance(value, Tensor):
            raise ValueError(f"entry {raw_key!r} of the state dict is a {type(value).__name__}, not a tensor.")
        target = key if key in expected else target_of(key)
        if target == _IGNORED:
            continue
        if target is None or target not in expected:
            unexpected.append(key)
            if isinstance(target_network, UNet) and _UNET_UP_TRANSPOSED.match(key):
                hints.append(
                    "the checkpoint's decoder uses transposed convolutions (`decoder.upK.up.weight`), whereas the "
                    "authors' U-Net (and this UNet) uses a 1x1 convolution followed by bilinear upsampling"
                )
            continue
        if target in converted:
            raise ValueError(f"two entries of the state dict map onto {target!r} (the second is {raw_key!r}).")
        if value.shape != expected[target].shape:
            raise ValueError(
                f"shape mismatch for {raw_key!r} -> {target!r}: checkpoint has {tuple(value.shape)}, the network "
                f"expects {tuple(expected[target].shape)} (check in/out channels, n_filters / features)."
            )
        converted[target] = value

    missing = [k for k in expected if k not in converted]
    if strict and (missing or unexpected or hints):
        parts = [f"cannot map the state dict onto {type(target_network).__name__} from {description}."]
        if missing:
            parts.append(f"Missing keys (network entries with no source) {_listing(missing)}.")
        if unexpected:
            parts.append(f"Unexpected keys (source entries with no place in the network) {_listing(unexpected)}.")
        parts.extend(f"Note: {hint}." for hint in dict.fromkeys(hints))
        raise ValueError(" ".join(parts))
    return {prefix + k: v for k, v in converted.items()}


def convert_official_state_dict(state_dict: Mapping[str, Tensor], network: nn.Module) -> dict[str, Tensor]:
    """Rename the CrossMatch authors' parameters so that ``network.load_state_dict`` accepts them.

    Accepts the authors' LA V-Net names for a :class:`VNet` and the authors' ACDC U-Net names for a :class:`UNet`
    (see the module docstring), as well as names that are already this package's. ``module.`` prefixes
    (``DistributedDataParallel``) are stripped, and a training checkpoint that holds the state dict under
    ``"model"``, ``"state_dict"``, ``"net"`` or ``"network"`` is unwrapped. Entries of modules that hold no
    parameters (activations, dropout, the authors' perturbation module) are ignored. When ``network`` is a
    :class:`FeaturePerturbedNetwork`, the keys are those of the whole wrapper (``network.`` prefix).

    Args:
        state_dict: the authors' state dict or training checkpoint.
        network: the network the result will be loaded into; selects the naming and provides the expected shapes.

    Returns:
        A state dict with ``network``'s key names.

    Raises:
        TypeError: if ``network`` is not a VNet, a UNet or a FeaturePerturbedNetwork around one.
        ValueError: if an entry cannot be mapped, a network entry has no source, or shapes disagree; the message
            lists the keys concerned.
    """
    try:
        return _convert(state_dict, network, strict=True)
    except ValueError as error:
        raise ValueError(f"convert_official_state_dict: {error}") from error


def load_official_checkpoint(path: str | Path, network: nn.Module, strict: bool = True) -> nn.Module:
    """Load a checkpoint written by the CrossMatch authors' code into ``network``.

    Args:
        path: a ``.pth`` file, e.g. the LA ``iter_14001.pth`` (a bare state dict) or the ACDC ``latest.pth`` (a
            dict with the state dict under ``"model"``, possibly with ``module.`` prefixes).
        network: a :class:`VNet`, a :class:`UNet` or a :class:`FeaturePerturbedNetwork` around one, built with the
            checkpoint's configuration.
        strict: when False, entries that cannot be mapped are skipped and network entries without a source keep
            their current values (shapes must still agree).

    Returns:
        ``network``, with the checkpoint's weights loaded.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file cannot be read as a PyTorch checkpoint or does not fit ``network``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_official_checkpoint: checkpoint file {str(path)!r} does not exist.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or non-checkpoint files
        raise ValueError(
            f"load_official_checkpoint: cannot read {str(path)!r} as a PyTorch checkpoint: {error}"
        ) from error
    try:
        converted = _convert(checkpoint, network, strict=strict)
    except ValueError as error:
        raise ValueError(f"load_official_checkpoint: {str(path)!r}: {error}") from error
    network.load_state_dict(converted, strict=strict)
    return network
