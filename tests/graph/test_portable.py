"""Portable stores: paths under `<db>.d/` are recorded relative to it; stores of schema <= 5 (absolute run
folders) are rewritten by migration 6. A real DuckDB file throughout."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from claimgraph.graph import EdgeType, MadeBy, Node, Store
from claimgraph.graph.portable import local_path, stored_path
from claimgraph.graph.schema import SCHEMA_VERSION


def test_paths_inside_the_folder_are_relative_others_stay_absolute(db_path, tmp_path):
    with Store(db_path) as s:
        home = s.home
        assert stored_path(s, home / "runs" / "x" / "r1") == "runs/x/r1"
        assert stored_path(s, tmp_path / "other" / "r2") == str(tmp_path / "other" / "r2")
        assert stored_path(s, "runs/x/r1") == "runs/x/r1" and stored_path(s, None) is None
        assert local_path(s, "runs/x/r1") == home / "runs" / "x" / "r1"
        assert local_path(s, "/abs/r") == Path("/abs/r")
    with Store(None) as mem:  # an in-memory store has no folder: paths are kept as given
        assert stored_path(mem, tmp_path / "r") == str(tmp_path / "r")


def test_put_run_records_relative_and_runs_gives_a_local_path_after_a_move(db_path, tmp_path):
    with Store(db_path) as s:
        s.put_run(run_id="r1", experiment_id="experiment:e", config_hash="h", status="queued",
                  run_dir=str(s.home / "runs" / "e" / "r1"))
        assert s.sql("SELECT run_dir FROM runs") == [("runs/e/r1",)]
    moved = tmp_path / "m" / "moved.duckdb"
    moved.parent.mkdir()
    shutil.copy(db_path, moved)
    with Store(moved) as s:
        assert s.runs()[0]["run_dir"] == str(moved.parent / "moved.duckdb.d" / "runs" / "e" / "r1")


def test_migration_6_relativizes_absolute_paths_of_older_stores(db_path, tmp_path):
    outside = str(tmp_path / "elsewhere" / "r9")
    with Store(db_path) as s:
        home = s.home
        run = str(home / "runs" / "e" / "r1")
        s.add_node(Node(id="claim:c", type="claim", title="C"))
        s.add_node(Node(id="experiment:e", type="experiment", title="E"))
        s.add_node(Node(id="evidence:e-r1", type="evidence", title="supported",
                        attrs={"verdict": "supported", "run_id": "r1", "experiment": "experiment:e",
                               "criterion": {"metric": "m"}, "run_dir": run, "reused_from": outside}),
                   made_by=MadeBy.experiment, source=run, source_hash="cfg")
        s.link("experiment:e", EdgeType.produced, "evidence:e-r1", made_by=MadeBy.experiment, source=run)
        s.add_node(Node(id="claim:parsed", type="claim", title="P"), made_by=MadeBy.parsed, source=run)
        # write what a schema-5 store holds: absolute paths, and no migration from 6 on recorded
        with s.session(write=True):
            s.con.execute("INSERT INTO runs (run_id, experiment_id, config_hash, status, run_dir, created_at) "
                          "VALUES ('r1', 'experiment:e', 'cfg', 'completed', ?, now()), "
                          "('r9', 'experiment:e', 'cfg', 'completed', ?, now())", [run, outside])
            s.con.execute("DELETE FROM schema_version WHERE version >= 6")
    with Store(db_path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert dict(s.sql("SELECT run_id, run_dir FROM runs")) == {"r1": "runs/e/r1", "r9": outside}
        ev = s.get_node("evidence:e-r1")
        assert ev.provenance.source == "runs/e/r1"
        assert ev.attrs["run_dir"] == "runs/e/r1" and ev.attrs["reused_from"] == outside
        assert s.get_edge("experiment:e", "produced", "evidence:e-r1").provenance.source == "runs/e/r1"
        assert s.get_node("claim:parsed").provenance.source == run  # only experiment records are run folders
        assert json.loads(s.sql("SELECT attrs FROM nodes WHERE id = 'evidence:e-r1'")[0][0])["verdict"] == "supported"
