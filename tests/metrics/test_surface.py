"""Functional metrics and CaseMetrics: hand-computed values, spacing, empty-mask policies, medpy agreement."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from crossmatch_ext.metrics import (
    DEFAULT_METRICS,
    CaseMetrics,
    compute_per_class_metrics,
    compute_segmentation_metrics,
)

ALL = ("dice", "jaccard", "hd95", "asd", "assd", "hd")


def squares() -> tuple[np.ndarray, np.ndarray]:
    """4x4 squares, the ground truth shifted by one row."""
    pred = np.zeros((10, 10), dtype=np.uint8)
    gt = np.zeros((10, 10), dtype=np.uint8)
    pred[2:6, 2:6] = 1
    gt[3:7, 2:6] = 1
    return pred, gt


def cubes() -> tuple[np.ndarray, np.ndarray]:
    """6^3 cubes, the ground truth shifted by two voxels along axis 0."""
    pred = np.zeros((12, 10, 10), dtype=bool)
    gt = np.zeros((12, 10, 10), dtype=bool)
    pred[2:8, 2:8, 2:8] = True
    gt[4:10, 2:8, 2:8] = True
    return pred, gt


def blobs(seed: int, shape: tuple[int, ...] = (32, 28, 20)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)

    def mask() -> np.ndarray:
        out = np.zeros(shape, dtype=bool)
        for _ in range(3):
            centre = rng.uniform(5, np.asarray(shape) - 5)
            radius = rng.uniform(3, 7)
            out |= np.linalg.norm(grid - centre, axis=-1) < radius
        return out

    return mask(), mask()


def test_squares_hand_computed() -> None:
    pred, gt = squares()
    # |P| = |G| = 16, |P & G| = 12; each 12-pixel border has 6 pixels at distance 1 and 6 at 0 from the other.
    values = compute_segmentation_metrics(pred, gt, metrics=ALL)
    assert list(values) == list(ALL)
    assert values["dice"] == pytest.approx(24 / 32)
    assert values["jaccard"] == pytest.approx(12 / 20)
    assert values["asd"] == pytest.approx(0.5)
    assert values["assd"] == pytest.approx(0.5)
    assert values["hd95"] == pytest.approx(1.0)
    assert values["hd"] == pytest.approx(1.0)


def test_squares_anisotropic_spacing_hand_computed() -> None:
    pred, gt = squares()
    # rows 2 mm apart, columns 1 mm: per direction the four row-shifted border pixels move to 2 mm, the two
    # pixels whose nearest partner lies along a column stay at 1 mm, six stay at 0 -> sum 10 over 12.
    values = compute_segmentation_metrics(pred, gt, spacing=(2.0, 1.0), metrics=ALL)
    assert values["dice"] == pytest.approx(0.75)
    assert values["asd"] == pytest.approx(10 / 12)
    assert values["assd"] == pytest.approx(20 / 24)
    assert values["hd95"] == pytest.approx(2.0)
    assert values["hd"] == pytest.approx(2.0)


def test_cubes_hand_computed() -> None:
    pred, gt = cubes()
    # per direction, 152 border voxels: 40 at distance 2, 32 at 1, 80 at 0 (sum 112).
    values = compute_segmentation_metrics(torch.from_numpy(pred), torch.from_numpy(gt), metrics=ALL)
    assert values["dice"] == pytest.approx(2 / 3)
    assert values["jaccard"] == pytest.approx(0.5)
    assert values["asd"] == pytest.approx(112 / 152, rel=1e-6)
    assert values["assd"] == pytest.approx(112 / 152, rel=1e-6)
    assert values["hd95"] == pytest.approx(2.0)
    assert values["hd"] == pytest.approx(2.0)


def test_isotropic_spacing_scales_distances_only() -> None:
    pred, gt = blobs(3)
    voxel = compute_segmentation_metrics(pred, gt, metrics=ALL)
    mm = compute_segmentation_metrics(pred, gt, spacing=0.625, metrics=ALL)
    assert mm["dice"] == voxel["dice"] and mm["jaccard"] == voxel["jaccard"]
    for name in ("hd95", "asd", "assd", "hd"):
        assert mm[name] == pytest.approx(0.625 * voxel[name], rel=1e-5)


def test_hd95_differs_from_monai_percentile_definition() -> None:
    """medpy hd95 pools both directions; MONAI's percentile=95 takes the larger directed percentile."""
    from monai.metrics import compute_hausdorff_distance

    pred = np.zeros((40, 40), dtype=bool)
    gt = np.zeros((40, 40), dtype=bool)
    pred[10:30, 10:30] = True
    gt[10:30, 10:30] = True
    gt[2:4, 2:4] = True  # a small far-away island only in the ground truth
    ours = compute_segmentation_metrics(pred, gt)["hd95"]
    onehot = lambda m: torch.from_numpy(np.stack([~m, m]))[None].float()  # noqa: E731
    monai_value = float(compute_hausdorff_distance(onehot(pred), onehot(gt), percentile=95)[0, 0])
    assert ours < monai_value
    # concatenated distances: 76 + 80 border pixels, only the island's 4 pixels are far -> 95th percentile is 0
    assert ours == pytest.approx(0.0)


@pytest.mark.parametrize("policy", ["zero", "nan", "max"])
def test_both_empty_is_perfect_for_every_policy(policy: str) -> None:
    empty = np.zeros((6, 7, 8), dtype=bool)
    values = compute_segmentation_metrics(empty, empty, empty_policy=policy, metrics=ALL)
    assert values == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0, "assd": 0.0, "hd": 0.0}


@pytest.mark.parametrize("empty_side", ["pred", "gt"])
def test_one_empty_policies(empty_side: str) -> None:
    mask = np.zeros((10, 20), dtype=bool)
    mask[3:6, 4:9] = True
    empty = np.zeros_like(mask)
    pred, gt = (empty, mask) if empty_side == "pred" else (mask, empty)

    zero = compute_segmentation_metrics(pred, gt, empty_policy="zero")
    assert zero == {"dice": 0.0, "jaccard": 0.0, "hd95": 0.0, "asd": 0.0}

    nan = compute_segmentation_metrics(pred, gt, empty_policy="nan")
    assert nan["dice"] == 0.0 and nan["jaccard"] == 0.0
    assert math.isnan(nan["hd95"]) and math.isnan(nan["asd"])

    worst = compute_segmentation_metrics(pred, gt, spacing=(2.0, 0.5), empty_policy="max")
    diagonal = math.sqrt((10 * 2.0) ** 2 + (20 * 0.5) ** 2)
    assert worst["dice"] == 0.0
    assert worst["hd95"] == pytest.approx(diagonal) and worst["asd"] == pytest.approx(diagonal)
    assert compute_segmentation_metrics(pred, gt, empty_policy="max")["hd95"] == pytest.approx(math.sqrt(500))


def test_invalid_arguments_raise_clear_errors() -> None:
    pred, gt = squares()
    with pytest.raises(ValueError, match="empty_policy must be one of"):
        compute_segmentation_metrics(pred, gt, empty_policy="ignore")
    with pytest.raises(ValueError, match="same shape"):
        compute_segmentation_metrics(pred, gt[:5])
    with pytest.raises(ValueError, match="one value per spatial dimension"):
        compute_segmentation_metrics(pred, gt, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        compute_segmentation_metrics(pred, gt, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="unknown metric"):
        compute_segmentation_metrics(pred, gt, metrics=("dice", "hd99"))
    with pytest.raises(ValueError, match="empty_policy must be one of"):
        CaseMetrics(empty_policy="skip")


def test_per_class_on_label_map() -> None:
    gt = np.zeros((12, 12), dtype=np.int64)
    pred = np.zeros_like(gt)
    gt[1:5, 1:5] = 1
    pred[1:5, 1:5] = 1  # class 1 perfect
    gt[6:10, 6:10] = 2
    pred[6:10, 6:8] = 2  # class 2: half of it
    gt[0, 10:12] = 3  # class 3 missed entirely
    values = compute_per_class_metrics(pred, gt, class_ids=[1, 2, 3], empty_policy="zero")
    assert list(values) == [1, 2, 3]
    assert values[1] == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}
    assert values[2]["dice"] == pytest.approx(2 * 8 / (8 + 16))
    assert values[2]["jaccard"] == pytest.approx(0.5)
    # the 4x2 prediction is all border; 2 of its 8 pixels lie inside the truth's border ring (distance 1)
    assert values[2]["asd"] == pytest.approx(2 / 8)
    # truth->prediction: 6 zeros, two at 1, four at 2 -> pooled 20 values, 95th percentile 2
    assert values[2]["hd95"] == pytest.approx(2.0)
    assert values[3] == {"dice": 0.0, "jaccard": 0.0, "hd95": 0.0, "asd": 0.0}
    with pytest.raises(ValueError, match="at least one class"):
        compute_per_class_metrics(pred, gt, class_ids=[])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("spacing", [None, (0.625, 0.625, 2.5)])
def test_matches_medpy(seed: int, spacing: tuple[float, ...] | None) -> None:
    if os.environ.get("CI"):
        # medpy is in the test extra: in CI a missing medpy is an error, not a silent skip
        import medpy.metric.binary as binary
    else:
        binary = pytest.importorskip("medpy.metric.binary")
    pred, gt = blobs(seed)
    assert pred.any() and gt.any()
    ours = compute_segmentation_metrics(pred, gt, spacing=spacing, metrics=ALL)
    assert ours["dice"] == pytest.approx(binary.dc(pred, gt), rel=1e-12)
    assert ours["jaccard"] == pytest.approx(binary.jc(pred, gt), rel=1e-12)
    # MONAI returns float32 surface distances: agreement to float32 precision
    assert ours["hd95"] == pytest.approx(binary.hd95(pred, gt, voxelspacing=spacing), rel=1e-5)
    assert ours["asd"] == pytest.approx(binary.asd(pred, gt, voxelspacing=spacing), rel=1e-5)
    assert ours["assd"] == pytest.approx(binary.assd(pred, gt, voxelspacing=spacing), rel=1e-5)
    assert ours["hd"] == pytest.approx(binary.hd(pred, gt, voxelspacing=spacing), rel=1e-5)


def one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """(B, *spatial) integer labels -> (B, C, *spatial) float one-hot."""
    t = torch.from_numpy(labels).long()
    return torch.nn.functional.one_hot(t, num_classes).movedim(-1, 1).float()


def test_case_metrics_batch_matches_functional() -> None:
    (p0, g0), (p1, g1) = blobs(4, (20, 18, 12)), blobs(5, (20, 18, 12))
    pred = one_hot(np.stack([p0, p1]).astype(np.int64), 2)
    gt = one_hot(np.stack([g0, g1]).astype(np.int64), 2)
    metric = CaseMetrics()
    out = metric(y_pred=pred, y=gt)
    assert out.shape == (2, 1, len(DEFAULT_METRICS))
    expected = [compute_segmentation_metrics(p, g) for p, g in ((p0, g0), (p1, g1))]
    for b in range(2):
        for k, name in enumerate(DEFAULT_METRICS):
            assert float(out[b, 0, k]) == pytest.approx(expected[b][name])
    means = metric.aggregate()
    for name in DEFAULT_METRICS:
        assert means[name] == pytest.approx((expected[0][name] + expected[1][name]) / 2)
    assert metric.per_case()["dice"].shape == (2, 1)
    assert metric.class_ids == [1]


def test_case_metrics_list_input_multiclass_and_nan_mean() -> None:
    labels_gt = np.zeros((2, 10, 10), dtype=np.int64)
    labels_pred = np.zeros_like(labels_gt)
    labels_gt[:, 2:6, 2:6] = 1
    labels_pred[:, 2:6, 2:6] = 1
    labels_gt[0, 7:9, 7:9] = 2  # class 2 missed in case 0 -> NaN distances with the "nan" policy
    labels_gt[1, 7:9, 7:9] = 2
    labels_pred[1, 7:9, 7:9] = 2
    pred, gt = one_hot(labels_pred, 3), one_hot(labels_gt, 3)
    metric = CaseMetrics(include_background=False, empty_policy="nan")
    metric(y_pred=list(pred), y=list(gt))  # decollated channel-first lists
    details = metric.per_case()
    assert details["dice"].tolist() == [[1.0, 0.0], [1.0, 1.0]]
    assert math.isnan(float(details["hd95"][0, 1]))
    means = metric.aggregate()
    assert means["dice"] == pytest.approx(0.75)
    assert means["hd95"] == pytest.approx(0.0)  # the NaN is left out of the mean
    per_class = metric.aggregate(per_class=True)
    assert per_class["dice"] == pytest.approx([1.0, 0.5])
    metric.reset()
    with pytest.raises(RuntimeError, match="no values"):
        metric.aggregate()


def test_case_metrics_spacing_from_meta_and_override() -> None:
    pred_np, gt_np = blobs(6, (16, 16, 10))
    pred = one_hot(pred_np[None].astype(np.int64), 2)
    gt = one_hot(gt_np[None].astype(np.int64), 2)
    voxel = compute_segmentation_metrics(pred_np, gt_np)
    affine = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64))
    pred_meta = MetaTensor(pred, affine=affine)

    ignored = CaseMetrics(use_spacing=False)(y_pred=pred_meta, y=gt)
    assert float(ignored[0, 0, 2]) == pytest.approx(voxel["hd95"])
    assert CaseMetrics().units == "voxel"

    from_meta = CaseMetrics(use_spacing=True)
    out = from_meta(y_pred=pred_meta, y=gt)
    assert from_meta.units == "spacing"
    assert float(out[0, 0, 2]) == pytest.approx(2 * voxel["hd95"], rel=1e-5)
    assert float(out[0, 0, 3]) == pytest.approx(2 * voxel["asd"], rel=1e-5)
    assert float(out[0, 0, 0]) == pytest.approx(voxel["dice"])

    override = CaseMetrics(use_spacing=True)(y_pred=pred_meta, y=gt, spacing=0.5)
    assert float(override[0, 0, 3]) == pytest.approx(0.5 * voxel["asd"], rel=1e-5)


def test_case_metrics_rejects_bad_input() -> None:
    metric = CaseMetrics()
    with pytest.raises(ValueError, match="same one-hot shape"):
        metric(y_pred=torch.zeros(1, 2, 4, 4), y=torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="at least 2 are needed"):
        metric(y_pred=torch.zeros(1, 1, 4, 4), y=torch.zeros(1, 1, 4, 4))
