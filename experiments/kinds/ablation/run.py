"""One seed of `ablation`: clamp the chosen feature to zero where it fires (SAE spliced in, error term kept) and
measure the change in next-token log-probs of its category against the other tokens and in the loss, then the
KL over the next `horizon` tokens after ablating at one position only; the same for a control latent. After all
seeds, the notes. Definitions: the package docstring."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from claimgraph.experiments.context import RunContext
from claimgraph.experiments.features.intervene import clamp_hook, latent_acts_and_logits
from claimgraph.experiments.features.target import MEASURE_OFFSET, Target, control_latent
from claimgraph.experiments.job import SeedResult

from . import CONDITIONS, AblationParams
from .plots import plot_ablation


def measure(ctx: RunContext, params: AblationParams, seed: int, t: Target) -> SeedResult:
    """Clamp the feature, then the control latent, to 0 on held-out tokens; metrics, details and the plot."""
    tokens = t.corpus.sample(math.ceil(params.measure_tokens / t.corpus.seq_len), seed + MEASURE_OFFSET)
    control = control_latent(t.stats, t.feature, seed)
    ctx.log(f"ablating feature {t.feature} and control latent {control} (fires on "
            f"{float(t.stats.freq[control]):.4f} of selection tokens vs {float(t.stats.freq[t.feature]):.4f})")
    metrics: dict[str, float] = {}
    details: dict[str, Any] = {**t.details(), "control_latent": control, "conditions": {}}
    for cond, latent in zip(CONDITIONS, (t.feature, control)):
        m, d = ablation_effects(t, latent, tokens, params, seed)
        prefix = "" if cond == "feature" else "control_"
        metrics.update({prefix + k: v for k, v in m.items()})
        details["conditions"][cond] = {"latent": latent, **d}
        ctx.log_metrics(0, m, condition=cond)
        ctx.log(f"{cond} latent {latent}: category drop {m['category_logprob_drop']:.4f}, other drop "
                f"{m['other_logprob_drop']:.4f} nats; KL next {m['kl_next']:.4g}, later {m['kl_later']:.4g}, "
                f"pre-caching {m['precaching_score']:.3f}")
    metrics["feature_f1"] = t.choice["f1"]
    plot = ctx.artifact(f"seed{seed}/ablation.png")
    plot_ablation(plot, details, metrics, t, params)
    details["plot"] = str(plot.relative_to(ctx.artifacts_dir))
    return SeedResult(seed=seed, metrics=metrics, details=details)


def summarize(ctx: RunContext, params: AblationParams, results: list[SeedResult]) -> dict[str, Any]:
    """Notes saying what the per-seed numbers mean."""
    if not results:
        return {}
    d0 = results[0].details

    def per_seed(name: str, fmt: str = ".3f") -> str:
        return ", ".join(format(r.metrics[name], fmt) for r in results)

    notes = (f"Zero-ablating the SAE feature that best detects {d0['label']} at {d0['hook']} (SAE spliced in, "
             f"error term kept) where it fires: {d0['predict']} tokens lose "
             f"{per_seed('category_logprob_drop_minus_other')} nats more log-prob than other tokens per seed "
             f"(control latent: {per_seed('control_category_logprob_drop_minus_other')}); the category's total "
             f"probability drops by {per_seed('category_mass_logdrop')} nats. Ablating at one position t, the "
             f"KL of token t+1 is {per_seed('kl_next', '.3g')} and tokens t+2..t+{params.horizon} add up to "
             f"{per_seed('kl_later', '.3g')} (pre-caching score {per_seed('precaching_score')}; control "
             f"{per_seed('control_precaching_score')}). Other latents and the error term may carry the same "
             "information (redundancy), which makes single-feature ablation effects small; a narrower SAE, "
             "ablating the feature's close siblings together, or a model where the span is represented "
             "once could change the size of the effect.")
    return {"notes": notes,
            "category_logprob_drop_minus_other": [r.metrics["category_logprob_drop_minus_other"] for r in results]}


def ablation_effects(t: Target, latent: int, tokens: Tensor, params: AblationParams, seed: int
                     ) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics of clamping `latent` to 0 on tokens [N, T] (see the module docstring), and the KL per offset."""
    V = t.d_corpus
    cat = t.category_mask().to(t.model.device)                                         # [V]
    ablate = clamp_hook(t.sae, [latent], 0.0)
    sums = torch.zeros(5, dtype=torch.float64)  # category drop, other drop, mass drop, loss increase, positions
    n_next = 0
    fires_all = []
    for batch in tokens.split(params.model_batch_size):
        batch = batch.to(t.model.device)                                                # [b, T]
        logits_c, f = latent_acts_and_logits(t.model, t.sae, batch, t.hook, [latent])  # [b, T, Vm], [b, T, 1]
        fires = f[..., 0] > 0                                                           # [b, T]
        fires_all.append(fires.cpu())
        if not bool(fires.any()):
            continue
        with torch.no_grad():
            logits_a = t.model.run_with_hooks(batch, [(t.hook, ablate)])                # [b, T, Vm]
        lp_c = F.log_softmax(logits_c[fires].float(), -1)[:, :V]                         # [M, V]
        lp_a = F.log_softmax(logits_a[fires].float(), -1)[:, :V]                         # [M, V]
        drop = lp_c - lp_a                                                              # [M, V]
        sums[0] += float(drop[:, cat].mean(1).sum())
        sums[1] += float(drop[:, ~cat].mean(1).sum())
        sums[2] += float((lp_c[:, cat].logsumexp(1) - lp_a[:, cat].logsumexp(1)).sum())
        sums[4] += int(fires.sum())
        has_next = fires[:, :-1]                                                        # [b, T-1]
        nxt = batch[:, 1:][has_next]                                                    # [M']
        if len(nxt):
            lc = F.log_softmax(logits_c[:, :-1][has_next].float(), -1).gather(1, nxt[:, None])  # [M', 1]
            la = F.log_softmax(logits_a[:, :-1][has_next].float(), -1).gather(1, nxt[:, None])  # [M', 1]
            sums[3] += float((lc - la).sum())
            n_next += len(nxt)
    fires = torch.cat(fires_all)                                                        # [N, T]
    n = max(float(sums[4]), 1.0)
    kl = kl_horizon(t, latent, tokens, fires, params, seed)                             # [horizon]
    m = {
        "category_logprob_drop": float(sums[0]) / n,
        "other_logprob_drop": float(sums[1]) / n,
        "category_logprob_drop_minus_other": float(sums[0] - sums[1]) / n,
        "category_mass_logdrop": float(sums[2]) / n,
        "next_token_loss_increase": float(sums[3]) / max(n_next, 1),
        "kl_next": float(kl[0]),
        "kl_later": float(kl[1:].sum()),
        "precaching_score": float(kl[1:].sum() / kl[0]) if float(kl[0]) > 0 else float("nan"),
        "fire_frac": float(fires.float().mean()),
    }
    return m, {"firing_positions": int(sums[4]), "kl_by_offset": [float(x) for x in kl]}


def kl_horizon(t: Target, latent: int, tokens: Tensor, fires: Tensor, params: AblationParams, seed: int) -> Tensor:
    """Mean KL(clean || ablated) [horizon] of tokens t+1..t+horizon after clamping `latent` to 0 at one firing
    position t per row, for up to `kl_positions` (sequence, t) pairs drawn at random (t <= T - horizon)."""
    H = params.horizon
    N, T = tokens.shape
    if H > T - 1:
        return torch.full((H,), float("nan"))
    ok = fires.clone()
    ok[:, T - H + 1:] = False  # logits up to position t + H - 1 must exist
    pairs = ok.nonzero()                                                                # [P, 2] (row, t)
    if len(pairs) == 0:
        return torch.full((H,), float("nan"))
    g = torch.Generator().manual_seed(int(seed) + 17)
    pairs = pairs[torch.randperm(len(pairs), generator=g)[:params.kl_positions]]        # [M, 2]
    total = torch.zeros(H, dtype=torch.float64)
    V = t.d_corpus
    for chunk in pairs.split(params.model_batch_size):
        rows = tokens[chunk[:, 0]].to(t.model.device)                                   # [m, T]
        at = torch.zeros(len(chunk), T, dtype=torch.bool)
        at[torch.arange(len(chunk)), chunk[:, 1]] = True                                # [m, T] one-hot at t
        idx = (chunk[:, 1:2] + torch.arange(H)).to(t.model.device)                      # [m, H] positions t..t+H-1
        with torch.no_grad():
            clean = t.model(rows)                                                       # [m, T, Vm]
            abl = t.model.run_with_hooks(rows, [(t.hook, clamp_hook(t.sae, [latent], 0.0, positions=at))])
        gather = idx[..., None].expand(-1, -1, clean.shape[-1])                         # [m, H, Vm]
        lp_c = F.log_softmax(clean.gather(1, gather).float(), -1)[..., :V]               # [m, H, V]
        lp_a = F.log_softmax(abl.gather(1, gather).float(), -1)[..., :V]                 # [m, H, V]
        total += (lp_c.exp() * (lp_c - lp_a)).sum(-1).sum(0).double().cpu()             # [H]
    return (total / len(pairs)).float()
