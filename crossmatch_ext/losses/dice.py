"""Soft Dice losses as the CrossMatch authors compute them.

The authors' Dice is one *global* Dice over the whole batch (all samples' voxels summed together), with squared
terms in the denominator, ``1 - (2 * sum(p * t) + s) / (sum(p^2) + sum(t^2) + s)``, and a confidence mask: voxels
whose pseudo-label confidence is below the threshold are left out of every sum. LA (binary) uses the foreground
class only with smoothing 1e-5; ACDC uses the mean over all four classes, background included, with smoothing 1e-4.

Unmasked, this is MONAI's ``DiceLoss(softmax=True, to_onehot_y=True, squared_pred=True, batch=True,
smooth_nr=s, smooth_dr=s)`` (``include_background=False`` for LA, ``True`` for ACDC); what ``DiceLoss`` lacks is
the mask. MONAI's ``MaskedDiceLoss`` applies its mask after the softmax and agrees with :class:`MaskedDiceLoss` when
given a one-hot target (both tested), but with ``to_onehot_y=True`` it multiplies the class-index map by the mask
*before* one-hot encoding, so masked-out voxels become background targets: they count in the background channel
that ACDC averages (a fully masked batch scores ``1 / C`` instead of 0). The trainer holds class-index pseudo-labels
and a ``(B, *spatial)`` mask, and shares one softmax between several loss terms, so the loss is computed here on
those directly, without one-hot or masked copies.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MaskedDiceLoss", "SupervisedLoss", "masked_soft_dice"]


def masked_soft_dice(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor | None = None,
    classes: Sequence[int] | None = None,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Global soft Dice loss over a batch, ignoring masked-out voxels.

    Args:
        probabilities: class probabilities ``(B, C, *spatial)`` (already softmax-ed).
        labels: hard labels ``(B, *spatial)`` or ``(B, 1, *spatial)`` with values in ``[0, C)``.
        valid: optional boolean/0-1 mask ``(B, *spatial)``; voxels where it is 0 count nowhere.
        classes: the class indices averaged (default: all ``C`` classes).
        smooth: the additive smoothing of numerator and denominator.

    Returns:
        A scalar tensor: the mean over ``classes`` of ``1 - (2I + smooth) / (Z + Y + smooth)``.
        With every voxel ignored the loss is exactly 0 (no signal), never NaN.

    Raises:
        ValueError: when the shapes of ``probabilities``, ``labels`` and ``valid`` disagree.
    """
    if probabilities.ndim < 3:
        raise ValueError(f"probabilities must be (B, C, *spatial), got shape {tuple(probabilities.shape)}.")
    if labels.ndim == probabilities.ndim and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != probabilities.shape[:1] + probabilities.shape[2:]:
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not match probabilities of shape {tuple(probabilities.shape)}."
        )
    if valid is not None:
        if valid.ndim == probabilities.ndim:
            valid = valid[:, 0]
        if valid.shape != labels.shape:
            raise ValueError(f"valid mask of shape {tuple(valid.shape)} does not match labels {tuple(labels.shape)}.")
    # Only the averaged classes are computed (each class's sums are independent of the others). The one-hot target is
    # a comparison with the class indices, and the mask is folded into it: with 0/1 weights ``w``,
    # ``(p w)(t w) = p (t w)``, ``(p w)^2 = p (p w)`` and ``(t w)^2 = t w`` hold exactly, so the sums equal those of
    # the textbook form ``sum((p w) (t w))`` etc. (up to float summation order).
    class_index = list(range(probabilities.shape[1])) if classes is None else [int(c) for c in classes]
    if class_index != list(range(probabilities.shape[1])):
        probabilities = probabilities[:, class_index]
    shape = [1, len(class_index)] + [1] * (probabilities.ndim - 2)
    ids = torch.tensor(class_index, device=labels.device, dtype=labels.dtype).view(shape)
    target = labels.unsqueeze(1) == ids
    if valid is not None:
        valid_w = valid.unsqueeze(1).bool()
        target = target & valid_w
        masked_probabilities = probabilities * valid_w.to(probabilities.dtype)
    else:
        masked_probabilities = probabilities
    target = target.to(probabilities.dtype)
    reduce_dims = [0] + list(range(2, probabilities.ndim))
    intersection = (probabilities * target).sum(reduce_dims)
    prediction_sq = (probabilities * masked_probabilities).sum(reduce_dims)
    target_sq = target.sum(reduce_dims)
    per_class = 1.0 - (2.0 * intersection + smooth) / (prediction_sq + target_sq + smooth)
    return per_class.mean()


class MaskedDiceLoss(nn.Module):
    """The authors' confidence-masked soft Dice on logits.

    Not MONAI's ``MaskedDiceLoss``: with class-index labels (``to_onehot_y=True``) that one masks the labels before
    one-hot encoding, so masked-out voxels count as background targets; see the module docstring.

    Args:
        classes: class indices averaged; ``(1,)`` for the binary LA task (foreground only), ``None`` for all
            classes including background (ACDC).
        smooth: additive smoothing (LA 1e-5, ACDC 1e-4).
    """

    def __init__(self, classes: Sequence[int] | None = None, smooth: float = 1e-5) -> None:
        super().__init__()
        self.classes = None if classes is None else tuple(int(c) for c in classes)
        self.smooth = float(smooth)

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Dice loss of ``softmax(logits)`` against ``labels`` over the voxels where ``valid`` is set."""
        probabilities = torch.softmax(logits.float(), dim=1)
        return masked_soft_dice(probabilities, labels, valid, self.classes, self.smooth)


class SupervisedLoss(nn.Module):
    """The supervised term ``(CE + Dice) / 2`` used on labeled images (and by the supervised baseline).

    Args:
        dice: the Dice loss (a :class:`MaskedDiceLoss` configured for the task).
    """

    def __init__(self, dice: MaskedDiceLoss) -> None:
        super().__init__()
        self.dice = dice

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean voxel cross-entropy plus global soft Dice, halved."""
        if labels.ndim == logits.ndim:
            labels = labels[:, 0]
        labels = labels.long()
        cross_entropy = F.cross_entropy(logits.float(), labels)
        return 0.5 * (cross_entropy + self.dice(logits, labels))
