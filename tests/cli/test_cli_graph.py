"""The CLI contract for the graph commands: JSON shapes, the show page's sections, exit codes and error text,
no torch for commands that do not encode, and a busy database."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import duckdb
import networkx as nx
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from claimgraph.cli.main import app

CLAIM = ("claim:learned-features-reflect-the-functionality-of-the-model-and-not-just-the-data-distribution-as-"
         "evidenced-by-interpretable-downstream-effects-not-used-in-dictionary-learning")
SUMMARY_TITLE = "The Birth of Knowledge: Emergent Features across Time, Space, and Scale in Large Language Models"


def run(db, *args, json_out=True):
    return CliRunner().invoke(app, ["--db", str(db), *(["--json"] if json_out else []), *args])


def ok(result):
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def populated(tmp_path_factory, seeds_dir):
    """A store with the four seed documents ingested (with embeddings); tests copy it before writing."""
    db = tmp_path_factory.mktemp("populated") / "seeds.duckdb"
    seeds = sorted(seeds_dir.glob("*.txt"))
    others = [p for p in seeds if not p.name.startswith("002_")]
    out = ok(run(db, "ingest", *map(str, others)))
    assert {d["format"] for d in out["documents"]} == {"claim-page", "novelty"}
    ok(run(db, "ingest", str(seeds_dir / next(p.name for p in seeds if p.name.startswith("002_"))),
           "--title", SUMMARY_TITLE))
    return db


@pytest.fixture
def db(populated, tmp_path):
    copy = tmp_path / "g.duckdb"
    shutil.copy(populated, copy)
    return copy


def test_every_command_has_help_with_an_example():
    root = get_command(app)
    stack = [(name, cmd) for name, cmd in root.commands.items()]
    seen = 0
    while stack:
        name, cmd = stack.pop()
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            stack += [(f"{name} {n}", c) for n, c in cmd.commands.items()]
            continue
        assert cmd.help and "Example:" in cmd.help, f"`claimgraph {name}` help has no example"
        r = CliRunner().invoke(app, [*name.split(), "--help"])
        assert r.exit_code == 0 and "Usage" in r.stdout
        seen += 1
    assert seen >= 20


def test_ingest_json_contract_and_noop_reingest(db, seeds_dir):
    out = ok(run(db, "ingest", str(next(seeds_dir.glob("003_*")))))
    [doc] = out["documents"]
    assert set(doc) >= {"path", "format", "nodes_added", "edges_added"}
    assert doc["unchanged"] and doc["nodes_added"] == {} and doc["format"] == "claim-page"


def test_list_json(db):
    nodes = ok(run(db, "list", "--type", "claim"))["nodes"]
    assert all({"id", "type", "title", "text"} <= set(n) and n["type"] == "claim" for n in nodes)
    assert CLAIM in {n["id"] for n in nodes}
    assert {n["status"] for n in nodes} == {"untested"}


def test_show_page_has_the_claim_page_sections(db):
    r = run(db, "show", CLAIM, json_out=False)
    assert r.exit_code == 0, r.stderr
    text = r.stdout
    order = ["claim\n", "page status: active", CLAIM[:60], "Learned features reflect the functionality",
             "Source paper", "extracted_from (2024) · Marc Carauleanu", "Neighborhood — ranked by edge-count",
             "Findings (3)", "Methods (3)", "Related by similarity", "cosine ≥ 0.65 · no typed edge",
             "question 0.794", "question 0.778", "finding 0.769"]
    pos = [text.find(s) for s in order]
    assert all(p >= 0 for p in pos), [s for s, p in zip(order, pos) if p < 0]
    assert pos == sorted(pos), "sections out of order"


@pytest.mark.parametrize("args", [["show", CLAIM], ["list", "--type", "claim"], ["evidence", CLAIM], ["stats"]])
def test_a_reading_command_does_not_import_pandas(db, args):
    """In a new process: DuckDB's client imports pandas (0.3-0.5 s, a third of a cold `show` at a million nodes)
    on the first statement with parameters, and pyarrow's conversions from Python values import it too;
    graph/conn.py and graph/ann.py avoid both."""
    code = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: print('pandas imported:', 'pandas' in sys.modules, file=sys.stderr))\n"
            f"sys.argv = ['claimgraph', '--db', {str(db)!r}, '--json', *{args!r}]\n"
            "runpy.run_module('claimgraph.cli.main', run_name='__main__')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "pandas imported: False", out.stderr


def test_show_json_contract(db):
    page = ok(run(db, "show", CLAIM))
    assert {"id", "type", "title", "text"} <= set(page["node"]) and page["node"]["id"] == CLAIM
    assert page["status"] == "untested"
    assert all({"id", "type", "title", "edge", "direction"} <= set(n) for n in page["neighbors"])
    findings = {n["id"] for n in page["neighbors"] if n["type"] == "finding"}
    methods = {n["id"] for n in page["neighbors"] if n["type"] == "method"}
    assert len(findings) == 3 and len(methods) == 3
    assert all({"id", "type", "title", "score"} <= set(s) for s in page["similar"])
    stated = {s["title"]: s for s in page["similar"] if s["origin"] != "computed"}
    assert stated["what is the 'correct number of features' for dictionary learning, and is this question "
                  "well-posed?"]["score"] == 0.778
    untyped = [s for s in page["similar"] if s["type"] is None]
    assert untyped and all(s["id"] is None and s["score"] is None for s in untyped)


def test_neighbors_and_path(db):
    start = "claim:decomposition-of-gradient-signal-into-direct-learning-pre-caching-and-circuit-sharing"
    hops = ok(run(db, "neighbors", start, "--depth", "2"))["nodes"]
    assert hops[0]["id"] == start and hops[0]["depth"] == 0
    by_id = {h["id"]: h for h in hops}
    paper = "paper:understanding-the-emergence-of-seemingly-useless-features-in-next-token-predictors"
    assert by_id[paper]["depth"] == 1 and by_id[paper]["edge"] == "extracted_from"
    sibling = "claim:framework-connecting-interventions-to-gradient-influence-ratios"
    assert by_id[sibling]["depth"] == 2 and by_id[sibling]["via"] == paper
    steps = ok(run(db, "path", start, sibling))["path"]
    assert [s["id"] for s in steps] == [start, paper, sibling]
    assert [s["direction"] for s in steps[1:]] == ["out", "in"]
    r = run(db, "path", start, CLAIM)
    assert r.exit_code == 1 and "no path" in r.stderr


def test_search_json(db):
    res = ok(run(db, "search", "pinned feature sampling", "-k", "3"))["results"]
    assert res[0]["id"] == "method:pinned-feature-sampling"
    assert all({"id", "type", "title", "score"} <= set(r) for r in res)
    only = ok(run(db, "search", "gradient decomposition", "--type", "claim"))["results"]
    assert only and all(r["type"] == "claim" for r in only)


def test_suggest_accept_reject(db):
    sug = ok(run(db, "suggest", "--threshold", "0.6"))["suggestions"]
    assert sug and all({"src", "dst", "score", "duplicate"} <= set(s) for s in sug)
    assert [s["score"] for s in sug] == sorted((s["score"] for s in sug), reverse=True)
    first, second = sug[0], sug[1]
    edge = ok(run(db, "accept", first["src"], first["dst"], "--edge", "associated_with"))["edge"]
    assert edge["provenance"]["made_by"] == "accepted-suggestion"
    ok(run(db, "reject", second["src"], second["dst"]))
    again = {(s["src"], s["dst"]) for s in ok(run(db, "suggest", "--threshold", "0.6"))["suggestions"]}
    assert (first["src"], first["dst"]) not in again and (second["src"], second["dst"]) not in again


def test_link_and_bad_edge(db):
    r = run(db, "link", "method:pinned-feature-sampling", "uses_method", "method:logit-weight-analysis")
    assert r.exit_code == 0
    r = run(db, "link", "method:pinned-feature-sampling", "befriends", CLAIM)
    assert r.exit_code == 2 and "Error: unknown edge type 'befriends'" in r.stderr and not r.stdout
    r = run(db, "link", "claim:nope", "supports", CLAIM)
    assert r.exit_code == 1 and "no node 'claim:nope'" in r.stderr


def test_bad_document_exits_2_names_the_file_and_line_and_writes_nothing(db, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("papers:\n  - title: A paper\n    claims:\n      - title: X\n        kind: wrong\n")
    good = tmp_path / "good.yaml"
    good.write_text("papers:\n  - title: Another paper\n    claims:\n      - title: Fine claim\n")
    before = ok(run(db, "stats"))
    r = run(db, "ingest", str(good), str(bad), "--no-embed")
    assert r.exit_code == 2
    assert r.stderr.startswith("Error: ") and "bad.yaml:5" in r.stderr and "Traceback" not in r.stderr
    assert ok(run(db, "stats")) == before


def test_a_bad_document_into_a_new_store_leaves_no_store_behind(tmp_path):
    """The documents are parsed before the store is opened: a failed first ingest creates no empty store file."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: x\nclaims: [\n")
    r = run(tmp_path / "new.duckdb", "ingest", str(bad), "--no-embed")
    assert r.exit_code == 2 and "bad.yaml:3" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"\xff\xfe\x00garbage", "UTF-8")])
def test_unreadable_documents(db, tmp_path, content, message):
    f = tmp_path / "doc.txt"
    f.write_bytes(content)
    r = run(db, "ingest", str(f))
    assert r.exit_code == 2 and "doc.txt" in r.stderr and message in r.stderr


def test_missing_store_and_unknown_node(tmp_path, db):
    r = run(tmp_path / "none.duckdb", "list")
    assert r.exit_code == 1 and "claimgraph init" in r.stderr
    r = run(db, "show", "claim:does-not-exist")
    assert r.exit_code == 1 and "no node 'claim:does-not-exist'" in r.stderr


def test_sigterm_during_an_export_leaves_no_partial_file(db, tmp_path):
    """A real SIGTERM to a `claimgraph export` process half-way through writing (the writer is wrapped to send it
    after its first bytes): the process exits 143 and neither the target nor its temporary file is left."""
    script = textwrap.dedent(f"""
        import os, signal, sys, time
        import claimgraph.graph.exchange.graphml as g
        real = g.write_graphml
        def write_then_terminated(store, f):
            f.write(b"<?xml partial")
            f.flush()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler ends the process here
            real(store, f)
        g.write_graphml = write_then_terminated
        from claimgraph.cli.main import main
        sys.argv = ["claimgraph", "--db", {str(db)!r}, "export", "--format", "graphml", "-o", {str(tmp_path / "g.graphml")!r}]
        main()
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 128 + 15, (r.returncode, r.stderr)
    assert [p.name for p in tmp_path.iterdir() if "graphml" in p.name] == []


def test_exports(db, tmp_path):
    out = ok(run(db, "export", "--format", "graphml", "-o", str(tmp_path / "g.graphml")))
    g = nx.read_graphml(out["files"][0])
    assert CLAIM in g and g.nodes[CLAIM]["type"] == "claim"
    out = ok(run(db, "export", "--format", "json", "-o", str(tmp_path / "g.jsonld")))
    doc = json.loads(open(out["files"][0]).read())
    assert "@context" in doc and any(n["id"] == "urn:claimgraph:" + CLAIM for n in doc["@graph"])
    out = ok(run(db, "export", "--format", "parquet", "-o", str(tmp_path / "pq")))
    n = duckdb.sql(f"SELECT count(*) FROM '{tmp_path / 'pq' / 'nodes.parquet'}'").fetchone()[0]
    assert n == sum(ok(run(db, "stats"))["nodes"].values()) and n > 0
    r = run(db, "export", "--format", "xml")
    assert r.exit_code == 2 and "unknown export format" in r.stderr


NO_TORCH = textwrap.dedent("""
    import sys
    from claimgraph.cli.main import main
    sys.argv = ["claimgraph", "--db", sys.argv[1], *sys.argv[2:]]
    try:
        main()
    except SystemExit as e:
        assert not e.code, e.code
    assert "torch" not in sys.modules, "torch was imported"
    assert "sentence_transformers" not in sys.modules
    print("no torch", file=sys.stderr)
""")


@pytest.mark.parametrize("args", [["list"], ["show", CLAIM], ["stats"], ["neighbors", CLAIM], ["suggest"]])
def test_commands_that_do_not_encode_do_not_import_torch(db, args):
    r = subprocess.run([sys.executable, "-c", NO_TORCH, str(db), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "no torch" in r.stderr, r.stderr


def test_busy_database_gives_a_clear_error(db):
    holder = subprocess.Popen([sys.executable, "-c",
                               "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
                               "time.sleep(60)", str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = subprocess.run([sys.executable, "-m", "claimgraph.cli.main", "--db", str(db), "list"],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, CLAIMGRAPH_BUSY_TIMEOUT="0.5"))
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 1
    assert r.stderr.startswith("Error: the database") and "is busy" in r.stderr and "Traceback" not in r.stderr
