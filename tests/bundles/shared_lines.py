"""Count the configuration lines two bundle configs share: non-blank, non-comment lines, stripped, present in both.

Usage: ``python tests/bundles/shared_lines.py [FILE_A FILE_B] [--list]`` (default: the two bundles' train.yaml).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = (ROOT / "bundles/crossmatch_la/configs/train.yaml", ROOT / "bundles/crossmatch_acdc/configs/train.yaml")


def config_lines(path: Path) -> set[str]:
    """The stripped, non-blank lines of ``path`` that are not comments."""
    stripped = (line.strip() for line in path.read_text().splitlines())
    return {line for line in stripped if line and not line.startswith("#")}


def shared_lines(first: Path, second: Path) -> list[str]:
    """The lines of ``first`` (in its order, once each) that ``second`` also holds."""
    common = config_lines(first) & config_lines(second)
    seen: list[str] = []
    for line in (line.strip() for line in first.read_text().splitlines()):
        if line in common and line not in seen:
            seen.append(line)
    return seen


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--list"]
    files = (Path(args[0]), Path(args[1])) if len(args) == 2 else DEFAULT
    lines = shared_lines(*files)
    if "--list" in sys.argv:
        print("\n".join(lines))
    print(len(lines))
