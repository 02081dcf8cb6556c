"""Parity of the training data path with the authors' code, one piece at a time.

Each test re-implements the authors' operation from its specification (NumPy / SciPy, as their code uses) and
compares it with ours: exactly where both can be equal, by distribution where the random draws differ by design.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from crossmatch_ext.engines import build_train_loader
from crossmatch_ext.engines.loaders import CrossMatchLoader
from crossmatch_ext.networks import UNet, VNet
from crossmatch_ext.transforms import (
    QuantizeIntensity,
    QuantizeIntensityd,
    RandSignedGamma,
    ResizeSliced,
    sample_cutmix_box,
)


# ---------------------------------------------------------------------------------------------- 8-bit unlabeled views
def test_quantisation_equals_uint8_truncation():
    rng = np.random.RandomState(0)
    img = rng.uniform(0, 1, size=(1, 37, 41)).astype(np.float32)
    img[0, 0, :3] = [0.0, 1.0, 254.9999 / 255]
    authors = (img * 255).astype(np.uint8).astype(np.float32) / 255
    ours = QuantizeIntensity(255)(torch.from_numpy(img))
    np.testing.assert_array_equal(ours.numpy(), authors)
    assert ours.dtype == torch.float32
    d = QuantizeIntensityd("image", levels=255)({"image": img, "label": 3})
    np.testing.assert_array_equal(d["image"], authors)
    assert QuantizeIntensity(0)(img) is img  # disabled


def test_quantisation_rejects_negative_levels():
    with pytest.raises(ValueError, match="levels"):
        QuantizeIntensity(-1)


# ---------------------------------------------------------------------------------------------- LA gamma (TorchIO)
def test_signed_gamma_matches_torchio_formula_and_range():
    transform = RandSignedGamma(prob=1.0, log_gamma=(-0.5, 0.5))
    transform.set_random_state(3)
    img = torch.cat([torch.linspace(-2.0, 6.0, 100), torch.zeros(1)]).reshape(1, 101)
    gammas = []
    for _ in range(400):
        out = transform(img)
        gamma = transform.gamma
        gammas.append(gamma)
        expected = torch.sign(img) * img.abs() ** gamma
        torch.testing.assert_close(out, expected)
    log_gammas = np.log(gammas)
    assert log_gammas.min() >= -0.5 and log_gammas.max() <= 0.5
    assert abs(log_gammas.mean()) < 0.05 and abs(log_gammas.std() - 1 / math.sqrt(12)) < 0.03  # U(-0.5, 0.5)
    # negative intensities keep their sign and zero stays zero: the background is not moved (MONAI's would be)
    assert torch.all(out[img < 0] < 0) and out[img == 0].abs().max() == 0


def test_signed_gamma_probability():
    transform = RandSignedGamma(prob=0.0)
    img = torch.rand(1, 8)
    assert transform(img) is img


# ---------------------------------------------------------------------------------------------- ACDC slice resize
@pytest.mark.parametrize("shape", [(214, 181), (154, 154), (256, 232), (81, 300)])
@pytest.mark.parametrize("size", [(128, 128), (256, 256)])
def test_slice_resize_equals_scipy_zoom_order0(shape, size):
    rng = np.random.RandomState(1)
    image = rng.uniform(size=shape).astype(np.float32)
    label = rng.randint(0, 4, size=shape).astype(np.uint8)
    factors = (size[0] / shape[0], size[1] / shape[1])
    out = ResizeSliced(["image", "label"], size, mode="nearest", dtype=None)(
        {"image": torch.from_numpy(image)[None], "label": torch.from_numpy(label)[None]}
    )
    np.testing.assert_array_equal(out["image"][0].numpy(), ndimage.zoom(image, factors, order=0))
    np.testing.assert_array_equal(out["label"][0].numpy(), ndimage.zoom(label, factors, order=0))
    assert out["label"].dtype == torch.uint8
    assert ResizeSliced("label", size)({"label": torch.from_numpy(label)[None]})["label"].dtype == torch.float32


def test_monai_nearest_resize_differs_from_the_evaluation_resize():
    """Why the bundle does not use MONAI's Resized(mode='nearest'): it samples other pixels than the test resize."""
    from monai.transforms import Resize

    image = np.arange(214 * 181, dtype=np.float32).reshape(214, 181)
    monai_out = Resize((128, 128), mode="nearest")(torch.from_numpy(image)[None])[0].numpy()
    scipy_out = ndimage.zoom(image, (128 / 214, 128 / 181), order=0)
    assert (monai_out != scipy_out).mean() > 0.3


# ---------------------------------------------------------------------------------------------- ACDC rotation
def test_rotation_nearest_zero_fill_matches_scipy_rotate_order0():
    """MONAI's RandRotated (nearest, zero padding, same size) and SciPy's rotate(order=0, reshape=False)."""
    from monai.transforms import Rotate

    rng = np.random.RandomState(2)
    image = ndimage.gaussian_filter(rng.uniform(size=(160, 144)), 3).astype(np.float32)
    image = (image > np.median(image)).astype(np.float32) * (1 + np.arange(144, dtype=np.float32) / 144)
    for angle in (-19, -7, 5, 18):
        authors = ndimage.rotate(image, angle, order=0, reshape=False, mode="constant", cval=0.0)
        # SciPy rotates by `angle` degrees counter-clockwise in the (row, col) display; MONAI's sign is opposite
        ours = Rotate(math.radians(-angle), keep_size=True, mode="nearest", padding_mode="zeros")(
            torch.from_numpy(image)[None]
        )[0].numpy()
        assert (np.abs(ours - authors) < 1e-6).mean() > 0.97, angle


# ---------------------------------------------------------------------------------------------- CutMix boxes
def _authors_box_2d(rng: np.random.RandomState, size: int, p: float = 0.5) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.float32)
    if rng.random_sample() > p:
        return mask
    area = rng.uniform(0.02, 0.4) * size * size
    while True:
        ratio = rng.uniform(0.3, 1 / 0.3)
        w, h = int(np.sqrt(area / ratio)), int(np.sqrt(area * ratio))
        x, y = rng.randint(0, size), rng.randint(0, size)
        if x + w <= size and y + h <= size:
            break
    mask[y : y + h, x : x + w] = 1
    return mask


def test_2d_cutmix_box_distribution_matches_authors():
    ours_rng, ref_rng = np.random.RandomState(4), np.random.RandomState(5)
    ours = np.stack([sample_cutmix_box(ours_rng, (64, 64), prob=0.5) for _ in range(3000)])
    ref = np.stack([_authors_box_2d(ref_rng, 64) for _ in range(3000)])
    for boxes in (ours, ref):
        assert set(np.unique(boxes)) <= {0.0, 1.0}
    empty_ours, empty_ref = (ours.sum((1, 2)) == 0).mean(), (ref.sum((1, 2)) == 0).mean()
    assert abs(empty_ours - 0.5) < 0.04 and abs(empty_ref - 0.5) < 0.04
    area_ours = ours.mean((1, 2))[ours.sum((1, 2)) > 0]
    area_ref = ref.mean((1, 2))[ref.sum((1, 2)) > 0]
    assert abs(area_ours.mean() - area_ref.mean()) < 0.01
    for q in (0.1, 0.5, 0.9):
        assert abs(np.quantile(area_ours, q) - np.quantile(area_ref, q)) < 0.02
    # where boxes fall: the per-pixel coverage maps agree (boxes favour the top-left corner equally)
    cover_ours, cover_ref = ours.mean(0), ref.mean(0)
    assert np.abs(cover_ours - cover_ref).mean() < 0.02


# ---------------------------------------------------------------------------------------------- sampling
class _Indexed(torch.utils.data.Dataset):
    def __init__(self, n: int, offset: int = 0) -> None:
        self.n, self.offset = n, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index + self.offset


def test_mix_batches_are_drawn_without_replacement():
    torch.manual_seed(0)
    loader = build_train_loader(_Indexed(6), _Indexed(40, 100), batch_size=4, num_workers=0)
    assert isinstance(loader, CrossMatchLoader)
    unlabeled, mix = [], []
    for batch in loader:
        unlabeled += batch["unlabeled"].tolist()
        mix += batch["mix"].tolist()
    assert sorted(mix) == sorted(unlabeled) == list(range(100, 140))  # one shuffled pass each, no repeats
    assert mix != unlabeled
    with_replacement = build_train_loader(_Indexed(6), _Indexed(40, 100), batch_size=4, mix_replacement=True)
    repeats = [len({i for b in with_replacement for i in b["mix"].tolist()}) for _ in range(3)]
    assert min(repeats) < 40  # the opt-in behaviour does repeat items


def test_labeled_items_are_repeated_evenly_over_an_unlabeled_epoch():
    """The authors repeat the labeled list to the unlabeled length; restarting the labeled loader is equivalent."""
    torch.manual_seed(0)
    loader = build_train_loader(_Indexed(17), _Indexed(240, 100), batch_size=4, num_workers=0)
    counts = np.bincount([i for b in loader for i in b["labeled"].tolist()], minlength=17)
    # 240 labeled draws of 17 items: the authors' repeated list gives each 14 or 15. Restarting a drop_last loader
    # of 4 leaves one item out per pass of 16, so over 15 passes an item can lose up to 3 draws: 12 to 15.
    assert counts.sum() == 240 and counts.min() >= 12 and counts.max() <= 15


# ---------------------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("total", [17000, 2000])
def test_poly_schedule_matches_authors(total):
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=total, power=0.9)
    lrs = []
    for _ in range(1200):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # LA code: step k+1 runs with base * (1 - k / total) ** 0.9 (k completed steps)
    expected = [0.01 * (1 - k / total) ** 0.9 for k in range(1200)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)


# ---------------------------------------------------------------------------------------------- initialisation
@pytest.mark.parametrize("build", [lambda: UNet(1, 4), lambda: VNet(1, 2)])
def test_initialisation_is_pytorch_default(build):
    """The authors' networks keep PyTorch's default init (their sparse init is commented out / 3D-only)."""
    torch.manual_seed(0)
    net = build()
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert convs
    for conv in convs:
        fan_in = conv.weight[0].numel()
        bound = 1 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5))
        assert conv.weight.abs().max() <= bound + 1e-7
        if conv.weight.numel() > 2000:
            assert abs(conv.weight.std().item() - bound / math.sqrt(3)) < 0.1 * bound
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_quantisation_rounding_mode():
    img = torch.tensor([[0.6 / 255, 1.6 / 255, 0.9999]])
    np.testing.assert_allclose(QuantizeIntensity(255, "round")(img).numpy(), [[1 / 255, 2 / 255, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(QuantizeIntensity(255, "floor")(img).numpy(), [[0.0, 1 / 255, 254 / 255]], rtol=1e-6)
    with pytest.raises(ValueError, match="rounding"):
        QuantizeIntensity(255, "ceil")


# ---------------------------------------------------------------------------------------------- ACDC blur (PIL)
def test_isotropic_blur_uses_one_sigma():
    from crossmatch_ext.transforms import RandIsotropicGaussianSmooth

    transform = RandIsotropicGaussianSmooth((0.1, 2.0), prob=1.0)
    transform.set_random_state(0)
    img = torch.zeros(1, 41, 41)
    img[0, 20, 20] = 1.0
    sigmas = []
    for _ in range(200):
        out = transform(img)[0]
        sigmas.append(transform.sigma)
        # a blurred point is symmetric under transposition only if both axes used the same sigma
        torch.testing.assert_close(out, out.T)
    assert min(sigmas) >= 0.1 and max(sigmas) <= 2.0 and abs(np.mean(sigmas) - 1.05) < 0.1
    assert RandIsotropicGaussianSmooth(prob=0.0)(img) is img
