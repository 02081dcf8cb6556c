#!/usr/bin/env bash
# Creates (once) the project's virtual environment in .venv and installs the package with its test extra,
# matplotlib (the benchmarks extra: the demo's figures, and the tests that draw them) and MLflow (the mlflow extra:
# the test of `--tracking mlflow` runs with the others).
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it only installs what is missing).
#   CROSSMATCH_VENV   where the environment lives (default: <repo>/.venv)
#   CROSSMATCH_TORCH  the torch requirement installed first when the environment has no torch
#                     (default: torch==2.13.0; on a CUDA workstation pick the build that matches your driver)
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CROSSMATCH_VENV:-$repo_root/.venv}"
python_bin="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating virtual environment in $venv"
    "$python_bin" -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"

stamp="$venv/.crossmatch-installed"
if [ ! -f "$stamp" ] || [ "$repo_root/setup.cfg" -nt "$stamp" ] || [ "${BASH_SOURCE[0]}" -nt "$stamp" ]; then
    python -m pip install --quiet --upgrade pip
    if ! python -c "import torch" 2>/dev/null; then
        # Install torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on CPU-only machines.
        echo "[setup] installing ${CROSSMATCH_TORCH:-torch==2.13.0}"
        python -m pip install --quiet "${CROSSMATCH_TORCH:-torch==2.13.0}"
    fi
    echo "[setup] installing crossmatch-ext and its dependencies"
    python -m pip install --quiet -e "$repo_root[test,benchmarks,mlflow]"
    touch "$stamp"
fi
