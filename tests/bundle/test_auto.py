"""The parts of the self-configuring bundle: which config values are overrides of the plan, and what a plan builds
(network, optimizer, loss, threshold, inferer, validation schedule, served weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.inferers import SliceInferer, SlidingWindowInferer

from crossmatch_ext.bundle import auto
from crossmatch_ext.data import write_decathlon_dataset
from crossmatch_ext.engines import ConstantThreshold, OfficialRampThreshold
from crossmatch_ext.errors import SettingError
from crossmatch_ext.planning import Plan, plan_dataset

TRAIN = Path(__file__).resolve().parents[2] / "bundles" / "crossmatch_auto" / "configs" / "train.yaml"


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, Plan]:
    root = tmp_path_factory.mktemp("auto")
    ct = write_decathlon_dataset(root / "ct", "ct", num_labeled=2, num_unlabeled=1, shape=(32, 32, 24))
    mr = write_decathlon_dataset(root / "mr", "mr", num_labeled=2, num_validation=0, num_unlabeled=1,
                                 shape=(32, 32, 4))
    return {"ct": plan_dataset(ct, device="cpu"), "mr": plan_dataset(mr, device="cpu")}


def _parser(**values) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(TRAIN))
    parser.update(values)
    return parser


def test_only_values_that_do_not_refer_to_the_plan_are_overrides():
    assert auto.plan_overrides(_parser()) == {}
    overrides = auto.plan_overrides(_parser(patch_size=[64, 64, 48], network_type="UNet", num_iterations="$2 * 5"))
    # config keys map to plan fields (network_type -> network), expressions are evaluated
    assert overrides == {"patch_size": [64, 64, 48], "network": "UNet", "num_iterations": 10}
    assert set(auto.PLAN_CONFIG_KEYS.values()) <= set(_parser().get())  # every plan key is in train.yaml


def test_a_plan_builds_the_recipes_parts(plans):
    ct, mr = plans["ct"].values(), plans["mr"].values()
    assert (ct["recipe"], ct["network"], mr["recipe"], mr["network"]) == ("la", "VNet", "acdc", "UNet")
    vnet = auto.plan_network(ct["network"], ct["in_channels"], ct["out_channels"])
    unet = auto.plan_network(mr["network"], mr["in_channels"], mr["out_channels"])
    assert vnet(torch.zeros(1, 1, 48, 48, 48)).shape[1] == 3 and unet(torch.zeros(1, 1, 64, 64)).shape[1] == 3
    with pytest.raises(SettingError, match="network_type"):
        auto.plan_network("ResNet", 1, 2)
    # the other recipe's dropout (the network set apart from its recipe) gives the network's own default
    assert auto.plan_network("UNet", 1, 2, dropout=0.5).encoder is not None
    assert auto.plan_network("VNet", 1, 2, dropout=[0.05, 0.1, 0.2, 0.3, 0.5]) is not None

    params = list(vnet.parameters())
    assert isinstance(auto.plan_optimizer("AdamW", params, 1e-3, 1e-4), torch.optim.AdamW)
    sgd = auto.plan_optimizer("SGD", params, 0.01, 1e-4, momentum=0.9, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    with pytest.raises(SettingError, match="optimizer_type"):
        auto.plan_optimizer("Adam", params, 1e-3, 0.0)

    assert auto.plan_dice_loss("la", 3).classes == (1, 2)  # the foreground classes, as the LA bundle's (1,)
    assert auto.plan_dice_loss("acdc", 4).classes is None  # every class, background included, as the ACDC bundle's
    assert isinstance(auto.plan_threshold("constant", 0.95, 100), ConstantThreshold)
    ramp = auto.plan_threshold("official", 0.75, 1214)
    assert isinstance(ramp, OfficialRampThreshold) and ramp.ramp_length == 1214
    with pytest.raises(SettingError, match="threshold_schedule"):
        auto.plan_threshold("linear", 0.9, 10)


def test_inferers_validation_schedule_and_served_weights(plans, tmp_path: Path):
    assert isinstance(auto.plan_inferer(3, [48, 48, 48]), SlidingWindowInferer)
    slices = auto.plan_inferer(2, [64, 64], slice_axis=0)
    assert isinstance(slices, SliceInferer) and slices.spatial_dim == 0
    with pytest.raises(SettingError, match="slice_axis"):
        auto.plan_inferer(2, [64, 64], slice_axis=3)
    assert [auto.default_val_interval(n) for n in (2, 400, 2000, 30000)] == [1, 40, 200, 1000]

    # with validation cases the best weights are served once they exist; without, the final weights
    assert plans["ct"].validation.value and plans["mr"].validation.value is None
    assert auto.plan_checkpoint(tmp_path, plans["ct"]).endswith("model.pt")
    (tmp_path / "model_best.pt").write_bytes(b"")
    assert auto.plan_checkpoint(tmp_path, plans["ct"]).endswith("model_best.pt")
    assert auto.plan_checkpoint(tmp_path, plans["mr"]).endswith("model.pt")
    assert auto.foreground_classes(plans["ct"]) == {"1": "liver", "2": "tumour"}


def test_the_plans_classes_go_into_the_metadata_monai_label_reads(plans, tmp_path: Path):
    import json
    import shutil

    metadata = tmp_path / "metadata.json"
    shutil.copy(TRAIN.parent / "metadata.json", metadata)
    written = auto.label_metadata_classes(plans["ct"], metadata)
    pred = json.loads(metadata.read_text())["network_data_format"]["outputs"]["pred"]
    assert written == {"0": "background", **auto.foreground_classes(plans["ct"])} == pred["channel_def"]
    assert pred["num_channels"] == int(plans["ct"].out_channels.value) and len(written) == pred["num_channels"]
    # the rest of the metadata is left as it was
    original = json.loads((TRAIN.parent / "metadata.json").read_text())
    assert json.loads(metadata.read_text())["version"] == original["version"]
