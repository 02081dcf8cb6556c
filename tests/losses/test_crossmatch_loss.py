from __future__ import annotations

import pytest
import torch

from crossmatch_ext.losses import CrossMatchLoss, MaskedDiceLoss, PseudoLabel


def _inputs(seed: int = 0, classes: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    shape = (2, classes, 6, 6)

    def logits() -> torch.Tensor:
        return torch.randn(shape, generator=g)

    return {
        "labeled_logits": logits(),
        "labels": torch.randint(0, classes, (2, 6, 6), generator=g),
        "strong1_logits": logits(),
        "strong2_logits": logits(),
        "weak_view_weak_fp_logits": logits(),
        "weak_view_strong_fp_logits": logits(),
        "strong2_weak_fp_logits": logits(),
        "strong2_strong_fp_logits": logits(),
        "teacher": PseudoLabel.from_logits(logits()),
        "teacher_mixed1": PseudoLabel.from_logits(logits()),
        "teacher_mixed2": PseudoLabel.from_logits(logits()),
        "weak_fp_mixed2": PseudoLabel.from_logits(logits()),
        "strong_fp_mixed2": PseudoLabel.from_logits(logits()),
        "threshold": 0.6,
    }


def test_terms_match_hand_assembly_la_and_paper_weights():
    dice = MaskedDiceLoss(classes=[1])
    x = _inputs()

    def d(logits, target):
        return dice(logits, target.label, target.confidence >= x["threshold"])

    supervised = CrossMatchLoss(dice).supervised(x["labeled_logits"], x["labels"])
    s1 = d(x["strong1_logits"], x["teacher_mixed1"])
    s2 = d(x["strong2_logits"], x["teacher_mixed2"])
    teacher = (
        d(x["weak_view_weak_fp_logits"], x["teacher"])
        + d(x["weak_view_strong_fp_logits"], x["teacher"])
        + d(x["strong2_weak_fp_logits"], x["teacher_mixed2"])
        + d(x["strong2_strong_fp_logits"], x["teacher_mixed2"])
    ) / 4
    decoder = (
        d(x["strong2_weak_fp_logits"], x["weak_fp_mixed2"]) + d(x["strong2_strong_fp_logits"], x["strong_fp_mixed2"])
    ) / 2
    kd = 0.7 * teacher + 0.3 * decoder

    terms = CrossMatchLoss(dice, weighting="strong_distillation", eta=0.3)(**x)
    assert terms["loss_kd"].item() == pytest.approx(kd.item(), abs=1e-6)
    la = 0.5 * supervised + 0.25 * (s1 + s2) / 2 + 0.5 * kd
    assert terms["loss"].item() == pytest.approx(la.item(), abs=1e-6)
    # the authors' form (Lx + 0.25 Ls1 + 0.25 Ls2 + Lkd) / 2 is the same number
    assert terms["loss"].item() == pytest.approx(((supervised + 0.25 * s1 + 0.25 * s2 + kd) / 2).item(), abs=1e-6)

    paper = CrossMatchLoss(dice, weighting="paper")(**x)["loss"]
    assert paper.item() == pytest.approx(((supervised + 0.5 * s1 + 0.5 * s2 + kd) / 3).item(), abs=1e-6)


def test_acdc_weights_and_overrides():
    dice = MaskedDiceLoss(smooth=1e-4)
    x = _inputs(1, classes=4)
    terms = CrossMatchLoss(dice, weighting="light_distillation")(**x)
    image = (terms["loss_strong1"] + terms["loss_strong2"]) / 2
    expected = 0.5 * terms["loss_supervised"] + 0.25 * image + 0.25 * terms["loss_kd"]
    assert terms["loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    only_sup = CrossMatchLoss(dice, supervised_weight=1.0, image_weight=0.0, distillation_weight=0.0)(**x)
    assert only_sup["loss"].item() == pytest.approx(terms["loss_supervised"].item(), abs=1e-6)


def test_threshold_one_ignores_every_unsupervised_voxel():
    x = _inputs(2)
    x["threshold"] = 1.01
    terms = CrossMatchLoss(MaskedDiceLoss(classes=[1]))(**x)
    for name in ("loss_strong1", "loss_strong2", "loss_kd"):
        assert terms[name].item() == 0.0


def test_pseudo_label_mixing_takes_box_from_other():
    a = PseudoLabel(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 0.6))
    b = PseudoLabel(torch.ones(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 0.9))
    box = torch.tensor([[[1, 0], [0, 0]]])
    m = a.mixed(box, b)
    assert m.label.tolist() == [[[1, 0], [0, 0]]]
    assert torch.allclose(m.confidence, torch.tensor([[[0.9, 0.6], [0.6, 0.6]]]))
    assert a.mixed(None, b) is a


def test_invalid_arguments():
    with pytest.raises(ValueError, match="weighting"):
        CrossMatchLoss(MaskedDiceLoss(), weighting="nope")
    with pytest.raises(ValueError, match="eta"):
        CrossMatchLoss(MaskedDiceLoss(), eta=1.5)


@pytest.mark.parametrize(("alias", "name"), [("la", "strong_distillation"), ("acdc", "light_distillation")])
def test_former_preset_names_are_aliases(alias, name):
    old, new = CrossMatchLoss(MaskedDiceLoss(), weighting=alias), CrossMatchLoss(MaskedDiceLoss(), weighting=name)
    assert old.weighting == name
    weights = ("supervised_weight", "image_weight", "distillation_weight")
    assert [getattr(old, w) for w in weights] == [getattr(new, w) for w in weights]
