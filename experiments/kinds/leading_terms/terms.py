"""Gradient leading terms of the attention-only one-hot transformer (Im, Oh, Fang & Li, "How Do Transformers
Learn to Associate Tokens"), computed from corpus statistics, and the measures that compare them with trained
weights. The model is `leading_terms_model.AttnOnlyOneHot` (its docstring fixes the architecture).

Corpus statistics, over all N*T predicted positions (x_t the input token, y_t the next token, V the vocabulary,
r_t = onehot(y_t) - 1/V the residual of the uniform prediction, A the uniform causal attention A[t, j] = 1/(t+1)
for j <= t):

    B     = mean_t x_t^T r_t                  [V in, V next]      bigram mapping
    Phi   = mean_t r_t^T (A X)_t              [V next, V context] context mapping
    Sigma = B^T B                             [V, V]              token-interchangeability mapping
    Q     = mean_t sum_j D[t, j] x_t^T x_j    [V query, V key]    attention term, with
            D[t, j] = A[t, j] (U[t, j] - sum_j' A[t, j'] U[t, j']),  U[t, j] = r_t Sigma Phi x_j^T
            (the softmax Jacobian at uniform attention applied to the gradient through W_O = B, W_V = Phi^T B^T)
    q[d]  = mean_t D[t, t - d]                [n_ctx]             position term (same D, summed by offset)

Leading terms after s plain-SGD steps of size eta from zero (derived by expanding the updates in eta; checked
against autograd in tests/experiments/test_leading_terms.py):

    W_O  ~ c_O(s) B,             c_O(s) = s eta
    W_V  ~ c_V(s) Phi^T B^T,     c_V(s) = eta^2 s (s - 1) / 2                  (= sum_{k<s} eta c_O(k))
    W_QK ~ c_A(s) Q,  pos ~ c_A(s) q,
                                 c_A(s) = eta^4 s (s - 1) (s - 2) (3 s - 1) / 24  (= sum_{k<s} eta c_O(k) c_V(k))

(update k reads the weights after k updates: W_O = c_O(k) B is zero at k = 0, W_V at k <= 1, so W_V first moves
at update 2 and W_QK, pos at update 3).

The paper writes W_O ~ s eta B, value ~ (s eta)^2 Phi^T B^T, attention ~ (3 s^4 + 2 s^3) eta^4 Q; its powers of s
and eta agree with these, its constants differ by step counting and the scale of Q. Cosines do not depend on the
constants; norm ratios |W| / |c(s) L| do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class Bases:
    """The corpus statistics the leading terms are built from (float64)."""

    bigram: torch.Tensor            # B      [V, V]
    context: torch.Tensor           # Phi    [V, V]
    interchange: torch.Tensor       # Sigma  [V, V]
    attention: torch.Tensor         # Q      [V, V]
    position: torch.Tensor          # q      [T]
    context_lift: torch.Tensor      # Phi with the next-token frequencies removed [V, V] (for reading only)
    token_counts: torch.Tensor      # [V] occurrences as an input token
    n_positions: int

    def terms(self) -> dict[str, torch.Tensor]:
        """The leading term of each learned tensor at unit coefficient."""
        return {"output": self.bigram,
                "value": self.context.T @ self.bigram.T,                       # [V, V]  Phi^T B^T
                "attention": self.attention,
                "position": self.position}


def bigram_mapping(x: torch.Tensor, y: torch.Tensor, d_vocab: int) -> torch.Tensor:
    """B = mean over positions of x^T (onehot(y) - 1/|V|), float64 [V, V], from token ids x -> next y (any shape)."""
    V = d_vocab
    pair = torch.bincount((x.long() * V + y.long()).reshape(-1), minlength=V * V).view(V, V).to(torch.float64)
    return (pair - pair.sum(1, keepdim=True) / V) / x.numel()                          # pair[i, j] = count(x=i, y=j)


def corpus_bases(inputs: torch.Tensor, targets: torch.Tensor, d_vocab: int, *, chunk: int = 128) -> Bases:
    """B, Phi, Sigma, Q, q from token ids inputs/targets [N, T] (targets[:, t] follows inputs[:, t]).
    Everything is batched over sequences in chunks of `chunk`; nothing loops over tokens."""
    assert inputs.shape == targets.shape and inputs.ndim == 2, f"inputs {inputs.shape} vs targets {targets.shape}"
    N, T = inputs.shape
    V = d_vocab
    n_pos = N * T
    x, y = inputs.long(), targets.long()
    assert int(x.max()) < V and int(y.max()) < V, f"token id >= d_vocab={V}"
    dt = torch.float64

    B = bigram_mapping(x, y, V)                                                          # [V, V]

    inv = 1.0 / torch.arange(1, T + 1, dtype=dt)                                         # [T]  1/(t+1)
    C = torch.zeros(V, V, dtype=dt)                                                      # sum [y_t=a] (AX)_t[b]
    for i in range(0, N, chunk):
        xc, yc = x[i:i + chunk], y[i:i + chunk]
        ax = F.one_hot(xc, V).to(dt).cumsum(1) * inv[None, :, None]                     # [n, T, V]  (A X)_t
        C.index_add_(0, yc.reshape(-1), ax.reshape(-1, V))
    Phi = (C - C.sum(0, keepdim=True) / V) / n_pos                                      # [V, V]
    p_next = C.sum(1, keepdim=True) / n_pos                                              # [V, 1] P(y = a)
    lift = (C - p_next * C.sum(0, keepdim=True)) / n_pos                                 # [V, V]
    Sigma = B.T @ B                                                                      # [V, V]

    M = Sigma @ Phi                                                                      # [V, V] W_O^T W_V^T at unit c
    R = M - M.mean(0, keepdim=True)                                                      # row a: r_t M for y_t = a
    A = torch.tril(torch.ones(T, T, dtype=dt)) * inv[:, None]                            # [T, T] uniform causal
    offsets = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).clamp(min=0)         # [T, T]
    Q = torch.zeros(V * V, dtype=dt)
    q = torch.zeros(T, dtype=dt)
    for i in range(0, N, chunk):
        xc, yc = x[i:i + chunk], y[i:i + chunk]
        U = R[yc[:, :, None], xc[:, None, :]]                                            # [n, T, T] U[t, j]
        D = A * (U - (A * U).sum(-1, keepdim=True))                                      # [n, T, T] 0 above diag
        Q.index_add_(0, (xc[:, :, None] * V + xc[:, None, :]).reshape(-1), D.reshape(-1))
        q.index_add_(0, offsets.reshape(-1), D.sum(0).reshape(-1))
    return Bases(bigram=B, context=Phi, interchange=Sigma, attention=Q.view(V, V) / n_pos, position=q / n_pos,
                 context_lift=lift, token_counts=torch.bincount(x.reshape(-1), minlength=V), n_positions=n_pos)


def coefficients(step: int, lr: float) -> dict[str, float]:
    """c(s) of each leading term after `step` SGD updates of size `lr` from zero (see the module docstring)."""
    s = int(step)
    assert s >= 0, f"step must be >= 0, got {s}"
    c_att = lr ** 4 * s * (s - 1) * (s - 2) * (3 * s - 1) / 24
    return {"output": s * lr, "value": lr ** 2 * s * (s - 1) / 2, "attention": c_att, "position": c_att}


def trace_cosine(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """tr(a^T b) / (|a|_F |b|_F); None when either is zero (the cosine is undefined)."""
    a, b = a.detach().double().reshape(-1), b.detach().double().reshape(-1)
    na, nb = a.norm(), b.norm()
    if float(na) == 0.0 or float(nb) == 0.0:
        return None
    return float(a @ b / (na * nb))


def norm_ratio(learned: torch.Tensor, term: torch.Tensor, coefficient: float) -> float | None:
    """|learned|_F / |coefficient * term|_F: 1 when the leading term has the right size; None when undefined."""
    denom = abs(coefficient) * float(term.double().norm())
    if denom == 0.0:
        return None
    return float(learned.detach().double().norm()) / denom


def project_out(w: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """w minus its component along `direction` (trace inner product); same dtype as w."""
    d = direction.to(torch.float64)
    wd = w.detach().to(torch.float64)
    denom = float((d * d).sum())
    if denom == 0.0:
        return w.detach().clone()
    return (wd - (wd * d).sum() / denom * d).to(w.dtype)


def top_associations(matrix: torch.Tensor, vocab: list[str], rows: list[int], k: int, *,
                     exclude_self: bool = False) -> dict[str, list[list]]:
    """For each row token, the `k` column tokens with the largest entries: {token: [[token, value], ...]}."""
    m = matrix.detach().double().clone()
    if exclude_self:
        m.fill_diagonal_(float("-inf"))
    vals, idx = m[rows].topk(min(k, m.shape[1] - int(exclude_self)), dim=1)              # [len(rows), k]
    return {vocab[r]: [[vocab[int(j)], float(v)] for j, v in zip(idx[i], vals[i])] for i, r in enumerate(rows)}


def basis_associations(bases: Bases, vocab: list[str], *, n_frequent: int, k: int) -> dict[str, Any]:
    """Top associations of the most frequent input tokens under the three basis mappings:
    bigram (row i of B: next tokens i raises), interchangeability (row i of Sigma, i itself left out: tokens that
    follow the same tokens as i) and context (row b of Phi^T: next tokens that b earlier in the context raises).
    Phi^T's rows are dominated by the overall frequency of the next token, so `context_lift` also ranks them with
    that frequency removed (mean (onehot(y_t) - P(y))^T (A X)_t): what b in the context raises beyond base rates."""
    rows = bases.token_counts.topk(min(n_frequent, int((bases.token_counts > 0).sum()))).indices.tolist()
    return {
        "tokens": [vocab[r] for r in rows],
        "bigram": top_associations(bases.bigram, vocab, rows, k),
        "interchangeability": top_associations(bases.interchange, vocab, rows, k, exclude_self=True),
        "context": top_associations(bases.context.T, vocab, rows, k),
        "context_lift": top_associations(bases.context_lift.T, vocab, rows, k),
    }
