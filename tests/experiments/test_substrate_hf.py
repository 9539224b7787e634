"""Hugging Face models behind the hooked interface, on tiny randomly initialised Llama (grouped-query attention,
tied embeddings, as SmolLM2), GPT-NeoX (parallel and sequential residual) and GPT-2 models saved with
save_pretrained to a temp dir (nothing is downloaded)."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from claimgraph.experiments.substrate import activations, load_model, shuffled_copy  # noqa: E402
from claimgraph.graph.errors import InvalidInput, NotFound  # noqa: E402

VOCAB = 97
ARCHS = ["llama", "neox", "neox_seq", "gpt2"]


def _make(arch: str):
    torch.manual_seed(0)
    if arch == "llama":
        cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
                                       tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)
        return transformers.LlamaForCausalLM(cfg)
    if arch.startswith("neox"):
        cfg = transformers.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=48, max_position_embeddings=64,
                                         use_parallel_residual=(arch == "neox"))
        return transformers.GPTNeoXForCausalLM(cfg)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, n_inner=48,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    for arch in ARCHS:
        model = _make(arch)
        with torch.no_grad():  # non-trivial LayerNorm and bias values
            for _name, p in model.named_parameters():
                if p.ndim == 1:
                    p.add_(0.1 * torch.randn_like(p))
        model.save_pretrained(root / arch)
    return root


@pytest.fixture(scope="module", params=ARCHS)
def hf(request, saved):
    return request.param, load_model(f"hf:{saved / request.param}", progress=False)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, VOCAB, (3, 11), generator=torch.Generator().manual_seed(5))


def _final_ln(m):
    return {"llama": lambda: m.hf.model.norm, "gpt_neox": lambda: m.hf.gpt_neox.final_layer_norm,
            "gpt2": lambda: m.hf.transformer.ln_f}[m.arch]()


def test_dimensions_and_names(hf):
    arch, m = hf
    assert (m.n_layers, m.d_model, m.d_mlp, m.d_vocab, m.n_ctx, m.n_heads) == (2, 32, 48, VOCAB, 64, 4)
    assert m.vocab is None and m.W_U.shape == (32, VOCAB) and m.W_out(0).shape == (48, 32)
    assert m.ln_final_weight().shape == (32,)
    names = m.hook_names()
    need = ["hook_embed", "ln_final.hook_normalized"] + [f"blocks.{i}.{h}" for i in range(2) for h in (
        "hook_resid_pre", "hook_resid_post", "mlp.hook_post", "hook_mlp_out", "hook_attn_out", "mlp.hook_pre",
        "attn.hook_z")]
    assert set(need) <= set(names)
    assert ("blocks.0.hook_resid_mid" in names) == (arch != "neox")  # none with a parallel residual
    assert ("blocks.0.mlp.hook_pre_linear" in names) == (arch == "llama")  # the gated MLP's up projection
    from claimgraph.experiments.substrate.families import hook_names

    assert names == hook_names(m.arch, 2, parallel_residual=(arch == "neox"))  # the list experiment add checks
    assert m.decode([3, 4]) == ["<3>", "<4>"]


def test_hooks_fire_with_contract_shapes(hf, tokens):
    _, m = hf
    logits, c = m.run_with_cache(tokens)
    B, T = tokens.shape
    assert logits.shape == (B, T, VOCAB) and set(c) == set(m.hook_names())
    for name, act in c.items():
        want = {"mlp.hook_pre": (B, T, 48), "mlp.hook_pre_linear": (B, T, 48), "mlp.hook_post": (B, T, 48),
                "attn.hook_z": (B, T, 4, 8),
                "hook_pos_embed": (1, T, 32)}
        key = next((k for k in want if name.endswith(k)), None)
        assert act.shape == (want[key] if key else (B, T, 32)), name
        assert not act.requires_grad


def test_cache_reproduces_logits_and_mlp_out(hf, tokens):
    _, m = hf
    logits, c = m.run_with_cache(tokens)
    with torch.no_grad():
        normed = _final_ln(m)(c["blocks.1.hook_resid_post"])
        assert torch.allclose(normed, c["ln_final.hook_normalized"], atol=1e-5)
        assert torch.allclose(normed @ m.W_U, logits, atol=1e-4)
        for i in range(2):
            p = f"blocks.{i}."
            mlp_out = c[p + "mlp.hook_post"] @ m.W_out(i) + m.b_out(i)
            assert torch.allclose(mlp_out, c[p + "hook_mlp_out"], atol=1e-5)
            # the residual stream adds up: post = pre + attn_out + mlp_out (parallel or sequential)
            assert torch.allclose(c[p + "hook_resid_post"],
                                  c[p + "hook_resid_pre"] + c[p + "hook_attn_out"] + c[p + "hook_mlp_out"], atol=1e-5)
            if p + "hook_resid_mid" in c:
                assert torch.allclose(c[p + "hook_resid_mid"], c[p + "hook_resid_pre"] + c[p + "hook_attn_out"],
                                      atol=1e-5)
        assert torch.equal(c["blocks.1.hook_resid_pre"], c["blocks.0.hook_resid_post"])
        embed = c["hook_embed"] + (c["hook_pos_embed"] if "hook_pos_embed" in c else 0)
        assert torch.allclose(c["blocks.0.hook_resid_pre"], embed, atol=1e-6)


def test_overwriting_mlp_post_changes_logits_as_predicted(hf, tokens):
    """Adding delta to neuron j of the last MLP's hook_post moves resid_post by delta * W_out[j]."""
    _, m = hf
    _, c = m.run_with_cache(tokens)
    j, delta = 5, 3.0

    def bump(act, name):
        act = act.clone()
        act[..., j] += delta
        return act

    got = m.run_with_hooks(tokens, [("blocks.1.mlp.hook_post", bump)])
    with torch.no_grad():
        want = _final_ln(m)(c["blocks.1.hook_resid_post"] + delta * m.W_out(1)[j]) @ m.W_U
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, m(tokens), atol=1e-3)
    # identity replacements through the head view and on inputs leave logits unchanged
    same = m.run_with_hooks(tokens, [("blocks.0.attn.hook_z", lambda a, n: a.clone()),
                                     ("blocks.1.hook_resid_pre", lambda a, n: a.clone())])
    assert torch.allclose(same, m(tokens), atol=1e-6)
    # zeroing one head's z changes the output; replacing resid_pre of layer 1 by layer 0's changes it too
    zeroed = m.run_with_hooks(tokens, [("blocks.0.attn.hook_z", lambda a, n: a * torch.tensor([0., 1, 1, 1])[:, None])])
    assert not torch.allclose(zeroed, m(tokens), atol=1e-4)
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())


def test_logits_equal_plain_transformers_forward(hf, saved, tokens):
    """Our loader and an independent transformers load of the same folder give the same logits; read-only hooks
    on every site leave them unchanged."""
    arch, m = hf
    plain = transformers.AutoModelForCausalLM.from_pretrained(str(saved / arch), dtype=torch.float32).eval()
    with torch.no_grad():
        want = plain(input_ids=tokens).logits
        assert torch.allclose(m(tokens), want, atol=1e-5)
        hooked = m.run_with_hooks(tokens, [(n, lambda a, _: None) for n in m.hook_names()])
    assert torch.allclose(hooked, want, atol=1e-5)


def test_early_stop_gives_the_full_forward_activations(hf, tokens):
    """capture() stops at the hook (the final norm never runs) and returns what the full forward computes there."""
    _, m = hf
    _, full = m.run_with_cache(tokens)
    final_norm = m._site("ln_final.hook_normalized").module
    calls = []
    handle = final_norm.register_forward_hook(lambda *a: calls.append(1))
    try:
        for name in m.hook_names():
            got = m.capture(tokens, name)
            assert torch.equal(got, full[name]), name
            if name != "ln_final.hook_normalized":
                assert not calls, f"the forward pass went past {name}"
            calls.clear()
    finally:
        handle.remove()


def test_activations_and_shuffled_copy(hf, tokens):
    _, m = hf
    _, c = m.run_with_cache(tokens)
    acts = activations(m, tokens, "blocks.0.mlp.hook_post", batch_size=2)
    assert torch.allclose(acts, c["blocks.0.mlp.hook_post"].reshape(-1, 48), atol=1e-6)
    s = shuffled_copy(m, seed=1)
    orig = dict(m.named_parameters())
    for name, p in s.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if p.ndim >= 2:
            assert torch.equal(p.reshape(-1).sort().values, orig[name].reshape(-1).sort().values), name
            assert not torch.equal(p, orig[name]), name
        else:
            assert leaf in ("bias", "weight") and torch.equal(p, orig[name]), name
    assert not torch.allclose(s(tokens), m(tokens))
    _, sc = s.run_with_cache(tokens, ["hook_embed"])
    assert torch.equal(sc["hook_embed"], s.hf.get_input_embeddings()(tokens))


def test_revisions_and_errors(saved, tmp_path):
    _make("neox").save_pretrained(tmp_path / "pythia" / "step100")
    from tokenizers import Tokenizer, models

    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    transformers.PreTrainedTokenizerFast(tokenizer_object=words).save_pretrained(tmp_path / "pythia" / "step100")
    m = load_model(f"hf:{tmp_path / 'pythia'}@step100", progress=False)
    assert m.n_layers == 2 and m.ref.endswith("@step100")
    assert m.decode(torch.tensor([3, 4])) == ["w3", "w4"]
    same = load_model(f"hf:{tmp_path / 'pythia'}", checkpoint="step100", progress=False)
    assert torch.equal(same.W_U, m.W_U)
    with pytest.raises(NotFound, match="revision"):
        load_model(f"hf:{tmp_path / 'pythia'}@step999", progress=False)
    transformers.BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=8).save_pretrained(tmp_path / "bert")
    with pytest.raises(InvalidInput, match="supported"):
        load_model(f"hf:{tmp_path / 'bert'}", progress=False)
    with pytest.raises(NotFound):
        load_model(f"hf:{tmp_path / 'empty'}", progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(saved, tokens):
    for arch in ARCHS:
        cpu = load_model(f"hf:{saved / arch}", progress=False)
        gpu = load_model(f"hf:{saved / arch}", device="cuda", progress=False)
        assert gpu.device.type == "cuda"
        assert torch.allclose(gpu(tokens).cpu(), cpu(tokens), atol=1e-3)
        acts = activations(gpu, tokens, "blocks.1.mlp.hook_post", batch_size=2)
        assert acts.device.type == "cuda"
