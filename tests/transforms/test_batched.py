"""BatchedUnlabeledViews: each batched operation against the per-sample MONAI / crossmatch_ext transform with the
same per-sample draws, the translation of transform trees, seeding, deferred mode and a trainer step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, Dataset
from monai.networks.layers.convutils import gaussian_1d
from monai.transforms import (
    AdjustContrast,
    Compose,
    GaussianSmooth,
    Identity,
    OneOf,
    RandAdjustContrast,
    RandBiasField,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandomOrder,
    RandScaleIntensity,
    RandScaleIntensityFixedMean,
    ScaleIntensity,
    ScaleIntensityFixedMean,
    ScaleIntensityRange,
)
from torch.utils.data import DataLoader

from crossmatch_ext.data import VolumeSliceDataset
from crossmatch_ext.transforms import (
    BatchedUnlabeledViews,
    QuantizeIntensity,
    RandCutMixBoxd,
    RandIsotropicGaussianSmooth,
    RandSignedGamma,
    StrongViewsd,
    device_views_from_dataset,
    translate_strong_augmentation,
)

# float32 tolerances of the comparisons with the per-sample transforms (the batched reductions and convolutions
# sum in another order; the bias field is evaluated in float32 where MONAI uses float64)
ELEMENTWISE = {"rtol": 0.0, "atol": 0.0}  # the same float32 operations: bit-identical
REDUCTION = {"rtol": 1e-5, "atol": 1e-6}  # per-sample mean / min / max / std over the batch
CONVOLUTION = {"rtol": 1e-5, "atol": 1e-6}  # separable Gaussian, per-sample kernels, grouped convolution
BIAS_FIELD = {"rtol": 1e-4, "atol": 1e-6}  # exp(Legendre series) in float32 instead of float64


def _run(transform, x: torch.Tensor, seed: int = 0):
    """The batched translation of ``transform`` on ``x`` (every sample active), with its last draws."""
    batched = translate_strong_augmentation(transform)
    generator = torch.Generator().manual_seed(seed)
    out = batched(x, torch.ones(x.shape[0], dtype=torch.bool), generator)
    return batched, out


def _samples(shape=(6, 2, 20, 17), seed: int = 0, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(shape, generator=g)


def _check_per_sample(batched, x, out, expected_fn, tolerance) -> None:
    """Active samples equal ``expected_fn(sample, b)``; inactive samples are returned unchanged (exactly)."""
    active = batched.last_active
    assert active is not None
    for b in range(x.shape[0]):
        if bool(active[b]):
            torch.testing.assert_close(out[b], torch.as_tensor(expected_fn(x[b], b)).float(), **tolerance)
        else:
            assert torch.equal(out[b], x[b])


# ------------------------------------------------------------------------------------------ exact per-sample equality
@pytest.mark.parametrize("channel_wise", [False, True])
def test_scale_intensity_equals_monai_with_the_same_factor(channel_wise):
    x = _samples()
    batched, out = _run(RandScaleIntensity(factors=0.5, prob=0.6, channel_wise=channel_wise), x)
    factor = batched.last_params["factor"]
    assert 0 < int(batched.last_active.sum()) < x.shape[0]  # prob 0.6 on 6 samples with this seed: both cases

    def expected(sample, b):
        if channel_wise:
            return torch.stack([ScaleIntensity(None, None, float(factor[b, c]))(sample[c]) for c in range(2)])
        return ScaleIntensity(minv=None, maxv=None, factor=float(factor[b]))(sample)

    _check_per_sample(batched, x, out, expected, ELEMENTWISE)
    assert factor.min() >= -0.5 and factor.max() <= 0.5


@pytest.mark.parametrize("preserve_range", [False, True])
def test_scale_intensity_fixed_mean_equals_monai(preserve_range):
    x = _samples()
    batched, out = _run(RandScaleIntensityFixedMean(prob=1.0, factors=0.5, preserve_range=preserve_range), x)
    factor = batched.last_params["factor"]
    _check_per_sample(
        batched,
        x,
        out,
        lambda s, b: ScaleIntensityFixedMean(factor=float(factor[b]), preserve_range=preserve_range)(s),
        REDUCTION,
    )


def test_clip_and_quantisation_equal_the_per_sample_transforms():
    x = _samples(low=-0.3, high=1.3)
    clip = ScaleIntensityRange(a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True)
    batched, out = _run(clip, x)
    _check_per_sample(batched, x, out, lambda s, b: clip(s), ELEMENTWISE)
    for rounding in ("floor", "round"):
        quantize = QuantizeIntensity(255, rounding=rounding)
        batched, out = _run(quantize, x)
        _check_per_sample(batched, x, out, lambda s, b, q=quantize: q(s), ELEMENTWISE)
    batched, out = _run(QuantizeIntensity(0), x)
    assert out is x


def test_signed_gamma_equals_the_per_sample_transform():
    x = _samples(low=-2.0, high=3.0)
    per_sample = RandSignedGamma(prob=0.7, log_gamma=(-0.5, 0.5))
    batched, out = _run(per_sample, x)
    gamma = batched.last_params["gamma"]

    def expected(sample, b):
        per_sample._do_transform, per_sample.gamma = True, float(gamma[b])
        return per_sample(sample, randomize=False)

    _check_per_sample(batched, x, out, expected, {"rtol": 1e-6, "atol": 1e-6})


@pytest.mark.parametrize("invert_image, retain_stats", [(False, False), (True, False), (False, True)])
def test_adjust_contrast_equals_monai(invert_image, retain_stats):
    x = _samples(low=-1.0, high=2.0)
    transform = RandAdjustContrast(
        prob=1.0, gamma=(0.6065, 1.6487), invert_image=invert_image, retain_stats=retain_stats
    )
    batched, out = _run(transform, x)
    gamma = batched.last_params["gamma"]
    assert gamma.min() >= 0.6065 and gamma.max() <= 1.6487
    _check_per_sample(
        batched,
        x,
        out,
        lambda s, b: AdjustContrast(float(gamma[b]), invert_image=invert_image, retain_stats=retain_stats)(s),
        {"rtol": 1e-5, "atol": 1e-5},
    )


@pytest.mark.parametrize("shape", [(3, 2, 19, 23), (2, 1, 11, 9, 7)])
def test_bias_field_equals_monai_with_the_same_coefficients(shape):
    """MONAI's coefficient layout (2D: lower triangle; 3D: i + j + k <= degree) and its coordinates."""
    x = _samples(shape, low=0.1, high=1.0)
    transform = RandBiasField(degree=3, coeff_range=(-0.5, 0.5), prob=1.0)
    batched, out = _run(transform, x)
    coeff = batched.last_params["coeff"]
    assert coeff.shape == (shape[0], 10 if len(shape) == 4 else 20)

    def expected(sample, b):
        transform._do_transform, transform._coeff = True, coeff[b].tolist()
        return transform(sample, randomize=False)

    _check_per_sample(batched, x, out, expected, BIAS_FIELD)


@pytest.mark.parametrize("method", ["matrix", "conv"])
@pytest.mark.parametrize("approx", ["erf", "sampled"])
@pytest.mark.parametrize("shape", [(5, 2, 21, 18), (3, 1, 13, 12, 11)])
def test_per_axis_blur_equals_monai_with_the_same_sigmas(approx, shape, method, monkeypatch):
    """Both implementations: banded matrix products (the CPU's) and grouped convolutions (other devices')."""
    from crossmatch_ext.transforms import batched as module

    monkeypatch.setattr(module._GaussianSmooth, "method", method)
    x = _samples(shape)
    transform = RandGaussianSmooth(sigma_x=(0.1, 2.0), sigma_y=(0.3, 1.0), sigma_z=(0.1, 2.0), prob=1.0, approx=approx)
    batched, out = _run(transform, x)
    sigma = batched.last_params["sigma"]
    assert sigma.shape == (shape[0], len(shape) - 2)
    assert sigma[:, 1].min() >= 0.3 and sigma[:, 1].max() <= 1.0
    _check_per_sample(
        batched,
        x,
        out,
        lambda s, b: GaussianSmooth(sigma=[float(v) for v in sigma[b]], approx=approx)(s),
        CONVOLUTION,
    )


def test_isotropic_blur_equals_monai_with_the_same_sigma():
    x = _samples((8, 1, 24, 20))
    batched, out = _run(RandIsotropicGaussianSmooth(sigma_range=(0.1, 2.0), prob=0.5), x)
    sigma = batched.last_params["sigma"]
    assert torch.equal(sigma[:, 0], sigma[:, 1])
    _check_per_sample(batched, x, out, lambda s, b: GaussianSmooth(sigma=float(sigma[b, 0]))(s), CONVOLUTION)


@pytest.mark.parametrize("sigma", [0.1, 0.124, 0.125, 0.126, 0.374, 0.375, 0.376, 1.0, 1.874, 1.875, 1.876, 2.0])
def test_blur_kernel_truncation_matches_monai(sigma):
    """MONAI keeps int(max(4 sigma, 0.5) + 0.5) taps each side; the batched kernels are zero beyond that."""
    smooth = translate_strong_augmentation(RandIsotropicGaussianSmooth(sigma_range=(0.1, 2.0), prob=1.0))
    batched = smooth.kernels(torch.tensor([sigma, 2.0]), torch.device("cpu"))[0]
    reference = gaussian_1d(torch.tensor(sigma), truncated=4.0, approx="erf")
    tail = (reference.numel() - 1) // 2
    centre = (batched.numel() - 1) // 2
    torch.testing.assert_close(batched[centre - tail : centre + tail + 1], reference, rtol=0, atol=0)
    assert batched[: centre - tail].abs().sum() == 0 and batched[centre + tail + 1 :].abs().sum() == 0


# ------------------------------------------------------------------------------------------ combinators and translation
def test_one_of_and_random_order_choose_per_sample():
    x = torch.full((400, 1, 4, 4), 0.5)
    tree = OneOf(
        [
            RandomOrder([RandScaleIntensity(factors=(1.0, 1.0), prob=1.0), ScaleIntensityRange(0.0, 1.0, 0.0, 2.0)]),
            Identity(),
        ],
        weights=[0.75, 0.25],
    )
    batched, out = _run(tree, x)
    values = out[:, 0, 0, 0]
    # scale by 2 then range x2 -> 2.0; both orders give 2.0 (linear); Identity keeps 0.5
    chosen = batched.last_params["choice"]
    assert torch.equal(values == 0.5, chosen == 1)
    assert abs(float((chosen == 1).float().mean()) - 0.25) < 0.07
    order = translate_strong_augmentation(
        RandomOrder([ScaleIntensityRange(0.0, 1.0, 0.0, 2.0), ScaleIntensityRange(0.0, 1.0, 1.0, 2.0)])
    )
    out = order(x, torch.ones(400, dtype=torch.bool), torch.Generator().manual_seed(1))[:, 0, 0, 0]
    # (0.5 * 2) + 1 = 2.0 then *2 ... : order A: 0.5 -> 1.0 -> 2.0; order B: 0.5 -> 1.5 -> 3.0
    assert set(out.unique().tolist()) == {2.0, 3.0}
    assert abs(float((out == 3.0).float().mean()) - 0.5) < 0.08


def test_unknown_transform_is_named():
    tree = Compose([OneOf([RandGaussianNoise(prob=1.0), Identity()]), QuantizeIntensity(255)])
    with pytest.raises(ValueError, match=r"RandGaussianNoise.*OneOf\[0\]") as info:
        translate_strong_augmentation(tree)
    assert "support only" in str(info.value)
    with pytest.raises(ValueError, match="StrongViewsd"):
        BatchedUnlabeledViews.from_transform(Compose([QuantizeIntensity(255)]))


def _unlabeled_pipeline() -> Compose:
    strong = Compose(
        [
            OneOf([RandScaleIntensity(factors=0.5, prob=1.0), Identity()], weights=[0.8, 0.2]),
            RandIsotropicGaussianSmooth(prob=0.5),
            QuantizeIntensity(255, rounding="round"),
        ]
    )
    return Compose(
        [
            StrongViewsd("image", ["image_s1", "image_s2"], strong),
            RandCutMixBoxd(["cutmix_box_s1", "cutmix_box_s2"], reference_key="image", prob=0.7),
        ]
    )


def test_from_transform_reads_keys_and_box_settings_and_defers():
    pipeline = _unlabeled_pipeline()
    item = {"image": torch.rand(1, 16, 16)}
    assert set(pipeline(item)) == {"image", "image_s1", "image_s2", "cutmix_box_s1", "cutmix_box_s2"}  # default
    views = BatchedUnlabeledViews.from_transform(pipeline, seed=3)
    assert views.view_keys == ("image_s1", "image_s2") and views.box_keys == ("cutmix_box_s1", "cutmix_box_s2")
    assert views.cutmix_prob == 0.7
    assert pipeline.transforms[0].deferred and pipeline.transforms[1].deferred
    assert set(pipeline(item)) == {"image"}  # the workers now only make the weak view
    out = views({"image": torch.rand(4, 1, 16, 16)})
    for key in ("image_s1", "image_s2"):
        assert out[key].shape == (4, 1, 16, 16)
    for key in ("cutmix_box_s1", "cutmix_box_s2"):
        assert out[key].shape == (4, 1, 16, 16) and out[key].dtype == torch.float32
        assert set(out[key].unique().tolist()) <= {0.0, 1.0}
    kept = _unlabeled_pipeline()
    BatchedUnlabeledViews.from_transform(kept, defer=False)
    assert not kept.transforms[0].deferred


def test_device_views_from_datasets():
    items = [{"image": torch.rand(1, 12, 12, 3)} for _ in range(2)]
    for dataset in (
        Dataset(items, transform=_unlabeled_pipeline()),
        CacheDataset(items, transform=_unlabeled_pipeline(), progress=False),
        VolumeSliceDataset(items, load_transform=None, transform=_unlabeled_pipeline(), progress=False),
        torch.utils.data.Subset(Dataset(items, transform=_unlabeled_pipeline()), [0]),
    ):
        views = device_views_from_dataset(dataset)
        assert isinstance(views, BatchedUnlabeledViews), type(dataset).__name__
        item = dataset[0]
        assert "image_s1" not in item and "cutmix_box_s1" not in item
    with pytest.raises(ValueError, match="transform"):
        device_views_from_dataset(Dataset(items))


def test_seeded_views_are_reproducible_and_channels_last_is_honoured():
    weak = torch.rand(3, 2, 24, 24)

    def views(seed):
        return BatchedUnlabeledViews.from_transform(_unlabeled_pipeline(), seed=seed)

    a, b, c = views(5)({"image": weak}), views(5)({"image": weak}), views(6)({"image": weak})
    for key in ("image_s1", "image_s2", "cutmix_box_s1", "cutmix_box_s2"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["image_s1"], c["image_s1"])
    assert not torch.equal(a["image_s1"], a["image_s2"])  # two independent views
    again = views(5).set_random_state(5)
    d = again({"image": weak.contiguous(memory_format=torch.channels_last)})
    for key in ("image_s1", "image_s2", "cutmix_box_s1", "cutmix_box_s2"):
        torch.testing.assert_close(d[key], a[key], **CONVOLUTION)
    first = again({"image": weak})
    assert not torch.equal(first["image_s1"], d["image_s1"])  # the stream moves on


def test_inputs_are_checked():
    views = BatchedUnlabeledViews.from_transform(_unlabeled_pipeline())
    with pytest.raises(KeyError, match="image"):
        views({"img": torch.rand(2, 1, 8, 8)})
    with pytest.raises(ValueError, match="shape"):
        views({"image": torch.rand(1, 8, 8)})


# ------------------------------------------------------------------------------------------ in the trainer
def test_trainer_step_with_device_views_and_weak_only_loader():
    from crossmatch_ext.engines import CrossMatchLoader, CrossMatchTrainer
    from crossmatch_ext.losses import CrossMatchLoss, MaskedDiceLoss
    from crossmatch_ext.networks import FeaturePerturbation, FeaturePerturbedNetwork, UNet

    size = 32
    g = torch.Generator().manual_seed(0)

    def blobs(n):
        items = []
        for _ in range(n):
            label = torch.zeros(1, size, size, dtype=torch.long)
            y0, x0 = torch.randint(4, 20, (2,), generator=g).tolist()
            label[:, y0 : y0 + 8, x0 : x0 + 8] = 1
            items.append(
                {"image": 0.3 + 0.4 * label.float() + 0.05 * torch.rand(1, size, size, generator=g), "label": label}
            )
        return items

    pipeline = _unlabeled_pipeline()
    weak_only = Dataset([{"image": item["image"]} for item in blobs(4)], transform=pipeline)
    views = device_views_from_dataset(weak_only, seed=0)
    made: list[dict] = []

    def spy(data):
        out = views(data)
        made.append(out)
        return out

    loader = CrossMatchLoader(
        DataLoader(blobs(4), batch_size=2, drop_last=True),
        DataLoader(weak_only, batch_size=2, shuffle=True, drop_last=True),
        DataLoader(weak_only, batch_size=2, shuffle=True, drop_last=True),
    )
    assert set(weak_only[0]) == {"image"}  # the workers deliver only the weak view
    torch.manual_seed(0)
    inner = FeaturePerturbedNetwork(UNet(1, 2, features=(4, 8, 8, 16, 16)), FeaturePerturbation(0.5, spatial_dims=2))
    inputs: list[torch.Tensor] = []
    inner.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    trainer = CrossMatchTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader,
        network=inner,
        optimizer=torch.optim.Adam(inner.parameters(), lr=1e-2),
        loss_function=CrossMatchLoss(MaskedDiceLoss(classes=[1]), weighting="la"),
        confidence_threshold=0.6,
        max_iterations=1,
        device_views=spy,
    )
    trainer.run()
    assert len(made) == 2  # the unlabeled and the mix batch
    assert np.isfinite(float(trainer.state.output[0]["loss"]))
    unlabeled, mix = made
    weak = unlabeled["image"]
    boxes = [unlabeled[k][:, 0].bool().unsqueeze(1) for k in ("cutmix_box_s1", "cutmix_box_s2")]
    strong = [torch.where(box, mix[k], unlabeled[k]) for box, k in zip(boxes, ("image_s1", "image_s2"))]
    last = inputs[-1]  # P4: both (mixed) strong views stacked
    torch.testing.assert_close(last, torch.cat(strong), rtol=0, atol=0)
    for view in strong:
        assert not torch.equal(view, weak)
    assert not torch.allclose(unlabeled["image_s1"], weak, atol=1e-3)
