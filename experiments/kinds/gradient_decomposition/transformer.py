"""A small pre-LayerNorm transformer for training-dynamics experiments, read top to bottom.

Beyond a plain causal transformer it offers what the gradient decomposition needs:
- `attn_mode="myopic"`: keys and values of *other* positions are detached inside attention, so the loss at
  position j sends gradient only into position j's own stream (forward values are unchanged);
- split weights (`split_at`): every parameter except the position embedding has two copies; positions
  `< split_at` use the first, positions `>= split_at` the second (attention still reads across segments);
- the residual stream by index: `resid(tokens, k)` gives h_k (0 = embeddings, k = after block k-1,
  n_layers = final stream before ln_final), `run_from(h_k, k)` finishes the forward pass from it, and
  `forward(..., detach=(k, positions))` detaches h_k at those positions (the stop-gradient sg(k, i)).

Every weight carries a leading segment axis of size 1 (shared) or 2 (split).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

AttnMode = Literal["normal", "myopic"]


class TransformerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    d_vocab: int = Field(4, ge=2)           # task tokens plus BOS for the majority task
    n_ctx: int = Field(20, ge=1)            # positions the model reads
    d_model: int = Field(32, ge=2)          # residual stream width
    n_heads: int = Field(2, ge=1)           # attention heads per layer (d_model divisible by it)
    d_mlp: int = Field(128, ge=1)           # MLP hidden width
    n_layers: int = Field(2, ge=1)          # transformer blocks
    split_at: int | None = Field(None, ge=1)  # first position of the second weight set; None: one set
    init_std: float = Field(0.02, gt=0)     # std of the normal init of weight matrices and embeddings


def _seg_linear(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, split: int | None) -> torch.Tensor:
    """x [B, T, d_in] @ W[s] + b[s] with s the segment of each position. W [S, d_in, d_out], b [S, d_out]."""
    if W.shape[0] == 1:
        return x @ W[0] + b[0]                                                   # [B, T, d_out]
    return torch.cat([x[:, :split] @ W[0] + b[0], x[:, split:] @ W[1] + b[1]], dim=1)


def _seg_layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, split: int | None) -> torch.Tensor:
    """LayerNorm over the last axis with per-segment gain and bias. w, b [S, d]."""
    d = x.shape[-1:]
    if w.shape[0] == 1:
        return F.layer_norm(x, d, w[0], b[0])
    return torch.cat([F.layer_norm(x[:, :split], d, w[0], b[0]), F.layer_norm(x[:, split:], d, w[1], b[1])], 1)


class LayerNorm(nn.Module):
    def __init__(self, n_seg: int, d: int, split: int | None):
        super().__init__()
        self.split = split
        self.w = nn.Parameter(torch.ones(n_seg, d))
        self.b = nn.Parameter(torch.zeros(n_seg, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _seg_layer_norm(x, self.w, self.b, self.split)


class Attention(nn.Module):
    causal: torch.Tensor  # buffer [n_ctx, n_ctx]: True above the diagonal (future positions)

    def __init__(self, cfg: TransformerConfig, n_seg: int):
        super().__init__()
        assert cfg.d_model % cfg.n_heads == 0, f"d_model {cfg.d_model} not divisible by n_heads {cfg.n_heads}"
        self.n_heads, self.d_head, self.split = cfg.n_heads, cfg.d_model // cfg.n_heads, cfg.split_at
        d = cfg.d_model
        self.W_QKV = nn.Parameter(torch.randn(n_seg, d, 3 * d) * cfg.init_std)
        self.b_QKV = nn.Parameter(torch.zeros(n_seg, 3 * d))
        self.W_O = nn.Parameter(torch.randn(n_seg, d, d) * cfg.init_std / math.sqrt(2 * cfg.n_layers))
        self.b_O = nn.Parameter(torch.zeros(n_seg, d))
        self.register_buffer("causal", torch.ones(cfg.n_ctx, cfg.n_ctx).triu(1).bool(), persistent=False)

    def forward(self, x: torch.Tensor, mode: AttnMode = "normal") -> torch.Tensor:
        B, T, d = x.shape
        qkv = _seg_linear(x, self.W_QKV, self.b_QKV, self.split)                     # [B, T, 3d]
        q, k, v = (t.view(B, T, self.n_heads, self.d_head).transpose(1, 2)          # each [B, H, T, dh]
                   for t in qkv.split(d, dim=-1))
        if mode == "myopic":
            # Other positions' keys/values enter detached; the own key/value enter through the diagonal term
            # (k - k.detach() is exactly zero, so forward values are those of normal attention).
            kd, vd = k.detach(), v.detach()
            scores = q @ kd.transpose(-1, -2) + torch.diag_embed((q * (k - kd)).sum(-1))  # [B, H, T, T]
        else:
            scores = q @ k.transpose(-1, -2)                                           # [B, H, T, T]
        scores = (scores / math.sqrt(self.d_head)).masked_fill(self.causal[:T, :T], float("-inf"))
        pattern = scores.softmax(-1)                                                   # [B, H, T, T]
        if mode == "myopic":
            own = torch.diagonal(pattern, dim1=-2, dim2=-1)[..., None]                 # [B, H, T, 1]
            z = pattern @ vd + own * (v - vd)                                          # [B, H, T, dh]
        else:
            z = pattern @ v                                                            # [B, H, T, dh]
        z = z.transpose(1, 2).reshape(B, T, d)                                         # [B, T, d]
        return _seg_linear(z, self.W_O, self.b_O, self.split)                          # [B, T, d]


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig, n_seg: int):
        super().__init__()
        self.split = cfg.split_at
        self.W_in = nn.Parameter(torch.randn(n_seg, cfg.d_model, cfg.d_mlp) * cfg.init_std)
        self.b_in = nn.Parameter(torch.zeros(n_seg, cfg.d_mlp))
        self.W_out = nn.Parameter(torch.randn(n_seg, cfg.d_mlp, cfg.d_model) * cfg.init_std
                                  / math.sqrt(2 * cfg.n_layers))
        self.b_out = nn.Parameter(torch.zeros(n_seg, cfg.d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(_seg_linear(x, self.W_in, self.b_in, self.split))            # [B, T, d_mlp]
        return _seg_linear(hidden, self.W_out, self.b_out, self.split)                # [B, T, d]


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, n_seg: int):
        super().__init__()
        self.ln1 = LayerNorm(n_seg, cfg.d_model, cfg.split_at)
        self.attn = Attention(cfg, n_seg)
        self.ln2 = LayerNorm(n_seg, cfg.d_model, cfg.split_at)
        self.mlp = MLP(cfg, n_seg)

    def forward(self, h: torch.Tensor, mode: AttnMode = "normal") -> torch.Tensor:
        h = h + self.attn(self.ln1(h), mode)                                           # [B, T, d]
        return h + self.mlp(self.ln2(h))                                               # [B, T, d]


class Transformer(nn.Module):
    """Causal transformer over token ids [B, T] -> logits [B, T, d_vocab]."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        n_seg = 1 if cfg.split_at is None else 2
        if cfg.split_at is not None:
            assert cfg.split_at < cfg.n_ctx, f"split_at {cfg.split_at} must be below n_ctx {cfg.n_ctx}"
        self.W_E = nn.Parameter(torch.randn(n_seg, cfg.d_vocab, cfg.d_model) * cfg.init_std)
        self.W_pos = nn.Parameter(torch.randn(cfg.n_ctx, cfg.d_model) * cfg.init_std)
        self.blocks = nn.ModuleList(Block(cfg, n_seg) for _ in range(cfg.n_layers))
        self.ln_final = LayerNorm(n_seg, cfg.d_model, cfg.split_at)
        self.W_U = nn.Parameter(torch.randn(n_seg, cfg.d_model, cfg.d_vocab) * cfg.init_std)
        self.b_U = nn.Parameter(torch.zeros(n_seg, cfg.d_vocab))

    # -- the forward pass in pieces -------------------------------------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """h_0: token plus position embedding, [B, T, d]."""
        T = tokens.shape[1]
        assert T <= self.cfg.n_ctx, f"sequence length {T} exceeds n_ctx {self.cfg.n_ctx}"
        if self.W_E.shape[0] == 1:
            tok = self.W_E[0][tokens]                                                   # [B, T, d]
        else:
            s = self.cfg.split_at
            tok = torch.cat([self.W_E[0][tokens[:, :s]], self.W_E[1][tokens[:, s:]]], 1)  # [B, T, d]
        return tok + self.W_pos[:T]

    def resid(self, tokens: torch.Tensor, k: int, mode: AttnMode = "normal") -> torch.Tensor:
        """h_k [B, T, d]: the residual stream after k blocks."""
        assert 0 <= k <= self.cfg.n_layers, f"layer {k} outside 0..{self.cfg.n_layers}"
        h = self.embed(tokens)
        for block in self.blocks[:k]:
            h = block(h, mode)
        return h

    def run_from(self, h: torch.Tensor, k: int, mode: AttnMode = "normal") -> torch.Tensor:
        """Logits [B, T, d_vocab] from h_k, running blocks k..n_layers-1 and the unembedding."""
        for block in self.blocks[k:]:
            h = block(h, mode)
        return _seg_linear(self.ln_final(h), self.W_U, self.b_U, self.cfg.split_at)

    def forward(self, tokens: torch.Tensor, mode: AttnMode = "normal",
                detach: tuple[int, Iterable[int]] | None = None) -> torch.Tensor:
        """Logits [B, T, d_vocab]. `detach=(k, positions)` stops gradient through h_k at those positions."""
        if detach is None:
            return self.run_from(self.embed(tokens), 0, mode)
        k, positions = detach
        h = self.resid(tokens, k, mode)
        mask = torch.zeros(h.shape[1], 1, dtype=torch.bool, device=h.device)
        mask[list(positions)] = True
        h = torch.where(mask, h.detach(), h)                                           # [B, T, d]
        return self.run_from(h, k, mode)

    @torch.no_grad()
    def resid_streams(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """[h_0, .., h_n_layers], each [B, T, d], without gradient."""
        hs = [self.embed(tokens)]
        for block in self.blocks:
            hs.append(block(hs[-1]))
        return hs

    def split_copy(self, split_at: int) -> "Transformer":
        """A split-weight model whose both weight sets start equal to this (unsplit) model's weights."""
        assert self.cfg.split_at is None, "split_copy needs an unsplit model"
        other = Transformer(self.cfg.model_copy(update={"split_at": split_at})).to(
            device=self.W_pos.device, dtype=self.W_pos.dtype)
        with torch.no_grad():
            for (name, p), (_, q) in zip(self.named_parameters(), other.named_parameters()):
                q.copy_(p if name == "W_pos" else p.expand_as(q))
        return other


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sequence and position, [B, T]."""
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T), reduction="none").view(B, T)
