#!/usr/bin/env bash
# Install into ./.venv and run the whole test suite (about 10-15 minutes on 2 cores).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
python -m pytest "$@"
