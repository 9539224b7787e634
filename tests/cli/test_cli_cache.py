"""`claimgraph cache list` / `cache clear`: what the shared cache holds, and clearing kinds of it without touching a
build in progress or a run in flight. Entries are made with the real build_once (substrate/atomic.py); the build
in progress is a real second process holding an entry's lock."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.experiments.substrate.atomic import build_once
from claimgraph.graph import Store


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv("CLAIMGRAPH_CACHE", str(root))

    def entry(kind: str, name: str, nbytes: int = 10_000):
        def build(tmp):
            tmp.mkdir()
            (tmp / "weights.bin").write_bytes(os.urandom(nbytes))
            (tmp / "done.json").write_text("{}")
        return build_once(root / kind / name, "done.json", build)

    entry("saes", "sae-a")
    entry("saes", "sae-b")
    entry("models", "toy-default", 50_000)
    return root, entry


def cli(db, *args):
    return CliRunner().invoke(app, ["--db", str(db), *args])


def test_list_counts_each_kind_and_its_size(cache, tmp_path):
    root, _ = cache
    r = cli(tmp_path / "none.duckdb", "--json", "cache", "list")
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    kinds = {k["kind"]: k for k in got["kinds"]}
    assert got["root"] == str(root)
    assert kinds["saes"]["entries"] == 2 and kinds["models"]["entries"] == 1 and kinds["acts"]["entries"] == 0
    assert kinds["models"]["bytes"] >= 50_000 and kinds["saes"]["bytes"] >= 20_000  # the lock files are not entries
    assert got["bytes"] == sum(k["bytes"] for k in got["kinds"])
    r = cli(tmp_path / "none.duckdb", "cache", "list")
    assert r.exit_code == 0 and "saes" in r.stdout and "trained sparse autoencoders" in r.stdout


def test_clear_removes_the_named_kinds_only_and_they_are_built_again(cache, tmp_path):
    root, entry = cache
    r = cli(tmp_path / "none.duckdb", "cache", "clear", "saes", "--dry-run")
    assert r.exit_code == 0 and "would remove saes: 2 entries" in r.stderr
    assert (root / "saes" / "sae-a" / "done.json").is_file()  # a dry run removes nothing
    r = cli(tmp_path / "none.duckdb", "--json", "cache", "clear", "saes")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert [k["kind"] for k in out["removed"]] == ["saes"] and out["skipped"] == [] and out["bytes"] >= 20_000
    assert not (root / "saes").exists() and (root / "models" / "toy-default" / "done.json").is_file()
    assert not [p for p in root.iterdir() if p.name.startswith(".trash")]  # nothing left aside
    abandoned = root / f".trash-models-{(1 << 22) + 99}-0123abcd"  # what a clear killed mid-delete leaves (a pid
    # above Linux's largest, so no process has it)
    (abandoned / "x").mkdir(parents=True)
    live = root / f".trash-models-{os.getpid()}-0123abcd"  # a clear still deleting it
    live.mkdir()
    assert cli(tmp_path / "none.duckdb", "cache", "clear", "acts").exit_code == 0
    assert not abandoned.exists() and live.exists()
    built = entry("saes", "sae-a")  # the next user builds it again
    assert (built / "done.json").is_file()


def test_unknown_kinds_and_no_kinds_are_refused_naming_the_known_ones(cache, tmp_path):
    root, _ = cache
    r = cli(tmp_path / "none.duckdb", "cache", "clear", "sae")
    assert r.exit_code == 2 and "unknown cache kind 'sae'" in r.stderr and "saes" in r.stderr
    r = cli(tmp_path / "none.duckdb", "cache", "clear")
    assert r.exit_code == 2 and "--all" in r.stderr
    r = cli(tmp_path / "none.duckdb", "cache", "clear", "saes", "--all")
    assert r.exit_code == 2
    assert (root / "saes" / "sae-a").is_dir()


def test_a_kind_another_process_is_building_into_is_left_alone(cache, tmp_path):
    """A second process holds an entry's build lock (as build_once does while it builds): that kind is skipped and
    said so (exit 1), the others are cleared."""
    root, _ = cache
    lock = root / "saes" / ".sae-c.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, sys, time
        fh = open({str(lock)!r}, "a"); fcntl.flock(fh, fcntl.LOCK_EX)
        print("held", flush=True); time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = cli(tmp_path / "none.duckdb", "--json", "cache", "clear", "--all")
        assert r.exit_code == 1
        out = json.loads(r.stdout)
        assert [s["kind"] for s in out["skipped"]] == ["saes"] and "building into it" in out["skipped"][0]["reason"]
        assert "models" in [k["kind"] for k in out["removed"]]
        assert (root / "saes" / "sae-a" / "done.json").is_file() and not (root / "models").exists()
    finally:
        holder.kill()
        holder.wait()
    r = cli(tmp_path / "none.duckdb", "cache", "clear", "saes")  # the build is over: now it goes
    assert r.exit_code == 0 and not (root / "saes").exists()


def test_clear_waits_for_the_stores_runs_in_flight_unless_forced(cache, tmp_path):
    root, _ = cache
    db = tmp_path / "g.duckdb"
    with Store(db) as s:  # a run this (live) process queued: in flight
        s.put_run(run_id="r-live", experiment_id="experiment:x", config_hash="h", status="queued",
                  run_dir=str(tmp_path / "runs" / "r-live"), pid=os.getpid(), host=os.uname().nodename)
    r = cli(db, "cache", "clear", "saes")
    assert r.exit_code != 0 and "r-live" in r.stderr and "--force" in r.stderr
    assert (root / "saes" / "sae-a").is_dir()
    r = cli(db, "cache", "clear", "saes", "--force")
    assert r.exit_code == 0 and not (root / "saes").exists()
