"""One seed of the `sae` job: load the model and its corpus, sample training and held-out tokens, then for each
condition (the trained model, and with `control=shuffled` a copy with its weight matrices shuffled) train an
SAE by the recipe, measure it on the held-out tokens, and save it in the SAELens layout; after all seeds, the
comparison plot."""
from __future__ import annotations

import math
import time
from typing import Any

from torch import Tensor

from claimgraph.experiments.context import RunContext, resolve_device, torch_threads
from claimgraph.experiments.job import SeedResult
from claimgraph.experiments.sae import ce_loss_recovered, evaluate_sae, save_sae, train_sae
from claimgraph.experiments.sae.recipe import EVAL_SEED_OFFSET
from claimgraph.experiments.substrate.corpus import SyntheticCorpus
from claimgraph.experiments.substrate.hooks import HookedModel
from claimgraph.experiments.substrate.load import activations, check_fit, corpus_for, load_model, shuffled_copy
from claimgraph.graph.errors import InvalidInput

from . import CONDITIONS, SaeParams
from .plots import plot_single_token_share


def run_seed(ctx: RunContext, params: SaeParams, seed: int) -> SeedResult:
    with torch_threads(params.threads):
        return _run_seed(ctx, params, seed)


def _run_seed(ctx: RunContext, params: SaeParams, seed: int) -> SeedResult:
    if ctx.model_ref is None:
        raise InvalidInput("the sae job needs a model; give --model toy:<preset> or hf:/local/dir")
    recipe = params.sae
    model = load_model(ctx.model_ref, device=resolve_device(ctx.device), progress=ctx.show_progress)
    corpus, data_ref = corpus_for(ctx.model_ref, ctx.data_ref)
    check_fit(model, ctx.model_ref, corpus, data_ref, hook=recipe.hook)
    n_train = math.ceil(recipe.train_tokens / corpus.seq_len)
    n_eval = math.ceil(params.eval_tokens / corpus.seq_len)
    train_tokens = corpus.sample(n_train, seed)  # [n_train, T]
    eval_tokens = corpus.sample(n_eval, seed + EVAL_SEED_OFFSET)  # [n_eval, T]
    ctx.log(f"{recipe.architecture} SAE at {recipe.hook}: {n_train * corpus.seq_len} training and "
            f"{n_eval * corpus.seq_len} eval tokens from {corpus.name or ctx.data_ref}")

    conditions = {"trained": model}
    if params.control == "shuffled":
        conditions["shuffled"] = shuffled_copy(model, seed)
    metrics: dict[str, float] = {}
    cache = getattr(model, "cache_path", None)
    details: dict[str, Any] = {"hook": recipe.hook, "conditions": {},
                               "model": {"ref": ctx.model_ref, "step": getattr(model, "step", None),
                                         "cache_key": cache.name if cache is not None else None}}
    for cond, m in conditions.items():
        cm, cd = train_condition(ctx, params, seed, cond, m, train_tokens, eval_tokens, corpus)
        metrics.update({f"{cond}_{k}": v for k, v in cm.items()})
        details["conditions"][cond] = cd
    if params.control == "shuffled":
        metrics["single_token_frac_diff"] = (metrics["shuffled_single_token_frac"]
                                             - metrics["trained_single_token_frac"])
    return SeedResult(seed=seed, metrics=metrics, details=details)


def train_condition(ctx: RunContext, params: SaeParams, seed: int, cond: str, model: HookedModel,
                    train_tokens: Tensor, eval_tokens: Tensor, corpus: SyntheticCorpus
                    ) -> tuple[dict[str, float], dict[str, Any]]:
    """Train and evaluate one SAE on `model` (trained or shuffled); save it; return metrics and details."""
    recipe = params.sae
    acts = activations(model, train_tokens, recipe.hook, batch_size=params.model_batch_size,
                       out_device="cpu")  # [N_train * T, d]
    eval_acts = activations(model, eval_tokens, recipe.hook, batch_size=params.model_batch_size,
                            out_device="cpu")  # [N_eval * T, d]
    d_in = acts.shape[1]
    d_sae = recipe.d_sae or recipe.expansion * d_in
    if recipe.architecture == "topk" and recipe.k > d_sae:
        raise InvalidInput(f"k={recipe.k} exceeds d_sae={d_sae}; lower k or raise expansion")
    model_name = ctx.model_ref if cond == "trained" else f"{ctx.model_ref} (weights shuffled, seed {seed})"
    cfg = recipe.config(d_in, seed, model_name=model_name, dataset_path=ctx.data_ref, context_size=corpus.seq_len)

    def log_row(step: int, row: dict[str, float]) -> None:
        ctx.log_metrics(step, {k: v for k, v in row.items() if k != "step"}, condition=cond)

    t0 = time.monotonic()
    sae, _ = train_sae(cfg, acts, device=str(model.device), log_every=params.log_every, on_log=log_row,
                       progress=lambda it: ctx.progress(it, total=recipe.steps, desc=f"{cond} SAE"))
    train_s = time.monotonic() - t0
    report = evaluate_sae(sae, eval_acts.to(sae.W_enc.device), eval_tokens.reshape(-1))
    n_ce = min(len(eval_tokens), math.ceil(params.ce_tokens / eval_tokens.shape[1]))
    ce = ce_loss_recovered(model, sae, eval_tokens[:n_ce], recipe.hook, batch_size=params.model_batch_size)
    folder = save_sae(sae, ctx.artifact(f"sae_{cond}/seed{seed}/"))
    m = {**report.metrics, **ce}
    ctx.log(f"{cond}: L0 {m['l0']:.2f}, FVE {m['fve']:.3f}, CE recovered {m['ce_recovered']:.3f}, "
            f"dead {m['dead_frac']:.3f}, single-token {m['single_token_frac']:.3f} ({train_s:.1f}s)")
    live = report.freq > 0
    order = report.freq.argsort(descending=True)
    top = [int(i) for i in order[:20] if live[i]]
    details = {
        "sae_folder": str(folder.relative_to(ctx.artifacts_dir)),
        "train_seconds": round(train_s, 2),
        "config": cfg.model_dump(mode="json"),
        "top_token_share": [round(float(s), 4) for s in report.top_token_share[live]],
        "most_frequent_latents": [
            {"latent": i, "freq": round(float(report.freq[i]), 5),
             "top_token": model.decode([int(report.top_token[i])])[0],
             "top_token_share": round(float(report.top_token_share[i]), 3)} for i in top],
    }
    return m, details


def summarize(ctx: RunContext, params: SaeParams, results: list[SeedResult]) -> dict[str, Any]:
    """The PNG comparing the conditions, and the per-seed difference."""
    conds = [c for c in CONDITIONS if all(c in r.details.get("conditions", {}) for r in results)]
    if not conds:
        return {}
    path = ctx.artifact("single_token_share.png")
    plot_single_token_share(path, results, conds, title=f"{params.sae.architecture} SAE at {params.sae.hook}")
    out: dict[str, Any] = {"plot": path.name}
    if "shuffled" in conds:
        out["single_token_frac_diff"] = [r.metrics["single_token_frac_diff"] for r in results]
    return out
