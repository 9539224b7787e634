#!/usr/bin/env bash
# Install into ./.venv and run the whole test suite (about 11 minutes on 2 cores, after a first install of a few minutes).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
python -m pytest "$@"
