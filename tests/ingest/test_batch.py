"""Documents applied in groups per transaction stay all or nothing each.

The failures are injected by wrapping the two places a document is written from (a fake where nothing else
can make a parsed, planned document fail at write time): BulkApply.apply, which checks a document and queues
it, and BulkApply.flush, which writes the queued ones, on the bulk path a group takes first; and Store.apply
on the per-document path a group is replayed on after a write error. One document is refused before it is
written, or fails after part of it was written.
"""
from __future__ import annotations

import pytest

from claimgraph.graph import InvalidDocument, Store, StoreError
from claimgraph.graph.store import BulkApply
from claimgraph.ingest import ingest_paths, pipeline


def _docs(tmp_path, n):
    for i in range(n):
        (tmp_path / f"d{i:02d}.yaml").write_text(
            f"papers:\n  - title: Paper number {i}\n    claims:\n      - title: Claim number {i} holds\n")
    return sorted(tmp_path.glob("d*.yaml"))


def _titles(store):
    return sorted(r[0] for r in store.sql("SELECT title FROM nodes WHERE type = 'paper'"))


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_groups_write_the_same_as_one_by_one(store, tmp_path, monkeypatch, batch):
    monkeypatch.setattr(pipeline, "APPLY_BATCH", batch)
    reports = ingest_paths(store, _docs(tmp_path, 7), embed=False)
    assert [r.nodes_added for r in reports] == [{"paper": 1, "claim": 1}] * 7
    assert _titles(store) == [f"Paper number {i}" for i in range(7)]
    again = ingest_paths(store, _docs(tmp_path, 7), embed=False)
    assert all(r.unchanged for r in again)  # re-ingest is a no-op


def test_an_unchanged_document_reports_what_store_apply_reports(store, tmp_path):
    """Re-ingest answers unchanged documents from one lookup per group: the same reports, node ids included, as
    Store.apply's own no-op, and nothing written (one of them also changed, to mix both kinds in a group)."""
    from claimgraph.ingest import read_documents

    files = _docs(tmp_path, 6)
    ingest_paths(store, files, embed=False)
    files[2].write_text(files[2].read_text() + "      - title: A second claim of paper 2\n")
    written = store.sql("SELECT path, ingested_at FROM documents ORDER BY path")
    again = {r.path: r for r in ingest_paths(store, files, embed=False)}
    assert [again[str(f)].unchanged for f in files] == [True, True, False, True, True, True]
    assert again[str(files[2])].nodes_added == {"claim": 1}
    for d in read_documents(files):
        if d.ref.path != str(files[2]):
            assert again[d.ref.path] == store.apply(d.delta, d.ref)  # Store.apply's no-op on the same document
            assert again[d.ref.path].node_ids  # the paper and its claim
    now = store.sql("SELECT path, ingested_at FROM documents ORDER BY path")
    assert [r for r in now if r[0] != str(files[2])] == [r for r in written if r[0] != str(files[2])]


@pytest.mark.parametrize("when", ["before writing", "after writing"])
def test_a_failing_document_writes_nothing_and_the_earlier_ones_stay(db_path, tmp_path, monkeypatch, when):
    monkeypatch.setattr(pipeline, "APPLY_BATCH", 64)  # all five in one group
    real, real_bulk, real_flush = Store.apply, BulkApply.apply, BulkApply.flush
    bad = lambda document: document.path.endswith("d02.yaml")
    queued_bad: set[int] = set()  # bulk writers holding the failing document

    def flaky(self, delta, document, **kw):  # the per-document path
        if bad(document):
            if when == "before writing":
                raise InvalidDocument("refused for the test", path=document.path)
            with self.transaction():  # written, then the database fails inside the same transaction
                real(self, delta, document, **kw)
                raise StoreError("database error, nothing was written: injected")
        return real(self, delta, document, **kw)

    def flaky_bulk(self, delta, document, **kw):  # the bulk path: check and queue
        if bad(document) and when == "before writing":
            raise InvalidDocument("refused for the test", path=document.path)
        report = real_bulk(self, delta, document, **kw)
        if bad(document):
            queued_bad.add(id(self))
        return report

    def flaky_flush(self):  # the bulk path: write what is queued, then the database fails
        failing = id(self) in queued_bad
        real_flush(self)
        if failing:
            queued_bad.discard(id(self))
            raise StoreError("database error, nothing was written: injected")

    monkeypatch.setattr(Store, "apply", flaky)
    monkeypatch.setattr(BulkApply, "apply", flaky_bulk)
    monkeypatch.setattr(BulkApply, "flush", flaky_flush)
    with Store(db_path) as store:
        with pytest.raises((InvalidDocument, StoreError), match="test|injected"):
            ingest_paths(store, _docs(tmp_path, 5), embed=False)
        assert _titles(store) == ["Paper number 0", "Paper number 1"]
        assert sorted(d.path.rsplit("/", 1)[1] for d in store.documents()) == ["d00.yaml", "d01.yaml"]


def test_a_group_ends_early_when_another_command_waits(db_path, tmp_path, monkeypatch):
    """Grouped transactions still hand the store on: a reader that queues while a 40-document group is being
    applied gets in before the ingest ends, and sees whole documents only (the group so far, committed)."""
    import threading
    import time

    monkeypatch.setattr(pipeline, "APPLY_BATCH", 64)  # one group, unless someone waits
    real = BulkApply.apply
    reader = Store(db_path, on_wait=None)
    seen: list[tuple[int, int, float]] = []
    threads: list[threading.Thread] = []

    def read() -> None:
        counts = reader.count_nodes()
        seen.append((counts.get("paper", 0), counts.get("claim", 0), time.monotonic()))

    def slow(self, delta, document, **kw):
        out = real(self, delta, document, **kw)
        if document.path.endswith("d05.yaml"):
            threads.append(threading.Thread(target=read))
            threads[0].start()
            time.sleep(0.4)  # the reader is queued now, and the turn has been held long enough to yield
        return out

    monkeypatch.setattr(BulkApply, "apply", slow)
    with Store(db_path) as store:
        reports = ingest_paths(store, _docs(tmp_path, 40), embed=False)
        finished = time.monotonic()
    threads[0].join(timeout=30)
    assert len(reports) == 40
    assert seen and seen[0][2] < finished, "the reader waited for the whole ingest"
    papers, claims = seen[0][:2]
    assert 6 <= papers < 40 and papers == claims, "the reader saw whole documents, part way through"
    assert _titles(Store(db_path)) == sorted(f"Paper number {i}" for i in range(40))


class PerDocument(BulkApply):
    """The reference the bulk path must equal: every document through `Store.apply` in the group's
    transaction, every lookup from the store (what ingest did before documents were written in bulk)."""

    def touches(self, delta, document):
        return False

    def resolve_papers(self, delta):
        return self.store.resolve_papers(delta)

    def get_nodes(self, ids):
        return self.store.get_nodes(ids)

    def apply(self, delta, document, vectors=None, model=None):
        return self.store.apply(delta, document, vectors=vectors, model=model or self.model)


GROUP = {
    "d0.yaml": """papers:
  - title: Paper Zero
    doi: 10.1/zero
    claims:
      - title: Induction heads implement copying
        text: First text.
        attrs: {page_status: active}
    findings:
      - title: Ablating heads removes copying
        supports: ["claim:Induction heads implement copying"]
    topics: [Induction]
""",
    # the same DOI under another title (merged, with a warning); the same claim (attrs merged, empty text keeps
    # the old, the new title); the same topic; an edge between d0's nodes, with attrs
    "d1.yaml": """papers:
  - title: Paper Zero, Revised
    doi: 10.1/zero
    claims:
      - title: Induction heads implement copying!
        attrs: {candidates_examined: 3}
    topics: [Induction, Copying]
edges:
  - {src: "finding:ablating-heads-removes-copying", type: supports, dst: "claim:induction-heads-implement-copying",
     attrs: {quote: q}}
""",
    "d2.yaml": """papers:
  - title: Paper Two
    cites: ["paper:Paper Zero"]
    claims:
      - title: Copying needs previous-token heads
        supports: ["claim:Induction heads implement copying"]
""",
    "d3.yaml": """papers:
  - title: Paper Three
    claims:
      - title: Induction heads form in a phase change
      - title: The phase change coincides with a loss bump
""",
    # a paper with a DOI whose title is d3's paper's: merged into it by title
    "d4.yaml": """papers:
  - title: paper three
    doi: 10.1/three
    findings:
      - title: The bump appears at every scale
        supports: ["claim:Induction heads form in a phase change"]
""",
}


def _write(folder, docs):
    folder.mkdir(exist_ok=True)
    for name, text in docs.items():
        (folder / name).write_text(text)
    return sorted(folder.glob("*.yaml"))


@pytest.mark.parametrize("batch", [2, 64])
def test_bulk_groups_write_what_one_document_at_a_time_writes(tmp_path, monkeypatch, store_rows, batch):
    """The same ingests through the bulk path and through Store.apply a document at a time: the same rows in
    every table and the same reports (warnings included), for a first ingest whose documents share nodes, an
    edge, a paper by DOI and one by title; then a changed document beside new ones; then all again."""
    from claimgraph.graph import store as store_module

    monkeypatch.setattr(pipeline, "APPLY_BATCH", batch)
    second = {**GROUP, "d3.yaml": GROUP["d3.yaml"].rsplit("      - title: The phase", 1)[0],  # drops a claim
              "d5.yaml": "papers:\n  - title: Paper Five\n    claims:\n      - title: Copying is learned late\n"}
    ways = {"bulk": BulkApply, "per-document": PerDocument}
    stores = {way: Store(tmp_path / f"{way}.duckdb") for way in ways}
    runs: dict[str, list] = {way: [] for way in ways}
    for docs in (GROUP, second, second):
        paths = _write(tmp_path / "docs", docs)  # the same files for both
        for way, cls in ways.items():
            monkeypatch.setattr(store_module, "BulkApply", cls)
            runs[way].append([r.model_dump() for r in ingest_paths(stores[way], paths, embed=False)])
        assert runs["bulk"][-1] == runs["per-document"][-1]
        assert store_rows(stores["bulk"]) == store_rows(stores["per-document"])
    reports = runs["bulk"]
    assert any(w["message"].startswith("paper paper:doi-10-1-zero (same DOI)") for w in reports[0][1]["warnings"])
    assert reports[1][3]["nodes_removed"] == {"claim": 1} and all(r["unchanged"] for r in reports[2])
    with stores["bulk"] as store:
        assert store.count_nodes()["paper"] == 4  # d4's paper merged into d3's
        claim = store.get_node("claim:induction-heads-implement-copying")
        assert claim.title == "Induction heads implement copying!" and claim.text == "First text."
        assert claim.attrs == {"page_status": "active", "candidates_examined": 3}
