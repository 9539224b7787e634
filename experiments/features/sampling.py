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
