"""The ``device_views`` setting of both bundles: the unlabeled strong views and CutMix boxes made batched on the
training device (on a CPU here, forced with ``True``), the loader workers then making the weak views only."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from crossmatch_ext.data import write_acdc_dataset, write_la_dataset
from crossmatch_ext.engines import loss_terms
from crossmatch_ext.errors import SettingError
from crossmatch_ext.transforms import BatchedUnlabeledViews, RandCutMixBoxd, StrongViewsd

from bundle_helpers import REPO_ROOT

pytestmark = pytest.mark.slow

SMALL = {
    "crossmatch_la": {"patch_size": [16, 16, 16], "eval_strides": [8, 8, 8], "num_labeled": 2,
                      "network_def::n_filters": 4},
    "crossmatch_acdc": {"image_size": [32, 32], "num_labeled_patients": 1},
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("views")
    return {
        "crossmatch_la": write_la_dataset(root / "la", num_train=4, num_val=1, num_labeled=(2,), seed=3,
                                          shape=(24, 24, 20), nifti=True),
        "crossmatch_acdc": write_acdc_dataset(root / "acdc", num_train_patients=3, num_val_patients=1,
                                              labeled_patients=(1,), seed=4, size=((36, 32), (40, 36)),
                                              num_slices=(3, 3), nifti=True),
    }


def _workflow(bundle: str, dataset: Path, tmp_path: Path, **override) -> ConfigWorkflow:
    configs = REPO_ROOT / "bundles" / bundle / "configs"
    wf = ConfigWorkflow(config_file=str(configs / "train.yaml"), meta_file=str(configs / "metadata.json"),
                        logging_file=False, workflow_type="train", dataset_dir=str(dataset),
                        ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "eval"), num_iterations=3,
                        val_interval=3, num_workers=0, batch_size=2, log_interval=1000, **SMALL[bundle], **override)
    wf.initialize()
    return wf


def _unlabeled_transforms(wf: ConfigWorkflow) -> list:
    dataset = wf.parser.get_parsed_content("train::unlabeled_dataset")
    transform = dataset.transform
    return [t for t in getattr(transform, "transforms", [transform]) if isinstance(t, (StrongViewsd, RandCutMixBoxd))]


@pytest.mark.parametrize("bundle", ["crossmatch_la", "crossmatch_acdc"])
def test_device_views_train_and_leave_the_workers_the_weak_view(bundle, datasets, tmp_path):
    wf = _workflow(bundle, datasets[bundle], tmp_path, device_views=True)
    trainer = wf.parser.get_parsed_content("train::trainer")
    assert isinstance(trainer.device_views, BatchedUnlabeledViews)
    made = _unlabeled_transforms(wf)
    assert {type(t) for t in made} == {StrongViewsd, RandCutMixBoxd} and all(t.deferred for t in made)
    seen: list[set] = []
    losses: list[float] = []
    views = trainer.device_views

    def spy(batch):
        out = views(batch)
        seen.append(set(out))
        return out

    trainer.device_views = spy
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(loss_terms(e.state.output)["loss"]))
    wf.run()
    wf.finalize()
    # two calls per step (the unlabeled and the mix batch), each adding both strong views and both boxes
    assert len(seen) == 6 and all({"image_s1", "image_s2", "cutmix_box_s1", "cutmix_box_s2"} <= keys for keys in seen)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("bundle", ["crossmatch_la", "crossmatch_acdc"])
def test_device_views_auto_keeps_the_workers_views_on_a_cpu(bundle, datasets, tmp_path):
    wf = _workflow(bundle, datasets[bundle], tmp_path)
    assert wf.parser.get_parsed_content("train::trainer").device_views is None
    assert not any(t.deferred for t in _unlabeled_transforms(wf))


def test_device_views_setting_is_checked(datasets, tmp_path):
    with pytest.raises(Exception) as info:
        _workflow("crossmatch_la", datasets["crossmatch_la"], tmp_path, device_views="yes")
    messages = [str(e) for e in _chain(info.value) if isinstance(e, SettingError)]
    assert messages and "device_views" in messages[0] and "True, False or auto" in messages[0]


def test_device_views_true_names_a_transform_without_a_batched_form(datasets, tmp_path, monkeypatch):
    import crossmatch_ext.bundle.training as training

    def unsupported(dataset):
        raise ValueError("no batched counterpart for RandAffine at strong_augmentation.transforms[3]")

    monkeypatch.setattr(training, "device_views_from_dataset", unsupported)
    wf = _workflow("crossmatch_la", datasets["crossmatch_la"], tmp_path, device_views=True)
    with pytest.raises(Exception) as info:
        wf.parser.get_parsed_content("train::trainer")
    messages = [str(e) for e in _chain(info.value) if isinstance(e, SettingError)]
    assert messages and messages[0].startswith("--device_views True: ") and "RandAffine" in messages[0]
    wf = _workflow("crossmatch_la", datasets["crossmatch_la"], tmp_path / "auto", device_views="auto",
                   device=torch.device("cpu"))
    assert wf.parser.get_parsed_content("train::trainer").device_views is None


def _chain(error: BaseException):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__
