"""The on-disk activation cache: one forward pass per (model, hook, corpus slice), read back equal to a direct
capture, keyed on the model's provenance (a weight-shuffled control gets its own entry), readable with json +
safetensors alone, and checked against its manifest. The model is a tiny random Llama saved with SmolLM2's real
tokenizer, so it reads the real text corpus (text:small) without the 135M model's cost."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from claimgraph.experiments.substrate import acts_cache  # noqa: E402
from claimgraph.experiments.substrate.acts_cache import ActsSlice, cached_activations  # noqa: E402
from claimgraph.experiments.substrate.load import corpus_for, load_model, shuffled_copy  # noqa: E402
from claimgraph.graph.errors import InvalidInput  # noqa: E402

from .conftest import tiny_smollm2_llama  # noqa: E402

HOOK = "blocks.1.mlp.hook_post"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    ref = tiny_smollm2_llama(tmp_path_factory.mktemp("tiny") / "llama", n_layers=2)
    model = load_model(ref, progress=False)
    corpus, _ = corpus_for(ref, "text:small")
    return model, corpus


def test_computed_once_and_equal_to_a_direct_capture(tiny, monkeypatch):
    model, corpus = tiny
    a = cached_activations(model, corpus, HOOK, stop=12, batch_size=5, windows_per_shard=4)
    m = a.manifest
    assert (m["hook"], m["split"], m["start"], m["stop"], m["d"], m["seq_len"]) == (HOOK, "train", 0, 12, 48, 64)
    assert len(m["shards"]) == 3 and m["n_tokens"] == 12 * 64 and m["model"]["ref"] == model.ref
    direct = model.capture(corpus.window_slice("train", 0, 12), HOOK).reshape(-1, 48)
    assert torch.equal(a.tensor(), direct) and torch.equal(a.tokens(), corpus.window_slice("train", 0, 12))

    def no_compute(*args, **kw):
        raise AssertionError("recomputed a cached entry")

    monkeypatch.setattr(acts_cache, "_compute", no_compute)
    again = cached_activations(model, corpus, HOOK, stop=12, batch_size=5, windows_per_shard=4)
    assert again.folder == a.folder and torch.equal(again.tensor(), direct)


def test_keys_follow_weights_slice_and_hook(tiny):
    model, corpus = tiny
    base = cached_activations(model, corpus, HOOK, stop=4)
    shuffled = cached_activations(shuffled_copy(model, seed=3), corpus, HOOK, stop=4)
    other_slice = cached_activations(model, corpus, HOOK, start=4, stop=8)
    other_hook = cached_activations(model, corpus, "blocks.0.hook_resid_post", stop=4)
    folders = {base.folder, shuffled.folder, other_slice.folder, other_hook.folder}
    assert len(folders) == 4
    assert shuffled.manifest["model"]["shuffled_seed"] == 3 and not torch.equal(shuffled.tensor(), base.tensor())
    assert other_hook.manifest["d"] == 32


def test_readable_without_claimgraph_and_verified(tiny):
    from safetensors.torch import load_file

    model, corpus = tiny
    a = cached_activations(model, corpus, HOOK, stop=6)
    manifest = json.loads((a.folder / "manifest.json").read_text())
    raw = torch.cat([load_file(str(a.folder / s["file"]))["acts"] for s in manifest["shards"]])
    assert raw.shape == (manifest["n_tokens"], manifest["d"]) and torch.equal(raw, a.tensor())
    sep = manifest["separator_id"]
    assert len(a.tensor(skip_separators=True)) == int((a.tokens() != sep).sum())
    a.verify()
    shard = a.folder / manifest["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(InvalidInput, match="does not match"):
        ActsSlice(a.folder).verify()


def test_bad_requests_are_refused(tiny):
    model, corpus = tiny
    with pytest.raises(InvalidInput, match="outside"):
        cached_activations(model, corpus, HOOK, start=5, stop=5)
    with pytest.raises(InvalidInput, match="unknown hook"):
        cached_activations(model, corpus, "blocks.9.mlp.hook_post", stop=2)
    with pytest.raises(InvalidInput, match="dtype"):
        cached_activations(model, corpus, HOOK, stop=2, dtype="int8")
