"""A loader that pairs labeled, unlabeled and "mix" unlabeled batches for one semi-supervised step."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from .randomness import ResumableLoader

__all__ = ["CrossMatchLoader"]


class CrossMatchLoader:
    """Yields ``{"labeled": batch, "unlabeled": batch, "mix": batch}`` dictionaries.

    One epoch is one pass over the unlabeled loader (as in the authors' code, where the labeled list is repeated
    to the unlabeled length); the labeled and mix loaders are restarted whenever they run out, so their own
    lengths do not matter. Unlike ``itertools.cycle`` nothing is cached: every restart draws new augmentations.
    With :class:`~crossmatch_ext.engines.ResumableLoader` parts (what :func:`~crossmatch_ext.engines.build_train_loader`
    makes), :meth:`state_dict` records where each stands and a resumed run continues from there.

    Args:
        labeled: loader of labeled batches (``image``, ``label``).
        unlabeled: loader of unlabeled batches (weak view, strong views, CutMix boxes).
        mix: optional second loader over the unlabeled data whose strong views are pasted into the first one's
            inside the CutMix boxes. ``None`` disables CutMix in the trainer.
        mix_epoch_offset: added to the epoch given to the mix loader's ``DistributedSampler`` so that its
            permutation differs from the unlabeled loader's (the authors use the number of epochs).
    """

    def __init__(
        self,
        labeled: Iterable,
        unlabeled: Iterable,
        mix: Iterable | None = None,
        mix_epoch_offset: int = 1000,
    ) -> None:
        self.labeled = labeled
        self.unlabeled = unlabeled
        self.mix = mix
        self.mix_epoch_offset = int(mix_epoch_offset)

    def __len__(self) -> int:
        return len(self.unlabeled)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to every ``DistributedSampler`` (MONAI does this only for a plain DataLoader)."""
        for loader, offset in ((self.labeled, 0), (self.unlabeled, 0), (self.mix, self.mix_epoch_offset)):
            sampler = getattr(loader, "sampler", None) if isinstance(loader, DataLoader) else None
            if isinstance(sampler, DistributedSampler):
                sampler.set_epoch(epoch + offset)

    def _parts(self) -> dict[str, Any]:
        return {name: loader for name, loader in (("labeled", self.labeled), ("unlabeled", self.unlabeled),
                                                  ("mix", self.mix)) if loader is not None}

    @property
    def resumable(self) -> bool:
        """Whether every loader records its position (:class:`~crossmatch_ext.engines.ResumableLoader`), so that
        :meth:`state_dict` / :meth:`load_state_dict` resume exactly."""
        return all(isinstance(loader, ResumableLoader) for loader in self._parts().values())

    def state_dict(self) -> dict[str, Any]:
        """Each resumable loader's position (see :class:`~crossmatch_ext.engines.ResumableLoader`)."""
        return {name: loader.state_dict() for name, loader in self._parts().items()
                if isinstance(loader, ResumableLoader)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue each loader from the position in ``state`` at the next pass."""
        for name, loader in self._parts().items():
            if isinstance(loader, ResumableLoader) and name in state:
                loader.load_state_dict(state[name])

    @staticmethod
    def _restarting(loader: Iterable) -> Iterator[Any]:
        while True:
            empty = True
            for batch in loader:
                empty = False
                yield batch
            if empty:
                raise ValueError(f"{type(loader).__name__} yielded no batch: is its dataset empty or smaller than "
                                 "the batch size with drop_last=True?")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        labeled = self._restarting(self.labeled)
        mix = self._restarting(self.mix) if self.mix is not None else None
        for unlabeled_batch in self.unlabeled:
            batch = {"labeled": next(labeled), "unlabeled": unlabeled_batch}
            if mix is not None:
                batch["mix"] = next(mix)
            yield batch
