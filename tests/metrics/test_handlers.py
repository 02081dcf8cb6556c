"""CaseMetricsHandler and MetricsReport on a tiny MONAI SupervisedEvaluator."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from monai.transforms import AsDiscreted, Compose

from crossmatch_ext.metrics import (
    CaseMetricsHandler,
    MetricsReport,
    case_id_from_item,
    compute_per_class_metrics,
    compute_segmentation_metrics,
)


def make_items(
    labels_pred: list[np.ndarray], labels_gt: list[np.ndarray], num_classes: int, with_case: bool
) -> list[dict]:
    """Items whose "image" already holds one-hot scores, so an identity network predicts labels_pred."""
    items = []
    for i, (p, g) in enumerate(zip(labels_pred, labels_gt)):
        scores = torch.nn.functional.one_hot(torch.from_numpy(p).long(), num_classes).movedim(-1, 0).float()
        meta = {"filename_or_obj": f"/data/CASE{i}/mri_norm2.h5"}
        item = {
            "image": MetaTensor(scores, meta=meta),
            "label": MetaTensor(torch.from_numpy(g)[None].float(), meta=dict(meta)),
        }
        if with_case:
            item["case"] = f"case{i}"
        items.append(item)
    return items


def make_evaluator(items: list[dict], num_classes: int, handler: CaseMetricsHandler, report: MetricsReport):
    post = Compose(
        [AsDiscreted(keys="pred", argmax=True, to_onehot=num_classes), AsDiscreted(keys="label", to_onehot=num_classes)]
    )
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(items), batch_size=2, num_workers=0),
        network=torch.nn.Identity(),
        postprocessing=post,
        key_val_metric={"val_mean_dice": handler},
        val_handlers=[report],
    )


def cube(shape: tuple[int, ...], start: int, stop: int, shift: int = 0) -> np.ndarray:
    out = np.zeros(shape, dtype=np.int64)
    out[start + shift : stop + shift, start:stop, start:stop] = 1
    return out


def test_binary_evaluator_metrics_details_and_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shape = (12, 10, 10)
    preds = [cube(shape, 2, 8), cube(shape, 2, 8), np.zeros(shape, dtype=np.int64)]
    gts = [cube(shape, 2, 8), cube(shape, 2, 8, shift=2), cube(shape, 2, 8)]
    handler = CaseMetricsHandler(metric_name="dice", output_transform=from_engine(["pred", "label"]))
    report = MetricsReport(tmp_path / "eval", "val_mean_dice", protocol={"split": "val", "inferer": "identity"})
    evaluator = make_evaluator(make_items(preds, gts, 2, with_case=True), 2, handler, report)
    evaluator.run()

    expected = [compute_segmentation_metrics(p, g) for p, g in zip(preds, gts)]  # third: empty prediction -> 0s
    metrics = evaluator.state.metrics
    assert metrics["val_mean_dice"] == pytest.approx(np.mean([e["dice"] for e in expected]))
    assert metrics["val_mean_dice_hd95"] == pytest.approx(np.mean([e["hd95"] for e in expected]))
    assert metrics["val_mean_dice_asd"] == pytest.approx(112 / 152 / 3, rel=1e-6)
    assert "val_mean_dice_dice_class1" not in metrics  # a single class: no per-class keys
    details = evaluator.state.metric_details
    assert details["val_mean_dice"].shape == (3, 1)
    assert details["val_mean_dice_jaccard"][:, 0].tolist() == pytest.approx([1.0, 0.5, 0.0])

    with open(tmp_path / "eval" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == ["case0", "case1", "case2"]
    assert list(rows[0]) == ["case", "dice", "jaccard", "hd95", "asd"]
    assert float(rows[1]["dice"]) == pytest.approx(2 / 3)
    protocol = json.loads((tmp_path / "eval" / "metrics_protocol.json").read_text())
    assert protocol["protocol"]["split"] == "val"
    assert protocol["protocol"]["metrics"]["empty_policy"] == "zero"
    assert protocol["protocol"]["metrics"]["units"] == "voxel"
    assert protocol["num_cases"] == 3
    out = capsys.readouterr().out
    assert "val_mean_dice: 3 cases" in out and "±" in out
    assert report.summary["dice"]["n"] == 3


def test_multiclass_evaluator_per_class_and_case_ids_from_meta(tmp_path: Path) -> None:
    shape = (6, 16, 16)
    gts, preds = [], []
    for shift in (0, 1):
        g = np.zeros(shape, dtype=np.int64)
        g[:, 2:6, 2:6], g[:, 8:12, 2:6], g[:, 2:6, 9:14] = 1, 2, 3
        p = np.zeros_like(g)
        p[:, 2 + shift : 6 + shift, 2:6], p[:, 8:12, 2:6] = 1, 2  # class 3 never predicted
        gts.append(g)
        preds.append(p)
    handler = CaseMetricsHandler(
        metric_name="hd95", empty_policy="nan", output_transform=from_engine(["pred", "label"])
    )
    report = MetricsReport(tmp_path, "val_mean_dice", print_summary=False, filename="acdc.csv")
    evaluator = make_evaluator(make_items(preds, gts, 4, with_case=False), 4, handler, report)
    evaluator.run()

    expected = [compute_per_class_metrics(p, g, [1, 2, 3], empty_policy="nan") for p, g in zip(preds, gts)]
    metrics = evaluator.state.metrics
    assert metrics["val_mean_dice"] == pytest.approx(np.mean([e[c]["hd95"] for e in expected for c in (1, 2)]))
    assert metrics["val_mean_dice_dice"] == pytest.approx(np.mean([e[c]["dice"] for e in expected for c in (1, 2, 3)]))
    assert metrics["val_mean_dice_dice_class3"] == 0.0
    assert metrics["val_mean_dice_dice_class2"] == 1.0
    assert evaluator.state.metric_details["val_mean_dice_dice"].shape == (2, 3)

    with open(tmp_path / "acdc.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["class"]) for r in rows] == [(f"CASE{i}", str(c)) for i in (0, 1) for c in (1, 2, 3)]
    assert rows[2]["hd95"] == "nan"
    with open(tmp_path / "acdc_summary.csv", newline="") as f:
        scopes = {(r["scope"], r["metric"]) for r in csv.DictReader(f)}
    assert ("class_3", "dice") in scopes and ("all", "asd") in scopes


def test_report_without_metric_details_fails_clearly(tmp_path: Path) -> None:
    shape = (8, 8, 8)
    handler = CaseMetricsHandler(output_transform=from_engine(["pred", "label"]), save_details=False)
    report = MetricsReport(tmp_path, "val_mean_dice", print_summary=False)
    evaluator = make_evaluator(make_items([cube(shape, 2, 6)], [cube(shape, 2, 6)], 2, True), 2, handler, report)
    with pytest.raises(KeyError, match="no per-case values"):
        evaluator.run()


def test_handler_argument_checks_and_case_ids() -> None:
    with pytest.raises(ValueError, match="must be one of the computed metrics"):
        CaseMetricsHandler(metric_name="hd95", metrics=("dice", "jaccard"))
    assert case_id_from_item({"case": "X1", "image": None}) == "X1"
    image = MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": "/d/patient001_frame01.nii.gz"})
    assert case_id_from_item({"image": image}) == "patient001_frame01"
    la = MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": "/d/ABC123/mri_norm2.h5"})
    assert case_id_from_item({"image": la}) == "ABC123"
    assert case_id_from_item({"label": 1}) is None
