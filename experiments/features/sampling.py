"""Sampling continuations from a hooked model, a batch of prompts at a time, optionally with interventions
(hooks) active during every forward pass.

Each new token is drawn from softmax(logits / temperature) at the last position by inverting its CDF at a
uniform drawn up front for every (prompt, step) from a CPU generator seeded once per call. So the same (model,
prompts, seed, hooks) give the same tokens on any device and at any batch size, and two conditions sampled with
the same seed share their random numbers: they differ only where the intervention moves a CDF across a
uniform. No KV cache: every step re-runs the whole prefix, which is what lets a hook act on all generated
positions (toy contexts are short).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from claimgraph.experiments.substrate.hf import cached_forward
from claimgraph.experiments.substrate.hooks import HookedModel
from claimgraph.graph.errors import InvalidInput

HookFn = Callable[[Tensor, str], Any]


@torch.no_grad()
def sample(model: HookedModel, prompts: Tensor, n_new: int, *, seed: int, temperature: float = 1.0,
           fwd_hooks: Sequence[tuple[str, HookFn]] = (), vocab_limit: int | None = None,
           batch_size: int = 64) -> Tensor:
    """Prompts [B, P] extended by n_new sampled tokens: LongTensor [B, P + n_new] on CPU. `vocab_limit`: sample
    only among the first that many token ids (a synthetic corpus's vocabulary inside a larger model's)."""
    if prompts.ndim != 2 or prompts.shape[1] < 1:
        raise InvalidInput(f"prompts must be [B, P] with P >= 1, got shape {tuple(prompts.shape)}")
    if n_new < 0:
        raise InvalidInput(f"n_new must be >= 0, got {n_new}")
    if prompts.shape[1] + n_new > model.n_ctx:
        raise InvalidInput(f"prompt {prompts.shape[1]} + {n_new} new tokens exceeds the model's context {model.n_ctx}")
    if not temperature > 0:
        raise InvalidInput(f"temperature must be positive, got {temperature}")
    g = torch.Generator().manual_seed(int(seed))
    seqs = prompts.detach().long().cpu().clone()                                   # [B, P]
    uniforms = torch.rand(len(seqs), n_new, generator=g, dtype=torch.float64)      # [B, n_new]
    out = []
    with model.hooks(list(fwd_hooks)):
        for i in range(0, len(seqs), batch_size):
            cur = seqs[i:i + batch_size]                                           # [b, P]
            for step in range(n_new):
                logits = model(cur.to(model.device))[:, -1].cpu().double()         # [b, V]
                if vocab_limit is not None:
                    logits = logits[:, :vocab_limit]                               # [b, V']
                cdf = torch.softmax(logits / temperature, dim=-1).cumsum(-1)       # [b, V']
                u = uniforms[i:i + batch_size, step:step + 1] * cdf[:, -1:]        # [b, 1]
                nxt = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[1] - 1)  # [b, 1]
                cur = torch.cat([cur, nxt], dim=1)                                 # [b, t + 1]
            out.append(cur)
    return torch.cat(out) if out else seqs.new_zeros(0, prompts.shape[1] + n_new)


@torch.no_grad()
def sample_rows(model: HookedModel, prompts: Tensor, uniforms: Tensor, *, temperature: float = 1.0,
                clamp: Any = None, hook: str | None = None, vocab_limit: int | None = None,
                use_cache: bool = True) -> Tensor:
    """Prompts [B, P] extended by uniforms.shape[1] tokens, row r's step s drawn by inverting the CDF at
    uniforms[r, s] (rows that share a prompt and its uniforms differ only by their intervention): LongTensor
    [B, P + n_new] on CPU. `clamp` (features.intervene.RowClamp) acts at `hook` during every pass; its
    `offset` is kept right. A Hugging Face model samples with its key-value cache (one position per step);
    a toy model (or use_cache=False) re-runs the whole prefix."""
    B, P = prompts.shape
    n_new = uniforms.shape[1]
    if P + n_new > model.n_ctx:
        raise InvalidInput(f"prompt {P} + {n_new} new tokens exceeds the model's context {model.n_ctx}")
    seqs = prompts.detach().long().cpu().clone()                                   # [B, P]
    hooks = [(hook, clamp)] if clamp is not None and hook is not None else []
    hf = getattr(model, "hf", None) if use_cache else None

    def draw(logits: Tensor, step: int) -> Tensor:
        logits = logits.cpu().double()                                             # [B, V]
        if vocab_limit is not None:
            logits = logits[:, :vocab_limit]
        cdf = torch.softmax(logits / temperature, dim=-1).cumsum(-1)               # [B, V']
        u = uniforms[:, step:step + 1].double() * cdf[:, -1:]                      # [B, 1]
        return torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[1] - 1)  # [B, 1]

    import warnings

    with model.hooks(hooks), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        cache = None
        for step in range(n_new):
            if hf is None:  # whole prefix each step
                if clamp is not None:
                    clamp.offset = 0
                logits = model(seqs.to(model.device))[:, -1]                         # [B, V]
            else:
                feed = seqs if cache is None else seqs[:, -1:]                       # [B, P] then [B, 1]
                if clamp is not None:
                    clamp.offset = 0 if cache is None else seqs.shape[1] - 1
                logits, cache = cached_forward(hf, feed.to(model.device), cache)
                logits = logits[:, -1].float()                                       # [B, V]
            seqs = torch.cat([seqs, draw(logits, step)], dim=1)                      # [B, t + 1]
    return seqs
