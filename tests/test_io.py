"""Atomic writes leave the old file or the new one, never a partial file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from crossmatch_ext.io import atomic_open, atomic_torch_save


def test_atomic_open_replaces_the_file_only_on_success(tmp_path: Path):
    target = tmp_path / "metrics.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write("half a ro")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temporary file left behind
    with atomic_open(target, "w") as f:
        f.write("new\n")
    assert target.read_text() == "new\n"
    assert oct(os.stat(target).st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_torch_save_round_trip(tmp_path: Path):
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "a.pt")
    assert torch.load(tmp_path / "a.pt", weights_only=True)["w"].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError), atomic_open(tmp_path / "b", "a"):
        pass
