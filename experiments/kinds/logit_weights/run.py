"""One seed of `logit_weights`: the chosen feature's direct effect on every logit (decoder row through W_out,
the linearised final LayerNorm and W_U), how its predicted category separates from the other tokens against
random same-norm directions at the same hook, and the top-token enrichment; after all seeds, the notes."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from claimgraph.experiments.context import RunContext
from claimgraph.experiments.features.logits import (
    decoder_directions,
    direct_logit_effects,
    enrichment,
    enrichment_ratios,
    latent_category_scores,
    rank_among,
    residual_scale,
    top_tokens,
)
from claimgraph.experiments.features.target import Target
from claimgraph.experiments.job import SeedResult
from claimgraph.experiments.substrate.lm import setting_note

from . import LogitWeightsParams
from .plots import plot_effects


def measure(ctx: RunContext, params: LogitWeightsParams, seed: int, t: Target) -> SeedResult:
    """Direct logit effects of the feature and of `n_random` same-norm random directions; the table and plot."""
    V = t.d_corpus
    tokens = t.measure_windows(math.ceil(params.scale_tokens / t.corpus.seq_len), seed)
    scale = residual_scale(t.model, tokens, batch_size=params.model_batch_size)
    direction = decoder_directions(t.sae, [t.feature]).float().cpu()                  # [1, d_in]
    effects = direct_logit_effects(t.model, direction, t.hook, scale=scale)[0, :V]     # [V]
    mask = t.category_mask()                                                           # [V]
    top_k = min(params.top_k, V)
    enr = enrichment(effects, mask, top_k)

    g = torch.Generator().manual_seed(int(seed))
    rand = torch.randn(params.n_random, direction.shape[1], generator=g)               # [R, d_in]
    rand = rand / rand.norm(dim=1, keepdim=True) * direction.norm()
    r_eff = direct_logit_effects(t.model, rand, t.hook, scale=scale)[:, :V]            # [R, V]
    r_ratio = enrichment_ratios(r_eff, mask, top_k)                                    # [R]

    def cat_minus_other(e: Tensor) -> Tensor:
        return e[..., mask].mean(-1) - e[..., ~mask].mean(-1)

    ratio = enr["ratio"]
    r_cmo = cat_minus_other(r_eff)                                                     # [R]
    r_com = category_over_median(r_eff, mask)                                          # [R]
    feat_com = float(category_over_median(effects, mask))
    # the same two scores for every latent of the SAE: the feature ranked among the other live latents
    all_cmo, all_ratio = latent_category_scores(t.model, t.sae, t.hook, mask, top_k, scale=scale)  # [d_sae] x2
    live = t.stats.freq > 0
    live[t.feature] = False
    feat_cmo = float(cat_minus_other(effects))
    metrics = {
        "category_over_median_z": float((feat_com - r_com.mean()) / r_com.std().clamp_min(1e-12)),
        "category_over_median": feat_com,
        "control_category_over_median": float(r_com.mean()),
        "control_category_over_median_sd": float(r_com.std()),
        "category_effect_z": float((cat_minus_other(effects) - r_cmo.mean()) / r_cmo.std().clamp_min(1e-12)),
        "enrichment_ratio": ratio,
        "enrichment_share": enr["share"],
        "enrichment_neglog10_p": -math.log10(max(enr["p_value"], 1e-300)),
        "base_rate": enr["base_rate"],
        "category_effect_minus_other": feat_cmo,
        "category_effect_pct_live": rank_among(feat_cmo, all_cmo[live]),
        "enrichment_pct_live": rank_among(ratio, all_ratio[live]),
        "category_effect_pct_random": rank_among(feat_cmo, r_cmo),
        "n_live_latents": float(live.sum()),
        "control_enrichment_ratio": float(r_ratio.mean()),
        "control_enrichment_ratio_p95": float(r_ratio.quantile(0.95)),
        "control_category_effect_minus_other": float(r_cmo.mean()),
        "control_category_effect_sd": float(r_cmo.std()),
        "random_ratio_at_least_feature": float((r_ratio >= ratio).float().mean()),
        "feature_f1": t.choice["f1"],
        "feature_auroc": t.choice["auroc"],
        "residual_scale": scale,
    }
    ctx.log(f"feature {t.feature}: category over the other tokens' median effect z = "
            f"{metrics['category_over_median_z']:.2f} (over their mean {metrics['category_effect_z']:.2f}) vs random "
            f"directions; {enr['hits']}/{top_k} top tokens are {t.predict} (base rate "
            f"{enr['base_rate']:.3f}, ratio {ratio:.2f}, p {enr['p_value']:.2g}); random directions: mean "
            f"ratio {metrics['control_enrichment_ratio']:.2f}, "
            f"95th pct {metrics['control_enrichment_ratio_p95']:.2f}")
    ctx.log_metrics(0, metrics, condition="feature")

    order = effects.argsort(descending=True)
    cats = ([t.predict if bool(mask[i]) else "-" for i in order] if t.text
            else [t.corpus.vocab.category_of(int(i)) for i in order])
    table = ctx.artifact(f"seed{seed}/logit_effects.csv")
    table.write_text("rank,token_id,token,category,effect\n" + "".join(
        f"{r},{int(i)},{_csv(t.decode([int(i)])[0])},{c},{float(effects[i]):.6g}\n"
        for r, (i, c) in enumerate(zip(order, cats))), encoding="utf-8")
    plot = ctx.artifact(f"seed{seed}/logit_histogram.png")
    plot_effects(plot, effects, r_eff[0], mask, t, top_k)
    details = {
        **t.details(),
        "top_tokens": top_tokens(effects, t.decode, params.show_k),
        "random_top_tokens": top_tokens(r_eff[0], t.decode, params.show_k),
        "enrichment": enr,
        "random_ratios": [round(float(x), 4) for x in r_ratio],
        "residual_scale": scale,
        "table": str(table.relative_to(ctx.artifacts_dir)),
        "plot": str(plot.relative_to(ctx.artifacts_dir)),
    }
    return SeedResult(seed=seed, metrics=metrics, details=details)


def summarize(ctx: RunContext, params: LogitWeightsParams, results: list[SeedResult]) -> dict[str, Any]:
    """Notes saying what the per-seed numbers mean."""
    if not results:
        return {}
    z = [x.metrics["category_over_median_z"] for x in results]
    z_mean = [x.metrics["category_effect_z"] for x in results]
    r = [x.metrics["enrichment_ratio"] for x in results]
    c = [x.metrics["control_enrichment_ratio_p95"] for x in results]
    d0 = results[0].details
    feats = ", ".join(f"seed {x.seed}: latent {x.details['feature']} (F1 {x.metrics['feature_f1']:.2f})"
                      for x in results)
    notes = (f"Logit weights of the SAE feature that best detects {d0['label']} at {d0['hook']} ({feats}). "
             f"Mean direct effect on {d0['predict']} tokens over the median effect on the others, in SDs of random "
             f"same-norm directions: z = {', '.join(f'{v:.2f}' for v in z)} per seed (over the others' mean "
             f"effect instead: {', '.join(f'{v:.2f}' for v in z_mean)}). Share of "
             f"{d0['predict']} among the top {params.top_k} over its base rate "
             f"{results[0].metrics['base_rate']:.3f}: {', '.join(f'{v:.2f}' for v in r)}; random directions "
             f"reach {', '.join(f'{v:.2f}' for v in c)} at their 95th percentile (the category's unembeddings "
             "cluster, so the hypergeometric p-value overstates significance; the random directions are the "
             "null). Only the direct path is counted: a feature in an early layer may act through later "
             "layers instead, so a low z there does not show the feature has no effect on the category; "
             "features read at the last layer's MLP, or a wider SAE with a cleaner feature, could change it.")
    return {"notes": notes + setting_note(ctx.model_ref, ctx.data_ref), "category_over_median_z": z,
            "enrichment_ratio": r}


def category_over_median(effects: Tensor, mask: Tensor) -> Tensor:
    """Mean effect on the category's tokens minus the median effect on the other tokens, per row of effects
    [..., V]: [...]. The median, not the mean, so that pushing down a minority of other tokens (ones the
    feature has nothing to do with) does not count as promoting the category."""
    return effects[..., mask].mean(-1) - effects[..., ~mask].median(-1).values


def _csv(s: str) -> str:
    return '"' + s.replace('"', '""') + '"' if any(ch in s for ch in ',"\n ') or not s else s
