"""Losses: the authors' confidence-masked soft Dice, the supervised term and the CrossMatch objective."""

from __future__ import annotations

from .crossmatch import LOSS_WEIGHT_ALIASES, LOSS_WEIGHT_PRESETS, CrossMatchLoss, PseudoLabel
from .dice import MaskedDiceLoss, SupervisedLoss, masked_soft_dice

__all__ = [
    "LOSS_WEIGHT_ALIASES",
    "LOSS_WEIGHT_PRESETS",
    "CrossMatchLoss",
    "MaskedDiceLoss",
    "PseudoLabel",
    "SupervisedLoss",
    "masked_soft_dice",
]
