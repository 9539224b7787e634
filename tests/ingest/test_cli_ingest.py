"""Ingest through the CLI: what the parsers keep is visible to the user (show lists related works known only by
their authors; warnings reach stderr)."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.graph.ids import paper_id


def run(db, *args):
    return CliRunner().invoke(app, ["--db", str(db), *args])


def test_show_lists_related_works_given_by_their_authors(tmp_path, seed, birth_title):
    db = tmp_path / "s.duckdb"
    r = run(db, "--json", "ingest", str(seed("002")), "--title", birth_title, "--no-embed")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["documents"][0]["warnings"] == []
    r = run(db, "show", paper_id(title=birth_title))
    assert r.exit_code == 0, r.stderr
    assert "Related works given by their authors (5)" in r.stdout
    assert "- Vladislav Lialin, Sherin Muckatira, Anna Rumshisky et al.  [reference; title not given]" in r.stdout
    r = run(db, "--json", "show", paper_id(title=birth_title))
    assert len(json.loads(r.stdout)["node"]["attrs"]["related_works"]) == 5


def test_ambiguity_warnings_are_printed_with_their_lines(tmp_path):
    page = tmp_path / "page.txt"
    page.write_text("claim\nclaim:aaAa\nFindings (2)\nfinding\n- One finding\nNotes (1)\nsomething\n")
    r = run(tmp_path / "s.duckdb", "ingest", str(page), "--no-embed")
    assert r.exit_code == 0, r.stderr
    lines = [s for s in r.stderr.splitlines() if s.startswith("Warning: ")]
    assert any(f"{page}:6: section 'Notes'" in s for s in lines), r.stderr
    assert any(f"{page}:3: section findings says 2 but lists 1" in s for s in lines), r.stderr
