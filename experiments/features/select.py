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

from claimgraph.experiments.sae.base import SparseAutoencoder
from claimgraph.experiments.substrate.hooks import HookedModel


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


@dataclass
class DetectionTable:
    """Detection scores of every latent for several labels at once: tensors [d_sae, C], n_pos [C], on CPU."""

    f1: Tensor
    precision: Tensor
    recall: Tensor
    auroc: Tensor
    n_pos: Tensor
    n: int

    def column(self, c: int) -> Detection:
        """The scores of label c."""
        return Detection(f1=self.f1[:, c], precision=self.precision[:, c], recall=self.recall[:, c],
                         auroc=self.auroc[:, c], n_pos=int(self.n_pos[c]), n=self.n)


def detection_table(acts: Tensor, labels: Tensor, *, chunk: int = 64) -> DetectionTable:
    """Scores of every latent (columns of acts [M, d_sae]) as a detector of each label column of labels [M, C]
    (bool). The ranks of a latent's activations do not depend on the label, so they are computed once and
    summed over each label's positives (`positive_rank_sums`)."""
    assert acts.ndim == 2 and labels.ndim == 2 and acts.shape[0] == labels.shape[0], \
        f"acts [M, d] and labels [M, C] expected, got {tuple(acts.shape)} and {tuple(labels.shape)}"
    acts = acts.float().cpu()
    y = labels.bool().cpu().float()                                            # [M, C]
    m, d = acts.shape
    n_pos = y.sum(0)                                                           # [C]
    n_neg = m - n_pos                                                          # [C]
    fires = (acts > 0).float()                                                 # [M, d]
    tp = fires.t() @ y                                                         # [d, C]
    predicted = fires.sum(0)[:, None]                                          # [d, 1]
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))       # [d, C]
    recall = tp / n_pos.clamp_min(1)                                           # [d, C]
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12),
                     torch.zeros_like(tp))                                     # [d, C]
    rank_pos = positive_rank_sums(acts, y, chunk=chunk)                         # [d, C]
    npos, nneg = n_pos.double(), n_neg.double()
    auroc = ((rank_pos - npos * (npos + 1) / 2) / (npos * nneg).clamp_min(1)).float()              # [d, C]
    auroc = torch.where((n_pos > 0) & (n_neg > 0), auroc, torch.full_like(auroc, 0.5))
    return DetectionTable(f1=f1, precision=precision, recall=recall, auroc=auroc, n_pos=n_pos.long(), n=m)


def positive_rank_sums(acts: Tensor, y: Tensor, *, chunk: int = 64) -> Tensor:
    """Per latent and label, the sum of the average ranks (1-based, ties averaged) of the label's positive tokens
    among all M values of the latent: float64 [d, C] for acts [M, d] and 0/1 labels y [M, C].

    Every rank is a multiple of 1/2 and every sum stays far below 2**53, so the sums are exact in float64 however
    they are added up. That lets the sparse path skip the zeros: a latent is 0 on most tokens, and all its zeros
    share one average rank, so only its nonzero values are sorted (per latent, at once for all latents). Values
    with NaN take the dense path (one sort per latent over all M values)."""
    m, d = acts.shape
    yd = y.double()                                                            # [M, C]
    if bool(torch.isnan(acts).any()):
        out = torch.empty(d, y.shape[1], dtype=torch.float64)                  # [d, C]
        for j in range(0, d, chunk):
            cols = acts[:, j:j + chunk].t().contiguous()                       # [c, M]
            ordered = cols.sort(dim=1).values                                  # [c, M]
            below = torch.searchsorted(ordered, cols, right=False).double()    # [c, M] values strictly smaller
            upto = torch.searchsorted(ordered, cols, right=True).double()      # [c, M] values <= this one
            out[j:j + chunk] = ((below + upto + 1) / 2) @ yd                   # [c, C]
        return out
    tok, lat = (acts != 0).nonzero(as_tuple=True)                              # [nnz] each
    vals = acts[tok, lat]                                                      # [nnz]
    counts = torch.bincount(lat, minlength=d)                                  # [d] nonzeros per latent
    n_zero = (m - counts).double()                                             # [d]
    zero_rank = torch.bincount(lat[vals < 0], minlength=d).double() + (n_zero + 1) / 2  # [d] the zeros' average rank
    pos_nonzero = torch.zeros(d, y.shape[1], dtype=torch.float64).index_add_(0, lat, yd[tok])  # [d, C]
    out = (yd.sum(0)[None, :] - pos_nonzero) * zero_rank[:, None]              # [d, C] the zeros' share
    if len(lat) == 0:
        return out
    by_val = torch.argsort(vals, stable=True)
    order = by_val[torch.argsort(lat[by_val], stable=True)]                    # sorted by (latent, value)
    lat, tok, vals = lat[order], tok[order], vals[order]
    start = (counts.cumsum(0) - counts)[lat]                                   # [nnz] the latent's first slot
    new = torch.ones(len(lat), dtype=torch.bool)
    new[1:] = (lat[1:] != lat[:-1]) | (vals[1:] != vals[:-1])                  # [nnz] a run of ties starts
    run = new.cumsum(0) - 1                                                    # [nnz] run id
    pos = torch.arange(len(lat))
    first = pos[new][run]                                                      # [nnz] slot of the run's first
    last = torch.zeros(int(run[-1]) + 1, dtype=torch.long).scatter_reduce_(0, run, pos, "amax")[run]  # [nnz]
    shift = torch.where(vals > 0, n_zero[lat], torch.zeros_like(n_zero[lat]))  # zeros below a positive value
    below = (first - start).double() + shift                                   # [nnz] values strictly smaller
    upto = (last + 1 - start).double() + shift                                 # [nnz] values <= this one
    out.index_add_(0, lat, ((below + upto + 1) / 2)[:, None] * yd[tok])       # [d, C]
    return out


def detection_scores(acts: Tensor, labels: Tensor, *, chunk: int = 64) -> Detection:
    """Scores of every latent (columns of acts [M, d_sae]) as a detector of labels [M] (bool)."""
    assert acts.ndim == 2 and labels.shape == acts.shape[:1], \
        f"acts [M, d] and labels [M] expected, got {tuple(acts.shape)} and {tuple(labels.shape)}"
    return detection_table(acts, labels[:, None], chunk=chunk).column(0)


def latent_acts(model: HookedModel, sae: SparseAutoencoder, tokens: Tensor, hook: str, *, batch_size: int = 64,
                latents: list[int] | None = None) -> Tensor:
    """SAE latent activations for tokens [N, T] at `hook`, flattened to [N * T, d_sae] float32 on CPU; with
    `latents`, only those columns ([N * T, len(latents)]), so memory does not grow with the SAE's width."""
    from claimgraph.experiments.substrate.load import activations

    out = []
    dev = next(sae.parameters()).device
    for i in range(0, len(tokens), batch_size):
        acts = activations(model, tokens[i:i + batch_size], hook, batch_size=batch_size)  # [b * T, d_in]
        with torch.no_grad():
            z = sae.encode(acts.to(dev))                                                  # [b * T, d_sae]
            out.append((z if latents is None else z[:, latents]).float().cpu())          # [b * T, d_sae | k]
    return torch.cat(out)
