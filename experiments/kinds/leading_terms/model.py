"""The attention-only transformer of the leading-terms paper, on one-hot tokens, and its plain-SGD trainer.

Architecture (one layer, everything in token space, nothing fixed except the identity residual):

    X            one-hot inputs                                   [T, V]
    S = X W_QK X^T + P                                             [T, T]  (P[t, j] = pos[t - j], relative position)
    A = softmax(causal_mask(S)) row-wise                           [T, T]
    h = X + A X W_V                                                [T, V]  (residual + attention)
    logits = h W_O                                                 [T, V]

Parameters W_QK (query token x key token), W_V (value: context token -> residual), W_O (residual -> next-token
logits), all V x V, and pos [n_ctx] (set `positional=False` to drop it). All start at zero. The loss is the mean
cross-entropy of the next token over every (sequence, position). X W_QK X^T is computed by gathering
W_QK[x_t, x_j], and the attention path as A X (W_V W_O) with gathered rows of the V x V product: the same
function as the one-hot products, at a third of the cost when batch x positions exceeds V.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn


class AttnOnlyOneHot(nn.Module):
    """One attention layer on one-hot tokens with residual and output map; zero initialisation."""

    offsets: torch.Tensor  # buffer [n_ctx, n_ctx]: t - j, clamped at 0
    causal: torch.Tensor  # buffer [n_ctx, n_ctx]: j <= t

    def __init__(self, d_vocab: int, n_ctx: int, *, positional: bool = True, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.d_vocab, self.n_ctx = d_vocab, n_ctx
        self.W_QK = nn.Parameter(torch.zeros(d_vocab, d_vocab, dtype=dtype))   # [V query, V key]
        self.W_V = nn.Parameter(torch.zeros(d_vocab, d_vocab, dtype=dtype))    # [V context, V residual]
        self.W_O = nn.Parameter(torch.zeros(d_vocab, d_vocab, dtype=dtype))    # [V residual, V logits]
        self.pos = nn.Parameter(torch.zeros(n_ctx, dtype=dtype)) if positional else None  # [n_ctx] by offset t - j
        t = torch.arange(n_ctx)
        self.register_buffer("offsets", (t[:, None] - t[None, :]).clamp(min=0), persistent=False)  # [T, T]
        self.register_buffer("causal", t[:, None] >= t[None, :], persistent=False)                 # [T, T]

    def named_terms(self) -> dict[str, nn.Parameter]:
        """The learned tensors under the names their leading terms use."""
        out = {"output": self.W_O, "value": self.W_V, "attention": self.W_QK}
        if self.pos is not None:
            out["position"] = self.pos
        return out

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention pattern [N, T, T] for token ids x [N, T]."""
        T = x.shape[1]
        assert T <= self.n_ctx, f"sequence of {T} tokens is longer than n_ctx={self.n_ctx}"
        scores = self.W_QK[x[:, :, None], x[:, None, :]]                       # [N, T, T]
        if self.pos is not None:
            scores = scores + self.pos[self.offsets[:T, :T]]                     # [N, T, T]
        scores = scores.masked_fill(~self.causal[:T, :T], float("-inf"))
        return scores.softmax(dim=-1)                                           # [N, T, T]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Next-token logits [N, T, V] for token ids x [N, T]."""
        A = self.attention(x)                                                   # [N, T, T]
        VO = self.W_V @ self.W_O                                                # [V, V] context token -> logits
        return self.W_O[x] + A @ VO[x]                                          # [N, T, V] (X + A X W_V) W_O


def mean_loss(model: AttnOnlyOneHot, inputs: torch.Tensor, targets: torch.Tensor, *, chunk: int = 256) -> float:
    """Mean next-token cross-entropy over all positions of inputs/targets [N, T], without gradients."""
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, inputs.shape[0], chunk):
            x, y = inputs[i:i + chunk], targets[i:i + chunk]
            logits = model(x)                                                   # [n, T, V]
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
            count += y.numel()
    return total / count


def loss_and_grads(model: AttnOnlyOneHot, x: torch.Tensor, y: torch.Tensor, *,
                   chunk: int | None = None) -> tuple[float, list[torch.Tensor]]:
    """Mean cross-entropy over x, y [N, T] and its gradient for every parameter, accumulated over chunks of
    `chunk` sequences (None: one pass) so a full-batch step fits in memory."""
    params = list(model.parameters())
    n = x.shape[0]
    size = n if chunk is None else chunk
    total, grads = 0.0, [torch.zeros_like(p) for p in params]
    for i in range(0, n, size):
        xc, yc = x[i:i + size], y[i:i + size]
        logits = model(xc)                                                      # [b, T, V]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yc.reshape(-1)) * (xc.shape[0] / n)
        for acc, g in zip(grads, torch.autograd.grad(loss, params)):
            acc.add_(g)
        total += float(loss.detach())
    return total, grads


def minibatches(n: int, batch_size: int | None, steps: int, seed: int) -> Iterator[torch.Tensor | None]:
    """The sequence indices [b] of each SGD update, drawn uniformly with replacement from a generator seeded
    with `seed` (None for every step when the batch is the full set): train_sgd's batches, which the noise floor
    (run.sgd_noise_floor) re-draws."""
    gen = torch.Generator().manual_seed(int(seed))
    for _ in range(steps):
        yield None if batch_size is None or batch_size >= n else torch.randint(n, (batch_size,), generator=gen)


def train_sgd(model: AttnOnlyOneHot, inputs: torch.Tensor, targets: torch.Tensor, *, lr: float, steps: int,
              batch_size: int | None, seed: int, chunk: int | None = None,
              on_step: Callable[[int, float], None] | None = None, progress: Callable | None = None) -> None:
    """Plain SGD (no momentum, no weight decay) for `steps` updates on minibatches of `batch_size` sequences drawn
    uniformly with replacement (None: the full set every step, i.e. gradient descent, its gradient accumulated
    over chunks of `chunk` sequences). `on_step(step, loss)` is called after update `step` (1-based) with that
    batch's loss before the update."""
    n = inputs.shape[0]
    params = list(model.parameters())
    batches = minibatches(n, batch_size, steps, seed)
    for step in (progress(range(1, steps + 1), total=steps, desc="sgd") if progress else range(1, steps + 1)):
        idx = next(batches)
        x, y = (inputs, targets) if idx is None else (inputs[idx], targets[idx])  # [b, T]
        loss, grads = loss_and_grads(model, x, y, chunk=chunk)
        with torch.no_grad():                       # theta <- theta - lr * grad (torch.optim.SGD's update, which
            for p, grad in zip(params, grads):      # costs seconds of torch._dynamo import on first use)
                p.sub_(lr * grad)
        if on_step is not None:
            on_step(step, loss)
