"""Torch tests run on one intra-op thread: tiny matmuls are ~10x faster than with two threads on two busy
cores, and jobs that compute with one thread are then bit-comparable with the tests' independent
recomputations."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    from claimgraph.experiments.context import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture
def identity_sae():
    """A factory for hand-set ReLU SAEs of width d whose latent j is input dimension j (encoder and decoder the
    identity, biases 0): latent j fires exactly where dimension j is positive, with that value."""
    def make(d: int):
        import torch

        from claimgraph.experiments.sae import SaeRecipe
        from claimgraph.experiments.sae.relu import ReluSAE

        sae = ReluSAE(SaeRecipe(d_sae=d).config(d, 0))
        with torch.no_grad():
            sae.W_enc.copy_(torch.eye(d))
            sae.W_dec.copy_(torch.eye(d))
            sae.b_enc.zero_()
            sae.b_dec.zero_()
        return sae

    return make


@pytest.fixture
def install_plugin(tmp_path, monkeypatch):
    """Install job kinds the way a user installs a plugin: modules with `claimgraph.jobs` entry points in a
    dist-info folder, on sys.path here and on PYTHONPATH for the runs' processes. `install_plugin(name,
    {module: source}, {kind: "module:Class"})` returns the folder."""
    import os

    def install(name: str, modules: dict[str, str], kinds: dict[str, str]):
        root = tmp_path / f"plugin-{name}"
        root.mkdir()
        for module, source in modules.items():
            (root / f"{module}.py").write_text(source)
        dist = root / f"{name}-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text("[claimgraph.jobs]\n" + "".join(f"{k} = {v}\n" for k, v in kinds.items()))
        monkeypatch.syspath_prepend(str(root))
        monkeypatch.setenv("PYTHONPATH", str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        return root

    return install


def tiny_smollm2_llama(folder, n_layers: int = 2) -> str:
    """A tiny random Llama (d_model 32) saved in `folder` with SmolLM2's real tokenizer, so it reads the real
    text corpora (text:small) the way lm:smollm2-135m does, at a fraction of the cost; returns its `hf:` ref."""
    import torch
    import transformers

    from claimgraph.experiments.substrate.load import tokenizer_for

    tok = tokenizer_for("lm:smollm2-135m")
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=n_layers,
                                   num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
                                   max_position_embeddings=128, tie_word_embeddings=True)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return f"hf:{folder}"


@pytest.fixture
def tiny_llama(tmp_path):
    """A randomly initialised two-block Hugging Face Llama (vocabulary 97, width 32, 4 heads over 2 key-value
    heads) saved to a folder and loaded through `hf:` (seeded: torch.manual_seed(0) before it is built), and an
    8-latent ReLU SAE for its 32-wide residual stream with the default initialisation."""
    transformers = pytest.importorskip("transformers")
    import torch

    from claimgraph.experiments.sae import SaeRecipe
    from claimgraph.experiments.sae.relu import ReluSAE
    from claimgraph.experiments.substrate import load_model

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
                                   tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llama")
    return load_model(f"hf:{tmp_path / 'llama'}", progress=False), ReluSAE(SaeRecipe(d_sae=8).config(32, 0))
