"""Every option value that a bundle config comment or README lists is accepted.

The options are read from the files themselves, so an option documented later is covered without editing this
test: ``key: default  # a (note) | b | c`` lines of ``configs/*.yaml`` (values separated by ``|`` outside
parentheses), ``--key a|b`` in their comments, commented boolean keys (both values), and `` `key: value` `` /
``--key value`` in the READMEs for string and boolean keys. For each value other than the default, the config is
parsed with the override (MONAI ``ConfigParser``) on generated data, every config item that depends on the key is
instantiated, and every dataset or loader among them yields an item (so the transforms run with the value).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from monai.bundle import ConfigParser

from crossmatch_ext.bundle import CONFIG_READS, SHARED_SETTINGS
from crossmatch_ext.data import write_acdc_dataset, write_la_dataset

from bundle_helpers import REPO_ROOT

BUNDLES = {"la": REPO_ROOT / "bundles" / "crossmatch_la", "acdc": REPO_ROOT / "bundles" / "crossmatch_acdc"}
# the config files a documented key is checked in, with the files each one is merged after
MERGED_AFTER = {"train.yaml": [], "evaluate.yaml": ["train.yaml"], "inference.yaml": []}
# items that run a workflow rather than define one: never instantiated here
WORKFLOW_SECTIONS = {"initialize", "run", "finalize", "training"}
SMALL = {
    "la": {"patch_size": [32, 32, 16], "eval_strides": [16, 16, 8], "num_labeled": 2},
    "acdc": {"image_size": [32, 32], "num_labeled_patients": 1},
}
COMMON = {"num_workers": 0, "cache_rate": 0.0, "batch_size": 2, "device": "$torch.device('cpu')", "amp": False}

_OPTION_LINE = re.compile(r"^(?P<key>[A-Za-z_]\w*):\s*(?P<default>[^#\n]*?)\s*#\s*(?P<comment>.*)$")
_CLI_CHOICES = re.compile(r"--(?P<key>[A-Za-z_]\w*)\s+(?P<values>[\w.-]+(?:\|[\w.-]+)+)")
_README_SETTING = re.compile(
    r"`(?P<key>[A-Za-z_]\w*): (?P<value>[^`]+)`|--(?P<cli>[A-Za-z_]\w*) (?P<cli_value>[\w.-]+)"
)


def _split_outside_parentheses(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "|" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _choices(comment: str) -> list[str]:
    """``a (note) | b: note | c`` -> ``[a, b, c]``; a comment without ``|`` lists no choices."""
    parts = _split_outside_parentheses(comment)
    if len(parts) < 2:
        return []
    words = [re.match(r"\s*([\w.-]+)", part) for part in parts]
    return [w.group(1).rstrip(".") for w in words if w]


def _defaults(bundle: str) -> dict[str, dict[str, Any]]:
    defaults = {
        name: yaml.safe_load((BUNDLES[bundle] / "configs" / name).read_text()) or {} for name in MERGED_AFTER
    }
    # the settings every bundle accepts without declaring them
    defaults["train.yaml"] = {**{k: d for k, (d, _) in SHARED_SETTINGS.items()}, **defaults["train.yaml"]}
    return defaults


def documented_options() -> dict[tuple[str, str, str], set[Any]]:
    """``{(bundle, config file, key): {documented values}}`` from the config comments and the READMEs."""
    options: dict[tuple[str, str, str], set[Any]] = {}
    for bundle, root in BUNDLES.items():
        defaults = _defaults(bundle)
        for key, (_, values) in SHARED_SETTINGS.items():
            options[(bundle, "train.yaml", key)] = set(values)
        for name in MERGED_AFTER:
            for line in (root / "configs" / name).read_text().splitlines():
                for match in _CLI_CHOICES.finditer(line.partition("#")[2]):
                    owner = name if match["key"] in defaults[name] else "train.yaml"
                    values = {v.rstrip(".") for v in match["values"].split("|")}
                    options.setdefault((bundle, owner, match["key"]), set()).update(values)
                match = _OPTION_LINE.match(line)
                if not match:
                    continue
                key, default = match["key"], yaml.safe_load(match["default"] or "null")
                values: set[Any] = set(_choices(match["comment"]))
                if isinstance(default, bool):
                    values |= {True, False}
                if values:
                    options.setdefault((bundle, name, key), set()).update(values)
        readmes = [root / "docs" / "README.md", REPO_ROOT / "README.md"]
        for readme in readmes:
            bundle_lines = [line for line in readme.read_text().splitlines() if ".py" not in line]  # not a script's
            for match in _README_SETTING.finditer("\n".join(bundle_lines)):
                key = match["key"] or match["cli"]
                text = match["value"] if match["key"] else match["cli_value"]
                for name in MERGED_AFTER:
                    if key not in defaults[name] or isinstance(defaults[name][key], (dict, list)):
                        continue
                    value = yaml.safe_load(text)
                    default = defaults[name][key]
                    if (isinstance(default, bool) and isinstance(value, bool)) or (
                        isinstance(default, str) and not default.startswith(("$", "@", "%")) and isinstance(value, str)
                        and re.fullmatch(r"[a-z_]+", value)
                    ):
                        options.setdefault((bundle, name, key), set()).add(value)
    return options


OPTIONS = documented_options()
KNOWN_FAILURES: dict[tuple[str, str, str, Any], str] = {}  # (bundle, file, key, value): reason
# values that need state from an earlier run; covered by the end-to-end and checkpoint tests instead
NEEDS_EARLIER_RUN = {"resume": True}
CASES = [
    pytest.param(*case, marks=pytest.mark.xfail(reason=KNOWN_FAILURES[case], strict=True))
    if case in KNOWN_FAILURES else case
    for case in sorted(
        (bundle, name, key, value)
        for (bundle, name, key), values in OPTIONS.items()
        for value in values
        if value != _defaults(bundle)[name].get(key, _defaults(bundle)["train.yaml"].get(key))
        and NEEDS_EARLIER_RUN.get(key, object()) != value
    )
]


def test_the_documented_options_are_found():
    keys = {key for (_, _, key) in OPTIONS}
    assert {"data_layout", "eval_protocol", "perturbation_type", "loss_weighting", "mode", "teacher_mode",
            "threshold_schedule", "training_resize", "strong_blur", "strong_gamma", "teacher_batch",
            "eval_interpolation", "amp_dtype", "channels_last"} <= keys
    assert OPTIONS[("la", "train.yaml", "perturbation_type")] == {"dropout", "alpha", "feature_alpha"}
    assert OPTIONS[("la", "train.yaml", "strong_gamma")] == {"signed", "rescaled"}  # '|' inside parentheses


def _default(bundle: str, name: str, key: str) -> Any:
    return _defaults(bundle)[name].get(key, _defaults(bundle)["train.yaml"].get(key))


CHOICE_KEYS = sorted(k for k in OPTIONS if isinstance(_default(*k), str))  # keys with named choices


@pytest.mark.parametrize(("bundle", "name", "key"), CHOICE_KEYS, ids=["-".join(k) for k in CHOICE_KEYS])
def test_each_default_is_one_of_the_documented_values(bundle, name, key):
    default = _default(bundle, name, key)
    assert default in OPTIONS[(bundle, name, key)], (
        f"{bundle} {name}: the default {key}: {default!r} is not among the documented values "
        f"{sorted(map(str, OPTIONS[(bundle, name, key)]))}"
    )


# ------------------------------------------------------------------------------------------------ instantiation
def _references(value: str) -> set[str]:
    references = {ref.replace("::", "#") for ref in re.findall(r"[@%]([A-Za-z_][\w]*(?:(?:#|::)[\w]+)*)", value)}
    return references | set(re.findall(r"crossmatch_ext\.bundle\.setting\('(\w+)'\)", value))  # shared settings


def _leaves(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    for k, v in items:
        path = f"{prefix}#{k}" if prefix else str(k)
        yield path, v
        yield from _leaves(v, path)


def _dependents(config: dict[str, Any], key: str) -> list[str]:
    """Config ids whose value depends on ``key`` (directly or through other items), components and expressions."""
    leaves = dict(_leaves(config))
    references = {path: _references(v) for path, v in leaves.items() if isinstance(v, str)}
    for path, value in leaves.items():  # a builder entry depends on the ids the builder reads from the config
        if isinstance(value, dict) and value.get("_target_") in CONFIG_READS:
            references[path] = {r.replace("::", "#") for r in CONFIG_READS[value["_target_"]]}
    tainted = {key}
    changed = True
    while changed:
        changed = False
        for path, refs in references.items():
            if path in tainted:
                continue
            if any(r in tainted or any(t.startswith(r + "#") for t in tainted) for r in refs):
                parts = path.split("#")
                for depth in range(1, len(parts) + 1):
                    tainted.add("#".join(parts[:depth]))
                changed = True
    chosen = []
    for path in sorted(tainted - {key}, key=lambda p: (p.count("#"), p)):
        if path.split("#")[0] in WORKFLOW_SECTIONS or path.split("#")[-1].startswith("_"):
            continue
        value = leaves.get(path)
        is_component = isinstance(value, dict) and "_target_" in value
        is_expression = isinstance(value, str) and value.startswith(("$", "@", "%"))
        if is_component or is_expression:
            chosen.append(path)
    return chosen


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("options")
    la = write_la_dataset(root / "la", num_train=4, num_val=1, num_labeled=(2,), seed=1, shape=(36, 36, 20),
                          nifti=True, nrrd=True)
    acdc = write_acdc_dataset(root / "acdc", num_train_patients=2, num_val_patients=1, labeled_patients=(1,),
                              seed=2, size=(48, 48), num_slices=(3, 4), nifti=True)
    for images, labels in ((sorted((la / "nifti" / "imagesTr").glob("*.nii.gz")), la / "nifti" / "labelsTr"),
                           (sorted((acdc / "raw").glob("*/*_frame??.nii.gz")), None)):
        _studies_folder(images, labels, (la if labels is not None else acdc) / "studies")
    return {"la": la, "acdc": acdc}


def _studies_folder(images: list[Path], labels: Path | None, studies: Path) -> None:
    """A MONAI Label studies folder: every image, and final labels for the first three."""
    (studies / "labels" / "final").mkdir(parents=True)
    for k, image in enumerate(images):
        shutil.copy(image, studies / image.name)
        if k < 3:
            label = labels / image.name if labels is not None else image.with_name(image.name[:-7] + "_gt.nii.gz")
            shutil.copy(label, studies / "labels" / "final" / image.name)


def _dataset_dir(bundle: str, name: str, overrides: dict[str, Any], root: Path) -> Path:
    if name == "inference.yaml":
        return root / "nifti" / "imagesTr" if bundle == "la" else root / "raw"
    layout = overrides.get("data_layout", "auto")
    folders = {
        "la": {"nrrd": "raw", "json": "nifti", "nifti": "nifti", "studies": "studies"},
        "acdc": {"nifti": "raw", "json": "raw", "studies": "studies"},
    }
    return root / folders[bundle].get(layout, "")


def _exercise(value: Any) -> None:
    """Pull one item through datasets and loaders, so the transforms configured by the option run."""
    if isinstance(value, torch.utils.data.DataLoader) or type(value).__name__ == "CrossMatchLoader":
        next(iter(value))
    elif isinstance(value, torch.utils.data.Dataset) and len(value) > 0:  # type: ignore[arg-type]
        value[0]


@pytest.mark.parametrize(("bundle", "name", "key", "value"), CASES, ids=lambda v: str(v))
def test_documented_option_is_accepted(bundle, name, key, value, data, tmp_path):
    root = BUNDLES[bundle]
    overrides = {**COMMON, **SMALL[bundle], key: value}
    overrides.update(
        bundle_root=str(root), dataset_dir=str(_dataset_dir(bundle, name, overrides, data[bundle])),
        ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "eval"),
    )
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / f) for f in [*MERGED_AFTER[name], name]])
    parser.update(overrides)
    dependents = _dependents(parser.get(), key)
    assert dependents, f"{bundle} {name}: nothing in the config uses the documented key {key!r}"
    for item in dependents:
        try:
            _exercise(parser.get_parsed_content(item))
        except Exception as error:
            raise AssertionError(f"{bundle} {name}: --{key} {value!r} fails in {item!r}: {error!r}") from error
