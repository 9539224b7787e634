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
