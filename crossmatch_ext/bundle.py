"""Helpers for the bundle configs."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["find_bundle_root"]


def find_bundle_root(name: str) -> str:
    """The directory of bundle ``name`` for a config that does not set ``bundle_root``.

    Looks, in order, at the working directory (when it is the bundle itself), at ``bundles/<name>`` under the
    working directory (commands run from the repository root), and at the bundle next to this package in a source
    checkout. Falls back to the working directory, the model-zoo convention.

    Args:
        name: the bundle's directory name, e.g. ``"crossmatch_la"``.

    Returns:
        The bundle directory as a string.
    """
    cwd = Path.cwd()
    candidates = [cwd, cwd / "bundles" / name, Path(__file__).resolve().parent.parent / "bundles" / name]
    for candidate in candidates:
        if (candidate / "configs" / "metadata.json").is_file() and (candidate.name == name or candidate != cwd):
            return os.fspath(candidate)
    return os.fspath(cwd)
