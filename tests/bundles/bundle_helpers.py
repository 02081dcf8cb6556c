from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("CROSSMATCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def run_bundle_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <args>`` from the repository root; fails the test with the output on error."""
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if result.returncode != 0:
        pytest.fail(f"monai.bundle {' '.join(args[:2])} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                    f"{result.stderr[-4000:]}")
    return result
