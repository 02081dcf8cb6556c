"""The checkpoint handlers of a training run, shared by the bundles' ``train.yaml``."""

from __future__ import annotations

import os
from typing import Any

import torch
from monai.handlers import CheckpointLoader, CheckpointSaver

__all__ = ["training_checkpoint_handlers"]


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
    * ``<ckpt_dir>/resume/last.pt``: network, optimizer, LR scheduler and trainer state, every ``save_interval``
      iterations and at the end (one file kept);
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
        raise ValueError(f"save_interval (val_interval of the config) must be >= 0, got {save_interval}.")
    state = {"network": network, "optimizer": optimizer, "lr_scheduler": lr_scheduler, "trainer": trainer}
    resume_dir = os.path.join(os.fspath(ckpt_dir), "resume")
    handlers: list[Any] = [
        CheckpointSaver(
            save_dir=os.fspath(ckpt_dir),
            save_dict={"model": network},
            save_final=True,
            final_filename=final_filename,
            save_interval=0,
        ),
        CheckpointSaver(
            save_dir=resume_dir,
            save_dict=state,
            save_final=True,
            final_filename="last.pt",
            save_interval=int(save_interval),
            epoch_level=False,
            n_saved=1,
        ),
    ]
    if resume:
        last = os.path.join(resume_dir, "last.pt")
        if not os.path.isfile(last):
            raise FileNotFoundError(
                f"resume is set but there is no resumable training state at {last}: train once without --resume "
                "True, or point ckpt_dir at the folder of the interrupted run."
            )
        handlers.append(CheckpointLoader(load_path=last, load_dict=state, map_location=map_location))
    return handlers
