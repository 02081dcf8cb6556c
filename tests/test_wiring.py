"""The shared bundle wiring: builders that read their parts from the config by id (crossmatch_ext.bundle)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from monai.bundle import ConfigParser
from monai.data import DistributedSampler

import crossmatch_ext.bundle.training as training
from crossmatch_ext.bundle import (
    CONFIG_READS,
    ConfigIds,
    TrainingHandlers,
    distributed_network,
    distributed_train_network,
    validation_loader,
)
from crossmatch_ext.data import write_la_dataset
from crossmatch_ext.errors import SettingError
from crossmatch_ext.networks import FeaturePerturbation, UNet

REPO_ROOT = Path(__file__).resolve().parents[1]
LA = REPO_ROOT / "bundles" / "crossmatch_la"


@pytest.fixture(scope="module")
def la_data(tmp_path_factory) -> Path:
    return write_la_dataset(tmp_path_factory.mktemp("wiring") / "la", num_train=4, num_val=1, num_labeled=(2,),
                            seed=1, shape=(36, 36, 20))


def _parser(tmp_path: Path, la_data: Path, *files: str, **override) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(LA / "configs" / f) for f in (files or ("train.yaml",))])
    parser.update({
        "bundle_root": str(LA), "dataset_dir": str(la_data), "output_dir": str(tmp_path / "eval"),
        "ckpt_dir": str(tmp_path / "models"), "num_workers": 0, "cache_rate": 0.0, "num_labeled": 2,
        "patch_size": [32, 32, 16], "device": "$torch.device('cpu')", **override,
    })
    return parser


@pytest.fixture
def reads(monkeypatch) -> dict[str, set[str]]:
    """The ids each builder looks up, recorded as the config is evaluated."""
    seen: dict[str, set[str]] = defaultdict(set)
    original = ConfigIds._get

    def record(self, id, default):
        seen[self.builder].add(id)
        return original(self, id, default)

    monkeypatch.setattr(ConfigIds, "_get", record)
    return seen


def test_the_declared_reads_are_what_the_builders_read(tmp_path, la_data, reads):
    parser = _parser(tmp_path, la_data)
    for id in ("train::trainer", "train::handlers", "validate::evaluator"):
        parser.get_parsed_content(id)
    evaluation = _parser(tmp_path, la_data, "train.yaml", "evaluate.yaml")
    evaluation.get_parsed_content("validate::evaluator")
    for builder in ("crossmatch_trainer", "train_loader", "TrainingHandlers", "validation_evaluator",
                    "EvaluationHandlers"):
        name = f"crossmatch_ext.bundle.{builder}"
        assert reads[name], f"{name} read nothing"
        assert reads[name] == set(CONFIG_READS[name]), name
    # nothing read that is not declared: tools following the references miss nothing
    for name, ids in reads.items():
        if name in CONFIG_READS:
            assert ids <= set(CONFIG_READS[name])


def test_an_argument_in_the_config_takes_precedence_over_the_id(tmp_path, la_data, reads):
    parser = _parser(tmp_path, la_data, **{"train::trainer::train_metric_interval": 3, "train_metric_interval": 7,
                                           "train::trainer::train_data_loader": "$[{}]"})
    trainer = parser.get_parsed_content("train::trainer")
    assert trainer.train_metric_interval == 3
    assert trainer.data_loader == [{}]
    assert "train::dataloader" not in reads["crossmatch_ext.bundle.crossmatch_trainer"]  # not even built


def test_a_setting_the_config_does_not_declare_can_be_given(tmp_path, la_data):
    parser = _parser(tmp_path, la_data, train_metric_interval=4)
    del parser.config["train_metric_interval"]
    assert parser.get_parsed_content("train::trainer").train_metric_interval == 10  # the documented default
    parser = _parser(tmp_path, la_data, train_metric_interval=4)
    assert parser.get_parsed_content("train::trainer").train_metric_interval == 4


def test_a_missing_part_is_named(tmp_path):
    parser = ConfigParser({"imports": ["$import crossmatch_ext.bundle"], "device": "cpu",
                           "trainer": {"_target_": "crossmatch_ext.bundle.crossmatch_trainer"}})
    with pytest.raises(Exception) as error:
        parser.get_parsed_content("trainer")
    cause = error.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, SettingError)
    assert "needs the config key 'num_iterations'" in str(cause)


def test_builders_need_a_config():
    with pytest.raises(RuntimeError, match="call it from a config"):
        ConfigIds(builder="x")
    assert ConfigIds(ConfigParser({"a": 1})).get("a") == 1


def test_only_the_first_process_monitors(tmp_path, la_data, monkeypatch):
    parser = _parser(tmp_path, la_data)
    (first,) = parser.get_parsed_content("train::handlers")
    assert first.monitors is not None and len(first.handlers) == 3  # LR schedule, validation, monitors
    monkeypatch.setattr(training, "process_rank", lambda: 1)
    second = TrainingHandlers(parser)
    assert second.monitors is None and len(second.handlers) == 2
    assert second.handlers[1].validator is first.handlers[1].validator  # the same evaluator instance
    assert TrainingHandlers(parser, validator=None).handlers[-1] is not None
    with pytest.raises(SettingError, match="unknown arguments"):
        TrainingHandlers(parser, log_every=3)


@pytest.fixture
def process_group(tmp_path):
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'store'}")
    yield
    dist.destroy_process_group()


def test_distributed_pieces_in_a_one_process_group(process_group):
    dataset = list(range(5))
    loader = validation_loader(dataset)
    assert isinstance(loader.sampler, DistributedSampler) and len(loader) == 5
    network = distributed_network(UNet(1, 2, features=(4, 8, 8, 16, 16)), "cpu")
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in network.modules())  # SyncBatchNorm needs CUDA
    wrapped = distributed_train_network(network, FeaturePerturbation(0.5, spatial_dims=2), "cpu")
    assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
    assert wrapped.module.network is network


def test_validation_loader_outside_torch_distributed():
    loader = validation_loader(list(range(3)), num_workers=0)
    assert loader.batch_size == 1 and not isinstance(loader.sampler, DistributedSampler)
    assert [int(b) for b in loader] == [0, 1, 2]


def test_with_validation_off_the_evaluator_is_not_built(tmp_path, la_data, reads):
    parser = _parser(tmp_path, la_data, val_interval=0)
    (handlers,) = parser.get_parsed_content("train::handlers")
    assert "validate::evaluator" not in reads["crossmatch_ext.bundle.TrainingHandlers"]
    assert len(handlers.handlers) == 2  # LR schedule and monitors


def test_the_old_module_name_names_the_same_objects():
    """``crossmatch_ext.wiring`` is kept for old imports: the names it had, the very objects of the package."""
    import crossmatch_ext.bundle as bundle
    import crossmatch_ext.wiring as wiring

    old = {"CONFIG_READS", "TRAINER_SETTINGS", "ConfigIds", "EvaluationHandlers", "TrainingHandlers",
           "TrainingMonitors", "autocast_kwargs", "checkpoint_handlers", "crossmatch_trainer", "distributed_network",
           "distributed_train_network", "end_distributed", "every", "find_config_parser", "inference_evaluator",
           "init_distributed", "one_hot_postprocessing", "process_device", "process_rank", "train_loader",
           "validation_evaluator", "validation_loader"}
    assert set(wiring.__all__) == old
    assert all(getattr(wiring, name) is getattr(bundle, name) for name in old)


# ------------------------------------------------------------------- the settings and parts every bundle shares
ACDC = REPO_ROOT / "bundles" / "crossmatch_acdc"


def test_a_shared_setting_is_the_config_value_else_the_package_default(tmp_path, la_data):
    from crossmatch_ext.bundle import SHARED_SETTINGS, setting

    parser = _parser(tmp_path, la_data)
    assert "eta" not in parser.get()  # no bundle declares it: defined once in the package
    assert setting("eta", parser) == SHARED_SETTINGS["eta"][0] == 0.3
    parser = _parser(tmp_path, la_data, eta=0.5, validation_list="test.list")  # --eta 0.5 --validation_list test.list
    assert setting("eta", parser) == 0.5
    expression = ConfigParser({"imports": ["$import crossmatch_ext", "$import crossmatch_ext.bundle"],
                               "validation_list": "test.list",
                               "split": "$crossmatch_ext.bundle.setting('validation_list')"})
    assert expression.get_parsed_content("split") == "test.list"
    with pytest.raises(KeyError, match="not a shared setting"):
        setting("num_labeled", parser)


def test_the_trainer_builds_the_perturbed_network_and_the_loss_from_the_settings(tmp_path, la_data):
    trainer = _parser(tmp_path, la_data).get_parsed_content("train::trainer")
    perturbation = trainer.network.perturbation
    assert isinstance(perturbation, FeaturePerturbation)
    assert (perturbation.spatial_dims, perturbation.kind, perturbation.levels) == (3, "dropout", "all")  # V-Net: 3D
    assert (perturbation.weak_rate, perturbation.strong_rate) == (0.25, 0.75)
    assert trainer.loss_function.eta == 0.3 and trainer.loss_function.weighting == "strong_distillation"
    parser = _parser(tmp_path, la_data, perturbation_type="alpha", perturbation_levels="bottleneck",
                     perturbation_gap=0.2, eta=0.5)
    trainer = parser.get_parsed_content("train::trainer")
    perturbation = trainer.network.perturbation
    assert (perturbation.kind, perturbation.levels) == ("alpha", "bottleneck")
    assert perturbation.weak_rate == pytest.approx(0.4) and trainer.loss_function.eta == 0.5
    assert trainer.network.network is parser.get_parsed_content("network")  # the optimizer's parameters


def test_the_perturbation_is_2d_for_a_2d_network_and_a_declared_one_wins():
    network = UNet(1, 2, features=(4, 8, 8, 16, 16))
    ids = ConfigIds(ConfigParser({"network": "$None", "device": "cpu"}))
    ids._get = lambda id, default: network if id == "network" else default  # type: ignore[method-assign]
    assert training.config_perturbation(ids).spatial_dims == 2
    declared = FeaturePerturbation(0.5, spatial_dims=3)
    ids._get = lambda id, default: {"network": network, "perturbation": declared}.get(id, default)  # type: ignore
    assert training.config_perturbation(ids) is declared
    ids._get = lambda id, default: torch.nn.Linear(2, 2) if id == "network" else default  # type: ignore
    with pytest.raises(SettingError, match="define `perturbation` in the config"):
        training.config_perturbation(ids)


def test_one_poly_schedule_for_the_handlers_and_the_checkpoints(tmp_path, la_data):
    parser = _parser(tmp_path, la_data, num_iterations=30)
    (handlers,) = parser.get_parsed_content("train::handlers")
    schedule = handlers.handlers[0].lr_scheduler
    assert isinstance(schedule, torch.optim.lr_scheduler.PolynomialLR)
    assert (schedule.total_iters, schedule.power) == (17000, 0.9)  # LA: the authors' fixed 17000 steps
    assert schedule.optimizer is parser.get_parsed_content("optimizer")
    checkpoints = training.checkpoint_handlers(parser)
    (state,) = [h for h in checkpoints if hasattr(h, "objects")]  # the resumable state
    assert state.objects["lr_scheduler"] is schedule
    del parser.config["lr_decay_iterations"]  # ACDC declares none: the schedule runs over num_iterations
    parser.parse()
    (handlers,) = parser.get_parsed_content("train::handlers")
    assert handlers.handlers[0].lr_scheduler.total_iters == 30


def test_run_settings_record_the_shared_settings(tmp_path, la_data):
    from crossmatch_ext.bundle import METHOD_SETTINGS, effective_settings

    settings = effective_settings(_parser(tmp_path, la_data, eta=0.4))
    assert settings["eta"] == 0.4
    assert all(settings[k] == d for k, (d, _) in METHOD_SETTINGS.items() if k != "eta")
    assert isinstance(settings["amp"], bool)
