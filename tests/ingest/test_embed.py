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

    def encode(self, texts, *, progress=None):
        self.calls.append(list(texts))
        return super().encode(texts, progress=progress)


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
