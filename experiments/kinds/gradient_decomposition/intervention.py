"""The intervention link of Rofin, Naghiyev and Hahn: a score computed from the trained model alone, without
retraining, that should track how much of a feature's development came through pre-caching.

Pre-caching score of the feature at (layer k, position t): ablate the feature there, i.e. replace the component
of h_{k,t} in the span of its probe directions W_t [d, C] by that component's mean over the batch (every other
direction and every other position untouched), run the rest of the model, and compare the next-token
distributions with the unablated ones:

    score_t = sum_{d >= 2} KL_{t+d} / KL_{t+1}

where KL_{t+d} is the mean over sequences of KL(p || p_ablated) for the prediction of token t+d (made at
position t+d-1). A feature that only matters for its own next token scores near 0; one that later positions
read scores high. The influence ratio of the same feature is |pre-caching influence| / |direct influence| from
the decomposition (influence.py); the link holds when the two rank the probed features alike (Spearman rank
correlation over the tracked positions, one value per seed, an interval across seeds).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .transformer import Transformer


@torch.no_grad()
def precache_scores(model: Transformer, tokens: torch.Tensor, layer: int, positions: Sequence[int],
                    probe_W: torch.Tensor) -> dict[str, list[float]]:
    """Per tracked position t: the pre-caching score, KL_{t+1} (own next token) and sum_{d>=2} KL_{t+d} after
    mean-ablating the probe subspace of h_{layer, t}. tokens [N, T]; probe_W [n_pos, d, C]."""
    h = model.resid(tokens, layer)                                                     # [N, T, d]
    logp = model.run_from(h, layer).log_softmax(-1)                                    # [N, T, V]
    scores, own, later = [], [], []
    for j, t in enumerate(positions):
        Q = torch.linalg.qr(probe_W[j].double()).Q.to(h.dtype)                         # [d, C] orthonormal span
        x = h[:, t]                                                                    # [N, d]
        comp = (x - x.mean(0, keepdim=True)) @ Q                                       # [N, C] centred component
        h_ab = h.clone()
        h_ab[:, t] = x - comp @ Q.T                                                    # [N, d] mean-ablated
        logq = model.run_from(h_ab, layer).log_softmax(-1)                             # [N, T, V]
        kl = (logp.exp() * (logp - logq)).sum(-1).mean(0)                              # [T] KL per position
        own_kl, later_kl = float(kl[t]), float(kl[t + 1:].sum())
        own.append(own_kl)
        later.append(later_kl)
        scores.append(later_kl / own_kl if own_kl > 0 else math.nan)
    return {"score": scores, "kl_own": own, "kl_later": later}


def influence_ratios(cum: torch.Tensor) -> list[float]:
    """|pre-caching influence| / |direct influence| per group, from the integrated influences cum [3, n_groups]
    (rows direct, precache, shared); NaN where the direct influence is exactly zero."""
    direct, precache = cum[0].abs().tolist(), cum[1].abs().tolist()
    return [p / d if d > 0 else math.nan for d, p in zip(direct, precache)]


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation over the pairs where both are finite (average ranks for ties); NaN with fewer
    than 3 such pairs or a constant side."""
    pairs = [(x, y) for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    if len(pairs) < 3:
        return math.nan

    def ranks(v: Sequence[float]) -> torch.Tensor:
        t = torch.tensor(v, dtype=torch.float64)
        less = (t[None, :] < t[:, None]).sum(1).double()
        ties = (t[None, :] == t[:, None]).sum(1).double()
        return less + (ties + 1) / 2                                                   # average rank, 1-based

    ra, rb = ranks([p[0] for p in pairs]), ranks([p[1] for p in pairs])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float((ra.square().sum() * rb.square().sum()).sqrt())
    return float((ra * rb).sum()) / den if den > 0 else math.nan
