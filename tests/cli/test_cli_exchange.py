"""`claimgraph export` and `claimgraph import` through typer's CliRunner: exports never overwrite the store or an
existing file without --force (and never a traceback), import rebuilds a store that answers the same queries."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from claimgraph.cli.main import app

REPO = Path(__file__).resolve().parents[2]


def run(db, *args):
    return CliRunner().invoke(app, ["--db", str(db), "--json", *args])


def ok(result):
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout) if result.stdout.strip() else None


def error(result, code=2):
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit), "an expected failure, not a traceback"
    assert result.stderr.startswith("Error: ")
    return result.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-exchange")
    shutil.copytree(REPO / "data" / "papers", folder / "papers")
    ok(run(folder / "s.duckdb", "ingest", str(folder / "papers"), "--no-embed"))
    return folder / "s.duckdb"


@pytest.fixture
def db(built, tmp_path):
    shutil.copytree(built.parent / "papers", tmp_path / "papers")
    shutil.copy(built, tmp_path / "s.duckdb")
    return tmp_path / "s.duckdb"


@pytest.mark.parametrize("fmt", ["json", "graphml", "trig", "parquet"])
def test_export_onto_the_store_is_refused_even_with_force(db, fmt):
    for extra in ([], ["--force"]):
        assert "onto the store itself" in error(run(db, "export", "--format", fmt, "-o", str(db), *extra))
    assert ok(run(db, "stats"))["nodes"]["claim"] > 0  # still a valid store


def test_existing_files_are_kept_unless_force(db, tmp_path):
    target = tmp_path / "claims.jsonld"
    target.write_text("mine")
    assert "--force" in error(run(db, "export", "-o", str(target)))
    assert target.read_text() == "mine"
    assert "--force" in error(run(db, "export", "--format", "parquet", "-o", str(target)))  # no traceback
    assert target.read_text() == "mine"
    out = ok(run(db, "export", "-o", str(target), "--force"))
    assert out["files"] == [str(target)] and "@graph" in json.loads(target.read_text())
    folder = tmp_path / "pq"
    ok(run(db, "export", "--format", "parquet", "-o", str(folder)))
    assert "exists (folder)" in error(run(db, "export", "--format", "parquet", "-o", str(folder)))
    ok(run(db, "export", "--format", "parquet", "-o", str(folder), "--force"))
    assert (folder / "claimgraph.json").is_file()


def test_export_to_dev_full_is_an_error_not_a_traceback(db):
    assert "exists" in error(run(db, "export", "-o", "/dev/full"))
    assert "No space left on device" in error(run(db, "export", "-o", "/dev/full", "--force"))


def test_export_to_stdout_and_bad_options(db):
    r = CliRunner().invoke(app, ["--db", str(db), "export", "--format", "json", "-o", "-"])
    assert r.exit_code == 0 and "@graph" in json.loads(r.stdout)
    assert "unknown export format" in error(run(db, "export", "--format", "xml"))
    assert "not an absolute IRI" in error(run(db, "export", "-o", str(db.parent / "x.jsonld"), "--base", "nope"))
    assert "a folder of files" in error(run(db, "export", "--format", "parquet", "-o", "-"))


@pytest.mark.parametrize("fmt, name", [("json", "e.jsonld"), ("parquet", "e-parquet"), ("graphml", "e.graphml")])
def test_import_rebuilds_a_store_that_answers_the_same(db, tmp_path, fmt, name):
    ok(run(db, "export", "--format", fmt, "-o", str(tmp_path / name)))
    copy = tmp_path / "copy.duckdb"
    out = ok(run(copy, "import", str(tmp_path / name), "--no-embed"))
    assert out["imported"]["nodes"] == sum(ok(run(db, "stats"))["nodes"].values())
    assert ok(run(copy, "stats"))["nodes"] == ok(run(db, "stats"))["nodes"]
    assert ok(run(copy, "stats"))["edges"] == ok(run(db, "stats"))["edges"]
    assert ok(run(copy, "search", "sparse dictionary features")) == ok(run(db, "search", "sparse dictionary features"))
    claim = ok(run(db, "list", "--type", "claim"))["nodes"][0]["id"]
    assert ok(run(copy, "show", claim))["node"] == ok(run(db, "show", claim))["node"]
    assert "is not empty" in error(run(copy, "import", str(tmp_path / name), "--no-embed"))


def test_a_failed_import_leaves_no_store_behind(tmp_path):
    bad = tmp_path / "bad.jsonld"
    bad.write_text('{"@graph": [')
    new = tmp_path / "new.duckdb"
    assert "bad.jsonld:1: not JSON" in error(run(new, "import", str(bad)))
    assert not new.exists()
    trig = tmp_path / "x.trig"
    trig.touch()
    assert "export only" in error(run(new, "import", str(trig)))
    assert not new.exists()
