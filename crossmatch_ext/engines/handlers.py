"""Ignite handlers used by the bundles."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ignite.engine import Engine, Events
from tqdm.auto import tqdm

__all__ = ["HandlerGroup", "TrainingLog", "TrainingProgressBar"]


class HandlerGroup:
    """Several Ignite / MONAI handlers attached as one: ``handlers`` in order, each with its own ``attach``.

    A config can list a group as one item of a handler list, so tools that insert or append handlers to that list
    (MONAI Label, ``--tracking mlflow``) still can.
    """

    handlers: list[Any]

    def __init__(self, handlers: Sequence[Any] = ()) -> None:
        self.handlers = list(handlers)

    def attach(self, engine: Engine) -> None:
        for handler in self.handlers:
            handler.attach(engine)


class TrainingProgressBar:
    """One progress bar over the whole run (all epochs), with the latest loss terms as a postfix.

    While the bar is open, log records that go to the console (the engines' epoch and best-metric lines, MONAI's
    ``StatsHandler``, validation results) are written above it through ``tqdm.write``, so the bar stays one line at
    the bottom instead of being cut by them; handlers that write to files are untouched.

    Args:
        output_transform: maps ``engine.state.output`` to ``{name: float}`` shown after the bar.
        keys: the names shown (default: ``loss`` and ``mask_ratio`` when present).
        refresh_every: update the postfix every this many iterations.
        redirect_logging: write console log records above the bar while it is open.
    """

    def __init__(
        self,
        output_transform: Callable[[Any], dict[str, float]] | None = None,
        keys: tuple[str, ...] = ("loss", "mask_ratio"),
        refresh_every: int = 1,
        redirect_logging: bool = True,
    ) -> None:
        self.output_transform = output_transform
        self.keys = tuple(keys)
        self.refresh_every = max(1, int(refresh_every))
        self.redirect_logging = bool(redirect_logging)
        self._bar: tqdm | None = None
        self._swapped: list[tuple[logging.Logger, list[logging.Handler]]] | None = None

    class _AboveTheBar(logging.Handler):
        """Stands in for a console handler while the bar is open: its level, filters, format and stream, written
        through ``tqdm.write``."""

        def __init__(self, original: logging.StreamHandler) -> None:
            super().__init__(original.level)
            self.original = original
            self.filters = list(original.filters)
            self.setFormatter(original.formatter)

        def emit(self, record: logging.LogRecord) -> None:
            try:
                tqdm.write(self.format(record), file=self.original.stream)
            except Exception:
                self.handleError(record)

    @staticmethod
    def _is_console(handler: logging.Handler) -> bool:
        return isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (
            sys.stdout, sys.stderr)

    def _redirect_console_logging(self) -> None:
        """Swap every console handler (root's, and those of MONAI's loggers, which do not propagate)."""
        loggers = [logging.getLogger(), *(lg for lg in list(logging.root.manager.loggerDict.values())
                                         if isinstance(lg, logging.Logger))]
        self._swapped = []
        for logger in loggers:
            if any(self._is_console(h) for h in logger.handlers):
                self._swapped.append((logger, logger.handlers))
                logger.handlers = [
                    self._AboveTheBar(h) if self._is_console(h) else h  # type: ignore[arg-type]
                    for h in logger.handlers
                ]

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._open)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.COMPLETED, self._close)

    def _open(self, engine: Engine) -> None:
        total = getattr(engine, "max_iterations", None)
        if total is None and engine.state.epoch_length is not None and engine.state.max_epochs is not None:
            total = engine.state.max_epochs * engine.state.epoch_length
        self._bar = tqdm(total=total, initial=engine.state.iteration, desc="training", unit="it", dynamic_ncols=True)
        if self.redirect_logging and self._swapped is None:
            self._redirect_console_logging()

    def _update(self, engine: Engine) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        if self.output_transform is not None and engine.state.iteration % self.refresh_every == 0:
            values = self.output_transform(engine.state.output)
            shown = {k: f"{values[k]:.4f}" for k in self.keys if k in values}
            self._bar.set_postfix(shown, refresh=False)

    def _close(self, engine: Engine) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._swapped is not None:
            for logger, handlers in self._swapped:
                logger.handlers = handlers
            self._swapped = None


def read_training_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a ``training_log.jsonl`` written by :class:`TrainingLog`, tolerating a killed writer.

    An incomplete or undecodable line (a line being written, or the tail of a killed run) is skipped; one in the
    middle of the file is reported with a warning naming the file and line number.

    Args:
        path: the ``.jsonl`` file; a missing file reads as no records.

    Returns:
        the decoded records, in file order.
    """
    import json
    import warnings

    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as stream:
        lines = stream.read().split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            if number - 1 != last:
                warnings.warn(f"{os.fspath(path)}:{number}: skipped a line that is not a JSON record.", stacklevel=2)
            continue
        records.append(record)
    return records


class TrainingLog:
    """Machine-readable training log: one JSON line per logged iteration and per validation.

    Lines look like ``{"event": "train", "iteration": 50, "wall_time": ..., "loss": ..., "mask_ratio": ...}`` and
    ``{"event": "validation", "iteration": 1000, "wall_time": ..., "val_mean_dice": ...}``: validations are stamped
    with the trainer's iteration (TensorBoard's validation step is the trainer's epoch, too coarse for curves).
    The file is appended to, so a resumed run continues the same log; each line is flushed when written.

    Args:
        path: the ``.jsonl`` file (its folder is created).
        output_transform: maps ``engine.state.output`` to ``{name: float}``
            (e.g. ``crossmatch_ext.engines.loss_terms``).
        interval: log the training terms every this many iterations (the first iteration is always logged).
        validator: the evaluator whose metrics are logged after each of its runs (optional).
    """

    def __init__(
        self,
        path: str,
        output_transform: Callable[[Any], dict[str, float]],
        interval: int = 10,
        validator: Engine | None = None,
    ) -> None:
        if int(interval) < 1:
            raise ValueError(f"TrainingLog interval must be a positive number of iterations, got {interval}.")
        self.path = str(path)
        self.output_transform = output_transform
        self.interval = int(interval)
        self.validator = validator
        self._trainer: Engine | None = None

    def attach(self, engine: Engine) -> None:
        import os

        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._trainer = engine
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._train)
        if self.validator is not None:
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self._validation)

    def _write(self, record: dict[str, Any]) -> None:
        import json
        import math
        import time

        record["wall_time"] = time.time()
        safe = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        line = json.dumps(safe) + "\n"
        with open(self.path, "ab+") as stream:
            # a killed run can leave a partial last line: start on a new line rather than glue onto it
            if stream.seek(0, 2) > 0:
                stream.seek(-1, 2)
                if stream.read(1) != b"\n":
                    line = "\n" + line
            stream.write(line.encode("utf-8"))

    def _train(self, engine: Engine) -> None:
        iteration = engine.state.iteration
        if iteration != 1 and iteration % self.interval != 0:
            return
        values = self.output_transform(engine.state.output)
        record: dict[str, Any] = {"event": "train", "iteration": iteration}
        record.update({k: float(v) for k, v in values.items()})
        self._write(record)

    def _validation(self, validator: Engine) -> None:
        iteration = self._trainer.state.iteration if self._trainer is not None else None
        record: dict[str, Any] = {"event": "validation", "iteration": iteration}
        for name, value in validator.state.metrics.items():
            try:
                record[name] = float(value)
            except (TypeError, ValueError):
                continue
        self._write(record)
