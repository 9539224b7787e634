#!/usr/bin/env bash
# Lint and type-check: ruff over the tree, mypy over the packages (run by .ci/run after the tests' install).
# mypy needs the `claimgraph.*` import names, which the editable install maps from the top-level folders;
# mypy does not read that mapping, so it checks a folder of symlinks with the same names.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
ruff check .
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/claimgraph"
touch "$T/claimgraph/__init__.py"
for p in graph ingest experiments cli web; do ln -s "$ROOT/$p" "$T/claimgraph/$p"; done
PACKAGES=(claimgraph.graph claimgraph.ingest claimgraph.experiments claimgraph.cli claimgraph.web)
args=()
for p in "${PACKAGES[@]}"; do args+=(-p "$p"); done
(cd "$T" && mypy --config-file "$ROOT/pyproject.toml" "${args[@]}")
