"""Which latent detects a category: per-latent F1 and AUROC of category membership, all latents at once.

Definitions (fixed before any run):
- a latent "fires" on a token when its activation is > 0 (SAE latents are sparse and non-negative);
- precision, recall and F1 of "fires" against the label, per latent;
- AUROC: the probability that the latent's activation on a random positive token exceeds that on a random
  negative one, ties counted half (Mann-Whitney U over average ranks), per latent.
A latent with no positive or no negative tokens in the set gets F1 0 / AUROC 0.5 rather than a division by zero.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Detection:
    """Per-latent detection scores of one label; tensors [d_sae] on CPU."""

    f1: Tensor
    precision: Tensor
    recall: Tensor
    auroc: Tensor
    n_pos: int
    n: int

    def best(self, by: str = "f1") -> int:
        """The latent with the highest score (`f1` or `auroc`)."""
        return int(getattr(self, by).argmax())


def detection_scores(acts: Tensor, labels: Tensor, *, chunk: int = 64) -> Detection:
    """Scores of every latent (columns of acts [M, d_sae]) as a detector of labels [M] (bool)."""
    assert acts.ndim == 2 and labels.shape == acts.shape[:1], \
        f"acts [M, d] and labels [M] expected, got {tuple(acts.shape)} and {tuple(labels.shape)}"
    acts = acts.float().cpu()
    y = labels.bool().cpu()
    m, d = acts.shape
    n_pos = int(y.sum())
    n_neg = m - n_pos
    fires = (acts > 0).float()                                                 # [M, d]
    tp = y.float() @ fires                                                     # [d]
    predicted = fires.sum(0)                                                   # [d]
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = tp / max(n_pos, 1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12),
                     torch.zeros_like(tp))
    auroc = torch.full((d,), 0.5)
    if n_pos and n_neg:
        yf = y.float()
        for j in range(0, d, chunk):  # chunks of latents bound the memory of the rank matrices
            cols = acts[:, j:j + chunk].t().contiguous()                       # [c, M]
            ordered = cols.sort(dim=1).values                                  # [c, M]
            below = torch.searchsorted(ordered, cols, right=False).float()     # [c, M] values strictly smaller
            upto = torch.searchsorted(ordered, cols, right=True).float()       # [c, M] values <= this one
            rank = (below + upto + 1) / 2                                      # [c, M] average 1-based rank
            rank_pos = (rank * yf).sum(1, dtype=torch.float64)                 # [c]
            auroc[j:j + chunk] = ((rank_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)).float()
    return Detection(f1=f1, precision=precision, recall=recall, auroc=auroc, n_pos=n_pos, n=m)


def latent_acts(model, sae, tokens: Tensor, hook: str, *, batch_size: int = 64) -> Tensor:
    """SAE latent activations for tokens [N, T] at `hook`, flattened to [N * T, d_sae] float32 on CPU."""
    from claimgraph.experiments.substrate.load import activations

    out = []
    dev = next(sae.parameters()).device
    for i in range(0, len(tokens), batch_size):
        acts = activations(model, tokens[i:i + batch_size], hook, batch_size=batch_size)  # [b * T, d_in]
        with torch.no_grad():
            out.append(sae.encode(acts.to(dev)).float().cpu())                           # [b * T, d_sae]
    return torch.cat(out)
