"""Pre-training checks of the bundle configs: wrong-typed settings, unusable output folders, run settings record."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

import crossmatch_ext.bundle as bundle
from crossmatch_ext.bundle import check_setting, check_training_run, find_config_parser
from crossmatch_ext.data import write_la_dataset
from crossmatch_ext.errors import InputError, SettingError

REPO_ROOT = Path(__file__).resolve().parents[1]
LA = REPO_ROOT / "bundles" / "crossmatch_la" / "configs"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("amp", "false", (r"config key 'amp' must be True or False, got the text 'false'; MONAI's command line passes "
                          r"lowercase true/false through as text, which counts as true: write --amp False")),
        ("resume", "true", r"'resume' must be True or False, got the text 'true'.*write --resume True"),
        ("num_iterations", "ten", r"'num_iterations' must be an integer, got the text 'ten', e.g. --num_iterations 8"),
        ("num_labeled", 2.5, r"'num_labeled' must be an integer, got 2.5 \(float\)"),
        ("num_iterations", True, r"'num_iterations' must be an integer, got True \(bool\)"),
        ("learning_rate", "1e-3x", r"'learning_rate' must be a number, got the text '1e-3x'"),
        ("patch_size", 32, (r"'patch_size' must be a list of integers, got 32 \(int\), e.g. --patch_size "
                            r"\[112,112,80\] \(no spaces\)")),
        ("patch_size", "[112, 112, 80]", r"'patch_size' must be a list of integers, got the text '\[112, 112, 80\]'"),
        ("patch_size", [32, 0, 16], r"'patch_size' must hold positive integers"),
        ("mode", "semi", r"'mode' must be one of \['crossmatch', 'supervised'\], got the text 'semi'"),
        ("batch_size", 0, r"'batch_size' must be at least 1, got 0"),
        ("dataset_dir", 5, r"'dataset_dir' must be a text value, got 5 \(int\)"),
    ],
)
def test_wrong_typed_settings(key: str, value, message: str):
    with pytest.raises(SettingError, match=message):
        check_setting(key, value)


def test_right_typed_settings_pass():
    for key, value in [("amp", False), ("learning_rate", 1), ("patch_size", [32, 32, 16]), ("h5_spacing", [0.6, 1]),
                       ("mode", "supervised"), ("unknown_key", object())]:
        check_setting(key, value)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_la_dataset(tmp_path_factory.mktemp("la") / "data", num_train=4, num_val=1, num_labeled=(2,), seed=1,
                            shape=(24, 24, 16), nifti=False)


def _parser(dataset: Path, tmp_path: Path, **override):
    values = {"dataset_dir": str(dataset), "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval"),
              "num_labeled": 2, "patch_size": [32, 32, 16], "num_workers": 0, **override}
    wf = ConfigWorkflow(config_file=str(LA / "train.yaml"), meta_file=str(LA / "metadata.json"), logging_file=False,
                        workflow_type="train", **values)
    wf.parser.parse(reset=True)
    return wf.parser


def test_run_settings_are_checked_logged_and_saved(dataset: Path, tmp_path: Path, caplog):
    parser = _parser(dataset, tmp_path, seed=7, amp=False)
    with caplog.at_level("INFO"):
        settings = check_training_run("crossmatch_la", parser=parser)
    record = json.loads((tmp_path / "models" / "run_settings.json").read_text())
    assert record["seed"] == 7 and record["settings"] == settings
    assert settings["amp"] is False and settings["patch_size"] == [32, 32, 16] and settings["device"] == "cpu"
    assert settings["num_labeled"] == 2 and settings["dataset_dir"] == str(dataset)
    assert record["data"]["cases_checked"] == 5 and len(record["data"]["padded_to_patch"]) == 5
    assert "torch" in record["versions"] and "monai" in record["versions"]
    assert "seed 7; effective settings" in caplog.text


def test_lowercase_false_override_is_rejected(dataset: Path, tmp_path: Path):
    with pytest.raises(SettingError, match="write --amp False"):
        check_training_run("crossmatch_la", parser=_parser(dataset, tmp_path, amp="false"))
    assert not (tmp_path / "models" / "run_settings.json").exists()


def test_unwritable_output_folder(dataset: Path, tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InputError, match=rf"ckpt_dir {blocker}/models is not writable \(.*\): choose a folder you can "
                                         r"write with --ckpt_dir DIR"):
        check_training_run("crossmatch_la", parser=_parser(dataset, tmp_path, ckpt_dir=str(blocker / "models")))
    with pytest.raises(InputError, match=r"output_dir .* is not writable"):
        check_training_run("crossmatch_la", parser=_parser(dataset, tmp_path, output_dir=str(blocker / "eval")))


def test_disk_full(dataset: Path, tmp_path: Path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**20, 9 * 2**20, 1 * 2**20))
    with pytest.raises(InputError, match=r"ckpt_dir .*models: only 1 MiB free, the checkpoints need about \d+ MiB"):
        check_training_run("crossmatch_la", parser=_parser(dataset, tmp_path))


def test_bad_data_is_found_before_training(dataset: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    victim = max(broken.glob("*/mri_norm2.h5"))
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(InputError, match=rf"cannot read {victim} as an HDF5 file"):
        check_training_run("crossmatch_la", parser=_parser(broken, tmp_path))


def test_the_parser_is_found_from_a_config_expression(dataset: Path, tmp_path: Path):
    parser = _parser(dataset, tmp_path)
    parser["probe"] = "$crossmatch_ext.bundle.find_config_parser()"
    parser.parse(reset=True)
    assert parser.get_parsed_content("probe") is parser
    assert find_config_parser() is None


def test_label_map_comes_from_the_dataset_module(dataset: Path, tmp_path: Path, monkeypatch):
    """The raw label values are checked with the ``RAW_LABEL_MAPS`` of ``dataset_module``, not a per-bundle table."""
    import crossmatch_ext.data.validation as validation

    module = tmp_path / "my_dataset.py"
    module.write_text("from crossmatch_ext.data.datasets.la import LAYOUTS, datalists, detect_layout\n"
                      "RAW_LABEL_MAPS = {'h5': {0: 0, 9: 1}}\n")
    seen: dict = {}
    checked = validation.validate_datalists

    def spy(lists, **kwargs):
        seen.update(kwargs)
        return checked(lists, **kwargs)

    monkeypatch.setattr(validation, "validate_datalists", spy)
    settings = check_training_run("my_bundle", parser=_parser(dataset, tmp_path, dataset_module=str(module)))
    assert seen["raw_label_map"] == {0: 0, 9: 1} and seen["patch_size"] == [32, 32, 16]
    assert settings["dataset_module"] == str(module) and settings["resolved_layout"] == "h5"
    assert json.loads((tmp_path / "models" / "run_settings.json").read_text())["bundle"] == "my_bundle"
    with pytest.raises(SettingError, match=r"config key 'dataset_module' must be a text value, got 3 \(int\)"):
        check_training_run("crossmatch_la", parser=_parser(dataset, tmp_path, dataset_module=3))


def test_default_amp_by_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 autocast on CUDA, float32 on every CPU (with the paired-seed finding as the reason where bf16 is native)."""
    assert bundle.default_amp("cuda:0")[0] is True
    assert bundle.default_amp("cuda:0", deterministic=True)[0] is True
    monkeypatch.setattr(bundle.config, "cpu_has_native_bf16", lambda: True)
    assert bundle.default_amp("cpu") == (False, bundle.config.CPU_FLOAT32_REASON)
    assert "paired seeds" in bundle.config.CPU_FLOAT32_REASON and "section 8" in bundle.config.CPU_FLOAT32_REASON
    assert bundle.default_amp("cpu", deterministic=True)[0] is False
    monkeypatch.setattr(bundle.config, "cpu_has_native_bf16", lambda: False)
    assert bundle.default_amp(torch.device("cpu")) == (False, "cpu device without native bf16")


@pytest.mark.parametrize("deterministic", [False, True])
def test_prepare_run_makes_cudnn_autotuning_a_choice(tmp_path, deterministic):
    from crossmatch_ext.bundle import prepare_run

    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        prepare_run(3, tmp_path / "out", deterministic=deterministic)
        # seeding alone (MONAI's set_determinism) would pin cuDNN; only deterministic=True keeps that
        assert torch.backends.cudnn.benchmark is (not deterministic)
        assert torch.backends.cudnn.deterministic is deterministic
        assert (tmp_path / "out").is_dir()
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before


def test_precision_line_names_the_choice_and_the_way_out(monkeypatch):
    import crossmatch_ext.bundle.config as config
    from crossmatch_ext.bundle import describe_precision

    monkeypatch.setattr(config, "cpu_has_native_bf16", lambda: True)
    finding = config.CPU_FLOAT32_REASON
    # the CPU default says which and why, and how to switch
    assert describe_precision(False, {}, "cpu") == f"float32 ({finding}; --amp True for bf16 autocast)"
    assert describe_precision(True, {"dtype": torch.bfloat16}, "cpu") == (
        f"bfloat16 autocast on cpu (--amp True; float32 is {finding}; --amp False for float32)")
    assert describe_precision(True, {"dtype": torch.bfloat16}, "cuda:0") == (
        "bfloat16 autocast on cuda (CUDA device; --amp False for float32)")
    assert describe_precision(False, {}, "cuda:0") == "float32 (--amp False)"
    monkeypatch.setattr(config, "cpu_has_native_bf16", lambda: False)
    assert describe_precision(False, {}, "cpu") == "float32 (default on a cpu device without native bf16)"
    assert describe_precision(True, {"dtype": torch.bfloat16}, "cpu") == (
        "bfloat16 autocast on cpu (--amp True; float32 is the default on a cpu device without native bf16; "
        "--amp False for float32)")


def test_torchrun_needs_a_validation_case_per_process(dataset: Path, tmp_path: Path, monkeypatch):
    """Each process validates its own share of the cases: one case for two processes is refused before training,
    naming the list and what to do; without validation (val_interval 0) it is not needed."""
    from crossmatch_ext.bundle import checks

    monkeypatch.setattr(checks, "process_count", lambda: 2)
    with pytest.raises(SettingError, match=r"1 validation case\(s\) for 2 processes.* at least 2 validation cases "
                                           r"\(--validation_list val.list, .*\), or start torchrun with "
                                           r"--nproc_per_node 1"):
        check_training_run("crossmatch_la", parser=_parser(dataset, tmp_path))
    assert not (tmp_path / "models" / "run_settings.json").exists()
    check_training_run("crossmatch_la", parser=_parser(dataset, tmp_path, val_interval=0))
    monkeypatch.setattr(checks, "process_count", lambda: 1)
    check_training_run("crossmatch_la", parser=_parser(dataset, tmp_path))
