"""Builders the bundle configs call, so that both bundles share one definition of the training data flow."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from monai.data import DataLoader
from torch.utils.data import Dataset, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from .loaders import CrossMatchLoader

__all__ = ["build_train_loader", "describe_dataset", "loss_terms"]

logger = logging.getLogger(__name__)


def describe_dataset(dataset: Any) -> str:
    """``"N cases"`` for a dataset of volumes, ``"N volumes (M slices)"`` for a slice dataset of volumes."""
    num_slices = getattr(dataset, "num_slices", None)
    if num_slices is not None:
        return f"{len(num_slices)} volumes ({len(dataset)} slices)"
    return f"{len(dataset)} cases"


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _loader(dataset: Dataset, batch_size: int, num_workers: int, sampler: Any = None, **kwargs: Any) -> DataLoader:
    if len(dataset) < batch_size:  # type: ignore[arg-type]
        raise ValueError(
            f"the training set has {len(dataset)} items, fewer than batch_size={batch_size}: lower batch_size "  # type: ignore[arg-type]
            "or add cases."
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        **kwargs,
    )


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
) -> CrossMatchLoader | DataLoader:
    """The training loader of a bundle.

    ``mode="crossmatch"`` returns a :class:`CrossMatchLoader` over the labeled set, the unlabeled set and a "mix"
    loader over the unlabeled set in its own random order (the authors' CutMix source: a second shuffled pass without
    replacement, independent of the unlabeled loader's); ``"supervised"`` returns a
    plain shuffled loader of labeled batches. Under ``torch.distributed`` every loader gets a
    ``DistributedSampler`` (the mix loader one with its own epoch offset), so each process sees its own shard.

    Args:
        labeled: dataset of labeled items.
        unlabeled: dataset of unlabeled items (weak view, strong views, CutMix boxes); unused when supervised.
        mode: ``"crossmatch"`` or ``"supervised"``.
        batch_size: labeled batch size per process.
        unlabeled_batch_size: unlabeled (and mix) batch size per process (default: ``batch_size``).
        num_workers: DataLoader workers per loader.
        cutmix: build the mix loader (``False`` trains without CutMix).
        seed: seed of the distributed samplers' shuffling.
        mix_replacement: draw the mix batches with replacement instead of as a shuffled pass over the unlabeled
            set (without replacement, as the authors' code does).

    Returns:
        The loader to give the trainer.

    Raises:
        ValueError: for an unknown mode, or a dataset smaller than its batch size.
    """
    if mode not in ("crossmatch", "supervised"):
        raise ValueError(f"mode must be 'crossmatch' or 'supervised', got {mode!r}.")
    distributed = _distributed()

    def sampler(dataset: Dataset) -> DistributedSampler | None:
        return DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True) if distributed else None

    labeled_loader = _loader(labeled, batch_size, num_workers, sampler(labeled))
    if mode == "supervised":
        logger.info(f"training data (supervised): {describe_dataset(labeled)} labeled")
        return labeled_loader
    if unlabeled is None or len(unlabeled) == 0:  # type: ignore[arg-type]
        raise ValueError("mode 'crossmatch' needs unlabeled training cases, but the unlabeled set is empty.")
    ubs = batch_size if unlabeled_batch_size is None else unlabeled_batch_size
    unlabeled_loader = _loader(unlabeled, ubs, num_workers, sampler(unlabeled))
    mix_loader = None
    if cutmix:
        mix_sampler = sampler(unlabeled) or RandomSampler(
            unlabeled,  # type: ignore[arg-type]
            replacement=bool(mix_replacement),
            num_samples=len(unlabeled) if mix_replacement else None,  # type: ignore[arg-type]
        )
        mix_loader = _loader(unlabeled, ubs, num_workers, mix_sampler)
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
