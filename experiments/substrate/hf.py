"""Hugging Face causal LMs (GPT-NeoX/Pythia, GPT-2) from a local directory, behind the hooked-model interface.

Contract hook names are mapped onto the architecture's own modules with forward hooks (read and overwrite):

| hook name                   | GPT-NeoX (`gpt_neox.`)                      | GPT-2 (`transformer.`)          |
|-----------------------------|---------------------------------------------|---------------------------------|
| hook_embed                  | embed_in output                             | wte output                      |
| hook_pos_embed              | (rotary: none)                              | wpe output, [1, T, d]           |
| blocks.i.hook_resid_pre     | layers[i] input                             | h[i] input                      |
| blocks.i.attn.hook_z        | attention.dense input, as [B, T, H, d_head] | attn.c_proj input, same view    |
| blocks.i.hook_attn_out      | attention output                            | attn output                     |
| blocks.i.hook_resid_mid     | post_attention_layernorm input (sequential  | ln_2 input                      |
|                             | residual only; Pythia is parallel: none)    |                                 |
| blocks.i.mlp.hook_pre       | mlp.dense_h_to_4h output                    | mlp.c_fc output                 |
| blocks.i.mlp.hook_post      | mlp.dense_4h_to_h input                     | mlp.c_proj input                |
| blocks.i.hook_mlp_out       | mlp output                                  | mlp output                      |
| blocks.i.hook_resid_post    | layers[i] output                            | h[i] output                     |
| ln_final.hook_normalized    | final_layer_norm output                     | ln_f output                     |

So `logits = ln_final.hook_normalized @ W_U` and `mlp_out = mlp.hook_post @ W_out(i) + b_out(i)` hold exactly.
transformers is imported only inside functions here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from claimgraph.graph.errors import InvalidInput, NotFound

from .hooks import HookedModel, HookSite

ARCHITECTURES = ("gpt_neox", "gpt2")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def _heads_view(n_heads: int):
    """(to_view, from_view) between [B, T, H * d_head] and [B, T, H, d_head]."""
    def to_view(x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:-1], n_heads, x.shape[-1] // n_heads)          # [B, T, H, dh]

    def from_view(x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])                 # [B, T, H * dh]
    return to_view, from_view


class HFHookedModel(HookedModel):
    """A GPT-NeoX or GPT-2 AutoModelForCausalLM with contract hook names, weights and dimensions."""

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
        if self.arch == "gpt_neox":
            self.n_layers, self.d_model = cfg.num_hidden_layers, cfg.hidden_size
            self.d_mlp, self.n_heads, self.n_ctx = cfg.intermediate_size, cfg.num_attention_heads, cfg.max_position_embeddings
        else:
            self.n_layers, self.d_model = cfg.n_layer, cfg.n_embd
            self.d_mlp, self.n_heads, self.n_ctx = cfg.n_inner or 4 * cfg.n_embd, cfg.n_head, cfg.n_positions
        self.d_vocab = self.W_U.shape[1]
        self._sites = self._map_sites()

    # -- hook sites
    def _map_sites(self) -> dict[str, HookSite]:
        view = _heads_view(self.n_heads)
        sites: dict[str, HookSite] = {}
        if self.arch == "gpt_neox":
            base = self.hf.gpt_neox
            sites["hook_embed"] = HookSite(base.embed_in)
            for i, layer in enumerate(base.layers):
                b = f"blocks.{i}."
                sites[b + "hook_resid_pre"] = HookSite(layer, "input")
                sites[b + "attn.hook_z"] = HookSite(layer.attention.dense, "input", *view)
                sites[b + "hook_attn_out"] = HookSite(layer.attention)
                if not layer.use_parallel_residual:
                    sites[b + "hook_resid_mid"] = HookSite(layer.post_attention_layernorm, "input")
                sites[b + "mlp.hook_pre"] = HookSite(layer.mlp.dense_h_to_4h)
                sites[b + "mlp.hook_post"] = HookSite(layer.mlp.dense_4h_to_h, "input")
                sites[b + "hook_mlp_out"] = HookSite(layer.mlp)
                sites[b + "hook_resid_post"] = HookSite(layer)
            sites["ln_final.hook_normalized"] = HookSite(base.final_layer_norm)
        else:
            base = self.hf.transformer
            sites["hook_embed"] = HookSite(base.wte)
            sites["hook_pos_embed"] = HookSite(base.wpe)
            for i, block in enumerate(base.h):
                b = f"blocks.{i}."
                sites[b + "hook_resid_pre"] = HookSite(block, "input")
                sites[b + "attn.hook_z"] = HookSite(block.attn.c_proj, "input", *view)
                sites[b + "hook_attn_out"] = HookSite(block.attn)
                sites[b + "hook_resid_mid"] = HookSite(block.ln_2, "input")
                sites[b + "mlp.hook_pre"] = HookSite(block.mlp.c_fc)
                sites[b + "mlp.hook_post"] = HookSite(block.mlp.c_proj, "input")
                sites[b + "hook_mlp_out"] = HookSite(block.mlp)
                sites[b + "hook_resid_post"] = HookSite(block)
            sites["ln_final.hook_normalized"] = HookSite(base.ln_f)
        return sites

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
        """Unembedding [d_model, d_vocab] (no bias in either architecture)."""
        return self._unembed().weight.T

    def _mlp_out_proj(self, layer: int) -> Any:
        if self.arch == "gpt_neox":
            return self.hf.gpt_neox.layers[layer].mlp.dense_4h_to_h
        return self.hf.transformer.h[layer].mlp.c_proj

    def W_out(self, layer: int) -> Tensor:
        """MLP output projection of `layer`, [d_mlp, d_model]."""
        proj = self._mlp_out_proj(layer)
        # nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out]
        return proj.weight.T if self.arch == "gpt_neox" else proj.weight

    def b_out(self, layer: int) -> Tensor:
        """MLP output bias of `layer`, [d_model]."""
        return self._mlp_out_proj(layer).bias

    def ln_final_weight(self) -> Tensor:
        """Final LayerNorm weight [d_model]."""
        ln = self.hf.gpt_neox.final_layer_norm if self.arch == "gpt_neox" else self.hf.transformer.ln_f
        return ln.weight

    def decode(self, ids: Any) -> list[str]:
        """Tokenizer pieces when the directory has a tokenizer, else `<id>`."""
        ids = ids.reshape(-1).tolist() if isinstance(ids, Tensor) else [int(i) for i in ids]
        if self.tokenizer is not None:
            pieces = self.tokenizer.convert_ids_to_tokens(ids)
            return [f"<{i}>" if p is None else str(p) for i, p in zip(ids, pieces)]
        return [f"<{i}>" for i in ids]


def _resolve_revision(path: Path, revision: str | None) -> Path:
    """The directory holding the weights: `path` itself, `path/<revision>`, or a hub-cache snapshot
    (`path/refs/<revision>` -> `path/snapshots/<hash>`, or `path/snapshots/<revision>`)."""
    if revision is None:
        if (path / "snapshots").is_dir() and (path / "refs" / "main").is_file():
            return path / "snapshots" / (path / "refs" / "main").read_text().strip()
        return path
    candidates = [path / revision, path / "snapshots" / revision]
    ref_file = path / "refs" / revision
    if ref_file.is_file():
        candidates.insert(0, path / "snapshots" / ref_file.read_text().strip())
    for c in candidates:
        if (c / "config.json").is_file():
            return c
    raise NotFound(f"revision {revision!r} not found under {path}: expected {path / revision}/config.json or a "
                   "Hugging Face cache layout (refs/<revision>, snapshots/<hash>); download it there first")


def load_hf(path: str, *, revision: str | None = None, device: str = "cpu") -> HFHookedModel:
    """A hooked GPT-NeoX/GPT-2 model from a local directory (no hub access), float32, eval mode, on `device`."""
    root = Path(path).expanduser()
    if not root.is_absolute():
        raise InvalidInput(f"hf model path {path!r} must be absolute: use hf:/abs/path/to/model")
    if not root.is_dir():
        raise NotFound(f"no model directory at {root}; save one there with save_pretrained or download it")
    where = _resolve_revision(root, revision)
    if not (where / "config.json").is_file():
        raise NotFound(f"{where} has no config.json; is it a Hugging Face model directory?")
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
    ref = f"hf:{root}" + (f"@{revision}" if revision else "")
    return HFHookedModel(hf_model, tokenizer, ref).to(device).eval()
