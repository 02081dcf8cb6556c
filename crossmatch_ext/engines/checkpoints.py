"""The checkpoint handlers of a training run, shared by the bundles' ``train.yaml``.

Every checkpoint is written atomically (a temporary file in the same folder, then a rename), so a crash, a kill or
a full disk during a save leaves the previous checkpoint intact. MONAI's ``CheckpointSaver`` writes in place and,
for a fixed file name such as ``model_best.pt``, deletes the old file before writing the new one;
:class:`AtomicCheckpointSaver` is a drop-in replacement that does neither.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

from ..errors import InputFileNotFoundError, InputValueError
from ..io import atomic_torch_save

__all__ = [
    "AtomicCheckpointSaver",
    "ResumableStateSaver",
    "TrainingSummaryWriter",
    "load_resumable_state",
    "read_training_summary",
    "training_checkpoint_handlers",
]

#: the file beside the final weights that says how the training run ended
TRAINING_SUMMARY = "training_summary.json"

logger = logging.getLogger(__name__)


class _AtomicDiskSaver(DiskSaver):
    """Ignite ``DiskSaver`` writing through :func:`crossmatch_ext.io.atomic_torch_save`, with an optional fixed name."""

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True)
        self.filename = filename

    def __call__(self, checkpoint: Any, filename: str, metadata: Any = None) -> None:
        if idist.get_rank() == self.save_on_rank:
            atomic_torch_save(checkpoint, Path(self.dirname) / (self.filename or filename))

    def remove(self, filename: str) -> None:
        if self.filename is not None:  # the next save replaces the file in one rename: never delete it first
            return
        super().remove(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) writing each file atomically.

    A file with a fixed name (``final_filename``, ``key_metric_filename``) is replaced in one rename instead of being
    deleted and rewritten, so a kill at any moment leaves a complete file on disk.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                fixed = getattr(checkpoint.save_handler, "filename", None)
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, fixed)


class ResumableStateSaver:
    """Save a resumable training state (``state_dict`` of each object) to one file, atomically.

    The file is rewritten every ``interval`` iterations and when training completes; an interrupted run (crash,
    SIGKILL, power loss) therefore leaves the state of the last multiple of ``interval`` on disk, complete.
    Nothing is saved when an iteration raises: the state at that point is not a consistent one.

    Args:
        path: the file (its folder is created when the handler is attached).
        objects: ``{name: object with state_dict()}``; the trainer's entry holds its iteration and epoch.
        interval: iterations between saves; 0 saves only at the end.
    """

    def __init__(self, path: str | os.PathLike, objects: dict[str, Any], interval: int) -> None:
        if int(interval) < 0:
            raise InputValueError(f"the save interval must be >= 0 iterations, got {interval}.")
        self.path = Path(path)
        self.objects = objects
        self.interval = int(interval)

    def attach(self, engine: Engine) -> None:
        if idist.get_rank() == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.interval > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)

    def save(self, engine: Engine | None = None) -> None:
        """Write the state now (rank 0 only)."""
        if idist.get_rank() != 0:
            return
        state = {}
        for name, obj in self.objects.items():
            if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
                obj = obj.module
            state[name] = obj.state_dict()
        atomic_torch_save(state, self.path)


class TrainingSummaryWriter:
    """Write ``<ckpt_dir>/training_summary.json`` when training completes: iterations, the steps skipped for
    non-finite gradients (the safety net of :class:`~crossmatch_ext.engines.CrossMatchTrainer`) and how they were
    checked, so an evaluation of the final weights can report them (:func:`read_training_summary`).

    Args:
        path: the file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        read = getattr(engine, "read_skipped_steps", None)
        skipped = int(read()) if callable(read) else int(getattr(engine, "skipped_steps", 0))
        summary = {
            "iterations": int(engine.state.iteration),
            "skipped_steps": skipped,
            "nonfinite_check": getattr(engine, "nonfinite_check", None),
            "max_nonfinite_steps": getattr(engine, "max_nonfinite_steps", None),
            "final_weights": "model.pt",
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(json.dumps(summary, indent=1) + "\n")
        os.replace(temporary, self.path)


def read_training_summary(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """The ``training_summary.json`` beside ``checkpoint`` (the final weights a training run wrote), or None when
    there is none (weights from elsewhere, or a run that did not complete)."""
    path = Path(checkpoint).parent / TRAINING_SUMMARY
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as error:
        logger.warning(f"cannot read the training summary {path}: {error}")
        return None


def load_resumable_state(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a state written by :class:`ResumableStateSaver` (with ``weights_only=True``).

    Args:
        path: the file.
        map_location: ``torch.load``'s ``map_location``.

    Returns:
        ``{name: state_dict}``.

    Raises:
        InputFileNotFoundError: when the file does not exist.
        InputValueError: when it cannot be read (not a checkpoint, truncated).
    """
    file = Path(path)
    if not file.is_file():
        raise InputFileNotFoundError(f"no resumable training state at {file}.")
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as e:
        raise InputValueError(
            f"cannot load the training state {file} ({type(e).__name__}: {e}); delete it to start over."
        ) from e


def training_checkpoint_handlers(
    ckpt_dir: str | os.PathLike,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    trainer: Any,
    save_interval: int,
    resume: bool = False,
    map_location: Any = None,
    final_filename: str = "model.pt",
) -> list[Any]:
    """Handlers saving the final weights and a resumable training state, and optionally resuming from it.

    * ``<ckpt_dir>/<final_filename>``: the network's ``state_dict`` at the end of training (the final weights,
      the papers' protocol), written by a ``CheckpointSaver`` with ``save_final=True``;
    * ``<ckpt_dir>/resume/last.pt``: network, optimizer, LR scheduler and trainer state, and the trainer's
      ``random_state`` when it has one (every random state the next iteration needs: the step's streams, the
      loaders' positions), every ``save_interval`` iterations and at the end (one file, replaced atomically: a
      killed run leaves the last complete state);
    * ``<ckpt_dir>/training_summary.json`` when training completes (:class:`TrainingSummaryWriter`);
    * with ``resume``: a ``CheckpointLoader`` restoring that state before the first iteration, so the run continues
      where it stopped (iteration counter, LR schedule and optimizer moments included).

    They are attached in the config's ``run`` section (``h.attach(trainer)``), outside ``train::handlers``, because
    they refer to the trainer itself.

    Args:
        ckpt_dir: the checkpoint folder.
        network: the bare network (not the training wrapper), so ``model.pt`` loads into ``network_def``.
        optimizer: the optimizer.
        lr_scheduler: the LR scheduler.
        trainer: the trainer whose state (iteration, epoch) is saved.
        save_interval: iterations between resumable states.
        resume: restore ``<ckpt_dir>/resume/last.pt`` before training.
        map_location: ``map_location`` of the loader (e.g. the training device).
        final_filename: file name of the final weights.

    Returns:
        The handlers, to attach to the trainer.

    Raises:
        FileNotFoundError: when ``resume`` is set but there is no resumable state in ``ckpt_dir``.
        ValueError: for a negative ``save_interval``.
    """
    if int(save_interval) < 0:
        raise InputValueError(f"save_interval (val_interval of the config) must be >= 0, got {save_interval}.")
    state = {"network": network, "optimizer": optimizer, "lr_scheduler": lr_scheduler, "trainer": trainer}
    random_state = getattr(trainer, "random_state", None)
    if random_state is not None:
        state["random_state"] = random_state
    resume_dir = os.path.join(os.fspath(ckpt_dir), "resume")
    handlers: list[Any] = [
        AtomicCheckpointSaver(
            save_dir=os.fspath(ckpt_dir),
            save_dict={"model": network},
            save_final=True,
            final_filename=final_filename,
            save_interval=0,
        ),
        ResumableStateSaver(os.path.join(resume_dir, "last.pt"), state, int(save_interval)),
        TrainingSummaryWriter(os.path.join(os.fspath(ckpt_dir), TRAINING_SUMMARY)),
    ]
    if resume:
        last = os.path.join(resume_dir, "last.pt")
        if not os.path.isfile(last):
            raise InputFileNotFoundError(
                f"resume is set but there is no resumable training state at {last}: train once without --resume "
                "True, or point ckpt_dir at the folder of the interrupted run."
            )
        saved = load_resumable_state(last)
        iteration = saved.get("trainer", {}).get("iteration")
        logger.info(f"resuming from {last} (iteration {iteration})")
        load_dict = dict(state)
        if "random_state" in load_dict and "random_state" not in saved:
            del load_dict["random_state"]
            logger.warning(
                f"{last} holds no random state (written by an earlier version): the resumed run draws new data "
                "orders, augmentations and dropout masks, so it will not repeat the uninterrupted run"
            )
        elif random_state is not None and not getattr(random_state, "exact", True):
            logger.warning("the training loader does not record its position in the data: the resumed run starts "
                           "a new pass over it, so it will not repeat the uninterrupted run")
        handlers.append(CheckpointLoader(load_path=last, load_dict=load_dict, map_location=map_location))
    return handlers
