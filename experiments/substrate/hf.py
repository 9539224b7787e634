"""Hugging Face causal LMs (Llama/SmolLM2, GPT-NeoX/Pythia, GPT-2) from a local directory, behind the hooked-model
interface.

Contract hook names are mapped onto the architecture's own modules with forward hooks (read and overwrite);
the list of names per family comes from families.hook_names (read without weights at `experiment add`):

| hook name                   | Llama (`model.`)             | GPT-NeoX (`gpt_neox.`)             | GPT-2 (`transformer.`)   |
|-----------------------------|------------------------------|------------------------------------|--------------------------|
| hook_embed                  | embed_tokens output          | embed_in output                    | wte output               |
| hook_pos_embed              | (rotary: none)               | (rotary: none)                     | wpe output, [1, T, d]    |
| blocks.i.hook_resid_pre     | layers[i] input              | layers[i] input                    | h[i] input               |
| blocks.i.ln1.hook_normalized| input_layernorm output       | input_layernorm output             | ln_1 output              |
| blocks.i.attn.hook_z        | o_proj input [B, T, H, dh]   | attention.dense input, same view   | attn.c_proj input, same  |
| blocks.i.hook_attn_out      | self_attn output             | attention output                   | attn output              |
| blocks.i.hook_resid_mid     | post_attention_layernorm in  | post_attention_layernorm input     | ln_2 input               |
|                             |                              | (sequential residual only)         |                          |
| blocks.i.ln2.hook_normalized| post_attention_layernorm out | post_attention_layernorm output    | ln_2 output              |
| blocks.i.mlp.hook_pre       | gate_proj output             | mlp.dense_h_to_4h output           | mlp.c_fc output          |
| blocks.i.mlp.hook_pre_linear| up_proj output               | -                                  | -                        |
| blocks.i.mlp.hook_post      | down_proj input              | mlp.dense_4h_to_h input            | mlp.c_proj input         |
| blocks.i.hook_mlp_out       | mlp output                   | mlp output                         | mlp output               |
| blocks.i.hook_resid_post    | layers[i] output             | layers[i] output                   | h[i] output              |
| ln_final.hook_normalized    | norm output                  | final_layer_norm output            | ln_f output              |

So `logits = ln_final.hook_normalized @ W_U` and `mlp_out = mlp.hook_post @ W_out(i) + b_out(i)` hold exactly
(Llama has no biases: b_out is zeros). `capture` stops the forward pass at the hook (hooks.py).
transformers is imported only inside functions here.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Hashable
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from claimgraph.graph.errors import InvalidInput

from .families import FAMILIES, hf_dir, hook_names
from .hooks import HookedModel, HookSite

ARCHITECTURES = FAMILIES
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def _heads_view(n_heads: int):
    """(to_view, from_view) between [B, T, H * d_head] and [B, T, H, d_head]."""
    def to_view(x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:-1], n_heads, x.shape[-1] // n_heads)          # [B, T, H, dh]

    def from_view(x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])                 # [B, T, H * dh]
    return to_view, from_view


class HFHookedModel(HookedModel):
    """A Llama, GPT-NeoX or GPT-2 AutoModelForCausalLM with contract hook names, weights and dimensions.

    `provenance` says where the weights came from (set by the loaders: the lm: manifest, or the hf: folder)."""

    hf: Any  # the transformers model (PreTrainedModel: its config and submodules are read by attribute)

    def __init__(self, hf_model: Any, tokenizer: Any = None, ref: str | None = None):
        super().__init__()
        cfg = hf_model.config
        if cfg.model_type not in ARCHITECTURES:
            raise InvalidInput(f"model type {cfg.model_type!r} is not supported; supported: {', '.join(ARCHITECTURES)}")
        self.hf = hf_model
        self.arch = cfg.model_type
        self.tokenizer = tokenizer
        self.ref = ref
        self.vocab = None
        self.provenance: dict[str, Any] = {}
        self.parallel_residual = False
        if self.arch == "gpt2":
            self.n_layers, self.d_model = cfg.n_layer, cfg.n_embd
            self.d_mlp, self.n_heads, self.n_ctx = cfg.n_inner or 4 * cfg.n_embd, cfg.n_head, cfg.n_positions
        else:
            self.n_layers, self.d_model = cfg.num_hidden_layers, cfg.hidden_size
            self.d_mlp, self.n_heads, self.n_ctx = cfg.intermediate_size, cfg.num_attention_heads, cfg.max_position_embeddings
            self.parallel_residual = self.arch == "gpt_neox" and bool(cfg.use_parallel_residual)
        self.d_vocab = self.W_U.shape[1]
        self._sites = self._map_sites()

    # -- hook sites
    def _blocks(self) -> tuple[Any, list[Any], Any, Any]:  # transformers modules (untyped here)
        """(embedding, blocks, final norm, base model) of this architecture."""
        if self.arch == "llama":
            base = self.hf.model
            return base.embed_tokens, list(base.layers), base.norm, base
        if self.arch == "gpt_neox":
            base = self.hf.gpt_neox
            return base.embed_in, list(base.layers), base.final_layer_norm, base
        base = self.hf.transformer
        return base.wte, list(base.h), base.ln_f, base

    def _block_sites(self, block: Any) -> dict[str, HookSite]:
        """The per-block sites, keyed by the name after `blocks.i.`."""
        z = _heads_view(self.n_heads)
        if self.arch == "llama":
            attn, mlp = block.self_attn, block.mlp
            return {"hook_resid_pre": HookSite(block, "input"), "ln1.hook_normalized": HookSite(block.input_layernorm),
                    "attn.hook_z": HookSite(attn.o_proj, "input", *z), "hook_attn_out": HookSite(attn),
                    "hook_resid_mid": HookSite(block.post_attention_layernorm, "input"),
                    "ln2.hook_normalized": HookSite(block.post_attention_layernorm),
                    "mlp.hook_pre": HookSite(mlp.gate_proj), "mlp.hook_pre_linear": HookSite(mlp.up_proj),
                    "mlp.hook_post": HookSite(mlp.down_proj, "input"), "hook_mlp_out": HookSite(mlp),
                    "hook_resid_post": HookSite(block)}
        if self.arch == "gpt_neox":
            sites = {"hook_resid_pre": HookSite(block, "input"), "ln1.hook_normalized": HookSite(block.input_layernorm),
                     "attn.hook_z": HookSite(block.attention.dense, "input", *z),
                     "hook_attn_out": HookSite(block.attention),
                     "ln2.hook_normalized": HookSite(block.post_attention_layernorm),
                     "mlp.hook_pre": HookSite(block.mlp.dense_h_to_4h),
                     "mlp.hook_post": HookSite(block.mlp.dense_4h_to_h, "input"), "hook_mlp_out": HookSite(block.mlp),
                     "hook_resid_post": HookSite(block)}
            if not self.parallel_residual:
                sites["hook_resid_mid"] = HookSite(block.post_attention_layernorm, "input")
            return sites
        return {"hook_resid_pre": HookSite(block, "input"), "ln1.hook_normalized": HookSite(block.ln_1),
                "attn.hook_z": HookSite(block.attn.c_proj, "input", *z), "hook_attn_out": HookSite(block.attn),
                "hook_resid_mid": HookSite(block.ln_2, "input"), "ln2.hook_normalized": HookSite(block.ln_2),
                "mlp.hook_pre": HookSite(block.mlp.c_fc), "mlp.hook_post": HookSite(block.mlp.c_proj, "input"),
                "hook_mlp_out": HookSite(block.mlp), "hook_resid_post": HookSite(block)}

    def _map_sites(self) -> dict[str, HookSite]:
        embed, blocks, final_norm, base = self._blocks()
        sites: dict[str, HookSite] = {"hook_embed": HookSite(embed), "ln_final.hook_normalized": HookSite(final_norm)}
        if self.arch == "gpt2":
            sites["hook_pos_embed"] = HookSite(base.wpe)
        for i, block in enumerate(blocks):
            sites.update({f"blocks.{i}.{k}": v for k, v in self._block_sites(block).items()})
        names = hook_names(self.arch, self.n_layers, parallel_residual=self.parallel_residual)
        assert set(names) == set(sites), f"hook sites {sorted(set(sites) ^ set(names))} differ from families.hook_names"
        return {n: sites[n] for n in names}  # forward order

    def hook_sites(self) -> dict[str, HookSite]:
        return self._sites

    # -- forward and weights
    def forward(self, tokens: Tensor) -> Tensor:
        """Logits [B, T, d_vocab] (float32) for tokens [B, T]."""
        T = tokens.shape[-1]
        assert T <= self.n_ctx, f"sequence of {T} tokens is longer than n_ctx={self.n_ctx}"
        out = self.hf(input_ids=tokens.to(self.device), use_cache=False)
        return out.logits.float()                                                  # [B, T, V]

    def _unembed(self) -> Any:
        return self.hf.get_output_embeddings()  # embed_out / lm_head, whatever this transformers version calls it

    @property
    def W_U(self) -> Tensor:  # type: ignore[override]  # read-only here, a parameter in the toy
        """Unembedding [d_model, d_vocab] (no bias in any of these architectures)."""
        return self._unembed().weight.T

    def _mlp_out_proj(self, layer: int) -> Any:
        block = self._blocks()[1][layer]
        if self.arch == "llama":
            return block.mlp.down_proj
        if self.arch == "gpt_neox":
            return block.mlp.dense_4h_to_h
        return block.mlp.c_proj

    def W_out(self, layer: int) -> Tensor:
        """MLP output projection of `layer`, [d_mlp, d_model]."""
        proj = self._mlp_out_proj(layer)
        # nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out]
        return proj.weight if self.arch == "gpt2" else proj.weight.T

    def b_out(self, layer: int) -> Tensor:
        """MLP output bias of `layer`, [d_model] (zeros where the projection has none, as in Llama)."""
        proj = self._mlp_out_proj(layer)
        if proj.bias is None:
            return torch.zeros(self.d_model, device=proj.weight.device, dtype=proj.weight.dtype)
        return proj.bias

    def ln_final_weight(self) -> Tensor:
        """Final LayerNorm / RMSNorm weight [d_model]."""
        return self._blocks()[2].weight

    def decode(self, ids: Any) -> list[str]:
        """Tokenizer pieces when the directory has a tokenizer, else `<id>`."""
        ids = ids.reshape(-1).tolist() if isinstance(ids, Tensor) else [int(i) for i in ids]
        if self.tokenizer is not None:
            pieces = self.tokenizer.convert_ids_to_tokens(ids)
            return [f"<{i}>" if p is None else str(p) for i, p in zip(ids, pieces)]
        return [f"<{i}>" for i in ids]


@functools.cache
def _cache_argument(cls: Any) -> str:
    """What this transformers version's forward calls its key-value cache: `cache` (5.2x), else `past_key_values`."""
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def cached_forward(hf_model: Any, input_ids: Tensor, cache: Any = None, **kwargs: Any) -> tuple[Tensor, Any]:
    """(logits, key-value cache) of a transformers causal LM for `input_ids` after the positions `cache` holds
    (None: from the start), passing the cache under the name this transformers version uses (it renamed
    `past_key_values` to `cache`, warning on the old name)."""
    name = _cache_argument(cast(Hashable, type(hf_model)))
    out = hf_model(input_ids=input_ids, use_cache=True, **({name: cache} if cache is not None else {}), **kwargs)
    return out.logits, (out.get("cache") if "cache" in out else out.get("past_key_values"))


def load_hf(path: str, *, revision: str | None = None, device: str = "cpu") -> HFHookedModel:
    """A hooked Llama/GPT-NeoX/GPT-2 model from a local directory (no hub access), float32, eval mode, on `device`."""
    where = hf_dir(path, revision)
    try:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise InvalidInput("loading hf: models needs transformers: pip install 'claimgraph[hf]'") from None

    config = AutoConfig.from_pretrained(str(where), local_files_only=True)
    if config.model_type not in ARCHITECTURES:
        raise InvalidInput(f"{where} holds a {config.model_type!r} model; supported: {', '.join(ARCHITECTURES)}")
    hf_model = AutoModelForCausalLM.from_pretrained(str(where), local_files_only=True, dtype=torch.float32)
    tokenizer = None
    if any((where / f).is_file() for f in TOKENIZER_FILES):
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(where), local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError):  # unreadable tokenizer files: decode gives <id>
            tokenizer = None
    ref = f"hf:{Path(path).expanduser()}" + (f"@{revision}" if revision else "")
    model = HFHookedModel(hf_model, tokenizer, ref).to(device).eval()
    model.provenance = {"ref": ref, "folder": str(where), "family": model.arch}
    return model
