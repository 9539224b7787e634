"""The graph benchmarks run end to end at small sizes (smoke runs, not timings: the figures are in
docs/benchmarks.md). bench_scale.py and bench_keyword.py broke without any test noticing when the store began
to refuse `Store.con` outside a session; issue 16's figures must come from the commands README gives."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_bench_scale_small_then_reusing_its_suggest(tmp_path):
    common = ["bench/bench_scale.py", "--nodes", "3000", "--pool", "500", "--sample", "50", "--workdir", str(tmp_path)]
    r = bench(*common, "--out", str(tmp_path / "a.md"))
    res = json.loads(r.stderr.strip().splitlines()[-1])
    assert res["stored_nodes"] == 3000 and res["recall"] > 0.9 and res["pairs"] > 0 and res["cold_show_s"] > 0
    assert "| node page (`show`), warm, ms (median) |" in (tmp_path / "a.md").read_text()
    r = bench(*common, "--reuse-suggest")  # small stores have no saved index: suggest runs again
    assert not json.loads(r.stderr.strip().splitlines()[-1])["suggest_reused"]


def test_bench_keyword_small(tmp_path):
    r = bench("bench/bench_keyword.py", "--nodes", "2000", "--workdir", str(tmp_path))
    assert "in-memory (search.keyword_search)" in r.stdout
