"""Checkpoints are loaded without unpickling code, everywhere the package or the bundles load one."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch

from crossmatch_ext.networks import VNet
from crossmatch_ext.networks.convert import load_official_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    def __reduce__(self):
        return (print, ("code ran while loading a checkpoint",))


def test_importer_refuses_pickled_code(tmp_path: Path, capsys):
    path = tmp_path / "iter_1.pth"
    torch.save({"model": VNet(1, 2, n_filters=4).state_dict(), "extra": _Payload()}, path)
    with pytest.raises(ValueError, match=r"cannot read .* as a PyTorch checkpoint"):
        load_official_checkpoint(path, VNet(1, 2, n_filters=4))
    assert "code ran" not in capsys.readouterr().out


def test_every_torch_load_passes_weights_only_true():
    sources = [*(REPO_ROOT / "crossmatch_ext").rglob("*.py"), *(REPO_ROOT / "benchmarks").rglob("*.py"),
               *(REPO_ROOT / "bundles").rglob("*.yaml")]
    calls = []
    for source in sources:
        text = source.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            end = text.find(")", match.end())
            calls.append((source.name, text[match.start(): end + 1]))
    assert calls, "expected at least the importer's torch.load"
    for name, call in calls:
        assert "weights_only=True" in call, f"{name}: {call}"


def test_monai_checkpoint_loader_uses_weights_only():
    from monai.handlers import CheckpointLoader

    assert "weights_only=True" in inspect.getsource(CheckpointLoader.__call__)
