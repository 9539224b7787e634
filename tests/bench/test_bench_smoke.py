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


def test_main_timeline_reads_run_folders(tmp_path):
    """Two groups' runs, planted with known start and end times: the offsets, the groups and the seconds both
    slots were busy come out as the run folders say; a run still going (no end time) is left out."""
    def run(slug, run_id, model, start, end, status="completed"):
        d = tmp_path / slug / run_id
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"experiment_id": f"experiment:{slug}",
                                                   "spec": {"kind": "sae", "model": model, "seeds": [0, 1]}}))
        (d / "status.json").write_text(json.dumps({"status": status, "started_at": f"2026-12-02T10:{start}",
                                                   "ended_at": end and f"2026-12-02T10:{end}"}))

    run("a", "r1", "toy:default", "00:00", "01:40")     # 0-100 s
    run("b", "r2", "lm:smollm2-135m", "00:10", "00:50")  # 10-50 s, beside a
    run("c", "r3", "toy:default", "01:40", "02:00")     # 100-120 s, alone
    run("d", "r4", None, "01:50", None, status="running")
    out = json.loads(bench("bench/main_timeline.py", str(tmp_path), "--json").stdout)
    assert out["span_s"] == 120.0 and out["two_busy_s"] == 40.0
    assert [(r["experiment"], r["from_s"], r["to_s"]) for r in out["runs"]] == [
        ("experiment:a", 0.0, 100.0), ("experiment:b", 10.0, 50.0), ("experiment:c", 100.0, 120.0)]
    groups = {g["model"]: (g["runs"], g["from_s"], g["to_s"], g["wall_s"]) for g in out["groups"]}
    assert groups == {"toy:default": (2, 0.0, 120.0, 120.0), "lm:smollm2-135m": (1, 10.0, 50.0, 40.0)}
    table = bench("bench/main_timeline.py", str(tmp_path)).stdout
    assert "two runs computing at once for 40.0 s (33%)" in table
