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
from claimgraph.experiments.features.target import Target, control_latent, null_latents
from claimgraph.experiments.job import SeedResult
from claimgraph.experiments.sae.base import SparseAutoencoder
from claimgraph.experiments.substrate.hooks import HookedModel
from claimgraph.experiments.substrate.lm import setting_note
from claimgraph.experiments.substrate.text import is_text
from claimgraph.graph.errors import InvalidInput

from . import CONDITIONS, AblationParams
from .plots import plot_ablation


def measure(ctx: RunContext, params: AblationParams, seed: int, t: Target) -> SeedResult:
    """Clamp the feature, then the control latent, to 0 on held-out tokens; metrics, details and the plot.
    With `n_null`, the feature against that many frequency-matched null latents instead (`measure_null`)."""
    if params.mode == "precaching":
        from .precaching import measure_precaching

        result: SeedResult = measure_precaching(ctx, params, seed, t)
        return result
    if params.n_null:
        return measure_null(ctx, params, seed, t)
    tokens = t.measure_windows(math.ceil(params.measure_tokens / t.corpus.seq_len), seed)
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

    if params.mode == "precaching":
        return summarize_precaching(ctx, params, results)
    if params.n_null:
        notes = (f"Zero-ablating the SAE feature that best detects {d0['label']} at {d0['hook']} (SAE spliced in, "
                 f"error term kept) at single positions where it fires, against {params.n_null} null latents "
                 f"firing about as often, ablated the same way: the log of the total probability of "
                 f"{d0['predict']} tokens for the next token falls by {per_seed('cat_drop', '.4f')} nats per "
                 f"seed; null latents {per_seed('null_cat_drop_mean', '.4f')} (SD "
                 f"{per_seed('null_cat_drop_sd', '.4f')}), so z = {per_seed('null_drop_z', '.2f')} over the null. "
                 f"KL of tokens t+1..t+{params.horizon}: {per_seed('kl_sum', '.3g')} vs null "
                 f"{per_seed('null_kl_sum_mean', '.3g')}. Each latent is measured at up to {params.null_pairs} "
                 "positions, so single-latent values are noisy; the interval covers the SAE seed (and the "
                 "feature and nulls chosen in it), not the positions. Other latents and the error term may carry "
                 "the same information (redundancy), which keeps single-feature ablation effects small.")
        return {"notes": notes + setting_note(ctx.model_ref, ctx.data_ref), "null_drop_z": [r.metrics["null_drop_z"] for r in results]}

    notes = (f"Zero-ablating the SAE feature that best detects {d0['label']} at {d0['hook']} (SAE spliced in, "
             f"error term kept) where it fires: the log of the total probability of {d0['predict']} tokens drops "
             f"by {per_seed('category_mass_logdrop')} nats per seed (control latent: "
             f"{per_seed('control_category_mass_logdrop')}); counting every token equally, {d0['predict']} tokens "
             f"lose {per_seed('category_logprob_drop_minus_other')} nats more log-prob than other tokens (control "
             f"{per_seed('control_category_logprob_drop_minus_other')}), a figure improbable tokens can make. "
             "Ablating at one position t, the "
             f"KL of token t+1 is {per_seed('kl_next', '.3g')} and tokens t+2..t+{params.horizon} add up to "
             f"{per_seed('kl_later', '.3g')} (pre-caching score {per_seed('precaching_score')}; control "
             f"{per_seed('control_precaching_score')}). Other latents and the error term may carry the same "
             "information (redundancy), which makes single-feature ablation effects small; a narrower SAE, "
             "ablating the feature's close siblings together, or a model where the span is represented "
             "once could change the size of the effect.")
    return {"notes": notes + setting_note(ctx.model_ref, ctx.data_ref),
            "category_mass_logdrop": [r.metrics["category_mass_logdrop"] for r in results]}


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


# ---------------------------------------------------------------------------------------------- against a null

def measure_null(ctx: RunContext, params: AblationParams, seed: int, t: Target) -> SeedResult:
    """The feature and `n_null` frequency-matched null latents, each clamped to 0 at single firing positions
    (`single_position_ablations`); the feature's category log-mass drop and KL against the null's."""
    nulls = null_latents(t.stats, t.feature, params.n_null, seed)
    L = min(params.null_len, t.corpus.seq_len)
    windows = t.measure_windows(params.null_windows, seed)[:, :L]                        # [n, L]
    sep = int(t.corpus.manifest["separator_id"]) if is_text(t.corpus) else None
    ctx.log(f"ablating feature {t.feature} and {len(nulls)} null latents (fire on "
            f"{float(t.stats.freq[nulls].min()):.4f}..{float(t.stats.freq[nulls].max()):.4f} of selection tokens "
            f"vs {float(t.stats.freq[t.feature]):.4f}) at up to {params.null_pairs} single positions each in "
            f"{len(windows)} windows of {L} tokens")
    res = single_position_ablations(t.model, t.sae, t.hook, [t.feature, *nulls], windows, t.category_mask(),
                                    pairs=params.null_pairs, horizon=params.horizon, t_min=params.null_t_min,
                                    seed=seed, separator=sep, batch_size=min(params.model_batch_size, 8))
    if int(res["n_pairs"][0]) == 0:
        raise InvalidInput(f"feature {t.feature} never fires at positions {params.null_t_min}..{L - params.horizon} "
                           f"of the {len(windows)} measurement windows; raise null_windows")
    kl_sum = res["kl"].sum(1)                                                          # [1 + n_null]
    drop = null_comparison(float(res["cat_drop"][0]), res["cat_drop"][1:])
    kls = null_comparison(float(kl_sum[0]), kl_sum[1:])
    metrics = {
        "null_drop_z": drop["z"], "cat_drop": float(res["cat_drop"][0]), "cat_drop_over_null": drop["over"],
        "null_cat_drop_mean": drop["mean"], "null_cat_drop_sd": drop["sd"], "null_at_least_feature": drop["at_least"],
        "kl_sum": float(kl_sum[0]), "null_kl_sum_mean": kls["mean"], "kl_sum_null_z": kls["z"],
        "kl_next": float(res["kl"][0, 0]), "null_kl_next_mean": float(res["kl"][1:, 0].nanmean()),
        "feature_pairs": float(res["n_pairs"][0]), "null_latents_used": drop["n"], "feature_f1": t.choice["f1"],
    }
    ctx.log_metrics(0, metrics, condition="null")
    ctx.log(f"feature {t.feature}: category log-mass drop {metrics['cat_drop']:.4f} nats vs null "
            f"{drop['mean']:.4f} +- {drop['sd']:.4f} (z {drop['z']:.2f}); KL t+1..t+{params.horizon} "
            f"{metrics['kl_sum']:.4g} vs null {kls['mean']:.4g} (z {kls['z']:.2f})")
    details = {**t.details(), "null_latents": nulls,
               "cat_drop": [float(x) for x in res["cat_drop"]], "kl_by_offset": res["kl"].tolist(),
               "n_pairs": res["n_pairs"].tolist(), "windows": len(windows), "window_len": L}
    return SeedResult(seed=seed, metrics=metrics, details=details)


def single_position_ablations(model: HookedModel, sae: SparseAutoencoder, hook: str, latents: list[int],
                              windows: Tensor, category_mask: Tensor, *, pairs: int, horizon: int, t_min: int,
                              seed: int, separator: int | None = None, batch_size: int = 8,
                              use_cache: bool = True) -> dict[str, Tensor]:
    """Each latent of `latents` clamped to 0 at one position t where it fires (t_min <= t <= L - horizon, not a
    separator), for up to `pairs` (window, t) pairs per latent drawn at random (seed) among windows [n, L]:

    - `cat_drop` [k]: mean over its pairs of log P_clean(C) - log P_ablated(C) for the token after t, where
      P(C) is the total probability of the category's tokens (each token weighted by its probability, so
      improbable tokens cannot dominate);
    - `kl` [k, horizon]: mean KL(clean || ablated) of tokens t+1..t+horizon;
    - `n_pairs` [k]: pairs found (0: the latent never fired in range; its values are nan).
    V = len(category_mask): the tokens compared (a synthetic vocabulary is a prefix of the model's).

    The ablation is x_t - f_j(x_t) W_dec[j] (SAE spliced in, error term kept), run by precaching's
    `perturbed_effects`: a Hugging Face model computes each ablated row over positions t..t+horizon-1 only, on
    the clean pass's key-value cache of the positions before t (the ablation at t cannot change them; at 21
    latents x 6 pairs in windows of 40 tokens on SmolLM2-135M, half the time of re-running every prefix);
    use_cache=False, or a toy model: the whole prefix again."""
    from claimgraph.experiments.features.select import latent_acts

    from .precaching import perturbed_effects

    n, L = windows.shape
    H = horizon
    V = category_mask.shape[0]
    acts = latent_acts(model, sae, windows, hook, batch_size=batch_size, latents=latents).reshape(n, L, -1)
    ok = acts > 0                                                                      # [n, L, k]
    ok[:, :t_min] = False
    ok[:, L - H + 1:] = False  # positions t .. t + H - 1 must exist
    if separator is not None:
        ok &= (windows != separator)[..., None]
    g = torch.Generator().manual_seed(int(seed) + 104729)
    where, slots = [], []
    for j in range(len(latents)):  # one draw per latent (a few dozen), not a loop over examples
        w = ok[..., j].nonzero()                                                       # [Q, 2]
        where.append(w[torch.randperm(len(w), generator=g)[:pairs]])
        slots.append(torch.full((len(where[-1]),), j, dtype=torch.long))
    k = len(latents)
    pos, slot = torch.cat(where), torch.cat(slots)                                     # [P, 2] (window, t), [P]
    count = torch.zeros(k, dtype=torch.float64).index_add_(0, slot, torch.ones(len(slot), dtype=torch.float64))
    drop = torch.zeros(k, dtype=torch.float64)
    kl = torch.zeros(k, H, dtype=torch.float64)
    if len(pos):
        W_dec = sae.W_dec.detach()
        lat = torch.as_tensor(latents, dtype=torch.long)[slot]                         # [P] the latent of each pair

        def zero_latent(x: Tensor, rows: Tensor) -> Tensor:
            li = lat[rows].to(W_dec.device)                                            # [p]
            f = sae.encode(x.to(W_dec.dtype))                                          # [p, d_sae]
            return (-f.gather(1, li[:, None]) * W_dec[li])[:, None]                    # [p, 1, d_in]

        eff = perturbed_effects(model, hook, windows, pos, zero_latent, horizon=H, n_vocab=V, category=category_mask,
                                batch_size=batch_size, use_cache=use_cache)
        drop.index_add_(0, slot, eff["cat_drop"][:, 0])
        kl.index_add_(0, slot, eff["kl"][:, 0])
    denom = count.clamp_min(1)
    nan = count == 0
    return {"cat_drop": (drop / denom).masked_fill(nan, float("nan")).float(),
            "kl": (kl / denom[:, None]).masked_fill(nan[:, None], float("nan")).float(),
            "n_pairs": count.long()}


def null_comparison(feature: float, null: Tensor) -> dict[str, float]:
    """The feature's value against null latents' values [n] (nan ones dropped): z over the null, excess over
    its mean, and the share of null latents at least as large."""
    null = null[~torch.isnan(null)].double()
    mean, sd = float(null.mean()), float(null.std())
    return {"z": (feature - mean) / max(sd, 1e-12), "over": feature - mean, "mean": mean, "sd": sd,
            "at_least": float((null >= feature).double().mean()), "n": float(len(null))}


def summarize_precaching(ctx: RunContext, params: AblationParams, results: list[SeedResult]) -> dict[str, Any]:
    """Notes for mode "precaching": per seed, each group's mean log10 excess over the null and the difference."""
    a, b = params.groups[0], params.groups[1]
    key = f"{a}_minus_{b}_log_excess"

    def per_seed(name: str) -> str:
        return ", ".join(f"{r.metrics[name]:.3f}" for r in results)

    d0 = results[0].details
    notes = (f"Pre-caching score (sum of the KL of tokens t+2..t+{params.horizon} over the KL of token t+1 after "
             f"zeroing a latent at one position t where it fires, SAE at {d0['hook']} spliced in, error term kept) "
             f"of the {params.group_size} best-F1 latents that detect {a} and {b} (precision >= "
             f"{params.group_min_lift:g}x the label's base rate), each against a random direction of "
             f"the same norm at the same positions. Mean log10 excess over that null per seed: {a} "
             f"{per_seed(f'{a}_log_excess')}, {b} {per_seed(f'{b}_log_excess')}; {a} - {b} {per_seed(key)} (raw log10 "
             f"scores without the null: {a} - {b} {per_seed(f'{a}_minus_{b}_log_score')}). Share of latents above "
             f"their null: {per_seed('above_null_share')}. Each latent is measured at up to {params.null_pairs} "
             "positions; the latents differ from seed to seed with the SAE. The interval does not cover model seeds "
             "(one pretrained model) nor other corpora.")
    return {"notes": notes + setting_note(ctx.model_ref, ctx.data_ref), key: [r.metrics[key] for r in results]}
