from __future__ import annotations

import json

import pytest
from ignite.engine import Engine, Events

from crossmatch_ext.engines import TrainingLog, loss_terms


def _engines():
    validator = Engine(lambda e, b: None)

    @validator.on(Events.EPOCH_COMPLETED)
    def _metric(engine):
        engine.state.metrics["val_mean_dice"] = 0.5 + 0.01 * trainer.state.iteration

    trainer = Engine(lambda e, b: {"loss": 1.0 / e.state.iteration, "mask_ratio": 0.9, "image": "x"})

    @trainer.on(Events.ITERATION_COMPLETED(every=4))
    def _validate(engine):
        validator.run([0])

    return trainer, validator


def test_training_log_lines(tmp_path):
    trainer, validator = _engines()
    path = tmp_path / "logs" / "training_log.jsonl"
    TrainingLog(str(path), loss_terms, interval=3, validator=validator).attach(trainer)
    trainer.run(range(10), max_epochs=1)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    train = [r for r in lines if r["event"] == "train"]
    val = [r for r in lines if r["event"] == "validation"]
    assert [r["iteration"] for r in train] == [1, 3, 6, 9]
    assert train[1]["loss"] == pytest.approx(1 / 3) and train[1]["mask_ratio"] == 0.9 and "image" not in train[1]
    assert [r["iteration"] for r in val] == [4, 8]  # stamped with the trainer's iteration
    assert val[0]["val_mean_dice"] == pytest.approx(0.54)
    assert all(r["wall_time"] > 0 for r in lines)


def test_training_log_appends_on_resume(tmp_path):
    path = tmp_path / "log.jsonl"
    for _ in range(2):
        trainer, _ = _engines()
        TrainingLog(str(path), loss_terms, interval=5).attach(trainer)
        trainer.run(range(5), max_epochs=1)
    assert len(path.read_text().splitlines()) == 4


def test_training_log_rejects_bad_interval(tmp_path):
    with pytest.raises(ValueError, match="interval"):
        TrainingLog(str(tmp_path / "x.jsonl"), loss_terms, interval=0)


def test_partial_last_line_is_read_and_appended_after(tmp_path) -> None:
    import json

    from crossmatch_ext.engines import TrainingLog, read_training_log

    path = tmp_path / "training_log.jsonl"
    path.write_text('{"event": "train", "iteration": 1}\n{"event": "train", "itera', encoding="utf-8")
    assert read_training_log(path) == [{"event": "train", "iteration": 1}]
    TrainingLog(str(path), output_transform=lambda _: {})._write({"event": "train", "iteration": 2})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[-1])["iteration"] == 2
    with pytest.warns(UserWarning, match="training_log.jsonl:2"):
        records = read_training_log(path)  # the killed line, now in the middle, is reported
    assert [r["iteration"] for r in records] == [1, 2]
