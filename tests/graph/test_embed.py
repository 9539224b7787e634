"""The two encoder backends: OpenVINO (the default on CPU) computes torch's vectors, on real texts."""
from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

from claimgraph.graph import StoreError
from claimgraph.graph.embed import Embedder, default_backend

TEXTS = [
    "Sparse autoencoders recover monosemantic features from superposition in a one-layer transformer",
    "Ablating induction heads in layer 5 of GPT-2 small reduces in-context learning by 40 percent on random tokens",
    "Activation patching: intervene on the residual stream and record the logit difference",
    "Does feature absorption in Pythia-410M depend on the dictionary width?",
    "x", "", "Ünïcödé, ümlauts and 日本語 text; with punctuation!?", "word " * 300,  # past the 256-token cut
]


@pytest.mark.slow
def test_openvino_vectors_agree_with_torch():
    ov = Embedder(backend="openvino").encode(TEXTS, progress=False)
    torch_vecs = Embedder(backend="torch").encode(TEXTS, progress=False)
    assert ov.shape == torch_vecs.shape == (len(TEXTS), 384) and ov.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ov, axis=1), 1.0, atol=1e-5)
    cos = (ov * torch_vecs).sum(axis=1)
    assert cos.min() > 0.9999, cos
    # order within the batch does not matter (texts are batched by length)
    again = Embedder(backend="openvino").encode(TEXTS[::-1], progress=False)[::-1]
    np.testing.assert_allclose(again, ov, atol=1e-5)


def test_backend_choice(monkeypatch):
    monkeypatch.setenv("CLAIMGRAPH_ENCODER", "torch")
    assert default_backend() == "torch" and Embedder().backend == "torch"
    monkeypatch.setenv("CLAIMGRAPH_ENCODER", "openvino")
    assert Embedder().backend == "openvino"
    monkeypatch.setenv("CLAIMGRAPH_ENCODER", "tensorflow")
    with pytest.raises(StoreError, match="CLAIMGRAPH_ENCODER"):
        Embedder()
    monkeypatch.delenv("CLAIMGRAPH_ENCODER")
    with pytest.raises(StoreError, match="CPU"):
        Embedder(device="cuda", backend="openvino")
    assert Embedder(device="cuda").backend == "torch"
    assert Embedder().encode([]).shape == (0, 384)


@pytest.mark.slow
def test_openvino_encoding_does_not_import_torch():
    Embedder(backend="openvino").encode(["export the model into the cache first"])  # the export needs torch, once
    code = ("import sys; from claimgraph.graph.embed import Embedder; Embedder(backend='openvino').encode(['hi']);"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_openvino_batches_in_flight_give_the_one_at_a_time_vectors():
    """More than one batch goes through OpenVINO's throughput mode (several batches in flight, a stream per core);
    it must give each text the vector the one-batch-at-a-time path gives it, in its own row."""
    texts = [f"{t} ({i})" for i in range(40) for t in TEXTS]  # 320 texts: five batches of 64
    emb = Embedder(backend="openvino")
    model = emb._worker.run(emb._load)
    assert model.many is not None
    used = []
    many = model.many
    model.many = lambda items, done: (used.append(1), many(items, done))[1]
    in_flight = emb.encode(texts, progress=False)
    model.many = None
    one_at_a_time = emb.encode(texts, progress=False)
    model.many = many
    assert used == [1]
    np.testing.assert_allclose(in_flight, one_at_a_time, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(in_flight, axis=1), 1.0, atol=1e-5)  # every row filled
    for i in (0, 77, 150, 319):  # each in its own row: the text encoded alone gives it
        np.testing.assert_allclose(in_flight[i], emb.encode([texts[i]], progress=False)[0], atol=1e-5)
    assert emb.encode(TEXTS[:3], progress=False).shape == (3, 384)  # one batch: the latency path, no queue

    def broken(key, feed, hidden):
        raise ValueError("pooling failed")

    feed = {k: np.ones((2, 4), dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    with pytest.raises(ValueError, match="pooling failed"):  # raised here, not lost in OpenVINO's thread
        emb._worker.run(lambda: many(iter([(0, feed), (1, feed), (2, feed)]), broken))
