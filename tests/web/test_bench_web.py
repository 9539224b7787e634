"""bench/bench_web.py runs end to end on a small store (a smoke run, not a timing: the figures are in
docs/benchmarks.md). It broke once without any test noticing, when the store's queue replaced the web's pause."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_web_runs_and_prints_its_table(tmp_path):
    out = tmp_path / "web.md"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "bench_web.py"), "--size", "300", "--workdir",
                        str(tmp_path), "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    table = out.read_text()
    for row in ("node page `/node/<id>` (HTML)", "node page JSON twin", "search `/search?q=` (incl. encoding)"):
        assert row in table and row in r.stdout
