"""Documents applied in groups per transaction stay all or nothing each.

The failures are injected by wrapping Store.apply (a fake where nothing else can make a parsed, planned
document fail at write time): one refused before it writes, one failing after part of it was written."""
from __future__ import annotations

import pytest

from claimgraph.graph import InvalidDocument, Store, StoreError
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


@pytest.mark.parametrize("when", ["before writing", "after writing"])
def test_a_failing_document_writes_nothing_and_the_earlier_ones_stay(db_path, tmp_path, monkeypatch, when):
    monkeypatch.setattr(pipeline, "APPLY_BATCH", 64)  # all five in one group
    real = Store.apply

    def flaky(self, delta, document, **kw):
        if document.path.endswith("d02.yaml"):
            if when == "before writing":
                raise InvalidDocument("refused for the test", path=document.path)
            with self.transaction():  # written, then the database fails inside the same transaction
                real(self, delta, document, **kw)
                raise StoreError("database error, nothing was written: injected")
        return real(self, delta, document, **kw)

    monkeypatch.setattr(Store, "apply", flaky)
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
    real = Store.apply
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

    monkeypatch.setattr(Store, "apply", slow)
    with Store(db_path) as store:
        reports = ingest_paths(store, _docs(tmp_path, 40), embed=False)
        finished = time.monotonic()
    threads[0].join(timeout=30)
    assert len(reports) == 40
    assert seen and seen[0][2] < finished, "the reader waited for the whole ingest"
    papers, claims = seen[0][:2]
    assert 6 <= papers < 40 and papers == claims, "the reader saw whole documents, part way through"
    assert _titles(Store(db_path)) == sorted(f"Paper number {i}" for i in range(40))
