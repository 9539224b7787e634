"""Statistics of an activation sample used to set an SAE up: the normalisation factor and the geometric median."""
from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def activation_scale(x: Tensor) -> float:
    """The factor s with mean ||s x||^2 == d_in over the sample (so a unit-variance-like scale for any layer)."""
    assert x.ndim == 2 and x.shape[0] > 0, f"expected a non-empty [n, d] sample, got {tuple(x.shape)}"
    mean_sq = x.double().pow(2).sum(dim=1).mean().item()  # mean squared norm
    if mean_sq <= 0.0:
        return 1.0
    return float((x.shape[1] / mean_sq) ** 0.5)


@torch.no_grad()
def geometric_median(points: Tensor, *, max_iter: int = 200, tol: float = 1e-7, eps: float = 1e-12) -> Tensor:
    """The point minimising the sum of Euclidean distances to `points` [n, d] (Weiszfeld iterations).

    Each iteration is one vectorised reweighted mean with weights 1 / distance; distances are clamped at `eps`
    so a current estimate that lands on a data point does not divide by zero. Stops when the estimate moves
    less than `tol` times the data scale.
    """
    assert points.ndim == 2 and points.shape[0] > 0, f"expected [n, d] points, got {tuple(points.shape)}"
    p = points.double()  # [n, d]
    y = p.mean(dim=0)  # [d]
    scale = float(p.std(dim=0).norm()) if p.shape[0] > 1 else 1.0
    scale = scale if scale > 0 else 1.0
    for _ in range(max_iter):
        w = 1.0 / (p - y).norm(dim=1).clamp_min(eps)  # [n]
        y_new = (w[:, None] * p).sum(dim=0) / w.sum()  # [d]
        moved = float((y_new - y).norm())
        y = y_new
        if moved <= tol * scale:
            break
    return y.to(points.dtype)
