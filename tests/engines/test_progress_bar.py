"""TrainingProgressBar: console log records go above the bar while it is open; file handlers are untouched."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from ignite.engine import Engine, Events

from crossmatch_ext.engines import TrainingProgressBar
from crossmatch_ext.engines import handlers as handlers_module


def test_console_records_are_written_above_the_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[tuple[str, object]] = []
    monkeypatch.setattr(handlers_module.tqdm, "write", lambda text, file=None: written.append((text, file)))
    logger = logging.getLogger("test_progress_bar.engine")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    quiet_console = logging.StreamHandler(sys.stderr)
    quiet_console.setLevel(logging.WARNING)
    log_file = logging.FileHandler(tmp_path / "run.log")
    original = [console, quiet_console, log_file]
    logger.handlers = list(original)
    try:
        engine = Engine(lambda engine, batch: {"loss": 0.5})
        TrainingProgressBar(output_transform=lambda output: output).attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: logger.info(f"Epoch[{e.state.epoch}] Complete"))
        engine.run(range(3), max_epochs=2)
        log_file.flush()
        assert logger.handlers == original  # restored when the bar closes
        assert written == [("INFO Epoch[1] Complete", sys.stdout), ("INFO Epoch[2] Complete", sys.stdout)]
        assert (tmp_path / "run.log").read_text().splitlines() == ["Epoch[1] Complete", "Epoch[2] Complete"]
        logger.info("after the run")
        assert len(written) == 2  # the original console handler again
    finally:
        logger.handlers = []
        log_file.close()


def test_redirect_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[str] = []
    monkeypatch.setattr(handlers_module.tqdm, "write", lambda text, file=None: written.append(text))
    logger = logging.getLogger("test_progress_bar.plain")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers = [logging.StreamHandler(sys.stdout)]
    try:
        engine = Engine(lambda engine, batch: {"loss": 0.5})
        TrainingProgressBar(redirect_logging=False).attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: logger.info("epoch"))
        engine.run(range(2), max_epochs=1)
        assert written == []
    finally:
        logger.handlers = []
