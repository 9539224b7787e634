"""The CLI follows its ecosystem's conventions (issue 17) and fails cleanly on bad values (issue 19): --version,
shell completion, --json before or after the command, CSV, --limit/--offset, id prefixes, not-found exits,
literal help text, unlink with provenance, terminal escapes; and list-returning queries become DataFrames."""
from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.graph import Node, Store

CLAIM = ("claim:learned-features-reflect-the-functionality-of-the-model-and-not-just-the-data-distribution-as-"
         "evidenced-by-interpretable-downstream-effects-not-used-in-dictionary-learning")


def cli(db, *args):
    return CliRunner().invoke(app, ["--db", str(db), *args])


def ok(r):
    assert r.exit_code == 0, (r.stdout, r.stderr)
    return r


@pytest.fixture(scope="module")
def papers(tmp_path_factory, data_dir):
    """The bundled papers, with embeddings (suggestions need vectors); tests copy it before writing."""
    db = tmp_path_factory.mktemp("conv") / "papers.duckdb"
    ok(cli(db, "ingest", str(data_dir / "papers")))
    return db


@pytest.fixture
def db(papers, tmp_path):
    copy = tmp_path / "g.duckdb"
    shutil.copy(papers, copy)
    return copy


def test_version():
    r = ok(CliRunner().invoke(app, ["--version"]))
    assert r.stdout.startswith("claimgraph ") and r.stdout.split()[1][0].isdigit()


def test_shell_completion_is_offered():
    r = ok(CliRunner().invoke(app, ["--help"]))
    assert "--install-completion" in r.stdout and "--show-completion" in r.stdout
    # `--show-completion` detects the shell from the parent processes, so it runs under a real bash (`; true` keeps
    # bash from exec-ing the command in its place); in-process the answer depends on who started pytest
    import subprocess
    import sys

    r2 = subprocess.run(["bash", "-c", f"'{sys.executable}' -m claimgraph.cli.main --show-completion; true"],
                        capture_output=True, text=True, timeout=120)
    assert "complete" in r2.stdout and "_CLAIMGRAPH_COMPLETE" in r2.stdout.upper(), r2.stderr


@pytest.mark.parametrize("args", [["list"], ["stats"], ["runs"], ["experiment", "list"], ["search", "features"]])
def test_json_before_or_after_the_command(db, args):
    before = ok(CliRunner().invoke(app, ["--json", "--db", str(db), *args]))
    after = ok(CliRunner().invoke(app, ["--db", str(db), *args, "--json"]))
    assert json.loads(before.stdout) == json.loads(after.stdout)
    if args[0] == "list":
        assert json.loads(ok(cli(db, "list", "--format", "json")).stdout) == json.loads(after.stdout)


def test_csv_and_format_option(db):
    rows = list(csv.DictReader(io.StringIO(ok(cli(db, "list", "--type", "claim", "--csv")).stdout)))
    assert rows and {"id", "type", "title", "status", "edges"} <= set(rows[0])
    assert all(r["type"] == "claim" for r in rows) and CLAIM in {r["id"] for r in rows}
    same = list(csv.DictReader(io.StringIO(ok(cli(db, "list", "--type", "claim", "--format", "csv")).stdout)))
    assert same == rows
    runs = ok(cli(db, "runs", "--csv")).stdout
    assert runs.splitlines()[0].startswith("run_id,")
    r = cli(db, "list", "--format", "xml")
    assert r.exit_code == 2 and "unknown --format 'xml'" in r.stderr


def test_limit_and_offset(db):
    every = [n["id"] for n in json.loads(ok(cli(db, "list", "--json")).stdout)["nodes"]]
    page = [n["id"] for n in json.loads(ok(cli(db, "list", "--json", "--limit", "3", "--offset", "2")).stdout)["nodes"]]
    assert page == every[2:5]
    assert json.loads(ok(cli(db, "list", "--json", "--offset", str(len(every) - 1))).stdout)["nodes"][0]["id"] == every[-1]
    for bad in (["--limit", "-1"], ["--offset", "-2"]):
        r = cli(db, "list", *bad)
        assert r.exit_code == 2 and r.stderr.startswith("Error: --") and "Traceback" not in r.stderr


def test_unknown_edge_type_for_neighbors_is_an_error(db):
    r = cli(db, "neighbors", CLAIM, "--edge", "bogus")
    assert r.exit_code == 2 and "Error: unknown edge type 'bogus'" in r.stderr and "Traceback" not in r.stderr
    assert ok(cli(db, "--json", "neighbors", CLAIM, "--edge", "supports")).stdout


def test_id_prefixes(db):
    page = json.loads(ok(cli(db, "--json", "show", "claim:learned-features-reflect")).stdout)
    assert page["node"]["id"] == CLAIM
    page = json.loads(ok(cli(db, "--json", "show", "learned-features-reflect")).stdout)  # the slug, no type
    assert page["node"]["id"] == CLAIM
    r = cli(db, "show", "method:")
    assert r.exit_code == 2 and "is ambiguous" in r.stderr and "method:pinned-feature-sampling" in r.stderr
    ev = json.loads(ok(cli(db, "--json", "evidence", "claim:learned-features")).stdout)
    assert ev["claim"] == CLAIM


@pytest.mark.parametrize("args, code, message", [
    (["show", "claim:nope-nope"], 1, "no node 'claim:nope-nope'"),
    (["neighbors", "nope-nope"], 1, "no node 'nope-nope'"),
    (["path", CLAIM, "paper:nope"], 1, "no node 'paper:nope'"),
    (["runs", "experiment:nope"], 1, "no experiment node 'experiment:nope'"),
    (["run", "experiment:nope"], 1, "no experiment node 'experiment:nope'"),
    (["evidence", "paper:towards-monosemanticity"], 2, "is a paper; evidence is about claims and findings"),
    (["feature", "20000101T000000-nope", "3"], 1, "no run '20000101T000000-nope'"),
    (["unlink", CLAIM, "supports", "paper:towards-monosemanticity"], 1, "no edge"),
])
def test_not_found_ids_exit_non_zero_with_a_message(db, args, code, message):
    r = cli(db, *args)
    assert r.exit_code == code, (r.stdout, r.stderr)
    assert r.stderr.startswith("Error: ") and message in r.stderr


def test_help_shows_the_criterion_syntax_literally():
    r = ok(CliRunner().invoke(app, ["experiment", "add", "--help"]))
    assert "'metric > threshold [band=X] [conf=Y]'" in " ".join(r.stdout.split())


def test_unlink_keeps_the_removal_on_record_and_reject_then_works(db):
    sug = json.loads(ok(cli(db, "--json", "suggest", "--threshold", "0.3", "--limit", "1")).stdout)["suggestions"][0]
    ok(cli(db, "accept", sug["src"], sug["dst"], "--edge", "associated_with"))
    r = cli(db, "reject", sug["src"], sug["dst"])
    assert r.exit_code == 2
    assert f"`claimgraph unlink {sug['src']} associated_with {sug['dst']}`" in r.stderr
    out = json.loads(ok(cli(db, "--json", "unlink", sug["src"], "associated_with", sug["dst"],
                            "--reason", "accepted by mistake")).stdout)["removed"]
    assert out["provenance"]["made_by"] == "accepted-suggestion" and out["removed_by"] == "manual"
    assert out["reason"] == "accepted by mistake" and out["attrs"]["similarity"] > 0
    with Store(db) as s:
        assert not s.edges(sug["src"], type="associated_with")
        [rec] = s.removed_edges(sug["src"])
        assert (rec.src, rec.type.value, rec.dst) == (sug["src"], "associated_with", sug["dst"])
    ok(cli(db, "reject", sug["src"], sug["dst"]))
    again = json.loads(ok(cli(db, "--json", "suggest", "--threshold", "0.3")).stdout)["suggestions"]
    assert (sug["src"], sug["dst"]) not in {(x["src"], x["dst"]) for x in again}


def test_a_parsed_edge_can_be_unlinked_and_says_its_document_still_states_it(db):
    r = ok(cli(db, "unlink", "finding:causal-validation-of-base64-feature-function-via-pinned-feature-sampling",
               "supports", CLAIM))
    assert "removed" in r.stderr and "its document still states it" in r.stderr


ESCAPES = "Evil \x1b]0;pwned\x07 title \x1b[2J with \x9b31m C1 and [/x] markup"


def test_terminal_escapes_are_shown_escaped_and_kept_in_the_store(db):
    with Store(db) as s:
        s.add_node(Node(id="claim:evil-title", type="claim", title=ESCAPES, text="body \x1b[31mred"))
    for args in (["list", "--type", "claim"], ["show", "claim:evil-title"], ["search", "evil title"]):
        out = ok(cli(db, *args)).stdout
        assert "\x1b" not in out and "\x9b" not in out and "\x07" not in out, args
        assert "\\x1b]0;pwned\\x07" in out or args[0] == "search" and "\\x1b" in out
    shown = json.loads(ok(cli(db, "--json", "show", "claim:evil-title")).stdout)
    assert shown["node"]["title"] == ESCAPES and shown["node"]["text"] == "body \x1b[31mred"
    raw = ok(cli(db, "--json", "list")).stdout
    assert "\x1b" not in raw and "\x9b" not in raw  # JSON escapes them; the data are unchanged
    assert ESCAPES in {n["title"] for n in json.loads(raw)["nodes"]}
    with Store(db) as s:
        assert s.get_node("claim:evil-title").title == ESCAPES


def test_queries_give_dataframes(db):
    with Store(db) as s:
        df = s.list_nodes("claim").to_pandas()
        assert list(df.columns[:4]) == ["id", "type", "title", "text"] and (df["type"] == "claim").all()
        assert {"source", "made_by", "at"} <= set(df.columns)
        edges = s.edges(CLAIM).to_pandas()
        assert len(edges) == len(s.edges(CLAIM)) and {"src", "type", "dst", "made_by"} <= set(edges.columns)
        assert s.runs().to_pandas().empty
