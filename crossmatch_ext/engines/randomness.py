"""Random streams that make a seed fix the model: whatever runs between training iterations (validation, logging,
train metrics, checkpoints, plots) draws nothing from the training's randomness, and a resumed run continues with
exactly the random state the interrupted one had.

Two sources of randomness feed a training step, and each gets its own stream:

* **the data**: every training item is drawn by a :class:`SeededSampler` as ``(index, item_seed)`` from the sampler's
  own ``torch.Generator``, and :class:`SeededDataset` seeds every random transform of the item from ``item_seed``
  before applying them. An item's augmentation is then a function of the seed and the item's position in the
  sampler's stream alone: not of the DataLoader workers (their number, their start, their persistence), not of any
  other loader, not of the global generators. A :class:`ResumableLoader` records where its current pass over the
  data started and how many batches of it were consumed, so a resumed run replays the same pass from that point.
* **the step** (dropout, feature perturbation, batched strong views): :class:`RandomStreams` captures PyTorch's CPU
  and CUDA generators, NumPy's and Python's global generators; the trainer swaps its own streams in for the
  iteration and back out afterwards (:meth:`RandomStreams.swap`), so handlers that run between iterations draw
  from the "outside" streams.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
import torch
from monai.transforms import Randomizable
from torch.utils.data import Dataset, Sampler

__all__ = ["RandomStreams", "ResumableLoader", "SeededDataset", "SeededSampler", "randomizable_transforms"]

#: seeds of items and transforms are drawn in [0, 2**32): NumPy's RandomState takes 32-bit seeds.
_SEED_BOUND = 2**32


def _numpy_state_to_dict(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _numpy_state_from_dict(state: Mapping[str, Any]) -> tuple:
    keys = np.asarray(torch.as_tensor(state["keys"]).cpu().numpy(), dtype=np.uint32)
    return (state["name"], keys, int(state["pos"]), int(state["has_gauss"]), float(state["cached_gaussian"]))


class RandomStreams:
    """A snapshot of the global random streams: PyTorch's CPU generator, every CUDA device's generator (when CUDA is
    initialised), NumPy's and Python's global generators.

    ``RandomStreams.capture()`` takes the snapshot, :meth:`restore` puts it back, :meth:`seeded` makes the streams
    that seeding every generator with ``seed`` would give (without changing the current ones), and :meth:`swap`
    runs a block with these streams and keeps what the block drew. :meth:`state_dict` / :meth:`load_state_dict` hold
    only tensors and plain values, so the snapshot can be saved in a checkpoint loaded with ``weights_only=True``.
    """

    def __init__(self, torch_cpu: torch.Tensor, torch_cuda: Sequence[torch.Tensor], numpy_state: tuple,
                 python_state: tuple) -> None:
        self.torch_cpu = torch_cpu
        self.torch_cuda = list(torch_cuda)
        self.numpy_state = numpy_state
        self.python_state = python_state

    @classmethod
    def capture(cls) -> RandomStreams:
        """The current global streams."""
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        numpy_state = cast(tuple, np.random.get_state(legacy=True))  # noqa: NPY002 (the global stream is saved)
        return cls(torch.get_rng_state(), cuda, numpy_state, random.getstate())

    def restore(self) -> None:
        """Make these the global streams."""
        torch.set_rng_state(self.torch_cpu)
        if self.torch_cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.torch_cuda)
        np.random.set_state(self.numpy_state)  # noqa: NPY002 (the global stream is what is saved)
        random.setstate(self.python_state)

    @classmethod
    def seeded(cls, seed: int) -> RandomStreams:
        """The streams of ``torch.manual_seed(seed)``, ``np.random.seed(seed)`` and ``random.seed(seed)``; the current
        global streams are left as they are."""
        outside = cls.capture()
        try:
            torch.manual_seed(int(seed))  # seeds the CUDA generators too
            np.random.seed(int(seed) % _SEED_BOUND)  # noqa: NPY002 (the global stream is what is seeded)
            random.seed(int(seed))
            return cls.capture()
        finally:
            outside.restore()

    @contextmanager
    def swap(self) -> Iterator[RandomStreams]:
        """Run a block with these streams as the global ones; afterwards this object holds the streams as the block
        left them and the global streams are those from before the block."""
        outside = RandomStreams.capture()
        self.restore()
        try:
            yield self
        finally:
            inside = RandomStreams.capture()
            self.torch_cpu, self.torch_cuda = inside.torch_cpu, inside.torch_cuda
            self.numpy_state, self.python_state = inside.numpy_state, inside.python_state
            outside.restore()

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.python_state
        return {
            "torch_cpu": self.torch_cpu.clone(),
            "torch_cuda": [s.clone() for s in self.torch_cuda],
            "numpy": _numpy_state_to_dict(self.numpy_state),
            "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                       "gauss": gauss},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.torch_cpu = torch.as_tensor(state["torch_cpu"], dtype=torch.uint8).cpu()
        self.torch_cuda = [torch.as_tensor(s, dtype=torch.uint8).cpu() for s in state.get("torch_cuda", [])]
        self.numpy_state = _numpy_state_from_dict(state["numpy"])
        python = state["python"]
        self.python_state = (int(python["version"]), tuple(int(v) for v in python["internal"].tolist()),
                             python["gauss"])


@contextmanager
def _host_streams_seeded(seed: int) -> Iterator[None]:
    """Seed PyTorch's CPU, NumPy's and Python's global generators for a block, then put the previous ones back."""
    numpy_state = np.random.get_state(legacy=True)  # noqa: NPY002 (the global stream is what is saved)
    torch_cpu, python_state = torch.get_rng_state(), random.getstate()
    torch.default_generator.manual_seed(int(seed))
    np.random.seed(int(seed) % _SEED_BOUND)  # noqa: NPY002 (an item's transforms may draw from it)
    random.seed(int(seed))
    try:
        yield
    finally:
        torch.set_rng_state(torch_cpu)
        np.random.set_state(numpy_state)  # noqa: NPY002 (the global stream is what is restored)
        random.setstate(python_state)


_LEAVES = (str, bytes, int, float, bool, type(None), np.ndarray, torch.Tensor, np.random.RandomState)


def randomizable_transforms(root: Any, max_depth: int = 12) -> list[Randomizable]:
    """Every MONAI ``Randomizable`` reachable from ``root`` (a transform, a ``Compose`` tree, a list of them),
    parents before children, each once: through ``Compose.transforms``, dictionary transforms' inner array
    transforms and any other attribute, list, tuple or dict value (tensors, arrays and strings are not searched)."""
    found: list[Randomizable] = []
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> None:
        if depth > max_depth or isinstance(obj, _LEAVES) or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, Randomizable):
            found.append(obj)
        if isinstance(obj, (list, tuple)):
            children: Any = obj
        elif isinstance(obj, dict):
            children = obj.values()
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            children = [v for k, v in vars(obj).items() if not k.startswith("__")]
        else:
            return
        for child in children:
            walk(child, depth + 1)

    walk(root, 0)
    return found


class SeededDataset(Dataset):
    """A dataset whose items are drawn as ``(index, item_seed)`` (see :class:`SeededSampler`): before item ``index``
    is made, every random MONAI transform of ``dataset``'s ``transform`` is reseeded from ``item_seed``, and
    PyTorch's CPU, NumPy's and Python's global generators are seeded with it for the item's transforms (then put
    back). The item is then the same whichever process makes it, and whatever that process made before.

    A plain integer index is passed through unchanged (the transforms keep their own states).

    Args:
        dataset: a map-style dataset with a ``transform`` attribute (MONAI ``Dataset`` / ``CacheDataset``,
            :class:`crossmatch_ext.data.VolumeSliceDataset`); without one, only the global generators are seeded.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.transforms = randomizable_transforms(getattr(dataset, "transform", None))

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, (tuple, list)):
            return self.dataset[key]
        index, seed = int(key[0]), int(key[1])
        # one 32-bit seed per transform, from the item's seed (parents first: a Compose does not reseed its children
        # when its own generator is reseeded in place)
        seeds = np.random.RandomState(seed % _SEED_BOUND).randint(0, _SEED_BOUND, len(self.transforms), dtype=np.int64)
        for transform, transform_seed in zip(self.transforms, seeds):
            transform.R.seed(int(transform_seed))
        with _host_streams_seeded(seed):
            return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        # the wrapped dataset's attributes (``num_slices``, ``transform``, ...) for code that inspects the dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class SeededSampler(Sampler[tuple[int, int]]):
    """Draws ``(index, item_seed)`` pairs from a generator of its own: each pass over the dataset is a random
    permutation (or, with ``replacement``, ``num_samples`` independent draws), each drawn index paired with a fresh
    32-bit seed for its augmentation (:class:`SeededDataset`).

    Under ``torch.distributed`` (``world_size > 1``) every process draws the same pass from the same seed and keeps
    its own share (every ``world_size``-th pair from ``rank``, the pass cut to a multiple of ``world_size``), as
    ``DistributedSampler(drop_last=True)``.

    The pass resumes: :meth:`resume_pass` puts the generator back to where a pass started and skips its first
    ``skip`` pairs (what :class:`ResumableLoader` records).

    Args:
        num_items: the dataset's length.
        seed: the generator's seed (the same in every process).
        replacement: draw with replacement.
        num_samples: draws per pass with ``replacement`` (default ``num_items``).
        rank: this process's rank.
        world_size: the number of processes.
    """

    def __init__(self, num_items: int, seed: int, replacement: bool = False, num_samples: int | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        if int(num_items) < 1:
            raise ValueError(f"SeededSampler needs a non-empty dataset, got {num_items} items.")
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank {rank} is outside world_size {world_size}.")
        self.num_items = int(num_items)
        self.replacement = bool(replacement)
        self.num_samples = int(num_samples) if num_samples is not None else self.num_items
        if not self.replacement and self.num_samples != self.num_items:
            raise ValueError("num_samples needs replacement=True (a permutation draws every item once).")
        self.rank, self.world_size = int(rank), int(world_size)
        self.generator = torch.Generator()
        self.generator.manual_seed(int(seed))
        self.pass_start: torch.Tensor | None = None  # the generator's state when the current pass was drawn
        self._skip = 0

    def _pass_length(self) -> int:
        return (self.num_samples // self.world_size) * self.world_size

    def __len__(self) -> int:
        return self._pass_length() // self.world_size

    def resume_pass(self, pass_start: torch.Tensor, skip: int) -> None:
        """Make the next pass the one drawn from generator state ``pass_start``, without its first ``skip`` pairs."""
        self.generator.set_state(torch.as_tensor(pass_start, dtype=torch.uint8).cpu())
        self._skip = int(skip)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        self.pass_start = self.generator.get_state()
        if self.replacement:
            order = torch.randint(self.num_items, (self.num_samples,), generator=self.generator)
        else:
            order = torch.randperm(self.num_items, generator=self.generator)
        seeds = torch.randint(0, _SEED_BOUND, (len(order),), generator=self.generator, dtype=torch.int64)
        end = self._pass_length()
        mine = list(zip(order[self.rank:end:self.world_size].tolist(), seeds[self.rank:end:self.world_size].tolist()))
        skip, self._skip = self._skip, 0
        return iter(mine[skip:])


class ResumableLoader:
    """A DataLoader over a :class:`SeededSampler` that knows where it stands: :meth:`state_dict` holds the sampler
    generator's state at the start of the current pass and the number of batches of that pass consumed so far;
    :meth:`load_state_dict` makes the next pass continue that one (its remaining batches are the same as the
    interrupted run's, augmentations included).

    Args:
        loader: a DataLoader whose ``sampler`` is a :class:`SeededSampler` (``drop_last=True`` batches).
    """

    def __init__(self, loader: torch.utils.data.DataLoader) -> None:
        if not isinstance(loader.sampler, SeededSampler):
            raise TypeError(f"ResumableLoader needs a DataLoader over a SeededSampler, got {type(loader.sampler)}.")
        self.loader = loader
        self.sampler: SeededSampler = loader.sampler
        self.batch_size = int(loader.batch_size or 1)
        self.consumed = 0  # batches of the current pass handed out
        self._resume_consumed = 0
        self._in_pass = False

    @property
    def dataset(self) -> Any:
        return self.loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        self.consumed, self._resume_consumed = self._resume_consumed, 0
        self._in_pass = True
        for batch in self.loader:
            self.consumed += 1
            yield batch
        self._in_pass = False

    def state_dict(self) -> dict[str, Any]:
        if self.sampler.pass_start is None or not self._in_pass or self.consumed >= len(self):
            # no pass begun, or the current one is used up: the next pass starts from the generator as it is now
            return {"pass_start": self.sampler.generator.get_state(), "consumed": 0}
        return {"pass_start": self.sampler.pass_start.clone(), "consumed": int(self.consumed)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        consumed = int(state["consumed"])
        self.sampler.resume_pass(state["pass_start"], consumed * self.batch_size)
        self._resume_consumed = consumed
        self._in_pass = False

    def set_epoch(self, epoch: int) -> None:
        """Nothing to do: each pass draws from the sampler's own generator (kept for the trainer's epoch hook)."""
