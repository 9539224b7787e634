"""One seed of the gradient-decomposition experiment (on the majority task or a substrate corpus).

1. Train from one initialisation, on the same batches: a normal model, a myopic one (attention keys and values
   of other positions detached, so each loss trains only its own position's stream) and, on the majority task,
   a split one (separate weights for the input and the output segment, both starting from the shared init).
2. Fit ridge probes for the feature on the final normal model's activations at (layer, tracked positions);
   they define the risk R (see influence.py).
3. Replay the normal run step for step, decomposing every step's gradient into direct / pre-caching / shared
   parts at (layer, tracked positions) and integrating each part's Adam update against grad R. `pairing`
   "position" pairs each position's parts with its own R_i, as the paper does (3n backward passes of the
   blocks below the layer per step, the default on the majority task); "set" treats the positions as one
   group, parts summed and R averaged (3 passes; the default on a corpus, whose sequences are long).
4. Report held-out probe correlations under each condition, task accuracy, influence shares and checks.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch

from claimgraph.experiments.context import RunContext, resolve_device, torch_threads
from claimgraph.experiments.job import SeedResult
from claimgraph.experiments.spec import t_interval, variance_note
from claimgraph.graph.errors import InvalidInput

from . import GradientDecompositionParams
from .data import corpus_source, majority_source
from .decomposition import decompose, decompose_literal, full_gradient
from .influence import PARTS, AdamInfluence, ProbeRisk, fit_ridge, flat_params, probe_correlation, set_flat_grads
from .intervention import influence_ratios, precache_scores, rank_correlation
from .plots import plot_influence, plot_probe_correlations, plot_summary
from .transformer import AttnMode, Transformer, TransformerConfig, token_losses

CURVE_POINTS = 100  # points kept per curve in the result details


def _adam(model: torch.nn.Module, params: GradientDecompositionParams) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=params.lr, betas=(params.beta1, params.beta2), eps=params.eps)


def _batches(data: torch.Tensor, steps: int, batch_size: int):
    for t in range(steps):
        chunk = data[t * batch_size: (t + 1) * batch_size]                             # [B, L]
        yield t, chunk[:, :-1], chunk[:, 1:]


def train(model: Transformer, data: torch.Tensor, params: GradientDecompositionParams, ctx: RunContext, *, condition: str,
          mode: AttnMode = "normal", cut_layer: int | None = None) -> list[float]:
    """Adam on the next-token loss at every position. `cut_layer` computes the gradient through h_k as in the
    tracked replay (same numbers, bit for bit). Returns the loss per step."""
    opt, losses = _adam(model, params), []
    for t, tok, tgt in ctx.progress(_batches(data, params.steps, params.batch_size), total=params.steps,
                                    desc=condition):
        opt.zero_grad(set_to_none=True)
        if cut_layer is not None:
            loss, full, _, _ = full_gradient(model, tok, tgt, cut_layer)
            set_flat_grads(model, full)
        else:
            loss_t = token_losses(model(tok, mode), tgt).mean()
            loss_t.backward()
            loss = float(loss_t.detach())
        opt.step()
        losses.append(loss)
        if t % params.log_every == 0 or t == params.steps - 1:
            ctx.log_metrics(t, {"loss": loss}, condition=condition)
    return losses


def track(model: Transformer, data: torch.Tensor, params: GradientDecompositionParams, ctx: RunContext, risk: ProbeRisk,
          groups: list[list[int]]) -> dict[str, Any]:
    """Replay normal training with the decomposition at every step. Returns per-step curves and checks."""
    opt = _adam(model, params)
    tracker = AdamInfluence(opt, len(groups))
    device = next(model.parameters()).device
    cum = torch.zeros(len(PARTS), len(groups), dtype=torch.float64, device=device)     # [3, n_groups]
    cum_total = torch.zeros(len(groups), dtype=torch.float64, device=device)           # [n_groups]
    curve_parts, curve_risk, sum_errors = [], [], []
    check_error = math.nan
    for t, tok, tgt in ctx.progress(_batches(data, params.steps, params.batch_size), total=params.steps,
                                    desc="tracked"):
        r_vals, grad_R = risk.gradients(model)                                       # [n_groups], [n_groups, P]
        parts = decompose(model, tok, tgt, params.layer, groups)
        if t == 0 and params.check_decomposition:
            lit = decompose_literal(model, tok, tgt, params.layer, groups)
            scale = float(lit.full.abs().max().clamp_min(1e-30))
            check_error = max(float((getattr(parts, n) - getattr(lit, n)).abs().max()) / scale
                              for n in ("full",) + PARTS)
        before = flat_params(model)
        opt.zero_grad(set_to_none=True)
        set_flat_grads(model, parts.full)
        opt.step()
        step = tracker.after_step(parts, grad_R, flat_params(model) - before)
        cum += step.influence
        cum_total += step.total
        sum_errors.append(step.sum_error)
        curve_parts.append(cum.mean(1).clone())
        curve_risk.append(float(r_vals.mean()))
        if t % params.log_every == 0 or t == params.steps - 1:
            ctx.log_metrics(t, {"loss": parts.loss, "risk": curve_risk[-1],
                                **{f"cum_influence_{n}": float(v) for n, v in zip(PARTS, cum.mean(1))}},
                            condition="tracked")
    r_end, grad_R = risk.gradients(model)
    last = tracker.finish(grad_R)
    cum += last.influence
    cum_total += last.total
    curve_parts[-1] = cum.mean(1).clone()
    risk_end = float(r_end.mean())
    return {"cum": cum.cpu(), "cum_total": cum_total.cpu(), "curve_parts": torch.stack(curve_parts).cpu(),
            "curve_risk": curve_risk + [risk_end], "risk_end": risk_end,
            "sum_error": max(sum_errors), "check_error": check_error}


def _acts(model: Transformer, tokens: torch.Tensor, layer: int, positions: list[int]) -> torch.Tensor:
    return model.resid_streams(tokens)[layer][:, positions].transpose(0, 1)            # [n_pos, N, d]


def magnitude_shares(cum: torch.Tensor) -> dict[str, float]:
    """Each part's share of the feature's integrated influence, from magnitudes: per group
    |I_part| / (|I_direct| + |I_precache| + |I_shared|), then the mean over groups (groups whose parts are all
    zero left out). Shares of signed sums were unstable: parts of opposite sign cancel in the denominator, and a
    share could exceed 1 or be negative; these lie in [0, 1] and sum to 1. cum [3, n_groups]."""
    mags = cum.abs().double()                                                          # [3, G]
    total = mags.sum(0)                                                                # [G]
    keep = total > 0
    if not bool(keep.any()):
        return {n: math.nan for n in PARTS}
    per_group = mags[:, keep] / total[keep]                                            # [3, G']
    return {n: float(per_group[j].mean()) for j, n in enumerate(PARTS)}


def predicted_drop(drop: float, precache_share: float, min_share: float) -> float:
    """The myopic drop where the framework predicts one (pre-caching built at least `min_share` of the feature's
    influence), NaN elsewhere: a criterion on it is decided by the seeds where the prediction is made."""
    return drop if precache_share >= min_share else math.nan


def _median(values: list[float]) -> float:
    vals = sorted(v for v in values if math.isfinite(v))
    return float(vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2) \
        if vals else math.nan


def _downsample(values: list[float]) -> list[float]:
    step = max(1, math.ceil(len(values) / CURVE_POINTS))
    return [float(v) for v in values[::step]] + ([float(values[-1])] if (len(values) - 1) % step else [])


def run_seed(ctx: RunContext, params: GradientDecompositionParams, seed: int) -> SeedResult:
    """One seed on the majority task (data unset) or a substrate corpus (`synthetic:<preset>`): the metrics, the
    details and the seed's plots."""
    if ctx.model_ref is not None:
        raise InvalidInput(f"gradient_decomposition trains its own model; drop the model reference "
                           f"{ctx.model_ref!r} (set sizes with --param d_model=... etc.)")
    data_ref = None if ctx.data_ref in (None, "majority", "majority:default") else ctx.data_ref
    if data_ref is not None and not data_ref.startswith("synthetic:"):
        raise InvalidInput(f"gradient_decomposition runs on the built-in majority task (leave data unset) "
                           f"or a substrate corpus 'synthetic:<preset>'; got data reference {data_ref!r}")
    if params.layer > params.n_layers:
        raise InvalidInput(f"layer {params.layer} is beyond the model's {params.n_layers} blocks; "
                           f"choose 0..{params.n_layers}")
    if params.d_model % params.n_heads:
        raise InvalidInput(f"d_model {params.d_model} is not divisible by n_heads {params.n_heads}")
    device = resolve_device(ctx.device)
    with torch_threads(params.threads if device == "cpu" else None):
        metrics, details = _run_seed(params, seed, ctx, device, data_ref)
    ctx.log(f"shares direct {metrics['direct_influence_share']:.3f} precache "
            f"{metrics['precache_influence_share']:.3f} shared {metrics['shared_influence_share']:.3f}; "
            "probe corr " + " ".join(f"{c} {metrics[f'probe_corr_{c}']:.3f}"
                                     for c in ("normal", "myopic", "split") if f"probe_corr_{c}" in metrics))
    return SeedResult(seed=seed, metrics=metrics, details=details)


def summarize(ctx: RunContext, params: GradientDecompositionParams, results: list[SeedResult]) -> dict[str, Any]:
    """Mean and 95% t-interval across seeds of every metric (NaN where no seed has a finite value), and the
    across-seed plots."""
    def interval(name: str) -> tuple[float, float, float]:
        iv = t_interval([r.metrics.get(name, math.nan) for r in results])
        if iv.mean is None or iv.low is None or iv.high is None:
            return (math.nan, math.nan, math.nan)
        return (iv.mean, iv.low, iv.high)

    stats = {name: interval(name) for name in results[0].metrics} if results else {}
    corr = {c: stats[f"probe_corr_{c}"] for c in ("init", "normal", "myopic", "split")
            if f"probe_corr_{c}" in stats and not math.isnan(stats[f"probe_corr_{c}"][0])}
    if results:
        plot_summary(ctx.artifact("influence_summary.png"), ctx.artifact("probe_corr_summary.png"),
                     [r.details for r in results], corr)
    return {"intervals": {k: {"mean": m, "ci_low": lo, "ci_high": hi} for k, (m, lo, hi) in stats.items()},
            "n_seeds": len(results), "notes": notes(stats, results)}


def notes(stats: dict[str, tuple[float, float, float]], results: list[SeedResult]) -> str:
    """The observed values in words (means and 95% intervals across seeds), for the evidence text."""
    def iv(name: str) -> str:
        m, lo, hi = stats.get(name, (math.nan, math.nan, math.nan))
        if math.isnan(m):
            return "n/a"
        return f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if not math.isnan(lo) and lo != hi else f"{m:.3f}"

    n_pred = sum(math.isfinite(r.metrics.get("myopic_corr_drop_predicted", math.nan)) for r in results)
    parts = [f"Probe correlation of the feature: {iv('probe_corr_init')} at initialisation, {iv('probe_corr_normal')} "
             f"after training, {iv('probe_corr_myopic')} after myopic training."]
    parts.append(f"Influence shares (from magnitudes, centred probe risk): direct {iv('direct_influence_share')}, "
                 f"pre-caching {iv('precache_influence_share')}, circuit sharing {iv('shared_influence_share')}.")
    parts.append(f"Intervention link: rank correlation of the pre-caching score (no retraining) with the "
                 f"influence ratio over the probed positions {iv('precache_score_rank_corr')} (median score "
                 f"{iv('precache_score_median')}, median ratio {iv('influence_ratio_median')}).")
    parts.append(f"Myopic drop in probe correlation {iv('myopic_corr_drop')}; the framework predicts a drop (pre-caching "
                 f"share at least the set minimum) in {n_pred} of {len(results)} seeds.")
    parts.append(variance_note(["model seeds (the transformer's initialisation)",
                                "data samples (training and held-out sequences drawn per seed)"], len(results)))
    return " ".join(parts)


def _run_seed(params: GradientDecompositionParams, seed: int, ctx: RunContext, device: str, data_ref: str | None
              ) -> tuple[dict[str, float], dict[str, Any]]:
    src = majority_source(params, seed, device) if data_ref is None else corpus_source(params, seed, device, data_ref)
    if not 0 <= params.layer <= params.n_layers:
        raise ValueError(f"layer {params.layer} outside 0..{params.n_layers} (residual stream index)")
    dtype = torch.float64 if params.float64 else torch.float32
    mcfg = TransformerConfig(d_vocab=src.d_vocab, n_ctx=src.n_ctx, d_model=params.d_model,
                             n_heads=params.n_heads, d_mlp=params.d_mlp, n_layers=params.n_layers)
    positions = src.positions
    pairing = params.pairing if params.pairing != "auto" else ("position" if data_ref is None else "set")
    groups = [positions] if pairing == "set" else [[i] for i in positions]
    n_fit = int(src.held.shape[0] * (1 - params.probe_test_frac))
    feats = src.features[:, positions].transpose(0, 1).to(dtype)                       # [n_pos, N, C]
    torch.manual_seed(seed)
    init = Transformer(mcfg).to(device=device, dtype=dtype)

    def corr(model: Transformer) -> torch.Tensor:                                     # [n_pos, C]
        X = _acts(model, src.held[:, :-1], params.layer, positions)
        return probe_correlation(X[:, :n_fit], feats[:, :n_fit], X[:, n_fit:], feats[:, n_fit:], params.probe_alpha)

    models = {"normal": copy.deepcopy(init), "myopic": copy.deepcopy(init)}
    losses = {"normal": train(models["normal"], src.train, params, ctx, condition="normal", cut_layer=params.layer),
              "myopic": train(models["myopic"], src.train, params, ctx, condition="myopic", mode="myopic")}
    if src.split_at is not None:
        models["split"] = init.split_copy(src.split_at)
        losses["split"] = train(models["split"], src.train, params, ctx, condition="split")
    ctx.log("final loss " + " ".join(f"{name} {v[-1]:.4f}" for name, v in losses.items()))

    final = models["normal"]
    X_final = _acts(final, src.held[:, :-1], params.layer, positions)
    probe = fit_ridge(X_final[:, :n_fit], feats[:, :n_fit], params.probe_alpha)
    risk = ProbeRisk(probe.W, src.held[: params.risk_sequences, :-1], final, params.layer, positions, groups)

    tracked = copy.deepcopy(init)
    tr = track(tracked, src.train, params, ctx, risk, groups)
    replay_diff = float((flat_params(tracked) - flat_params(final)).abs().max())

    corrs = {"init": corr(init), **{name: corr(m) for name, m in models.items()}}
    corr_mean = {name: float(torch.nanmean(c)) for name, c in corrs.items()}
    accs = {name: src.accuracy(m) for name, m in models.items()}

    infl = tr["cum"].mean(1)                                                           # [3]
    infl_sum = float(infl.sum())
    shares = magnitude_shares(tr["cum"])
    risk_drop = tr["curve_risk"][0] - tr["risk_end"]
    # the intervention link (intervention.py): per tracked position, the pre-caching score of the final model's
    # feature against the decomposition's influence ratio; needs per-position influences ("position" pairing)
    link: dict[str, Any] = {"score": [], "ratio": [], "kl_own": [], "kl_later": []}
    if pairing == "position":
        link = {**precache_scores(final, src.held[n_fit:, :-1], params.layer, positions, probe.W),
                "ratio": influence_ratios(tr["cum"])}
    rank = rank_correlation(link["score"], link["ratio"]) if link["score"] else math.nan
    myopic_drop = corr_mean["normal"] - corr_mean["myopic"]

    metrics = {
        "direct_influence_share": shares["direct"],
        "precache_influence_share": shares["precache"],
        "shared_influence_share": shares["shared"],
        "precache_plus_shared_share": shares["precache"] + shares["shared"],
        **{f"influence_{n}": float(v) for n, v in zip(PARTS, infl)},
        "risk_start": tr["curve_risk"][0],
        "risk_end": tr["risk_end"],
        "influence_sum_ratio": infl_sum / risk_drop if risk_drop != 0 else math.nan,
        **{f"probe_corr_{name}": v for name, v in corr_mean.items()},
        **{f"{name}_corr_drop": corr_mean["normal"] - corr_mean[name] for name in models if name != "normal"},
        "myopic_corr_drop_predicted": predicted_drop(myopic_drop, shares["precache"], params.myopic_min_precache_share),
        "precache_score_rank_corr": rank,
        "precache_score_median": _median(link["score"]),
        "influence_ratio_median": _median(link["ratio"]),
        **accs["normal"],
        **{f"task_accuracy_{name}": a["task_accuracy"] for name, a in accs.items() if name != "normal"},
        "final_loss_normal": losses["normal"][-1],
        "decomposition_check_error": tr["check_error"],
        "adam_sum_error": tr["sum_error"],
        "replay_max_diff": replay_diff,
    }
    curves = {
        "step": _downsample(list(range(1, params.steps + 1))),
        **{f"cum_influence_{n}": _downsample(tr["curve_parts"][:, j].tolist()) for j, n in enumerate(PARTS)},
        "risk": _downsample(tr["curve_risk"][1:]),
    }
    details: dict[str, Any] = {
        "data": src.name,
        "feature": "is_majority_c (c = each task token)" if data_ref is None else params.corpus_feature,
        "layer": params.layer,
        "positions": positions,
        "pairing": pairing,
        "influence_by_group": {n: tr["cum"][j].tolist() for j, n in enumerate(PARTS)},
        "intervention_link": {"positions": positions if link["score"] else [], **link},
        "probe_corr_by_position": {name: torch.nanmean(c, dim=1).tolist() for name, c in corrs.items()},
        "loss_curves": {name: _downsample(v) for name, v in losses.items()},
        "influence_curves": curves,
        "passes_per_tracked_step": ("plain forward+backward (also the training gradient); myopic forward+backward "
                                    f"of blocks >= layer; {2 * len(groups)} backward passes of blocks < layer; "
                                    f"one forward of blocks < layer on the risk batch and {len(groups)} backward "
                                    "passes of them"),
    }
    title = f"seed {seed}, {src.name}, layer {params.layer}"
    plot_influence(ctx.artifact(f"influence_seed{seed}.png"), curves, title=title)
    plot_probe_correlations(ctx.artifact(f"probe_corr_seed{seed}.png"), details["probe_corr_by_position"],
                            positions, title=title)
    return metrics, details
