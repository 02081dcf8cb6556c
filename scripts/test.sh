#!/usr/bin/env bash
# Runs the whole test suite in the project's environment (created on first use). Extra arguments go to pytest.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$repo_root/scripts/setup_env.sh"
cd "$repo_root"
exec python -m pytest "$@"
