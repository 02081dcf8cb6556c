"""Ignite handlers used by the bundles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ignite.engine import Engine, Events
from tqdm.auto import tqdm

__all__ = ["TrainingProgressBar"]


class TrainingProgressBar:
    """One progress bar over the whole run (all epochs), with the latest loss terms as a postfix.

    Args:
        output_transform: maps ``engine.state.output`` to ``{name: float}`` shown after the bar.
        keys: the names shown (default: ``loss`` and ``mask_ratio`` when present).
        refresh_every: update the postfix every this many iterations.
    """

    def __init__(
        self,
        output_transform: Callable[[Any], dict[str, float]] | None = None,
        keys: tuple[str, ...] = ("loss", "mask_ratio"),
        refresh_every: int = 1,
    ) -> None:
        self.output_transform = output_transform
        self.keys = tuple(keys)
        self.refresh_every = max(1, int(refresh_every))
        self._bar: tqdm | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._open)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.COMPLETED, self._close)

    def _open(self, engine: Engine) -> None:
        total = getattr(engine, "max_iterations", None)
        if total is None and engine.state.epoch_length is not None:
            total = engine.state.max_epochs * engine.state.epoch_length
        self._bar = tqdm(total=total, initial=engine.state.iteration, desc="training", unit="it", dynamic_ncols=True)

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
