"""Ingest with the real all-MiniLM-L6-v2 encoder: vectors are stored, and unchanged text is never re-encoded."""
from __future__ import annotations

import numpy as np

from claimgraph.graph import embed
from claimgraph.ingest import ingest_paths

PAGE = "claim-page-learned-features-reflect-model-functionality.txt"


class CountingEmbedder(embed.Embedder):
    """The real encoder, recording what it is asked to encode (a seam for counting, not a fake)."""

    def __init__(self):
        super().__init__()
        self.calls: list[list[str]] = []

    def encode_async(self, texts, *, progress=False):  # `encode` goes through it too
        self.calls.append(list(texts))
        return super().encode_async(texts, progress=progress)


def test_ingest_embeds_once_and_reingest_encodes_nothing(file_store, data_dir, tmp_path, monkeypatch):
    counting = CountingEmbedder()
    monkeypatch.setattr(embed, "_EMBEDDER", counting)
    doc = tmp_path / PAGE
    doc.write_text((data_dir / "papers" / PAGE).read_text())

    [report] = ingest_paths(file_store, [doc])
    model = counting.model_name
    assert report.nodes_added and file_store.unembedded_nodes(model) == []
    ids, mat = file_store.node_vectors(model)
    nodes = file_store.get_nodes(ids)
    assert len(ids) == 11 and mat.shape == (11, 384)
    assert [len(c) for c in counting.calls] == [11]  # one batch, one text per node
    np.testing.assert_allclose(np.linalg.norm(mat, axis=1), 1.0, atol=1e-5)
    # Each stored vector is the encoding of its node's own text (independent recomputation).
    fresh = counting.encode([nodes[i].embed_text() for i in ids])
    np.testing.assert_allclose((fresh * mat).sum(axis=1), 1.0, atol=1e-4)
    counting.calls.clear()

    [again] = ingest_paths(file_store, [doc])
    assert again.unchanged and counting.calls == []

    doc.write_text(doc.read_text().replace("output logits", "logits of the output tokens"))
    [changed] = ingest_paths(file_store, [doc])
    assert changed.nodes_updated == {"method": 1}
    assert len(counting.calls) == 1 and len(counting.calls[0]) == 1 and "logits of the output tokens" in counting.calls[0][0]
    assert file_store.unembedded_nodes(model) == []


def test_ingest_writes_earlier_documents_while_later_texts_are_encoded(file_store, data_dir, tmp_path, monkeypatch):
    """The encoder works through the texts in the order the documents are applied, a chunk per job, and the
    writer applies a group as soon as its vectors are there. Planted: every job after the first (the real
    encoder) waits until a group has been committed; the chunk is as large as the largest document, so the
    first document's texts are all in the first job. An ingest that encoded everything before writing would
    never let the second job start: it gives up after 30 s and the test fails. Every stored vector is still its
    text's."""
    import contextlib
    import shutil
    import threading

    from claimgraph.graph.store import Store, text_hash
    from claimgraph.ingest import pipeline

    committed = threading.Event()
    gave_up: list[int] = []
    gated: list[int] = []
    real_bulk = Store.bulk

    @contextlib.contextmanager
    def bulk(self, model=None):
        with real_bulk(self, model) as b:
            yield b
        committed.set()  # the group's transaction ended without an error

    class GatedEmbedder(embed.Embedder):
        """The real encoder; jobs after the first wait for a commit (a seam for ordering, not a fake)."""

        def __init__(self):
            super().__init__()
            self.jobs = 0

        def encode_async(self, texts, *, progress=False):
            self.jobs += 1
            k = self.jobs
            if k == 1:
                return super().encode_async(texts, progress=progress)
            def wait_then_encode():
                gated.append(k)
                if not committed.wait(30):
                    gave_up.append(k)
                return embed.Embedder.encode_async(self, texts).result()  # on this thread: runs now

            return self._worker.submit(wait_then_encode)

    folder = tmp_path / "papers"
    shutil.copytree(data_dir / "papers", folder)
    per_doc = [{text_hash(n) for n in pipeline.parse_document(f).delta.nodes} for f in sorted(folder.iterdir())]
    chunk = max(len(h) for h in per_doc)
    assert len(set().union(*per_doc)) > chunk  # at least two jobs
    monkeypatch.setattr(pipeline, "ENCODE_CHUNK", chunk)
    monkeypatch.setattr(pipeline, "APPLY_BATCH", 1)
    monkeypatch.setattr(Store, "bulk", bulk)
    gated_embedder = GatedEmbedder()
    monkeypatch.setattr(embed, "_EMBEDDER", gated_embedder)
    reports = pipeline.ingest_paths(file_store, [folder])
    assert len(reports) == 6 and gated and not gave_up
    model = gated_embedder.model_name
    assert file_store.unembedded_nodes(model) == []
    ids, mat = file_store.node_vectors(model)
    nodes = file_store.get_nodes(ids)
    fresh = embed.Embedder().encode([nodes[i].embed_text() for i in ids])
    assert float((fresh * mat).sum(axis=1).min()) > 0.9999
