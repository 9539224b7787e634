"""The fuzz suite (issue 13): hostile documents through `claimgraph ingest` and ingest_paths — random bytes,
truncated YAML/JSON, deep nesting, huge strings, control characters, invalid UTF-8, alias bombs, symlink loops,
unreadable files. Every failure is `Error: ...` with exit 2 and no traceback, and nothing is written (the store's
nodes, edges and documents are as they were). Loading stays safe: only plain YAML, and no id can climb out of
its slug.

The generated corpus and a short hypothesis run are quick and in the default suite; the long hypothesis runs
are marked slow. Permissions are real: as root, the unreadable-file cases run as `nobody` (seteuid).
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.graph import ClaimgraphError, Store
from claimgraph.graph.ids import parse_id
from claimgraph.ingest import ingest_paths, parse_text

REPO = Path(__file__).resolve().parents[2]
VALID = sorted((REPO / "data" / "papers").glob("*.yaml")) + sorted((REPO / "data" / "papers").glob("*.json")) \
    + sorted((Path(__file__).parent / "variants").glob("structured-*.*[ln]"))
PAGES = sorted((REPO / "data" / "papers").glob("*.txt")) + sorted((Path(__file__).parent / "variants").glob("*.txt"))
QUICK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
LONG = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    doc = "lol0: &lol0 [" + ", ".join(['"lol"'] * width) + "]\n"
    for i in range(1, levels):
        doc += f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * width) + "]\n"
    return doc


GOOD = "papers:\n  - title: A good paper\n    claims:\n      - title: A good claim\n"
SUMMARY = "TL;DR sentence.\nAn abstract sentence.\nGenerated Jun 07, 2025\nThe research employs probes.\n"


def hostile_corpus() -> dict[str, bytes]:
    """name -> bytes: one document per kind of hostility, each of which must be refused."""
    valid = (REPO / "data" / "papers" / "towards-monosemanticity-bricken-2023.yaml").read_bytes()
    cross = (REPO / "data" / "papers" / "cross-paper-links-feature-emergence.json").read_bytes()
    c: dict[str, bytes] = {
        "random.yaml": bytes(range(256)) * 4,
        "random.txt": os.urandom(4096).replace(b"\x00", b"\x01") + b"\xff",
        "truncated.yaml": valid[: len(valid) // 3] + b"\n  - title: [unclosed",
        "truncated.json": cross[: len(cross) // 2],
        "deep-flow.yaml": b"papers: " + b"[" * 5000 + b"]" * 5000 + b"\n",
        "deep-block.yaml": b"papers:\n" + b"".join(b"  " * i + b"- \n" for i in range(1, 300)),
        "deep-attrs.yaml": b"papers:\n  - title: T\n    attrs: " + b"{a: " * 150 + b"1" + b"}" * 150 + b"\n",
        "deep.json": b'{"papers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "deep-attrs.json": b'{"papers": [{"title": "T", "attrs": ' + b'{"a": ' * 150 + b"1" + b"}" * 150 + b"}]}",
        "huge-string.yaml": b"papers:\n  - title: " + b"x" * 3_000_000 + b"\n    year: soon\n",
        "control.yaml": b"papers:\n  - title: \"\x1b]0;pwned\x07\x1b[2J\"\n    year: [1]\n",
        "control-raw.yaml": b"papers:\n  - title: a\x1b[2Jb\x07\n",
        "invalid-utf8.yaml": GOOD.encode() + b"      - title: caf\xe9\n",
        "invalid-utf8.txt": b"claim\nactive\nclaim:ab\xc3\x28Ab\n",
        "overlong-utf8.json": b'{"papers": [{"title": "\xc0\xaf"}]}',
        "alias-bomb.yaml": billion_laughs().encode(),
        "alias-bomb-in-papers.yaml": (billion_laughs() + "papers:\n  - title: T\n    attrs: {x: *lol8}\n").encode(),
        "alias-cycle.yaml": b"papers: &p\n  - title: T\n    attrs: {self: *p}\n",
        "alias-bomb-front-matter.txt": ("---\n" + billion_laughs(7) + "title: T\n---\n" + SUMMARY).encode(),
        "python-object.yaml": b"papers: !!python/object/apply:os.system ['touch /tmp/claimgraph-pwned']\n",
        "custom-tag.yaml": b"papers: !include other.yaml\n",
        "nul.yaml": GOOD.encode() + b"\x00",
        "empty.json": b"",
        "bom-only.txt": b"\xef\xbb\xbf\n\n",
        "not-a-mapping.json": b"[1, 2, 3]",
        "repeated-key.json": b'{"papers": [], "papers": []}',
        "traversal-id.yaml": b"papers:\n  - title: P\n    claims:\n      - id: claim:../../etc/passwd\n        title: X\n",
        "bad-ref.yaml": b"papers: []\nedges:\n  - {src: 'claim:../x', type: supports, dst: 'claim:y'}\n",
        "front-matter-list.txt": ("---\ntitle: [a, b]\n---\n" + SUMMARY).encode(),
        "front-matter-number.txt": ("---\ntitle: 123\n---\n" + SUMMARY).encode(),
        "front-matter-doi.txt": ("---\ntitle: T\ndoi: [1]\n---\n" + SUMMARY).encode(),
        "front-matter-unquoted-arxiv.txt": ("---\ntitle: T\narxiv: 2301.05210\n---\n" + SUMMARY).encode(),
    }
    return c


def counts(db: Path) -> tuple:
    with Store(db) as s:
        return s.count_nodes(), s.count_edges(), [d.path for d in s.documents()]


@pytest.fixture
def seeded_db(tmp_path):
    """A real store file with one document in it, so 'nothing written' is checked against something."""
    db = tmp_path / "s.duckdb"
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    with Store(db, create=True) as s:
        ingest_paths(s, [good], embed=False)
    return db


def cli(db: Path, *args: str):
    r = CliRunner().invoke(app, ["--db", str(db), "ingest", *args, "--no-embed"])
    return r


def refused_cleanly(r) -> str:
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    assert r.stderr.startswith("Error: ") and "Traceback" not in r.stderr, r.stderr
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr, "terminal escapes from the document reached the terminal"
    return r.stderr


@pytest.mark.parametrize("name", sorted(hostile_corpus()))
def test_hostile_document_is_refused_with_exit_2_and_nothing_written(name, seeded_db, tmp_path):
    doc = tmp_path / name
    doc.write_bytes(hostile_corpus()[name])
    before = counts(seeded_db)
    t0 = time.monotonic()
    err = refused_cleanly(cli(seeded_db, str(doc)))
    assert time.monotonic() - t0 < 30, "a refusal should be quick"
    assert name in err, err  # the message names the file
    assert counts(seeded_db) == before
    assert not Path("/tmp/claimgraph-pwned").exists()


def test_alias_bomb_gets_a_clear_refusal_quickly(tmp_path):
    doc = tmp_path / "bomb.yaml"
    doc.write_text(billion_laughs())
    t0 = time.monotonic()
    err = refused_cleanly(cli(tmp_path / "s.duckdb", str(doc)))
    assert time.monotonic() - t0 < 5
    assert "expands to more than 1,000,000 YAML nodes through its aliases" in err and "docs/limits.md" in err
    doc.write_text("papers:\n  - title: Anchors are fine\n    attrs: {x: &a [1, 2], y: *a}\n")
    assert cli(tmp_path / "s.duckdb", str(doc)).exit_code == 0  # ordinary anchors stay allowed


def test_size_limit_refusal_names_the_limit(tmp_path, seeded_db):
    doc = tmp_path / "big.yaml"
    doc.write_text(GOOD + "#" * 3_000_000)
    r = CliRunner().invoke(app, ["--db", str(seeded_db), "ingest", str(doc), "--no-embed"],
                           env={"CLAIMGRAPH_MAX_DOC_MB": "1"})
    assert "over the 1.0 MB limit" in refused_cleanly(r)


def test_symlink_loops_in_a_folder(tmp_path, seeded_db):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.yaml").write_text(GOOD.replace("good", "fine"))
    (folder / "loop.yaml").symlink_to(folder / "loop2.yaml")
    (folder / "loop2.yaml").symlink_to(folder / "loop.yaml")
    before = counts(seeded_db)
    assert "loops back" in refused_cleanly(cli(seeded_db, str(folder)))
    assert counts(seeded_db) == before
    (folder / "loop.yaml").unlink()
    (folder / "loop2.yaml").unlink()
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to(folder)  # a folder loop: read once, not forever
    assert cli(seeded_db, str(folder)).exit_code == 0


def test_unreadable_file(as_nobody):
    d = Path(tempfile.mkdtemp(prefix="cg-fuzz-"))
    try:
        d.chmod(0o777)
        doc = d / "secret.yaml"
        doc.write_text(GOOD)
        doc.chmod(0o000)
        with Store(None) as s, as_nobody():
            with pytest.raises(ClaimgraphError) as e:
                ingest_paths(s, [doc], embed=False)
        assert e.value.exit_code == 2 and "secret.yaml" in str(e.value) and "permission" in str(e.value).lower()
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=False)


# -- safe loading -----------------------------------------------------------------------------------------
def test_only_plain_yaml_is_loaded():
    marker = Path(tempfile.gettempdir()) / "claimgraph-safe-load-check"
    marker.unlink(missing_ok=True)
    for doc in (f"papers: !!python/object/apply:os.system ['touch {marker}']\n",
                f"papers:\n  - !!python/object/new:subprocess.Popen [['touch', '{marker}']]\n",
                "papers: !!python/name:os.system\n"):
        with pytest.raises(ClaimgraphError, match="only plain YAML is read"):
            parse_text(doc, "/d.yaml")
    assert not marker.exists()


@pytest.mark.parametrize("doc", [
    "papers:\n  - title: P\n    claims:\n      - {id: 'claim:../../etc/passwd', title: X}\n",
    "papers:\n  - title: P\n    claims:\n      - {id: 'claim:a/b', title: X}\n",
    "papers:\n  - title: P\n    claims:\n      - {id: 'claim:/etc/passwd', title: X}\n",
])
def test_explicit_ids_cannot_carry_paths(doc):
    with pytest.raises(ClaimgraphError, match="is not a node id"):
        parse_text(doc, "/d.yaml")


def test_refs_by_title_become_slugs():
    """A ref is `type:slug` or `type:Free Title`; a title with path characters is slugged, never used as a path."""
    d = parse_text("papers: []\nclaims:\n  - {title: y}\nedges:\n  - {src: 'claim:../../x', type: supports, dst: 'claim:y'}\n",
                   "/d.yaml")
    assert set(d.external_refs) == {"claim:x"}


@given(st.text(min_size=1, max_size=80))
@QUICK
def test_every_id_made_from_any_title_is_a_plain_slug(title):
    doc = json.dumps({"papers": [{"title": title, "doi": title, "claims": [{"title": title}]}]})
    try:
        d = parse_text(doc, "/d.json")
    except ClaimgraphError:
        return
    for n in d.delta.nodes:
        _, slug = parse_id(n.id)
        assert "/" not in slug and ".." not in slug and "\\" not in slug


# -- hypothesis: random bytes, truncations, corruptions, through the real pipeline and a file store ------------
def ingest_or_refuse(data: bytes, suffix: str, folder: Path, store: Store) -> None:
    doc = folder / f"doc{suffix}"
    doc.write_bytes(data)
    state = lambda: (store.count_nodes(), store.count_edges(), [d.path for d in store.documents()])
    before = state()
    try:
        ingest_paths(store, [doc], embed=False, title="A title" if b"Generated" in data else None)
    except ClaimgraphError as e:
        assert e.exit_code == 2 and str(e), f"bad input must exit 2 with a message: {e!r}"
        assert state() == before
        return
    finally:
        doc.unlink()


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory):
    """A real store file, open for the module (opening it per example would dominate the run)."""
    folder = tmp_path_factory.mktemp("fuzz")
    with Store(folder / "s.duckdb", create=True) as s:
        yield folder, s


def corruptions():
    sources = [p.read_bytes() for p in VALID + PAGES]
    return st.tuples(st.sampled_from(range(len(sources))), st.integers(0, 10**9), st.integers(0, 10**9),
                     st.sampled_from(["truncate", "flip", "insert", "control"]), st.binary(min_size=1, max_size=8)
                     ).map(lambda t: (sources[t[0]], *t[1:]))


def corrupt(source: bytes, a: int, b: int, how: str, junk: bytes) -> bytes:
    i = a % (len(source) + 1)
    if how == "truncate":
        return source[:i]
    if how == "flip":
        j = b % max(len(source), 1)
        return source[:j] + bytes([source[j] ^ 0x80]) + source[j + 1:] if source else junk
    if how == "control":
        return source[:i] + bytes([b % 32]) + source[i:]
    return source[:i] + junk + source[i:]


def run_corruption(fuzz_store, case) -> None:
    folder, store = fuzz_store
    source, a, b, how, junk = case
    is_json = source.lstrip().startswith(b"{")
    suffix = ".json" if is_json else ".yaml" if source.startswith(b"papers") or b"\npapers:" in source[:200] else ".txt"
    ingest_or_refuse(corrupt(source, a, b, how, junk), suffix, folder, store)


@given(st.binary(max_size=2000), st.sampled_from([".yaml", ".json", ".txt"]))
@QUICK
def test_random_bytes_through_the_pipeline(fuzz_store, data, suffix):
    folder, store = fuzz_store
    ingest_or_refuse(data, suffix, folder, store)


@given(corruptions())
@QUICK
def test_corrupted_documents_through_the_pipeline(fuzz_store, case):
    run_corruption(fuzz_store, case)


@pytest.mark.slow
@given(st.binary(max_size=20000), st.sampled_from([".yaml", ".json", ".txt"]))
@LONG
def test_random_bytes_through_the_pipeline_long(fuzz_store, data, suffix):
    folder, store = fuzz_store
    ingest_or_refuse(data, suffix, folder, store)


@pytest.mark.slow
@given(corruptions())
@LONG
def test_corrupted_documents_through_the_pipeline_long(fuzz_store, case):
    run_corruption(fuzz_store, case)
