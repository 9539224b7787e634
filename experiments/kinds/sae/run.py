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
from claimgraph.experiments.sae.provision import provision_sae, training_activations
from claimgraph.experiments.sae.recipe import EVAL_SEED_OFFSET
from claimgraph.experiments.substrate.acts_cache import cached_activations
from claimgraph.experiments.substrate.corpus import SyntheticCorpus
from claimgraph.experiments.substrate.hooks import HookedModel
from claimgraph.experiments.substrate.lm import setting_note
from claimgraph.experiments.substrate.load import activations, check_fit, corpus_for, load_model, shuffled_copy
from claimgraph.experiments.substrate.text import is_text, record_corpus
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
    record_corpus(ctx.artifacts_dir, corpus)
    n_train = math.ceil(recipe.train_tokens / corpus.seq_len)
    n_eval = math.ceil(params.eval_tokens / corpus.seq_len)
    if is_text(corpus):  # fixed slices through the activation cache: train windows [0, n), eval windows [0, n)
        train_tokens = corpus.window_slice("train", 0, n_train)  # [n_train, T]
        eval_tokens = corpus.window_slice("eval", 0, n_eval)  # [n_eval, T] held-out documents
    else:
        train_tokens = corpus.sample(n_train, seed)  # [n_train, T]
        eval_tokens = corpus.sample(n_eval, seed + EVAL_SEED_OFFSET)  # [n_eval, T]
    ctx.log(f"{recipe.architecture} SAE at {recipe.hook}: {n_train * corpus.seq_len} training and "
            f"{n_eval * corpus.seq_len} eval tokens from {corpus.name or ctx.data_ref}")

    conditions = {"trained": model}
    if params.control == "shuffled":
        conditions["shuffled"] = shuffled_copy(model, seed)
    metrics: dict[str, float] = {}
    cache = getattr(model, "cache_path", None)
    if is_text(corpus):
        ctx.log(f"text corpus {corpus.ref}: manifest {corpus.manifest['documents_sha256'][:12]}, "
                f"{corpus.manifest['documents']} documents")
    details: dict[str, Any] = {"hook": recipe.hook, "conditions": {},
                               "model": {"ref": ctx.model_ref, "step": getattr(model, "step", None),
                                         "cache_key": cache.name if cache is not None else None}}
    for cond, m in conditions.items():
        cm, cd = train_condition(ctx, params, seed, cond, m, train_tokens, eval_tokens, corpus)
        metrics.update({f"{cond}_{k}": v for k, v in cm.items()})
        details["conditions"][cond] = cd
    if params.control == "shuffled":
        metrics.update(condition_diffs(metrics))
    return SeedResult(seed=seed, metrics=metrics, details=details)


def condition_diffs(metrics: dict[str, float]) -> dict[str, float]:
    """The shuffled-minus-trained differences the criteria read, from one seed's `<cond>_<metric>` values."""
    return {f"{name}_diff": metrics[f"shuffled_{name}"] - metrics[f"trained_{name}"]
            for name in ("single_token_frac", "single_token_frac_common", "token_r2")}


def train_condition(ctx: RunContext, params: SaeParams, seed: int, cond: str, model: HookedModel,
                    train_tokens: Tensor, eval_tokens: Tensor, corpus: SyntheticCorpus
                    ) -> tuple[dict[str, float], dict[str, Any]]:
    """Train and evaluate one SAE on `model` (trained or shuffled); save it; return metrics and details."""
    recipe = params.sae
    eval_ids = eval_tokens.reshape(-1)  # [N_eval * T]
    if is_text(corpus):  # cached; document separators left out (an outlier residual, no text there)
        acts = training_activations(model, corpus, recipe, seed, batch_size=params.model_batch_size)
        keep = eval_ids != int(corpus.manifest["separator_id"])
        eval_acts = cached_activations(model, corpus, recipe.hook, split="eval", start=0, stop=len(eval_tokens),
                                       batch_size=min(params.model_batch_size, 16)).tensor()[keep]
        eval_ids = eval_ids[keep]
    else:
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
    if is_text(corpus) and cond == "trained":  # the SAE the feature jobs read (same recipe, data and seed)
        sae, provisioned = provision_sae(model, ctx.model_ref or "", corpus, ctx.data_ref or "", recipe, seed,
                                         log=ctx.log, batch_size=params.model_batch_size,
                                         progress=lambda it: ctx.progress(it, total=recipe.steps, desc="trained SAE"))
        ctx.log(f"trained-model SAE shared with the feature jobs: {provisioned}")
    else:
        sae, _ = train_sae(cfg, acts, device=str(model.device), log_every=params.log_every, on_log=log_row,
                           progress=lambda it: ctx.progress(it, total=recipe.steps, desc=f"{cond} SAE"))
    train_s = time.monotonic() - t0
    report = evaluate_sae(sae, eval_acts.to(sae.W_enc.device), eval_ids)
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
        out["single_token_frac_common_diff"] = [r.metrics["single_token_frac_common_diff"] for r in results]

        def per_seed(name: str, fmt: str = ".3f") -> str:
            return ", ".join(format(r.metrics[name], fmt) for r in results)

        cond_parts = "; ".join(
            f"{c}: single-token {per_seed(f'{c}_single_token_frac_common')} of {per_seed(f'{c}_n_common', '.0f')} "
            f"latents with >= 20 activations, token R^2 {per_seed(f'{c}_token_r2')}, L0 {per_seed(f'{c}_l0', '.1f')}, "
            f"FVE {per_seed(f'{c}_fve')}, CE recovered {per_seed(f'{c}_ce_recovered')}, dense "
            f"{per_seed(f'{c}_dense_frac')}" for c in conds)
        out["notes"] = (f"{params.sae.architecture} SAEs at {params.sae.hook} of the trained model and of a copy with "
                        f"its weight matrices shuffled, per seed: {cond_parts}. Differences (shuffled - trained): "
                        f"single-token (common latents) {per_seed('single_token_frac_common_diff')}, token R^2 "
                        f"{per_seed('token_r2_diff')}, single-token (all live latents) "
                        f"{per_seed('single_token_frac_diff')}. The interval covers SAE seeds (and the shuffle)."
                        + setting_note(ctx.model_ref, ctx.data_ref))
    return out
