"""Checkpoints are written atomically and a resumed run continues from the saved iteration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from crossmatch_ext.engines.checkpoints import (
    AtomicCheckpointSaver,
    ResumableStateSaver,
    load_resumable_state,
    training_checkpoint_handlers,
)
from crossmatch_ext.errors import InputFileNotFoundError, InputValueError


def _setup(max_iterations: int):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.9)
    seen: list[int] = []

    def step(engine, batch):
        seen.append(engine.state.iteration)
        opt.zero_grad()
        net(batch).sum().backward()
        opt.step()
        sched.step()
        return 0.0

    engine = Engine(step)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=max_iterations), lambda e: e.terminate())
    return net, opt, sched, engine, seen


def test_resumable_state_is_saved_every_interval_and_resumes(tmp_path: Path):
    data = [torch.ones(2, 3)] * 100
    net, opt, sched, engine, _ = _setup(7)
    for handler in training_checkpoint_handlers(tmp_path, net, opt, sched, engine, save_interval=3):
        handler.attach(engine)
    saved: list[int] = []
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=3),
                             lambda e: saved.append(load_resumable_state(tmp_path / "resume" / "last.pt")["trainer"]
                                                    ["iteration"]))
    engine.run(data, max_epochs=1)
    assert saved == [3, 6]
    assert load_resumable_state(tmp_path / "resume" / "last.pt")["trainer"]["iteration"] == 7
    assert (tmp_path / "model.pt").is_file()
    assert not list(tmp_path.rglob("*.tmp"))

    # a run interrupted after the save at 6: resume continues at 7
    state = load_resumable_state(tmp_path / "resume" / "last.pt")
    state["trainer"]["iteration"] = 6
    torch.save(state, tmp_path / "resume" / "last.pt")
    net2, opt2, sched2, engine2, seen = _setup(9)
    for handler in training_checkpoint_handlers(tmp_path, net2, opt2, sched2, engine2, save_interval=3, resume=True):
        handler.attach(engine2)
    engine2.run(data, max_epochs=1)
    assert seen[0] == 7 and seen[-1] == 9
    assert sched2.last_epoch == 7 + 3  # the schedule restored from the file (saved at 7), then three steps


def test_resume_without_a_state_or_with_a_broken_one(tmp_path: Path):
    net, opt, sched, engine, _ = _setup(1)
    with pytest.raises(InputFileNotFoundError, match=r"no resumable training state at .*last\.pt: train once"):
        training_checkpoint_handlers(tmp_path, net, opt, sched, engine, 1, resume=True)
    (tmp_path / "resume").mkdir()
    (tmp_path / "resume" / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputValueError, match=r"cannot load the training state .*last\.pt .*delete it to start over"):
        training_checkpoint_handlers(tmp_path, net, opt, sched, engine, 1, resume=True)


def test_state_loading_refuses_pickled_objects(tmp_path: Path):
    torch.save({"trainer": {"iteration": 1}, "evil": object()}, tmp_path / "last.pt")
    with pytest.raises(InputValueError, match="cannot load the training state"):
        load_resumable_state(tmp_path / "last.pt")


def test_atomic_saver_never_deletes_the_fixed_file_first(tmp_path: Path, monkeypatch):
    net = torch.nn.Linear(2, 1)
    saver = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True,
                                  key_metric_name="m", key_metric_filename="model_best.pt")
    evaluator = Engine(lambda e, b: None)
    saver.attach(evaluator)
    scores = iter([0.5, 0.7])

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _metric(engine):
        engine.state.metrics["m"] = next(scores)

    evaluator.remove_event_handler(saver.metrics_completed, Events.EPOCH_COMPLETED)
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, saver.metrics_completed)
    evaluator.run([0], max_epochs=1)
    first = (tmp_path / "model_best.pt").stat().st_ino
    removed: list[str] = []
    monkeypatch.setattr("os.remove", lambda p: removed.append(p))
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: removed.append(str(self)))
    evaluator.run([0], max_epochs=2)
    assert removed == []
    assert (tmp_path / "model_best.pt").stat().st_ino != first  # replaced by a rename
    assert set(torch.load(tmp_path / "model_best.pt", weights_only=True)) == {"weight", "bias"}


def test_resumable_state_saver_rejects_negative_interval(tmp_path: Path):
    with pytest.raises(InputValueError, match=">= 0"):
        ResumableStateSaver(tmp_path / "x.pt", {}, -1)
