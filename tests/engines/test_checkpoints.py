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


# ------------------------------------------------------------------------------------------------ what is restored
def _momentum_setup(seed: int):
    torch.manual_seed(seed)
    network = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    seen: list[int] = []

    def step(engine: Engine, batch: torch.Tensor) -> float:
        seen.append(engine.state.iteration)
        optimizer.zero_grad()
        loss = network(batch).pow(2).mean()
        loss.backward()
        optimizer.step()
        scheduler.step()
        return float(loss.detach())

    return network, optimizer, scheduler, Engine(step), [torch.ones(2, 3)] * 3, seen


def test_final_weights_are_a_bare_state_dict_of_the_network(tmp_path: Path):
    network, optimizer, scheduler, trainer, data, _ = _momentum_setup(0)
    for handler in training_checkpoint_handlers(tmp_path, network, optimizer, scheduler, trainer, save_interval=2):
        handler.attach(trainer)
    trainer.run(data, max_epochs=2)
    final = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(final) == set(network.state_dict())  # loads into network_def as it is
    for name, value in network.state_dict().items():
        assert torch.equal(final[name], value)
    state = load_resumable_state(tmp_path / "resume" / "last.pt")
    assert set(state) == {"network", "optimizer", "lr_scheduler", "trainer"}
    assert state["trainer"]["iteration"] == 6 and state["lr_scheduler"]["last_epoch"] == 6


def test_resume_restores_weights_optimizer_moments_and_learning_rate(tmp_path: Path):
    network, optimizer, scheduler, trainer, data, _ = _momentum_setup(0)
    for handler in training_checkpoint_handlers(tmp_path, network, optimizer, scheduler, trainer, save_interval=1):
        handler.attach(trainer)
    trainer.run(data, max_epochs=1)
    trained = network.weight.detach().clone()
    momentum = optimizer.state_dict()["state"][0]["momentum_buffer"].clone()

    network2, optimizer2, scheduler2, trainer2, data2, seen = _momentum_setup(1)  # other initial weights
    assert not torch.equal(network2.weight, trained)
    handlers = training_checkpoint_handlers(
        tmp_path, network2, optimizer2, scheduler2, trainer2, save_interval=1, resume=True, map_location="cpu"
    )
    restored: dict[str, object] = {}

    def capture(engine: Engine) -> None:
        restored["weight"] = network2.weight.detach().clone()
        restored["momentum"] = optimizer2.state_dict()["state"][0]["momentum_buffer"].clone()
        restored["lr"] = optimizer2.param_groups[0]["lr"]

    for handler in handlers:
        handler.attach(trainer2)
    trainer2.add_event_handler(Events.ITERATION_STARTED(once=4), capture)
    trainer2.run(data2, max_epochs=2)
    assert seen == [4, 5, 6]  # the first epoch is not repeated
    assert torch.equal(restored["weight"], trained)
    assert torch.equal(restored["momentum"], momentum)
    assert restored["lr"] == pytest.approx(0.1 * 0.5**3)


def test_final_filename_is_configurable(tmp_path: Path):
    network, optimizer, scheduler, trainer, data, _ = _momentum_setup(0)
    handlers = training_checkpoint_handlers(
        tmp_path, network, optimizer, scheduler, trainer, save_interval=0, final_filename="weights.pt"
    )
    for handler in handlers:
        handler.attach(trainer)
    trainer.run(data, max_epochs=1)
    assert (tmp_path / "weights.pt").is_file() and not (tmp_path / "model.pt").exists()
    assert (tmp_path / "resume" / "last.pt").is_file()  # interval 0: the state is still saved at the end
