"""make_plan and its rules: 3D / 2D from the anisotropy, target spacing, normalisation by modality, the recipes, a
patch and batch fitted to the device, overrides, plan.json (deterministic), the log text and the MONAI transforms."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from crossmatch_ext.data import write_decathlon_dataset
from crossmatch_ext.errors import InputFileNotFoundError, InputValueError, SettingError
from crossmatch_ext.planning import (
    MIN_BATCH,
    PLAN_FIELDS,
    DeviceBudget,
    Fingerprint,
    Plan,
    describe_device,
    format_plan,
    make_plan,
    normalization_transforms,
    plan_dataset,
    read_plan,
    spacing_transforms,
    write_plan,
)

BIG_GPU = DeviceBudget(kind="cuda", name="test GPU", free_memory_gib=70.0)
CPU = DeviceBudget(kind="cpu", name="cpu", threads=2, native_bf16=True, hours=24.0)


def make_fingerprint(shape: list[int], spacing: list[float], cases: int = 4, **changes: Any) -> Fingerprint:
    values: dict[str, Any] = {
        "source": "/data/dataset.json", "name": "test", "modality": {0: "MRI"},
        "classes": {0: "background", 1: "organ"}, "spacing_known": True, "spatial_dims": len(shape),
        "in_channels": 1, "num_labeled": 2, "num_unlabeled": cases - 2, "num_validation": 0, "num_test": 0,
        "validation_source": None, "spacings": [list(spacing)] * cases, "shapes": [list(shape)] * cases,
        "image_intensity": {"min": 0.0, "max": 900.0, "mean": 200.0, "std": 100.0, "percentile_00_5": 1.0,
                            "percentile_99_5": 800.0},
        "foreground_intensity": {"min": 50.0, "max": 700.0, "mean": 300.0, "std": 80.0, "percentile_00_5": 100.0,
                                 "percentile_99_5": 600.0},
    }
    values.update(changes)
    return Fingerprint(**values)


# ------------------------------------------------------------------------------------- generated folders
@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plan")
    return {
        "ct": write_decathlon_dataset(root / "ct", "ct", num_labeled=2, num_unlabeled=2, num_validation=1,
                                      num_test=0),
        "mr": write_decathlon_dataset(root / "mr", "mr", num_labeled=2, num_unlabeled=2, num_validation=1,
                                      num_test=0, validation="json"),
    }


@pytest.fixture(scope="module")
def plans(folders, tmp_path_factory) -> dict[str, Plan]:
    out = tmp_path_factory.mktemp("plans")
    return {kind: plan_dataset(path, out / kind, device=CPU, workers=0) for kind, path in folders.items()}


def test_ct_like_data_get_a_3d_plan(plans):
    plan = plans["ct"]
    assert plan.spatial_dims.value == 3 and plan.network.value == "VNet" and plan.recipe.value == "la"
    assert plan.slice_axis.value is None
    assert plan.target_spacing.value == [1.5, 1.5, 1.5] and "no resampling" in plan.target_spacing.reason
    normalization = plan.normalization.value
    assert normalization["scheme"] == "ct"
    assert normalization["clip"][0] < normalization["mean"] < normalization["clip"][1]
    assert "modality CT" in plan.normalization.reason
    assert plan.patch_size.value == [48, 48, 48]  # 48 x 48 x 40 images: at least 48 per axis, padded
    assert "axis 2: median 40 < 48" in plan.patch_size.reason
    assert (plan.batch_size.value, plan.optimizer.value, plan.learning_rate.value) == (2, "AdamW", 0.001)
    assert (plan.num_iterations.value, plan.lr_decay_iterations.value) == (14000, 17000)
    assert (plan.in_channels.value, plan.out_channels.value) == (1, 3)
    assert plan.validation.value == {"source": "val.list", "cases": 1}


def test_mr_like_data_get_a_2d_plan(plans):
    plan = plans["mr"]
    assert plan.spatial_dims.value == 2 and plan.network.value == "UNet" and plan.recipe.value == "acdc"
    assert plan.spatial_dims.reason.startswith("2D: slice spacing 8 mm is 6.4x the in-plane spacing 1.25 mm")
    assert plan.slice_axis.value == 2
    assert plan.target_spacing.value == [1.25, 1.25, None]
    assert plan.normalization.value == {"scheme": "zscore"}
    assert plan.patch_size.value == [64, 64]
    assert (plan.batch_size.value, plan.optimizer.value, plan.momentum.value, plan.nesterov.value) == (12, "SGD", 0.9,
                                                                                                       True)
    assert plan.validation.value == {"source": "the 'validation' section of dataset.json", "cases": 1}


def test_plan_json_is_byte_identical_for_the_same_folder(folders, plans, tmp_path):
    again = plan_dataset(folders["mr"], tmp_path / "again", device=CPU, workers=0)
    assert again.to_json() == plans["mr"].to_json()
    written = (tmp_path / "again" / "plan.json").read_bytes()
    assert written == plans["mr"].to_json().encode()
    assert (tmp_path / "again" / "fingerprint.json").is_file()
    assert read_plan(tmp_path / "again") == again
    assert '"patch_size": {\n    "value": [64, 64],' in written.decode()


def test_format_plan_says_why(plans):
    text = format_plan(plans["mr"])
    assert text.startswith("CrossMatch plan for synthetic_mr")
    for name in PLAN_FIELDS:
        assert f"  {name} " in text
    assert "6.4x the in-plane spacing" in text and "per-image z-score" in text
    assert "device: kind cpu, threads 2, native_bf16 True" in text


# ------------------------------------------------------------------------------------------------- rules
def test_la_shaped_data_on_a_big_gpu_reproduce_the_la_recipe():
    plan = make_plan(make_fingerprint([193, 143, 88], [0.625, 0.625, 0.625]), BIG_GPU)
    assert plan.patch_size.value == [112, 112, 80] and plan.batch_size.value == 2
    assert "fits the device" in plan.patch_size.reason and not plan.warnings


def test_acdc_shaped_data_with_unknown_spacing_are_2d_by_shape():
    fp = make_fingerprint([216, 256, 9], [1.0, 1.0, 1.0], spacing_known=False,
                          classes={0: "background", 1: "RV", 2: "Myo", 3: "LV"})
    plan = make_plan(fp, BIG_GPU)
    assert plan.spatial_dims.value == 2 and plan.slice_axis.value == 2
    assert "voxel size is unknown" in plan.spatial_dims.reason and "24.0x fewer" in plan.spatial_dims.reason
    assert plan.target_spacing.value is None and "not resampled" in plan.target_spacing.reason
    assert plan.patch_size.value == [208, 256] and plan.batch_size.value == 12 and plan.out_channels.value == 4
    assert spacing_transforms(plan) == []


def test_unknown_spacing_without_a_flat_axis_is_3d():
    plan = make_plan(make_fingerprint([96, 96, 80], [1.0, 1.0, 1.0], spacing_known=False), BIG_GPU)
    assert plan.spatial_dims.value == 3 and "voxels taken as isotropic" in plan.spatial_dims.reason


def test_few_slices_make_a_2d_plan_even_when_isotropic():
    plan = make_plan(make_fingerprint([128, 128, 12], [1.0, 1.0, 1.0]), BIG_GPU)
    assert plan.spatial_dims.value == 2 and plan.slice_axis.value == 2 and "only 12 voxels" in plan.spatial_dims.reason


def test_target_spacing_is_the_median_and_resampling_is_announced():
    fp = make_fingerprint([100, 100, 100], [1.0, 1.0, 1.0], cases=3)
    fp = Fingerprint(**{**fp.__dict__, "spacings": [[0.8, 0.8, 1.0], [1.0, 1.0, 1.2], [1.2, 1.2, 1.6]],
                        "shapes": [[100, 100, 100], [80, 80, 90], [60, 60, 70]]})
    plan = make_plan(fp, BIG_GPU)
    assert plan.target_spacing.value == [1.0, 1.0, 1.2]
    assert "resampled to it" in plan.target_spacing.reason and "axis 0: 0.8-1.2" in plan.target_spacing.reason
    assert plan.data["median_shape_at_target_spacing"] == [80.0, 80.0, 90.0]  # z: 83.3, 90, 93.3


def test_normalization_by_modality():
    ct = make_fingerprint([96, 96, 96], [1.0] * 3, modality={0: "CT"})
    assert make_plan(ct, BIG_GPU).normalization.value == {"scheme": "ct", "clip": [100.0, 600.0], "mean": 300.0,
                                                          "std": 80.0}
    hounsfield = make_fingerprint([96, 96, 96], [1.0] * 3, modality={},
                                  image_intensity={"min": -1024.0, "max": 2000.0})
    plan = make_plan(hounsfield, BIG_GPU)
    assert plan.normalization.value["scheme"] == "ct" and "like CT Hounsfield units" in plan.normalization.reason
    other = make_plan(make_fingerprint([96, 96, 96], [1.0] * 3, modality={0: "PET"}), BIG_GPU)
    assert other.normalization.value == {"scheme": "zscore"} and "modality PET" in other.normalization.reason


def test_a_small_gpu_shrinks_the_patch_and_keeps_the_batch():
    fp = make_fingerprint([193, 143, 88], [0.625, 0.625, 0.625])
    plan = make_plan(fp, DeviceBudget(kind="cuda", name="small", free_memory_gib=1.0))
    patch = plan.patch_size.value
    assert plan.batch_size.value == 2 and math.prod(patch) * 2 * 2048 <= 0.8 * 2**30
    assert all(p % 16 == 0 and p >= 48 for p in patch) and "shrunk to fit the device" in plan.patch_size.reason
    assert not plan.warnings and plan.device["step_memory_gib_estimate"] <= 0.8


def test_a_tiny_budget_keeps_the_minimum_and_warns():
    plan = make_plan(make_fingerprint([193, 143, 88], [0.625] * 3),
                     DeviceBudget(kind="cuda", name="tiny", free_memory_gib=0.25))
    assert plan.patch_size.value == [48, 48, 48] and plan.batch_size.value == MIN_BATCH
    assert any("exceeds what the device allows" in w and "running out of GPU memory" in w for w in plan.warnings)


def test_a_cpu_budget_lowers_the_2d_batch_before_the_patch():
    fp = make_fingerprint([256, 256, 10], [1.5, 1.5, 10.0])
    plan = make_plan(fp, DeviceBudget(kind="cpu", name="cpu", threads=2, native_bf16=True, hours=12.0))
    # 12 h / 30000 iterations = 1.44 s per step; 1.44 * 2 / 21e-6 = 137142 voxels per step: 2 x 256 x 256 fit
    assert plan.patch_size.value == [256, 256] and plan.batch_size.value == MIN_BATCH
    assert "lowered to 2" in plan.batch_size.reason
    slower = make_plan(fp, DeviceBudget(kind="cpu", name="cpu", threads=1, native_bf16=False, hours=10.0))
    assert slower.batch_size.value == MIN_BATCH and math.prod(slower.patch_size.value) < 256 * 256
    assert slower.device["step_seconds_estimate"] > 0 and "float32" in slower.patch_size.reason


# --------------------------------------------------------------------------------------------- overrides
def test_overriding_the_dimensions_changes_the_later_decisions():
    fp = make_fingerprint([96, 96, 80], [1.0, 1.0, 1.0])
    plan = make_plan(fp, BIG_GPU, {"spatial_dims": 2})
    assert plan.spatial_dims.value == 2 and plan.spatial_dims.reason.startswith("set by override (the rule gives 3:")
    assert plan.network.value == "UNet" and plan.recipe.value == "acdc" and plan.slice_axis.value == 2
    assert len(plan.patch_size.value) == 2 and plan.target_spacing.value == [1.0, 1.0, None]


def test_overriding_patch_or_batch_refits_the_other():
    fp = make_fingerprint([193, 143, 88], [0.625] * 3)
    small = DeviceBudget(kind="cuda", name="small", free_memory_gib=1.0)
    plan = make_plan(fp, small, {"patch_size": [96, 96, 64]})
    assert plan.patch_size.value == [96, 96, 64] and "set by override" in plan.patch_size.reason
    assert plan.batch_size.value == 2 and "with the given patch_size" not in plan.batch_size.reason
    plan = make_plan(fp, DeviceBudget(kind="cuda", name="medium", free_memory_gib=2.0), {"batch_size": 4})
    assert plan.batch_size.value == 4 and math.prod(plan.patch_size.value) * 4 * 2048 <= 0.8 * 2 * 2**30
    assert "with the given batch_size" in plan.patch_size.reason
    plan = make_plan(fp, BIG_GPU, {"patch_size": [32, 32, 32]})
    assert any("below 48" in w for w in plan.warnings)


def test_overriding_the_recipe_values():
    plan = make_plan(make_fingerprint([96, 96, 80], [1.0] * 3), BIG_GPU,
                     {"num_iterations": 7000, "learning_rate": 0.01, "optimizer": "SGD", "normalization": "ct"})
    assert plan.lr_decay_iterations.value == 8500 and "scaled with num_iterations" in plan.lr_decay_iterations.reason
    assert plan.learning_rate.value == 0.01 and plan.momentum.value == 0.9 and plan.nesterov.value is False
    assert plan.normalization.value == {"scheme": "ct", "clip": [100.0, 600.0], "mean": 300.0, "std": 80.0}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"patch": [1, 2, 3]}, "unknown plan field"),
        ({"patch_size": [112, 112]}, "'patch_size' must be 3 integers"),
        ({"batch_size": 0}, "'batch_size' must be an integer >= 1"),
        ({"network": "UNet"}, "'network' must be one of \\['VNet'\\]"),
        ({"target_spacing": [1.0, -1.0, 1.0]}, "'target_spacing' must be null or 3 positive numbers"),
        ({"normalization": "minmax"}, "'normalization' must be"),
        ({"learning_rate": "fast"}, "'learning_rate' must be a number"),
        ({"slice_axis": 1}, "'slice_axis' must be one of \\[None\\]"),
    ],
)
def test_bad_overrides_name_the_field(overrides, message):
    with pytest.raises(SettingError, match=message):
        make_plan(make_fingerprint([96, 96, 80], [1.0] * 3), BIG_GPU, overrides)


# ----------------------------------------------------------------------------------- files and transforms
def test_write_and_read_plan(tmp_path):
    plan = make_plan(make_fingerprint([96, 96, 80], [1.0] * 3), CPU)
    path = write_plan(plan, tmp_path / "run")
    assert path == tmp_path / "run" / "plan.json" and read_plan(path) == plan
    assert make_plan(make_fingerprint([96, 96, 80], [1.0] * 3), CPU).to_json() == path.read_text()
    assert json.loads(path.read_text())["patch_size"]["value"] == plan.patch_size.value
    with pytest.raises(InputFileNotFoundError, match="plan not found"):
        read_plan(tmp_path / "nowhere.json")
    (tmp_path / "broken.json").write_text(json.dumps({"version": 1, "spatial_dims": {"value": 3}}))
    with pytest.raises(InputValueError, match=r"broken\.json: plan field 'spatial_dims'"):
        read_plan(tmp_path / "broken.json")


def test_normalization_transforms():
    image = torch.tensor([[[-1000.0, 100.0], [600.0, 2000.0]]])
    (clip, zscore) = normalization_transforms({"scheme": "ct", "clip": [100.0, 600.0], "mean": 300.0, "std": 100.0})
    out = zscore(clip({"image": image}))["image"]
    assert torch.allclose(torch.as_tensor(out), torch.tensor([[[-2.0, -2.0], [3.0, 3.0]]]))
    (per_image,) = normalization_transforms({"scheme": "zscore"})
    out = torch.as_tensor(per_image({"image": image})["image"])
    assert abs(float(out.mean())) < 1e-5
    with pytest.raises(SettingError, match="scheme"):
        normalization_transforms({"scheme": "minmax"})


def test_spacing_transforms_keep_the_slice_axis():
    (spacing,) = spacing_transforms([1.25, 1.25, None])
    assert list(spacing.spacing_transform.pixdim) == [1.25, 1.25, -1.0]


def test_describe_device():
    cpu = describe_device("cpu", hours=12)
    assert cpu.kind == "cpu" and cpu.threads == torch.get_num_threads() and cpu.hours == 12.0
    assert "threads" in cpu.to_dict() and "free_memory_gib" not in cpu.to_dict()
    # a CPU step is costed in the run's precision: float32 (the CPU default) unless bf16 autocast on a native-bf16 CPU
    from crossmatch_ext.bundle import cpu_has_native_bf16

    assert cpu.native_bf16 is False and "float32" in cpu.describe()
    assert describe_device("cpu", bf16=True).native_bf16 is cpu_has_native_bf16()
    with pytest.raises(SettingError, match="hours"):
        describe_device("cpu", hours=0)
    if not torch.cuda.is_available():
        with pytest.raises(SettingError, match="no CUDA GPU"):
            describe_device("cuda")
