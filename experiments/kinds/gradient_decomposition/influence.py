"""Influence of gradient parts on a probed feature: ridge probes, the probe risk R, and Adam bookkeeping.

- A ridge probe per tracked position i maps h_{k,i} to the feature (one output per task token).
- The risk of position i on a fixed batch: R_i(theta) = mean over sequences and outputs of
  (z_i(theta) - z^final_i)^2 with z_i = h_{k,i}(theta) W_i - mean over the batch of h_{k,i}(theta) W_i, i.e. the
  probe readout centred over the batch, and W_i the probe fitted on the *final* model's activations. It is zero
  at the end of training and measures how far the current model is from computing the final model's probe
  direction. Centring makes it blind to offsets: a shift of h_{k,i} that is the same for every sequence (a bias,
  the position embedding) carries no information about the feature, and in the uncentred risk such shifts were
  counted as influence on the feature. A group G of positions has R_G = mean_{i in G} R_i and is
  paired with the gradient parts at (k, G) (decomposition.py): one group of all input positions ("set"), or
  one group per position ("position", the paper's per-position pairing).
- Under Adam each part c of group G keeps its own first moment m_c,G (fed only with that part's gradients);
  all parts share the optimiser's second moment v. The update attributable to part c is
  -lr * m_c,G_hat / (sqrt(v_hat) + eps); since the parts sum to the full gradient every step, the m_c,G sum
  to Adam's m and the part updates sum to the real update. The influence of part c at a step is
  -<update_c,G, grad R_G> with grad R_G averaged over both ends of the step (trapezoid rule; positive when
  the part moves the model towards the final feature); summed over training the parts' influences add up to
  R_G(start) - R_G(end) up to the integration error.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from .decomposition import GradientParts, flatten
from .transformer import Transformer

PARTS = ("direct", "precache", "shared")


class Probe(NamedTuple):
    W: torch.Tensor  # [n_pos, d, C]
    b: torch.Tensor  # [n_pos, C]

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """Predictions [n_pos, N, C] for activations X [n_pos, N, d]."""
        return X @ self.W + self.b[:, None]


def fit_ridge(X: torch.Tensor, Y: torch.Tensor, alpha: float) -> Probe:
    """One ridge regression per position with an unpenalised intercept. X [n_pos, N, d], Y [n_pos, N, C]."""
    X64, Y64 = X.double(), Y.double()
    xm, ym = X64.mean(1, keepdim=True), Y64.mean(1, keepdim=True)                     # [n_pos, 1, d|C]
    Xc, Yc = X64 - xm, Y64 - ym
    d = X.shape[-1]
    A = Xc.transpose(1, 2) @ Xc + alpha * torch.eye(d, dtype=torch.float64, device=X.device)  # [n_pos, d, d]
    W = torch.linalg.solve(A, Xc.transpose(1, 2) @ Yc)                                # [n_pos, d, C]
    b = (ym - xm @ W)[:, 0]                                                            # [n_pos, C]
    return Probe(W.to(X.dtype), b.to(X.dtype))


def pearson(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Correlation over the sample axis: pred, y [n_pos, N, C] -> [n_pos, C] (nan where either is constant)."""
    pc, yc = pred - pred.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    den = (pc.square().sum(1) * yc.square().sum(1)).sqrt()                             # [n_pos, C]
    return torch.where(den > 0, (pc * yc).sum(1) / den.clamp_min(1e-30), torch.full_like(den, float("nan")))


def probe_correlation(X_train: torch.Tensor, Y_train: torch.Tensor, X_test: torch.Tensor, Y_test: torch.Tensor,
                      alpha: float) -> torch.Tensor:
    """Held-out correlation [n_pos, C] of a ridge probe fitted on the training split."""
    probe = fit_ridge(X_train, Y_train, alpha)
    return pearson(probe(X_test).double(), Y_test.double())


class ProbeRisk:
    """The probe risk on a fixed batch of sequences for groups of tracked positions: R_G = mean over i in G of
    R_i. Gives its value and its parameter gradient per group."""

    def __init__(self, probe_W: torch.Tensor, tokens: torch.Tensor, final_model: Transformer, layer: int,
                 positions: Sequence[int], groups: Sequence[Sequence[int]]):
        # R depends on h_k at the tracked positions only, hence on the prefix up to the last one (causal)
        tokens = tokens[:, : max(positions) + 1]
        self.W, self.tokens, self.layer = probe_W, tokens, layer                      # W [n_pos, d, C]
        self.pos = torch.as_tensor(list(positions), device=tokens.device)
        index = {p: j for j, p in enumerate(positions)}
        assert all(i in index for g in groups for i in g), f"groups {groups} use untracked positions"
        self.weights = torch.zeros(len(groups), len(positions), dtype=probe_W.dtype, device=tokens.device)
        for r, g in enumerate(groups):
            self.weights[r, [index[i] for i in g]] = 1.0 / len(g)                      # [n_groups, n_pos]
        h_final = final_model.resid_streams(tokens)[layer][:, self.pos]               # [Br, n_pos, d]
        self.target = self._centred(torch.einsum("bnd,ndc->bnc", h_final, probe_W))   # [Br, n_pos, C]

    @staticmethod
    def _centred(z: torch.Tensor) -> torch.Tensor:
        return z - z.mean(0, keepdim=True)                                             # over the batch

    def _diff(self, h: torch.Tensor) -> torch.Tensor:
        """Centred readout minus the final model's: [Br, n_pos, C]. Its mean over the batch is zero, so the
        gradient of mean(diff^2) with respect to the readout is 2 diff / (Br C) (the centring's own term sums
        to zero)."""
        return self._centred(torch.einsum("bnd,ndc->bnc", h[:, self.pos], self.W)) - self.target

    @torch.no_grad()
    def values(self, model: Transformer) -> torch.Tensor:
        """R_G for every group, [n_groups]."""
        return self.weights @ self._diff(model.resid(self.tokens, self.layer)).square().mean((0, 2))

    def gradients(self, model: Transformer) -> tuple[torch.Tensor, torch.Tensor]:
        """(R_G [n_groups], grad_theta R_G [n_groups, P]): one forward, one backward pass per group."""
        params = list(model.parameters())
        h = model.resid(self.tokens, self.layer)                                       # [Br, T, d]
        diff = self._diff(h).detach()                                                  # [Br, n_pos, C]
        Br, _, C = diff.shape
        d_h = 2.0 / (Br * C) * torch.einsum("bnc,ndc->bnd", diff, self.W)              # [Br, n_pos, d] dR_i/dh_i
        grads = []
        for w in self.weights:                                                         # w [n_pos]
            cot = torch.zeros_like(h)                                                  # [Br, T, d]
            cot[:, self.pos] = d_h * w[None, :, None]
            g = torch.autograd.grad(h, params, cot, retain_graph=True, allow_unused=True)
            grads.append(flatten(g, params))
        return self.weights @ diff.square().mean((0, 2)), torch.stack(grads)


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def set_flat_grads(model: torch.nn.Module, flat: torch.Tensor) -> None:
    """Give each parameter its slice of a flat gradient (the layout of `flat_params`), for an optimiser step."""
    offset = 0
    for p in model.parameters():
        p.grad = flat[offset: offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    assert offset == flat.numel(), f"flat gradient has {flat.numel()} entries, model {offset}"


class StepInfluence(NamedTuple):
    influence: torch.Tensor  # [3, n_groups]: direct, precache, shared; positive = moves towards the final feature
    total: torch.Tensor      # [n_groups]: the same for the real updates
    sum_error: float         # max |sum of part updates - Adam's update from its own m| / max |that update|
                             # (0 from `finish`); the real update differs from it by the parameters' rounding


class AdamInfluence:
    """Per-part, per-group first moments beside a torch Adam optimiser. Call `after_step` after each
    `optimizer.step()` taken with the full gradient, and `finish` once after the last step.

    Influences integrate grad R along the training path with the trapezoid rule: the update of step t is
    scored against the mean of grad R before and after it, so over training the parts' influences add up to
    R(start) - R(end) up to third-order terms per step (the left-point rule is off by the curvature of R along
    each update, which adds up over thousands of Adam steps). Each call reports the halves it can score: the
    previous update against the current grad R and the current update against it."""

    def __init__(self, optimizer: torch.optim.Adam, n_groups: int):
        assert len(optimizer.param_groups) == 1, "one parameter group expected"
        group = optimizer.param_groups[0]
        assert group["weight_decay"] == 0 and not group["amsgrad"] and not group["maximize"], \
            "influence bookkeeping supports plain Adam only (no weight decay, amsgrad or maximize)"
        self.opt, self.params = optimizer, list(group["params"])
        P = sum(p.numel() for p in self.params)
        device = self.params[0].device
        # float64 bookkeeping, whatever the model's dtype: the parts can be much larger than their sum
        self.m = torch.zeros(len(PARTS), n_groups, P, dtype=torch.float64, device=device)  # [3, n_groups, P]
        self.prev: tuple[torch.Tensor, torch.Tensor] | None = None  # last (part updates, real update)

    def _score(self, updates: torch.Tensor, delta: torch.Tensor, grad_R: torch.Tensor):
        """Half of -<update, grad R> for the part updates [3, G, P] and the real update [P]."""
        return -0.5 * (updates * grad_R[None]).sum(-1), -0.5 * (delta[None] * grad_R).sum(-1)

    def after_step(self, parts: GradientParts, grad_R: torch.Tensor, delta: torch.Tensor) -> StepInfluence:
        """Update the part moments with this step's parts. `grad_R` [n_groups, P] is taken at the parameters
        before the step; `delta` [P] is the real update the optimiser made."""
        group = self.opt.param_groups[0]
        lr, eps, (b1, b2) = group["lr"], group["eps"], group["betas"]
        state = [self.opt.state[p] for p in self.params]
        t = float(state[0]["step"])
        v = torch.cat([s["exp_avg_sq"].reshape(-1) for s in state]).double()         # [P]
        direct, precache = parts.direct.double(), parts.precache.double()             # [n_groups, P]
        # the shared part again as the float64 remainder: in float32 it loses the digits that direct and
        # pre-caching cancel, wherever they are much larger than the full gradient
        shared = parts.full.double()[None] - direct - precache
        g_parts = torch.stack([direct, precache, shared])                              # [3, n_groups, P]
        self.m.mul_(b1).add_(g_parts, alpha=1 - b1)
        denom = v.sqrt() / (1 - b2 ** t) ** 0.5 + eps                                   # [P]
        updates = self.m * (-lr / (1 - b1 ** t) / denom)                                # [3, n_groups, P]
        grad_R, delta = grad_R.double(), delta.double()
        influence, total = self._score(updates, delta, grad_R)
        if self.prev is not None:
            prev_influence, prev_total = self._score(*self.prev, grad_R)
            influence, total = influence + prev_influence, total + prev_total
        self.prev = (updates, delta)
        m_opt = torch.cat([s["exp_avg"].reshape(-1) for s in state]).double()            # [P] Adam's own m
        adam_update = m_opt * (-lr / (1 - b1 ** t) / denom)                             # [P]
        scale = adam_update.abs().max().clamp_min(1e-30)
        sum_error = float((updates.sum(0) - adam_update[None]).abs().max() / scale)
        return StepInfluence(influence=influence, total=total, sum_error=sum_error)

    def finish(self, grad_R: torch.Tensor) -> StepInfluence:
        """The last update scored against grad R [n_groups, P] at the final parameters."""
        assert self.prev is not None, "finish() before any step"
        influence, total = self._score(*self.prev, grad_R.double())
        self.prev = None
        return StepInfluence(influence=influence, total=total, sum_error=0.0)
