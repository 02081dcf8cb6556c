"""The CrossMatch objective: supervised, image-perturbation and knowledge-distillation terms.

Symbols of the paper and the names used here:

* ``Lx`` (supervised): ``(CE + Dice) / 2`` on the labeled batch.
* ``Ls1``, ``Ls2`` (image perturbation): the students on the two strong views (CutMix-ed) against the teacher's
  pseudo-label of the weak view (box region taken from the mix image's teacher prediction).
* ``L_tkd`` (teacher distillation, 4 terms): the weakly and strongly feature-perturbed decoders of the weak view
  (``p_ww``, ``p_ws``) against the teacher, and those of the second strong view (``p_sw``, ``p_ss``) against the
  CutMix-ed teacher.
* ``L_dkd`` (decoder distillation, 2 terms): ``p_sw`` against the weakly perturbed decoder of the weak view and
  ``p_ss`` against its strongly perturbed decoder (each a "teaching assistant" of the same perturbation strength).
* ``Lkd = (1 - eta) * mean(L_tkd) + eta * mean(L_dkd)``.

Every unsupervised term is the confidence-masked Dice of :mod:`crossmatch_ext.losses.dice`, with the target
confidence thresholded by the current threshold.

Total loss, per weighting preset (named for the weights, so any dataset can pick one):

* ``"strong_distillation"`` (the authors' current LA code): ``0.5 Lx + 0.25 mean(Ls1, Ls2) + 0.5 Lkd``;
* ``"light_distillation"`` (the authors' current ACDC code): ``0.5 Lx + 0.25 mean(Ls1, Ls2) + 0.25 Lkd``;
* ``"paper"`` (the code the paper's tables came from, May 2024): ``(Lx + 0.5 Ls1 + 0.5 Ls2 + Lkd) / 3``.

The former names ``"la"`` and ``"acdc"`` are accepted as aliases (:data:`LOSS_WEIGHT_ALIASES`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from .dice import MaskedDiceLoss, SupervisedLoss, masked_soft_dice

__all__ = ["LOSS_WEIGHT_ALIASES", "LOSS_WEIGHT_PRESETS", "CrossMatchLoss", "PseudoLabel"]

#: (supervised, image perturbation on mean(Ls1, Ls2), distillation) weights of each preset.
LOSS_WEIGHT_PRESETS: dict[str, tuple[float, float, float]] = {
    "strong_distillation": (0.5, 0.25, 0.5),
    "light_distillation": (0.5, 0.25, 0.25),
    "paper": (1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0),
}
#: Former preset names, still accepted: the datasets whose authors' code uses each weighting.
LOSS_WEIGHT_ALIASES: dict[str, str] = {"la": "strong_distillation", "acdc": "light_distillation"}


class PseudoLabel(NamedTuple):
    """A hard pseudo-label and its confidence (max softmax probability), both without gradient."""

    label: torch.Tensor
    confidence: torch.Tensor

    @classmethod
    def from_logits(cls, logits: torch.Tensor) -> PseudoLabel:
        """Arg-max label and max-softmax confidence of ``(B, C, *spatial)`` logits (detached)."""
        probabilities = torch.softmax(logits.detach().float(), dim=1)
        confidence, label = probabilities.max(dim=1)
        return cls(label, confidence)

    def mixed(self, box: torch.Tensor | None, other: PseudoLabel) -> PseudoLabel:
        """This pseudo-label with the CutMix ``box`` region (``(B, *spatial)``, 1 inside) taken from ``other``."""
        if box is None:
            return self
        inside = box.bool()
        return PseudoLabel(
            torch.where(inside, other.label, self.label), torch.where(inside, other.confidence, self.confidence)
        )

    def valid(self, threshold: float) -> torch.Tensor:
        """Voxels whose confidence reaches ``threshold``."""
        return self.confidence >= threshold


class CrossMatchLoss(nn.Module):
    """All nine CrossMatch loss terms and their weighted sum.

    Args:
        dice: the confidence-masked Dice (foreground-only for LA, all classes for ACDC).
        weighting: ``"strong_distillation"``, ``"light_distillation"`` or ``"paper"`` (see the module docstring;
            ``"la"`` and ``"acdc"`` are aliases of the first two); explicit weights below override it.
        eta: weight of the decoder-distillation terms inside ``Lkd`` (the paper's eta, 0.3).
        supervised_weight: weight of ``Lx`` (default from ``weighting``).
        image_weight: weight of ``mean(Ls1, Ls2)`` (default from ``weighting``).
        distillation_weight: weight of ``Lkd`` (default from ``weighting``).

    Raises:
        ValueError: for an unknown ``weighting`` or ``eta`` outside [0, 1].
    """

    def __init__(
        self,
        dice: MaskedDiceLoss,
        weighting: str = "strong_distillation",
        eta: float = 0.3,
        supervised_weight: float | None = None,
        image_weight: float | None = None,
        distillation_weight: float | None = None,
    ) -> None:
        super().__init__()
        weighting = LOSS_WEIGHT_ALIASES.get(weighting, weighting)
        if weighting not in LOSS_WEIGHT_PRESETS:
            raise ValueError(
                f"weighting must be one of {sorted(LOSS_WEIGHT_PRESETS)} (or an alias {sorted(LOSS_WEIGHT_ALIASES)}), "
                f"got {weighting!r}."
            )
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}.")
        preset = LOSS_WEIGHT_PRESETS[weighting]
        self.weighting = weighting
        self.eta = float(eta)
        self.supervised_weight = preset[0] if supervised_weight is None else float(supervised_weight)
        self.image_weight = preset[1] if image_weight is None else float(image_weight)
        self.distillation_weight = preset[2] if distillation_weight is None else float(distillation_weight)
        self.dice = dice
        self.supervised = SupervisedLoss(dice)

    def forward(
        self,
        *,
        labeled_logits: torch.Tensor,
        labels: torch.Tensor,
        strong1_logits: torch.Tensor,
        strong2_logits: torch.Tensor,
        weak_view_weak_fp_logits: torch.Tensor,
        weak_view_strong_fp_logits: torch.Tensor,
        strong2_weak_fp_logits: torch.Tensor,
        strong2_strong_fp_logits: torch.Tensor,
        teacher: PseudoLabel,
        teacher_mixed1: PseudoLabel,
        teacher_mixed2: PseudoLabel,
        weak_fp_mixed2: PseudoLabel,
        strong_fp_mixed2: PseudoLabel,
        threshold: float,
    ) -> dict[str, torch.Tensor]:
        """Compute every term.

        Args:
            labeled_logits: student logits of the labeled batch.
            labels: ground truth of the labeled batch.
            strong1_logits: student logits of strong view 1 (CutMix-ed with box 1).
            strong2_logits: student logits of strong view 2 (CutMix-ed with box 2), clean features.
            weak_view_weak_fp_logits: the weak view decoded from weakly perturbed features (``p_ww``).
            weak_view_strong_fp_logits: the weak view decoded from strongly perturbed features (``p_ws``).
            strong2_weak_fp_logits: strong view 2 from weakly perturbed features (``p_sw``).
            strong2_strong_fp_logits: strong view 2 from strongly perturbed features (``p_ss``).
            teacher: pseudo-label of the clean weak view.
            teacher_mixed1: ``teacher`` with box 1 taken from the mix image's teacher.
            teacher_mixed2: ``teacher`` with box 2 taken from the mix image's teacher.
            weak_fp_mixed2: the weak-FP pseudo-label of the weak view, box 2 from the mix image's weak FP.
            strong_fp_mixed2: the strong-FP pseudo-label of the weak view, box 2 from the mix image's strong FP.
            threshold: the confidence threshold of this step.

        Returns:
            ``loss`` (the weighted total) and every term: ``loss_supervised``, ``loss_strong1``, ``loss_strong2``,
            ``loss_teacher_kd`` (mean of 4), ``loss_decoder_kd`` (mean of 2), ``loss_kd``, and the individual
            distillation terms ``kd_teacher_ww``, ``kd_teacher_ws``, ``kd_teacher_sw``, ``kd_teacher_ss``,
            ``kd_decoder_sw``, ``kd_decoder_ss``.
        """

        terms = self.labeled_and_weak_view_terms(
            labeled_logits=labeled_logits,
            labels=labels,
            weak_view_weak_fp_logits=weak_view_weak_fp_logits,
            weak_view_strong_fp_logits=weak_view_strong_fp_logits,
            teacher=teacher,
            threshold=threshold,
        )
        terms.update(
            self.strong_view_terms(
                strong1_logits=strong1_logits,
                strong2_logits=strong2_logits,
                strong2_weak_fp_logits=strong2_weak_fp_logits,
                strong2_strong_fp_logits=strong2_strong_fp_logits,
                teacher_mixed1=teacher_mixed1,
                teacher_mixed2=teacher_mixed2,
                weak_fp_mixed2=weak_fp_mixed2,
                strong_fp_mixed2=strong_fp_mixed2,
                threshold=threshold,
            )
        )
        return self.combine(terms)

    def _masked_terms(
        self, threshold: float, pairs: dict[str, tuple[torch.Tensor, PseudoLabel]]
    ) -> dict[str, torch.Tensor]:
        """Confidence-masked Dice of each ``name: (logits, pseudo-label)``.

        The softmax of each logits tensor is computed once (two strong-view outputs serve two terms each) and the
        confidence mask of each pseudo-label once (``teacher_mixed2`` serves three terms).
        """
        probabilities: dict[int, torch.Tensor] = {}
        valid_masks: dict[int, torch.Tensor] = {}
        plain = isinstance(self.dice, MaskedDiceLoss) and type(self.dice).forward is MaskedDiceLoss.forward
        terms: dict[str, torch.Tensor] = {}
        for name, (logits, target) in pairs.items():
            if id(target) not in valid_masks:
                valid_masks[id(target)] = target.valid(threshold)
            valid = valid_masks[id(target)]
            if not plain:
                terms[name] = self.dice(logits, target.label, valid)
                continue
            if id(logits) not in probabilities:
                probabilities[id(logits)] = torch.softmax(logits.float(), dim=1)
            terms[name] = masked_soft_dice(
                probabilities[id(logits)], target.label, valid, self.dice.classes, self.dice.smooth
            )
        return terms

    def labeled_and_weak_view_terms(
        self,
        *,
        labeled_logits: torch.Tensor,
        labels: torch.Tensor,
        weak_view_weak_fp_logits: torch.Tensor,
        weak_view_strong_fp_logits: torch.Tensor,
        teacher: PseudoLabel,
        threshold: float,
    ) -> dict[str, torch.Tensor]:
        """The three terms of the pass on ``[labeled; weak view]``: ``loss_supervised``, ``kd_teacher_ww/ws``."""
        terms = {"loss_supervised": self.supervised(labeled_logits, labels)}
        terms.update(
            self._masked_terms(
                threshold,
                {
                    "kd_teacher_ww": (weak_view_weak_fp_logits, teacher),
                    "kd_teacher_ws": (weak_view_strong_fp_logits, teacher),
                },
            )
        )
        return terms

    def strong_view_terms(
        self,
        *,
        strong1_logits: torch.Tensor,
        strong2_logits: torch.Tensor,
        strong2_weak_fp_logits: torch.Tensor,
        strong2_strong_fp_logits: torch.Tensor,
        teacher_mixed1: PseudoLabel,
        teacher_mixed2: PseudoLabel,
        weak_fp_mixed2: PseudoLabel,
        strong_fp_mixed2: PseudoLabel,
        threshold: float,
    ) -> dict[str, torch.Tensor]:
        """The six terms of the pass on ``[strong view 1; strong view 2]``."""
        return self._masked_terms(
            threshold,
            {
                "loss_strong1": (strong1_logits, teacher_mixed1),
                "loss_strong2": (strong2_logits, teacher_mixed2),
                "kd_teacher_sw": (strong2_weak_fp_logits, teacher_mixed2),
                "kd_teacher_ss": (strong2_strong_fp_logits, teacher_mixed2),
                "kd_decoder_sw": (strong2_weak_fp_logits, weak_fp_mixed2),
                "kd_decoder_ss": (strong2_strong_fp_logits, strong_fp_mixed2),
            },
        )

    def coefficients(self) -> dict[str, float]:
        """The weight of each of the nine terms in ``loss`` (the total is linear in the terms)."""
        image = self.image_weight / 2.0
        teacher_kd = self.distillation_weight * (1.0 - self.eta) / 4.0
        decoder_kd = self.distillation_weight * self.eta / 2.0
        return {
            "loss_supervised": self.supervised_weight,
            "loss_strong1": image,
            "loss_strong2": image,
            "kd_teacher_ww": teacher_kd,
            "kd_teacher_ws": teacher_kd,
            "kd_teacher_sw": teacher_kd,
            "kd_teacher_ss": teacher_kd,
            "kd_decoder_sw": decoder_kd,
            "kd_decoder_ss": decoder_kd,
        }

    def partial_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """``sum(coefficient * term)`` over the given subset of the nine terms (for a backward per pass)."""
        coefficients = self.coefficients()
        names = list(terms)
        total = coefficients[names[0]] * terms[names[0]]
        for name in names[1:]:
            total = total + coefficients[name] * terms[name]
        return total

    def combine(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add the grouped terms and the weighted total ``loss`` to the nine ``terms``."""
        terms = dict(terms)
        teacher_kd = (
            terms["kd_teacher_ww"] + terms["kd_teacher_ws"] + terms["kd_teacher_sw"] + terms["kd_teacher_ss"]
        ) / 4.0
        decoder_kd = (terms["kd_decoder_sw"] + terms["kd_decoder_ss"]) / 2.0
        distillation = (1.0 - self.eta) * teacher_kd + self.eta * decoder_kd
        image = (terms["loss_strong1"] + terms["loss_strong2"]) / 2.0
        terms["loss_teacher_kd"] = teacher_kd
        terms["loss_decoder_kd"] = decoder_kd
        terms["loss_kd"] = distillation
        terms["loss"] = (
            self.supervised_weight * terms["loss_supervised"]
            + self.image_weight * image
            + self.distillation_weight * distillation
        )
        return terms
