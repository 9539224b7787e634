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
