"""Tests of the bundles' training-loader builder and the loss-term extractor."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from crossmatch_ext.engines import (
    CrossMatchLoader,
    ResumableLoader,
    SeededSampler,
    build_train_loader,
    builders,
    loss_terms,
)


class _Indexed(Dataset):
    """Items are their own index plus an offset, so batches show where they came from."""

    def __init__(self, length: int, offset: int = 0) -> None:
        self.length, self.offset = length, offset

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index + self.offset


def test_supervised_mode_is_a_shuffled_drop_last_loader_of_labeled_batches():
    torch.manual_seed(0)
    loader = build_train_loader(_Indexed(7), _Indexed(20, 100), mode="supervised", batch_size=3)
    assert not isinstance(loader, CrossMatchLoader)
    batches = [b.tolist() for b in loader]
    assert [len(b) for b in batches] == [3, 3]  # drop_last: 7 items give two full batches
    seen = [i for batch in batches for i in batch]
    assert len(set(seen)) == 6 and all(0 <= i < 7 for i in seen)
    assert isinstance(loader, ResumableLoader) and isinstance(loader.sampler, SeededSampler)


def test_batches_depend_on_the_seed_alone():
    """The loaders draw from streams of their own: the global generators and other loaders do not move them."""
    def batches(seed: int) -> list[list[int]]:
        loader = build_train_loader(_Indexed(5), _Indexed(12, 100), batch_size=2, seed=seed)
        return [b["labeled"].tolist() + b["unlabeled"].tolist() + b["mix"].tolist() for b in loader]

    torch.manual_seed(0)
    first = batches(3)
    torch.manual_seed(1)
    torch.rand(100)
    assert batches(3) == first
    assert batches(4) != first


def test_a_resumed_loader_continues_the_interrupted_pass():
    whole = build_train_loader(_Indexed(5), _Indexed(12, 100), batch_size=2, seed=3)
    expected = [b for _ in range(2) for b in whole]  # two epochs of 6 iterations
    interrupted = build_train_loader(_Indexed(5), _Indexed(12, 100), batch_size=2, seed=3)
    iterator = iter(interrupted)
    seen = [next(iterator) for _ in range(3)]
    state = interrupted.state_dict()
    # 5 labeled items make passes of 2 batches: the labeled loader is 1 batch into its second pass
    assert state["unlabeled"]["consumed"] == 3 and state["labeled"]["consumed"] == 1
    resumed = build_train_loader(_Indexed(5), _Indexed(12, 100), batch_size=2, seed=3)
    resumed.load_state_dict(state)
    seen += list(resumed)  # the rest of the first epoch
    seen += list(resumed)  # the second epoch
    assert len(seen) == 12
    assert resumed.state_dict()["unlabeled"]["consumed"] == 0  # a pass used up: the next one starts afresh
    for got, want in zip(seen, expected):
        assert {k: v.tolist() for k, v in got.items()} == {k: v.tolist() for k, v in want.items()}


def test_crossmatch_mode_pairs_labeled_unlabeled_and_mix_batches():
    loader = build_train_loader(_Indexed(4), _Indexed(10, 100), batch_size=2, unlabeled_batch_size=5)
    assert isinstance(loader, CrossMatchLoader)
    batches = list(loader)
    assert len(batches) == 2  # one pass over 10 unlabeled items in batches of 5
    for batch in batches:
        assert set(batch) == {"labeled", "unlabeled", "mix"}
        assert len(batch["labeled"]) == 2 and len(batch["unlabeled"]) == 5 and len(batch["mix"]) == 5
        assert all(i < 4 for i in batch["labeled"].tolist())
        assert all(100 <= i < 110 for i in batch["unlabeled"].tolist() + batch["mix"].tolist())


def test_without_cutmix_there_is_no_mix_batch():
    loader = build_train_loader(_Indexed(4), _Indexed(6, 100), batch_size=2, cutmix=False)
    assert isinstance(loader, CrossMatchLoader) and loader.mix is None
    assert "mix" not in next(iter(loader))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "fully"}, "mode must be"),
        ({"batch_size": 5}, "fewer than batch_size=5"),
        ({"unlabeled": _Indexed(0)}, "unlabeled set is empty"),
        ({"unlabeled": None}, "unlabeled set is empty"),
        ({"unlabeled": _Indexed(3), "unlabeled_batch_size": 4}, "3 items, fewer than batch_size=4"),
    ],
)
def test_bad_arguments_are_reported(kwargs, message):
    arguments = {"labeled": _Indexed(4), "unlabeled": _Indexed(8, 100), "batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_train_loader(**arguments)


def test_distributed_runs_give_each_process_its_share_of_the_same_pass(tmp_path, monkeypatch):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(builders, "_distributed", lambda: True)  # a one-process group stands in for several
        loader = build_train_loader(_Indexed(4), _Indexed(8, 100), batch_size=2, seed=3)
        assert isinstance(loader, CrossMatchLoader)
        for part in (loader.labeled, loader.unlabeled, loader.mix):
            assert isinstance(part.sampler, SeededSampler) and part.sampler.world_size == 1
    finally:
        dist.destroy_process_group()
    # two processes of the same seed: disjoint shares of one pass, each a batch-size multiple
    shares = [list(SeededSampler(9, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 4
    indices = [i for share in shares for i, _ in share]
    assert len(set(indices)) == 8 and set(indices) <= set(range(9))


def test_loss_terms_picks_the_scalar_terms_of_a_decollated_output():
    output = [
        {
            "loss": torch.tensor(1.5),
            "loss_supervised": torch.tensor([0.5, 1.5]),
            "kd_weak": 0.25,
            "mask_ratio": torch.tensor(0.75),
            "confidence_threshold": 0.9,
            "pred": torch.zeros(2, 4, 4),
            "label": torch.zeros(1, 4, 4),
        },
        {"loss": torch.tensor(99.0)},
    ]
    terms = loss_terms(output)
    assert terms == {"loss": 1.5, "loss_supervised": 1.0, "kd_weak": 0.25, "mask_ratio": 0.75,
                     "confidence_threshold": 0.9}
    assert loss_terms(output[0]) == terms
