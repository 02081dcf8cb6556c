from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossmatch_ext.losses import MaskedDiceLoss, SupervisedLoss, masked_soft_dice


def _probs(values: list[float]) -> torch.Tensor:
    """Binary probabilities (1, 2, 1, N) with foreground probability ``values``."""
    fg = torch.tensor(values).view(1, 1, 1, -1)
    return torch.cat([1 - fg, fg], dim=1)


def test_binary_foreground_dice_by_hand():
    probs = _probs([0.9, 0.2, 0.6, 0.1])
    labels = torch.tensor([1, 0, 1, 1]).view(1, 1, -1)
    # foreground only: I = .9 + .6 + .1 = 1.6, Z = .81 + .04 + .36 + .01 = 1.22, Y = 3
    expected = 1 - (2 * 1.6 + 1e-5) / (1.22 + 3 + 1e-5)
    got = masked_soft_dice(probs, labels, classes=[1], smooth=1e-5)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_confidence_mask_drops_voxels():
    probs = _probs([0.9, 0.2, 0.6, 0.1])
    labels = torch.tensor([1, 0, 1, 1]).view(1, 1, -1)
    valid = torch.tensor([True, True, False, True]).view(1, 1, -1)
    # voxel 2 ignored: I = 1.0, Z = .81 + .04 + .01 = .86, Y = 2
    expected = 1 - (2 * 1.0 + 1e-5) / (0.86 + 2 + 1e-5)
    got = masked_soft_dice(probs, labels, valid, classes=[1], smooth=1e-5)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_all_ignored_mask_gives_zero_loss_and_zero_gradient():
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    labels = torch.randint(0, 2, (2, 4, 4))
    loss = MaskedDiceLoss(classes=[1])(logits, labels, torch.zeros(2, 4, 4, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_empty_foreground_target():
    probs = _probs([0.5, 0.25])
    labels = torch.zeros(1, 1, 2, dtype=torch.long)
    # Y = I = 0, Z = .25 + .0625
    expected = 1 - 1e-5 / (0.3125 + 1e-5)
    assert masked_soft_dice(probs, labels, classes=[1]).item() == pytest.approx(expected, abs=1e-7)


def test_global_over_batch_not_mean_of_samples():
    probs = torch.cat([_probs([1.0, 0.0]), _probs([0.5, 0.5])])
    labels = torch.tensor([[[1, 0]], [[1, 1]]])
    # global: I = 1 + .5 + .5 = 2, Z = 1 + .25 + .25 = 1.5, Y = 3
    expected = 1 - (4 + 1e-5) / (4.5 + 1e-5)
    assert masked_soft_dice(probs, labels, classes=[1]).item() == pytest.approx(expected, abs=1e-6)


def test_multiclass_mean_includes_background():
    labels = torch.tensor([[0, 1, 2, 3]])
    probs = F.one_hot(labels, 4).movedim(-1, 1).float()  # perfect prediction
    assert masked_soft_dice(probs, labels, smooth=1e-4).item() == pytest.approx(0.0, abs=1e-7)
    probs = torch.full((1, 4, 4), 0.25)
    # every class: I = .25, Z = 4 * .0625 = .25, Y = 1 -> d = 1 - (.5 + s) / (1.25 + s), same for all 4 classes
    expected = 1 - (0.5 + 1e-4) / (1.25 + 1e-4)
    assert masked_soft_dice(probs, labels, smooth=1e-4).item() == pytest.approx(expected, abs=1e-6)


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="do not match"):
        masked_soft_dice(torch.rand(1, 2, 4), torch.zeros(1, 5, dtype=torch.long))


def test_supervised_loss_is_mean_of_ce_and_dice():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 5)
    labels = torch.randint(0, 4, (2, 1, 5, 5))
    dice = MaskedDiceLoss(smooth=1e-4)
    expected = 0.5 * (F.cross_entropy(logits, labels[:, 0]) + dice(logits, labels[:, 0]))
    assert SupervisedLoss(dice)(logits, labels).item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize(("classes", "num_classes", "smooth"), [((1,), 2, 1e-5), (None, 4, 1e-4)], ids=["la", "acdc"])
def test_agrees_with_monai_dice_losses_configured_like_the_authors(classes, num_classes, smooth):
    """Unmasked it is MONAI's DiceLoss; masked it is MONAI's MaskedDiceLoss given a one-hot target."""
    from monai.losses import DiceLoss
    from monai.losses import MaskedDiceLoss as MonaiMaskedDiceLoss
    from monai.networks import one_hot

    torch.manual_seed(0)
    logits = 3 * torch.randn(3, num_classes, 12, 10, 6)
    labels = torch.randint(0, num_classes, (3, 12, 10, 6))
    valid = torch.rand(3, 12, 10, 6) > 0.4
    options = {
        "include_background": classes is None, "softmax": True, "squared_pred": True, "batch": True,
        "smooth_nr": smooth, "smooth_dr": smooth,
    }
    ours = MaskedDiceLoss(classes, smooth)
    unmasked = DiceLoss(to_onehot_y=True, **options)(logits, labels[:, None])
    torch.testing.assert_close(ours(logits, labels), unmasked, rtol=1e-5, atol=1e-6)
    masked = MonaiMaskedDiceLoss(**options)(logits, one_hot(labels[:, None], num_classes), valid[:, None].float())
    torch.testing.assert_close(ours(logits, labels, valid), masked, rtol=1e-5, atol=1e-6)
    # MONAI's to_onehot_y path masks the class-index map before one-hot encoding: masked-out voxels become
    # background targets, which changes the loss whenever the background channel is averaged (ACDC).
    index_masked = MonaiMaskedDiceLoss(to_onehot_y=True, **options)(logits, labels[:, None], valid[:, None].float())
    assert torch.isclose(index_masked, masked, rtol=1e-4).item() == (classes is not None)
