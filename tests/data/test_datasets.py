"""Dataset modules: the entry point (built-in and bundle-local modules), the protocol check, layouts, label maps."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_datalists import LA_IDS, ids, la_h5_dir, write_list, write_nifti

from crossmatch_ext.data import dataset_datalists, load_dataset_module, raw_label_map, resolve_layout
from crossmatch_ext.data.datasets import acdc, common, la
from crossmatch_ext.errors import InputError, SettingError

# A third dataset as a bundle would ship it: its own layout ("ct": imagesTr/<ID>.nii.gz + labelsTr/<ID>.nii.gz) and
# the shared "json" / "studies" layouts, with nothing but the public helpers of crossmatch_ext.data.datasets.common.
DATASET_MODULE = '''
from pathlib import Path

from crossmatch_ext.data.datasets import common

NAME = "{name}"
LAYOUTS = ("ct", "json", "studies")
RAW_LABEL_MAPS = {{"ct": {{0: 0, 1000: 1}}}}


def detect_layout(dataset_dir):
    path = common.check_dataset_dir(dataset_dir)
    shared = common.detect_shared_layout(path)
    if shared is not None:
        return shared
    if (path / "imagesTr").is_dir():
        return "ct"
    raise ValueError(f"no CT layout in {{path}}")


def datalists(dataset_dir, num_labeled, *, layout="auto", val_list="val.list"):
    common.check_layout(layout, ("auto", *LAYOUTS))
    path = common.check_dataset_dir(dataset_dir)
    chosen = detect_layout(path) if layout == "auto" else layout
    if chosen in common.SHARED_LAYOUTS:
        return common.shared_layout_datalists(NAME, path, chosen, num_labeled)
    on_disk = sorted(p.name[: -len(".nii.gz")] for p in (path / "imagesTr").glob("*.nii.gz"))

    def files(case):
        return path / "imagesTr" / f"{{case}}.nii.gz", path / "labelsTr" / f"{{case}}.nii.gz"

    return common.file_layout_datalists(NAME, path, chosen, num_labeled, val_list, on_disk, files)
'''


@pytest.fixture(autouse=True)
def _restore_imports() -> Iterator[None]:
    """Undo what loading bundle-local modules does to ``sys.path`` and ``sys.modules``."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        if name == "scripts" or name.startswith(("scripts.", "crossmatch_dataset_")):
            del sys.modules[name]


def write_bundle(root: Path, name: str = "CT", source: str = DATASET_MODULE) -> Path:
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "__init__.py").write_text("")
    (root / "scripts" / "dataset.py").write_text(source.format(name=name))
    return root


def ct_dir(root: Path, cases: int = 4) -> Path:
    for i in range(cases):
        write_nifti(root / "imagesTr" / f"ct{i}.nii.gz")
        write_nifti(root / "labelsTr" / f"ct{i}.nii.gz")
    write_list(root / "val.list", [f"ct{cases - 1}"])
    return root


def test_built_in_modules_follow_the_protocol(tmp_path: Path) -> None:
    for name, module in (("crossmatch_ext.data.datasets.la", la), ("crossmatch_ext.data.datasets.acdc", acdc)):
        assert load_dataset_module(name) is module
        assert load_dataset_module(module) is module
        assert "auto" not in module.LAYOUTS and {"json", "studies"} <= set(module.LAYOUTS)
    root = la_h5_dir(tmp_path / "la")
    lists = dataset_datalists("crossmatch_ext.data.datasets.la", root, 2)
    assert ids(lists["labeled"]) == LA_IDS[:2] and ids(lists["unlabeled"]) == LA_IDS[2:5]
    assert ids(dataset_datalists("crossmatch_ext.data.datasets.la", root, 1, val_list="test.list")["validation"]) == [
        LA_IDS[6]]


def test_bundle_local_module_by_dotted_name_and_by_file(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    data = ct_dir(tmp_path / "data")
    with pytest.raises(SettingError, match=r"config key 'dataset_module': cannot import 'scripts\.dataset' \("
                                           r"ModuleNotFoundError: No module named 'scripts"):
        load_dataset_module("scripts.dataset")  # without the bundle root it is not on sys.path
    module = load_dataset_module("scripts.dataset", bundle_root=bundle)
    assert Path(module.__file__).resolve() == (bundle / "scripts" / "dataset.py").resolve()
    lists = dataset_datalists("scripts.dataset", data, 2, bundle_root=bundle)
    assert ids(lists["labeled"]) == ["ct0", "ct1"] and ids(lists["unlabeled"]) == ["ct2"]
    assert ids(lists["validation"]) == ["ct3"]
    assert lists["labeled"][0]["label"] == str(data / "labelsTr" / "ct0.nii.gz")
    assert resolve_layout("scripts.dataset", data, bundle_root=bundle) == "ct"
    assert raw_label_map("scripts.dataset", "ct", bundle_root=bundle) == {0: 0, 1000: 1}

    by_path = load_dataset_module(str(bundle / "scripts" / "dataset.py"))
    assert by_path.LAYOUTS == module.LAYOUTS
    assert load_dataset_module("scripts/dataset.py", bundle_root=bundle) is by_path  # relative to the bundle root
    assert ids(dataset_datalists(bundle / "scripts" / "dataset.py", data, 1)["labeled"]) == ["ct0"]


def test_each_bundle_gets_its_own_module_of_the_same_name(tmp_path: Path) -> None:
    first = write_bundle(tmp_path / "first", name="FIRST")
    second = write_bundle(tmp_path / "second", name="SECOND")
    assert load_dataset_module("scripts.dataset", bundle_root=first).NAME == "FIRST"
    assert load_dataset_module("scripts.dataset", bundle_root=second).NAME == "SECOND"
    assert load_dataset_module("scripts.dataset", bundle_root=first).NAME == "FIRST"


def test_shared_layouts_through_a_third_dataset(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    data = ct_dir(tmp_path / "data")
    (data / "datalist.json").write_text(
        '{"training": [{"image": "imagesTr/ct0.nii.gz", "label": "labelsTr/ct0.nii.gz"}, '
        '{"image": "imagesTr/ct1.nii.gz", "label": "labelsTr/ct1.nii.gz"}, {"image": "imagesTr/ct2.nii.gz"}]}'
    )
    assert resolve_layout("scripts.dataset", data, bundle_root=bundle) == "json"
    lists = dataset_datalists("scripts.dataset", data, 1, bundle_root=bundle)
    assert ids(lists["labeled"]) == ["ct0"] and ids(lists["unlabeled"]) == ["ct1", "ct2"]
    assert "label" not in lists["unlabeled"][0] and lists["validation"] == []
    ct = dataset_datalists("scripts.dataset", data, 3, layout="ct", bundle_root=bundle)
    assert ids(ct["labeled"]) == ["ct0", "ct1", "ct2"]


@pytest.mark.parametrize(
    ("source", "missing"),
    [
        ("LAYOUTS = ('a',)\nRAW_LABEL_MAPS = {}\ndef detect_layout(d):\n    return 'a'\n", r"datalists\(dataset_dir"),
        ("def detect_layout(d):\n    return 'a'\ndef datalists(*a, **k):\n    return {}\n",
         r"LAYOUTS \(a tuple of layout names\), RAW_LABEL_MAPS \(a dict"),
        ("LAYOUTS = 'ab'\nRAW_LABEL_MAPS = {}\ndetect_layout = 3\ndef datalists(*a, **k):\n    return {}\n",
         r"LAYOUTS \(a tuple of layout names\), detect_layout\(dataset_dir\) -> str\. See crossmatch_ext"),
    ],
)
def test_protocol_errors_name_the_setting_module_and_what_is_missing(tmp_path: Path, source: str, missing: str):
    file = tmp_path / "broken.py"
    file.write_text(source)
    expected = r"config key 'dataset_module': module '.*broken.*' \(.*broken\.py\) is not a dataset module: it lacks "
    with pytest.raises(SettingError, match=expected + missing):
        load_dataset_module(str(file))


def test_import_errors_are_setting_errors(tmp_path: Path) -> None:
    with pytest.raises(SettingError, match=r"cannot import 'crossmatch_ext\.data\.datasets\.nope' \(ModuleNotFound"):
        load_dataset_module("crossmatch_ext.data.datasets.nope")
    with pytest.raises(SettingError, match=r"file 'missing\.py' not found \(also looked in .*bundle\)"):
        load_dataset_module("missing.py", bundle_root=tmp_path / "bundle")
    broken = tmp_path / "syntax.py"
    broken.write_text("def (:\n")
    with pytest.raises(SettingError, match=r"cannot import '.*syntax\.py' \(SyntaxError: "):
        load_dataset_module(str(broken))
    failing = write_bundle(tmp_path / "failing", source="import a_package_that_is_not_installed\n")
    with pytest.raises(SettingError, match="No module named 'a_package_that_is_not_installed'"):
        load_dataset_module("scripts.dataset", bundle_root=failing)
    assert issubclass(SettingError, InputError)


def test_datalists_must_return_the_three_lists(tmp_path: Path) -> None:
    file = tmp_path / "partial.py"
    file.write_text("LAYOUTS = ('a',)\nRAW_LABEL_MAPS = {}\ndef detect_layout(d):\n    return 'a'\n"
                    "def datalists(d, n, *, layout='auto', val_list=None):\n    return {'labeled': []}\n")
    with pytest.raises(SettingError, match=r"partial.* must return a dict with 'labeled', 'unlabeled' and "
                                           r"'validation' lists, got dict with keys \['labeled'\]"):
        dataset_datalists(str(file), tmp_path, 1)


def test_resolve_layout(tmp_path: Path) -> None:
    root = la_h5_dir(tmp_path / "la")
    assert resolve_layout(la, root) == "h5"
    assert resolve_layout(la, root, "nrrd") == "nrrd"  # an explicit layout is not detected, only checked
    with pytest.raises(SettingError, match=r"config key 'data_layout' must be one of \['auto', 'h5', 'nifti', "
                                           r"'json', 'studies'\] \(the layouts of crossmatch_ext\.data\.datasets\.acdc"
                                           r"\), got 'nrrd'"):
        resolve_layout(acdc, root, "nrrd")
    with pytest.raises(ValueError, match="no ACDC data layout found"):
        resolve_layout(acdc, root)
    write_nifti(tmp_path / "acdc" / "patient001" / "patient001_frame01.nii.gz")
    assert resolve_layout("crossmatch_ext.data.datasets.acdc", tmp_path / "acdc") == "nifti"


def test_raw_label_map() -> None:
    assert raw_label_map(la, "nrrd") == {0: 0, 255: 1}
    assert raw_label_map(la, "h5") is None and raw_label_map(la, None) is None
    assert raw_label_map(acdc, "nifti") is None and acdc.RAW_LABEL_MAPS == {}


def test_select_labeled_by_case_and_by_group() -> None:
    assert common.select_labeled(["a", "b", "c"], 2, "cases", "x") == [True, True, False]
    groups = ["p2", "p2", "p1", "p3", "p1"]
    assert common.select_labeled(groups, 2, "patients", "x") == [True, True, True, False, True]
    with pytest.raises(ValueError, match=r"labeled patients must be between 1 and 3 \(the patients in x\), got 4: set "
                                         r"--num_labeled_patients"):
        common.select_labeled(groups, 4, "patients", "x")


def test_a_bundle_config_reads_its_own_dataset_module(tmp_path: Path) -> None:
    """The bundle config with ``--dataset_module scripts.dataset``: the lists and the layout come from the bundle's
    module while the config is parsed, before MONAI puts the bundle root on ``sys.path`` for ``run``."""
    from monai.bundle import ConfigWorkflow

    configs = Path(__file__).resolve().parents[2] / "bundles" / "crossmatch_la" / "configs"
    bundle = write_bundle(tmp_path / "bundle")
    data = ct_dir(tmp_path / "data")
    workflow = ConfigWorkflow(config_file=str(configs / "train.yaml"), meta_file=str(configs / "metadata.json"),
                              logging_file=False, workflow_type="train", bundle_root=str(bundle),
                              dataset_dir=str(data), dataset_module="scripts.dataset", num_labeled=2)
    workflow.parser.parse(reset=True)
    assert str(bundle) not in sys.path
    assert workflow.parser.get_parsed_content("resolved_layout") == "ct"
    lists = workflow.parser.get_parsed_content("datalists")
    assert ids(lists["labeled"]) == ["ct0", "ct1"] and ids(lists["validation"]) == ["ct3"]
