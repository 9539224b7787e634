"""Issue 19 (items 3-5, ingest's part): input that used to hang, crash or drop data silently.

Each test failed on the code before the fix: FIFOs blocked forever, /dev/zero was read until MemoryError,
unreadable folders and non-UTF-8 names gave tracebacks, `ingest ""` read the current folder, repeated ids,
keys and DOIs lost data without a word, bad front matter values crashed, and a write failure in the middle of
a folder said "nothing was written" after half the folder had been.

Permissions are real: as root (CI) the tests that need an unreadable folder drop to the `nobody` user with
seteuid for the duration of the call, since root reads everything.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.graph import InvalidDocument, InvalidInput, Store
from claimgraph.ingest import ingest_paths, parse_document, parse_text

GOOD = "papers:\n  - title: A good paper\n    claims:\n      - title: A good claim\n"
CLI = [sys.executable, "-m", "claimgraph.cli.main"]


def cli(*args: str | bytes, cwd: Path | None = None, env: dict | None = None, timeout: float = 120,
        preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, timeout=timeout, cwd=cwd, preexec_fn=preexec,
                          env={**os.environ, **(env or {})})


def invoke(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in this process (typer's CliRunner), for cases that need no separate process; same result shape."""
    r = CliRunner().invoke(app, list(args), env=env)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout.encode(), r.stderr.encode())


def clean_failure(r: subprocess.CompletedProcess, *words: str) -> str:
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2, (r.returncode, err)
    assert err.startswith("Error: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture
def shared_dir():
    """A folder `nobody` can enter (pytest's tmp_path sits under a root-only folder)."""
    d = Path(tempfile.mkdtemp(prefix="cg-hostile-"))
    d.chmod(0o777)
    yield d
    for root, dirs, _ in os.walk(d):
        for x in dirs:
            os.chmod(os.path.join(root, x), 0o755)
    subprocess.run(["rm", "-rf", str(d)], check=False)


def untouched(store: Store) -> bool:
    return store.count_nodes() == {} and store.documents() == []


# -- item 3: only regular files, read non-blocking and bounded --------------------------------------------
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "f.yaml"
    os.mkfifo(fifo)
    r = cli("--db", str(tmp_path / "s.duckdb"), "ingest", str(fifo), "--no-embed", timeout=60)
    clean_failure(r, "f.yaml", "named pipe (FIFO)", "regular files")
    (tmp_path / "a.yaml").write_text(GOOD)  # in a folder too: named, not skipped, not blocking
    r = cli("--db", str(tmp_path / "s.duckdb"), "ingest", str(tmp_path), "--no-embed", timeout=60)
    clean_failure(r, "f.yaml", "FIFO")


def test_symlink_to_dev_zero_is_refused(store, tmp_path):
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    with pytest.raises(InvalidDocument, match="character device") as e:
        ingest_paths(store, [link], embed=False)
    assert e.value.path.endswith("zero.yaml") and untouched(store)


def test_file_inside_an_unreadable_folder(store, shared_dir, as_nobody):
    locked = shared_dir / "locked"
    locked.mkdir()
    (locked / "a.yaml").write_text(GOOD)
    locked.chmod(0o000)
    with as_nobody():
        with pytest.raises(InvalidDocument, match="permission denied") as e:
            ingest_paths(store, [locked / "a.yaml"], embed=False)
    assert e.value.path.endswith("a.yaml") and untouched(store)


def test_unreadable_subfolder_is_reported_not_skipped(store, shared_dir, as_nobody):
    (shared_dir / "a.yaml").write_text(GOOD)
    sub = shared_dir / "sub"
    sub.mkdir()
    (sub / "b.yaml").write_text(GOOD.replace("good", "second"))
    sub.chmod(0o000)
    with as_nobody():
        with pytest.raises(InvalidDocument, match="folder cannot be read") as e:
            ingest_paths(store, [shared_dir], embed=False)
    assert e.value.path.endswith("sub") and untouched(store)


def test_non_utf8_file_name(tmp_path):
    name = os.fsencode(tmp_path) + b"/caf\xe9.yaml"
    fd = os.open(name, os.O_WRONLY | os.O_CREAT)
    os.write(fd, GOOD.encode())
    os.close(fd)
    r = cli(b"--db", os.fsencode(tmp_path / "s.duckdb"), b"ingest", name, b"--no-embed")
    clean_failure(r, "caf\\xe9.yaml", "not valid UTF-8")
    r = cli("--db", str(tmp_path / "s.duckdb"), "ingest", str(tmp_path), "--no-embed")  # found in a folder
    clean_failure(r, "caf\\xe9.yaml", "not valid UTF-8")
    assert not (tmp_path / "s.duckdb").exists() or json.loads(
        cli("--db", str(tmp_path / "s.duckdb"), "--json", "stats").stdout)["nodes"] == {}


def test_empty_path_is_refused_not_the_current_folder(tmp_path):
    (tmp_path / "a.yaml").write_text(GOOD)
    r = cli("--db", str(tmp_path / "s.duckdb"), "ingest", "", "--no-embed", cwd=tmp_path)  # argv as a shell gives it
    clean_failure(r, "empty path")
    with pytest.raises(InvalidInput, match="empty path"):
        ingest_paths(Store(None), [""], embed=False)


def test_symlink_loops_and_dangling_links(store, tmp_path):
    (tmp_path / "a.yaml").write_text(GOOD)
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    with pytest.raises(InvalidDocument, match="loops back") as e:
        ingest_paths(store, [tmp_path], embed=False)
    assert e.value.path.endswith("loop.yaml")
    loop.unlink()
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "missing.yaml")
    with pytest.raises(InvalidDocument, match="does not exist"):
        ingest_paths(store, [tmp_path], embed=False)
    (tmp_path / "gone.yaml").unlink()
    (tmp_path / "up").symlink_to(tmp_path)  # a folder link back up the tree is read once, not forever
    [report] = ingest_paths(store, [tmp_path], embed=False)
    assert report.nodes_added == {"paper": 1, "claim": 1}


# -- item 4: nothing dropped silently ----------------------------------------------------------------------
@pytest.mark.parametrize("doc, first, second", [
    ("papers:\n  - title: P\n    claims:\n      - id: claim:x\n        title: First title\n"
     "      - id: claim:x\n        title: Second title\n", (4, "First title"), (6, "Second title")),
    ("papers:\n  - title: Sparse Autoencoders Find Highly Interpretable Features\n    doi: 10.1/abc\n"
     "  - title: Something else entirely\n    doi: 10.1/ABC\n", (2, "Sparse"), (4, "Something else entirely")),
], ids=["explicit id", "DOI"])
def test_one_id_given_two_titles_in_a_document_names_both_places(doc, first, second):
    with pytest.raises(InvalidDocument) as e:
        parse_text(doc, "/d.yaml")
    msg = str(e.value)
    assert e.value.line == second[0] and f"line {first[0]}" in msg and first[1] in msg and second[1] in msg, msg


def test_repeated_json_key_is_an_error_with_both_lines():
    doc = '{"papers": [\n  {"title": "A paper",\n   "year": 2020,\n   "title": "Another title"}\n]}\n'
    with pytest.raises(InvalidDocument, match="'title' appears twice") as e:
        parse_text(doc, "/d.json")
    assert e.value.line == 4 and "first at line 2" in str(e.value)


def test_same_doi_in_another_document_is_a_reported_merge(store, tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("papers:\n  - title: Towards Monosemanticity\n    doi: 10.1/mono\n")
    b.write_text("papers:\n  - title: Decomposing Language Models With Dictionary Learning\n    doi: 10.1/MONO\n")
    [ra] = ingest_paths(store, [a], embed=False)
    assert ra.warnings == []
    [rb] = ingest_paths(store, [b], embed=False)
    [w] = rb.warnings
    assert "Towards Monosemanticity" in w.message and "Decomposing" in w.message and "other_titles" in w.message
    [paper] = store.list_nodes("paper")
    assert paper.title == "Decomposing Language Models With Dictionary Learning"
    assert paper.attrs["other_titles"] == ["Towards Monosemanticity"]  # neither title is lost


def test_same_explicit_id_in_another_document_is_a_reported_retitle(store, tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("papers: []\nclaims:\n  - {id: 'claim:x', title: Features are linear}\n")
    b.write_text("papers: []\nclaims:\n  - {id: 'claim:x', title: Features are directions}\n")
    ingest_paths(store, [a], embed=False)
    [rb] = ingest_paths(store, [b], embed=False)
    [w] = rb.warnings
    assert "claim:x" in w.message and "Features are linear" in w.message and "Features are directions" in w.message
    assert w.path == str(b.resolve())


def test_warnings_reach_the_cli_on_stderr_and_in_json(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("papers:\n  - title: First name of it\n    doi: 10.1/x\n")
    b.write_text("papers:\n  - title: Second name of it\n    doi: 10.1/x\n")
    db = str(tmp_path / "s.duckdb")
    assert invoke("--db", db, "ingest", str(a), "--no-embed").returncode == 0
    r = invoke("--db", db, "--json", "ingest", str(b), "--no-embed")
    assert r.returncode == 0
    err = r.stderr.decode()
    assert err.startswith("Warning: ") and "b.yaml" in err and "First name of it" in err
    [doc] = json.loads(r.stdout)["documents"]
    [w] = doc["warnings"]
    assert w["path"].endswith("b.yaml") and "Second name of it" in w["message"]


# -- item 5: bad values give Error:, exit 2 ----------------------------------------------------------------
SUMMARY = ("TL;DR sentence about a paper.\nAn abstract sentence.\nGenerated Jun 07, 2025\n"
           "The research employs probes to read features.\n")


@pytest.mark.parametrize("front, key, line", [
    ("title: [a, b]", "title", 2), ("title: 123", "title", 2), ("title: T\ndoi: [1]", "doi", 3),
    ("title: T\nyear: soon", "year", 3), ("title: T\narxiv: {a: 1}", "arxiv", 3),
])
def test_front_matter_values_are_checked(front, key, line):
    with pytest.raises(InvalidDocument) as e:
        parse_text(f"---\n{front}\n---\n{SUMMARY}", "/s.txt")
    assert e.value.field == key and e.value.line == line and f"front matter {key}" in str(e.value)


def test_front_matter_values_through_the_cli(tmp_path):
    doc = tmp_path / "s.txt"
    doc.write_text(f"---\ntitle: [a, b]\n---\n{SUMMARY}")
    clean_failure(invoke("--db", str(tmp_path / "s.duckdb"), "ingest", str(doc), "--no-embed"), "s.txt:2", "title")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-3"])
def test_max_doc_mb_must_be_finite_and_positive(tmp_path, monkeypatch, value):
    doc = tmp_path / "a.yaml"
    doc.write_text(GOOD)
    monkeypatch.setenv("CLAIMGRAPH_MAX_DOC_MB", value)
    with pytest.raises(InvalidInput, match="positive, finite"):
        parse_document(doc)
    clean_failure(invoke("--db", str(tmp_path / "s.duckdb"), "ingest", str(doc), "--no-embed",
                      env={"CLAIMGRAPH_MAX_DOC_MB": value}), "CLAIMGRAPH_MAX_DOC_MB")


def test_write_failure_midway_says_what_was_written(tmp_path):
    """A real write failure: the file-size limit (RLIMIT_FSIZE) stops DuckDB writing part-way through a folder."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(16):
        claims = "".join(f"      - title: Claim {k} of paper {i}\n        text: {'evidence and more ' * 1200}\n"
                         for k in range(8))
        (docs / f"d{i:02d}.yaml").write_text(f"papers:\n  - title: Paper number {i}\n    claims:\n{claims}")
    db = tmp_path / "s.duckdb"
    assert invoke("--db", str(db), "init").returncode == 0
    limit = db.stat().st_size + 600_000

    def cap():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = cli("--db", str(db), "ingest", str(docs), "--no-embed", preexec=cap)
    err = r.stderr.decode()
    assert r.returncode == 1 and err.startswith("Error: ") and "Traceback" not in err, err
    stats = json.loads(invoke("--db", str(db), "--json", "stats").stdout)
    written = stats["nodes"].get("paper", 0)
    assert 0 < written < 16, (written, err)  # the limit fell in the middle of the folder
    assert "nothing was written" not in err
    assert f"{written} of 16 documents given were applied" in err and "run the same command again" in err
    r = invoke("--db", str(db), "--json", "ingest", str(docs), "--no-embed")  # without the limit it finishes
    assert r.returncode == 0
    out = json.loads(r.stdout)["documents"]
    assert sum(d["unchanged"] for d in out) == written and len(out) == 16


def test_docs_limits_states_the_limits_the_code_enforces(monkeypatch):
    """docs/limits.md gives the same numbers as the code, and quotes refusals the code really gives."""
    from claimgraph.graph.ids import MAX_SLUG
    from claimgraph.graph.yamlsafe import MAX_ALIASES, MAX_DEPTH, MAX_EXPANDED_NODES
    from claimgraph.ingest.source import DEFAULT_MAX_DOC_MB

    doc = (Path(__file__).resolve().parents[2] / "docs" / "limits.md").read_text()
    for number in (f"{MAX_ALIASES:,} alias", f"{MAX_EXPANDED_NODES:,} nodes", f"{MAX_DEPTH} levels",
                   f"{DEFAULT_MAX_DOC_MB:g} MB", f"at most {MAX_SLUG} characters"):
        assert number in doc, number
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdef", "bcdefg"))
    refusals = []
    for text, path in ((bomb, "/b.yaml"), ('{"papers": ' + "[" * 150 + "]" * 150 + "}", "/d.json"),
                       ("papers: !!python/object/apply:os.system ['true']", "/p.yaml")):
        with pytest.raises(InvalidDocument) as e:
            parse_text(text, path)
        refusals.append(e.value.bare_message)
    monkeypatch.setenv("CLAIMGRAPH_MAX_DOC_MB", "nan")
    with pytest.raises(InvalidInput) as e:
        parse_document(__file__)
    refusals.append(str(e.value))
    for message in refusals:
        assert message in doc, message
