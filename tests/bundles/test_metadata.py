"""Every bundle's metadata.json states the package's facts: one version, the installed libraries, shared fields."""

from __future__ import annotations

import configparser
import json
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p.name for p in (ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
SHARED = ("schema", "version", "monai_version", "pytorch_version", "numpy_version", "authors", "copyright",
          "intended_use", "required_packages_version")


def package_version() -> str:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config["metadata"]["version"]


def metadata(name: str) -> dict:
    return json.loads((ROOT / "bundles" / name / "configs" / "metadata.json").read_text(encoding="utf-8"))


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
