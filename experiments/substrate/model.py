"""A small GPT (nanoGPT-style, TransformerLens weight layout) with a HookPoint at every contract hook name.

Forward pass, top to bottom:
    embed W_E[tokens] -> hook_embed, W_pos[:T] -> hook_pos_embed, resid = embed + pos
    per block: hook_resid_pre -> ln1 -> attention (hook_q/k/v, hook_pattern, hook_z) -> hook_attn_out
               -> hook_resid_mid = resid_pre + attn_out -> ln2 -> MLP (hook_pre, GELU, hook_post) -> hook_mlp_out
               -> hook_resid_post = resid_mid + mlp_out
    ln_final (-> ln_final.hook_normalized, after its weight and bias) -> logits = normalized @ W_U (no bias)
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from .hooks import HookedModel, HookPoint, HookSite, name_hook_points


class ToyConfig(BaseModel):
    """Shape of a toy transformer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_layers: int = Field(2, ge=1, description="transformer blocks")
    d_model: int = Field(128, ge=4, description="residual stream width")
    n_heads: int = Field(4, ge=1, description="attention heads per block; d_model must divide evenly")
    d_mlp: int = Field(512, ge=1, description="MLP hidden width (4 x d_model as in GPT-2)")
    n_ctx: int = Field(64, ge=2, description="longest sequence (learned positional embeddings)")
    d_vocab: int = Field(311, ge=2, description="vocabulary size (the synthetic corpus has 311 tokens)")
    ln_eps: float = Field(1e-5, gt=0, description="LayerNorm epsilon")
    init_std: float = Field(0.02, gt=0, description="std of the normal init of weight matrices (GPT-2)")

    @model_validator(mode="after")
    def _heads_divide(self) -> "ToyConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        return self

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


class LayerNorm(nn.Module):
    """LayerNorm with weight `w` and bias `b`; the final one carries `hook_normalized` (its output)."""

    def __init__(self, d: int, eps: float, hooked: bool = False):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.b = nn.Parameter(torch.zeros(d))
        self.eps = eps
        if hooked:
            self.hook_normalized = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x, x.shape[-1:], self.w, self.b, self.eps)               # [B, T, d]
        return self.hook_normalized(y) if hasattr(self, "hook_normalized") else y


class Attention(nn.Module):
    """Causal multi-head self-attention, one weight tensor per role with a head axis."""

    causal: Tensor  # buffer [n_ctx, n_ctx]

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        H, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(H, d, dh))
        self.W_K = nn.Parameter(torch.empty(H, d, dh))
        self.W_V = nn.Parameter(torch.empty(H, d, dh))
        self.W_O = nn.Parameter(torch.empty(H, dh, d))
        self.b_Q = nn.Parameter(torch.zeros(H, dh))
        self.b_K = nn.Parameter(torch.zeros(H, dh))
        self.b_V = nn.Parameter(torch.zeros(H, dh))
        self.b_O = nn.Parameter(torch.zeros(d))
        self.hook_q = HookPoint()        # [B, T, H, d_head]
        self.hook_k = HookPoint()        # [B, T, H, d_head]
        self.hook_v = HookPoint()        # [B, T, H, d_head]
        self.hook_pattern = HookPoint()  # [B, H, T_query, T_key]
        self.hook_z = HookPoint()        # [B, T, H, d_head]
        causal = torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool).tril()
        self.register_buffer("causal", causal, persistent=False)                   # [n_ctx, n_ctx]
        self.scale = 1.0 / math.sqrt(dh)

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        q = self.hook_q(torch.einsum("btd,hde->bthe", x, self.W_Q) + self.b_Q)     # [B, T, H, dh]
        k = self.hook_k(torch.einsum("btd,hde->bthe", x, self.W_K) + self.b_K)     # [B, T, H, dh]
        v = self.hook_v(torch.einsum("btd,hde->bthe", x, self.W_V) + self.b_V)     # [B, T, H, dh]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * self.scale                # [B, H, T, T]
        scores = scores.masked_fill(~self.causal[:T, :T], float("-inf"))
        pattern = self.hook_pattern(scores.softmax(-1))                           # [B, H, T, T]
        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))              # [B, T, H, dh]
        return torch.einsum("bthe,hed->btd", z, self.W_O) + self.b_O              # [B, T, d]


class MLP(nn.Module):
    """Two-layer GELU MLP: mlp_out = gelu(x @ W_in + b_in) @ W_out + b_out."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_pre = HookPoint()   # [B, T, d_mlp]
        self.hook_post = HookPoint()  # [B, T, d_mlp]

    def forward(self, x: Tensor) -> Tensor:
        pre = self.hook_pre(x @ self.W_in + self.b_in)                            # [B, T, d_mlp]
        post = self.hook_post(F.gelu(pre))                                         # [B, T, d_mlp]
        return post @ self.W_out + self.b_out                                      # [B, T, d_model]


class Block(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.hook_resid_pre = HookPoint()   # [B, T, d_model]
        self.ln1 = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.attn = Attention(cfg)
        self.hook_attn_out = HookPoint()    # [B, T, d_model]
        self.hook_resid_mid = HookPoint()   # [B, T, d_model]
        self.ln2 = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.mlp = MLP(cfg)
        self.hook_mlp_out = HookPoint()     # [B, T, d_model]
        self.hook_resid_post = HookPoint()  # [B, T, d_model]

    def forward(self, resid: Tensor) -> Tensor:
        resid = self.hook_resid_pre(resid)                                         # [B, T, d]
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid)))                  # [B, T, d]
        resid = self.hook_resid_mid(resid + attn_out)                              # [B, T, d]
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid)))                     # [B, T, d]
        return self.hook_resid_post(resid + mlp_out)                               # [B, T, d]


class ToyTransformer(HookedModel):
    """The toy model: embeddings, `n_layers` blocks, final LayerNorm, untied unembedding."""

    def __init__(self, cfg: ToyConfig, vocab: Any = None):
        super().__init__()
        self.cfg = cfg
        self.vocab = vocab
        assert vocab is None or len(vocab) == cfg.d_vocab, f"vocab has {len(vocab)} tokens, config says {cfg.d_vocab}"
        self.n_layers, self.d_model, self.d_mlp = cfg.n_layers, cfg.d_model, cfg.d_mlp
        self.d_vocab, self.n_ctx, self.n_heads = cfg.d_vocab, cfg.n_ctx, cfg.n_heads
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
        self.hook_embed = HookPoint()       # [B, T, d_model]
        self.hook_pos_embed = HookPoint()   # [B, T, d_model]
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = LayerNorm(cfg.d_model, cfg.ln_eps, hooked=True)
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab))
        self._points = name_hook_points(self)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, init_std) matrices, output projections scaled by 1/sqrt(2 n_layers), zero biases."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.ndim >= 2:
                scaled = name.endswith("W_O") or name.endswith("W_out")
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layers) if scaled else std)

    def hook_sites(self) -> dict[str, HookSite]:
        return {name: HookSite(point) for name, point in self._points.items()}

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits [B, T, d_vocab] for tokens [B, T]."""
        T = tokens.shape[-1]
        assert T <= self.n_ctx, f"sequence of {T} tokens is longer than n_ctx={self.n_ctx}"
        tokens = tokens.to(self.W_E.device)
        embed = self.hook_embed(F.embedding(tokens, self.W_E))                    # [B, T, d]
        pos = self.hook_pos_embed(self.W_pos[:T].expand_as(embed))                # [B, T, d]
        resid = embed + pos                                                        # [B, T, d]
        for block in self.blocks:
            resid = block(resid)                                                   # [B, T, d]
        return self.ln_final(resid) @ self.W_U                                     # [B, T, d_vocab]

    def W_out(self, layer: int) -> Tensor:
        """MLP output projection of `layer`, [d_mlp, d_model]: mlp_out = hook_post @ W_out + b_out."""
        return self._block(layer).mlp.W_out

    def b_out(self, layer: int) -> Tensor:
        """MLP output bias of `layer`, [d_model]."""
        return self._block(layer).mlp.b_out

    def _block(self, layer: int) -> Block:
        block = self.blocks[layer]
        assert isinstance(block, Block)
        return block

    def ln_final_weight(self) -> Tensor:
        """Final LayerNorm weight [d_model]."""
        return self.ln_final.w

    def decode(self, ids: Any) -> list[str]:
        """Vocabulary strings for a 1-D run of ids."""
        if self.vocab is not None:
            return self.vocab.decode(ids)
        ids = ids.reshape(-1).tolist() if isinstance(ids, Tensor) else list(ids)
        return [f"<{int(i)}>" for i in ids]
