"""Builders the bundle configs call, so that both bundles share one definition of the training data flow."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.data import DataLoader
from torch.utils.data import Dataset

from .loaders import CrossMatchLoader
from .randomness import ResumableLoader, SeededDataset, SeededSampler

__all__ = ["LOADER_STREAMS", "build_train_loader", "describe_dataset", "loss_terms", "stream_seed"]

logger = logging.getLogger(__name__)


def describe_dataset(dataset: Any) -> str:
    """``"N cases"`` for a dataset of volumes, ``"N volumes (M slices)"`` for a slice dataset of volumes."""
    num_slices = getattr(dataset, "num_slices", None)
    if num_slices is not None:
        return f"{len(num_slices)} volumes ({len(dataset)} slices)"
    return f"{len(dataset)} cases"


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def stream_seed(seed: int, stream: int) -> int:
    """The seed of random stream ``stream`` of a run seeded with ``seed`` (a NumPy ``SeedSequence`` of both, so the
    streams of one run, and those of nearby seeds, do not overlap). The shift is done on a Python int: NumPy < 2 (as
    in MONAI Label's environment) has no ``uint64 >> int``."""
    return int(np.random.SeedSequence([int(seed) % 2**63, int(stream)]).generate_state(1, dtype=np.uint64)[0]) >> 1


#: the random streams of the training loaders (:func:`stream_seed`)
LOADER_STREAMS = {"labeled": 1, "unlabeled": 2, "mix": 3}


def _loader(
    dataset: Dataset, batch_size: int, num_workers: int, seed: int, replacement: bool = False
) -> ResumableLoader:
    if len(dataset) < batch_size:  # type: ignore[arg-type]
        raise ValueError(
            f"the training set has {len(dataset)} items, fewer than batch_size={batch_size}: lower batch_size "  # type: ignore[arg-type]
            "or add cases."
        )
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
    sampler = SeededSampler(len(dataset), seed, replacement=replacement, rank=rank, world_size=world_size)  # type: ignore[arg-type]
    if len(sampler) < batch_size:
        raise ValueError(
            f"each of the {world_size} processes gets {len(sampler)} of the {len(dataset)} training items, fewer "  # type: ignore[arg-type]
            f"than batch_size={batch_size}: lower batch_size or add cases."
        )
    generator = torch.Generator()  # the DataLoader's own draws (its workers' base seed) leave the global streams alone
    generator.manual_seed(int(seed))
    return ResumableLoader(DataLoader(
        SeededDataset(dataset),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        generator=generator,
    ))


def build_train_loader(
    labeled: Dataset,
    unlabeled: Dataset | None = None,
    mode: str = "crossmatch",
    batch_size: int = 2,
    unlabeled_batch_size: int | None = None,
    num_workers: int = 0,
    cutmix: bool = True,
    seed: int = 0,
    mix_replacement: bool = False,
) -> CrossMatchLoader | ResumableLoader:
    """The training loader of a bundle.

    ``mode="crossmatch"`` returns a :class:`CrossMatchLoader` over the labeled set, the unlabeled set and a "mix"
    loader over the unlabeled set in its own random order (the authors' CutMix source: a second shuffled pass without
    replacement, independent of the unlabeled loader's); ``"supervised"`` returns a shuffled loader of labeled
    batches.

    Every loader draws its order and each item's augmentation seed from a stream of its own, derived from ``seed``
    (:class:`~crossmatch_ext.engines.SeededSampler`, :class:`~crossmatch_ext.engines.SeededDataset`): the batches,
    augmentations included, depend on ``seed`` alone, not on ``num_workers`` nor on anything else the run draws,
    and a resumed run continues them exactly (:class:`~crossmatch_ext.engines.ResumableLoader`). Under
    ``torch.distributed`` every process draws the same passes and keeps its own share of each.

    Args:
        labeled: dataset of labeled items.
        unlabeled: dataset of unlabeled items (weak view, strong views, CutMix boxes); unused when supervised.
        mode: ``"crossmatch"`` or ``"supervised"``.
        batch_size: labeled batch size per process.
        unlabeled_batch_size: unlabeled (and mix) batch size per process (default: ``batch_size``).
        num_workers: DataLoader workers per loader.
        cutmix: build the mix loader (``False`` trains without CutMix).
        seed: the seed of the loaders' streams (the same in every process).
        mix_replacement: draw the mix batches with replacement instead of as a shuffled pass over the unlabeled
            set (without replacement, as the authors' code does).

    Returns:
        The loader to give the trainer.

    Raises:
        ValueError: for an unknown mode, or a dataset smaller than its batch size.
    """
    if mode not in ("crossmatch", "supervised"):
        raise ValueError(f"mode must be 'crossmatch' or 'supervised', got {mode!r}.")

    def seed_of(name: str) -> int:
        return stream_seed(seed, LOADER_STREAMS[name])

    labeled_loader = _loader(labeled, batch_size, num_workers, seed_of("labeled"))
    if mode == "supervised":
        logger.info(f"training data (supervised): {describe_dataset(labeled)} labeled")
        return labeled_loader
    if unlabeled is None or len(unlabeled) == 0:  # type: ignore[arg-type]
        raise ValueError("mode 'crossmatch' needs unlabeled training cases, but the unlabeled set is empty.")
    ubs = batch_size if unlabeled_batch_size is None else unlabeled_batch_size
    unlabeled_loader = _loader(unlabeled, ubs, num_workers, seed_of("unlabeled"))
    mix_loader = None
    if cutmix:
        mix_loader = _loader(unlabeled, ubs, num_workers, seed_of("mix"), replacement=bool(mix_replacement))
    logger.info(
        f"training data (CrossMatch): {describe_dataset(labeled)} labeled, {describe_dataset(unlabeled)} unlabeled; "
        f"one epoch = {len(unlabeled_loader)} iterations of {batch_size} labeled + {ubs} unlabeled"
    )
    return CrossMatchLoader(labeled_loader, unlabeled_loader, mix_loader)


def loss_terms(output: Any) -> dict[str, float]:
    """Scalar loss terms of a (decollated) CrossMatch trainer output, for StatsHandler / TensorBoard.

    Args:
        output: ``engine.state.output``: a dict, or the list of per-sample dicts MONAI makes of it.

    Returns:
        ``{name: value}`` for ``loss``, every ``loss_*`` and ``kd_*`` term, ``mask_ratio`` and
        ``confidence_threshold``.
    """
    first: Mapping[str, Any] = output[0] if isinstance(output, Sequence) and not isinstance(output, Mapping) else output
    terms: dict[str, float] = {}
    for name, value in first.items():
        if name == "loss" or name.startswith(("loss_", "kd_")) or name in ("mask_ratio", "confidence_threshold"):
            terms[name] = float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)
    return terms
