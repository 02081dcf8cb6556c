"""Every bundle's metadata.json states the package's facts: one version, the installed libraries, shared fields,
and a ``network_data_format`` that describes the bundle's ``network_def`` (checked with MONAI's
``verify_net_in_out``)."""

from __future__ import annotations

import configparser
import json
from importlib.metadata import version
from pathlib import Path

import pytest

from bundle_helpers import run_bundle_cli

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p.name for p in (ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
# the bundles whose inference.yaml defines the network by itself; crossmatch_auto builds it from the plan saved with
# the weights (tests/bundles/test_auto_bundle.py exports and checks it)
FIXED_NETWORK = [name for name in BUNDLES if name != "crossmatch_auto"]
# the smallest input the metadata allows: "16*n" is 16, "16**p" is 16, "*" is 1 (MONAI's defaults, stated here)
SMALLEST = {"n": 1, "p": 1, "any": 1}
SHARED = ("schema", "version", "monai_version", "pytorch_version", "numpy_version", "authors", "copyright",
          "intended_use", "required_packages_version")


def package_version() -> str:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config["metadata"]["version"]


def configs(name: str) -> Path:
    return ROOT / "bundles" / name / "configs"


def metadata(name: str) -> dict:
    return json.loads((configs(name) / "metadata.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", BUNDLES)
def test_versions_are_the_package_facts(name: str) -> None:
    meta = metadata(name)
    assert "optional_packages_version" not in meta, "deprecated key: use required_packages_version"
    required = meta["required_packages_version"]
    assert required["crossmatch-ext"] == package_version()
    assert meta["monai_version"] == version("monai")
    assert meta["pytorch_version"] == version("torch").split("+")[0]
    assert meta["numpy_version"] == version("numpy")
    newest = max(meta["changelog"], key=lambda v: tuple(int(x) for x in v.split(".")))
    assert newest == meta["version"] == next(iter(meta["changelog"]))


@pytest.mark.parametrize("name", BUNDLES)
def test_shared_fields_are_equal(name: str) -> None:
    reference, meta = metadata(BUNDLES[0]), metadata(name)
    for key in SHARED:
        if key == "required_packages_version":
            common = set(reference[key]) & set(meta[key])
            assert {k: meta[key][k] for k in common} == {k: reference[key][k] for k in common}
        else:
            assert meta[key] == reference[key], key


@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_passes_monai_schema_offline(name: str, tmp_path: Path) -> None:
    import shutil

    from monai.bundle import verify_metadata

    schema = tmp_path / "schema.json"  # present, so verify_metadata downloads nothing
    shutil.copy(ROOT / "tests" / "bundles" / "meta_schema.json", schema)
    verify_metadata(meta_file=str(ROOT / "bundles" / name / "configs" / "metadata.json"), filepath=str(schema))


# `network_def` of inference.yaml resolves on its own (no reference to data, devices or train.yaml), and it is the
# network that ckpt_export exports with this config file (the READMEs' command).
@pytest.mark.slow
@pytest.mark.parametrize("name", FIXED_NETWORK)
def test_network_passes_monai_verify_net_in_out(name: str) -> None:
    sizes = [arg for key, value in SMALLEST.items() for arg in (f"--{key}", str(value))]
    result = run_bundle_cli("verify_net_in_out", "network_def", "--meta_file", str(configs(name) / "metadata.json"),
                            "--config_file", str(configs(name) / "inference.yaml"), *sizes, "--device", "cpu")
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


@pytest.mark.parametrize("name", FIXED_NETWORK)
def test_network_output_has_the_metadata_spatial_shape(name: str) -> None:
    """verify_net_in_out checks the output's channels and dtype only; the spatial shape is checked here."""
    import torch
    from monai.bundle import ConfigParser
    from monai.bundle.scripts import _get_fake_spatial_shape  # the shape rule verify_net_in_out applies

    data_format = metadata(name)["network_data_format"]
    image, pred = data_format["inputs"]["image"], data_format["outputs"]["pred"]
    parser = ConfigParser()
    parser.read_config(str(configs(name) / "inference.yaml"))
    net = parser.get_parsed_content("network_def").eval()
    shape = _get_fake_spatial_shape(image["spatial_shape"], **SMALLEST)
    with torch.no_grad():
        output = net(torch.rand(1, image["num_channels"], *shape))
    assert tuple(output.shape) == (1, pred["num_channels"], *_get_fake_spatial_shape(pred["spatial_shape"],
                                                                                      **SMALLEST))


@pytest.mark.parametrize("name", FIXED_NETWORK)
@pytest.mark.parametrize(("field", "message"),
                         [("num_channels", "output channel number"), ("dtype", "dtype of output data")])
def test_verify_net_in_out_rejects_a_wrong_output(name: str, field: str, message: str, tmp_path: Path) -> None:
    from monai.bundle import verify_net_in_out

    meta = metadata(name)
    pred = meta["network_data_format"]["outputs"]["pred"]
    pred[field] = pred["num_channels"] + 1 if field == "num_channels" else "float64"
    (tmp_path / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        verify_net_in_out(net_id="network_def", meta_file=str(tmp_path / "metadata.json"),
                          config_file=str(configs(name) / "inference.yaml"), device="cpu", **SMALLEST)
