"""Job kind `emergence`: do planted categorical features emerge at thresholds of training time, layer depth and
model size, and do they re-emerge in later layers? (the summary seed's two claims)

For every model size (the spec's model plus `sizes`, ordered by parameter count), every chosen checkpoint and
every depth of the residual stream (embedding output, then each block's output; why in
claimgraph.experiments.kinds.emergence.sweep), a TopK SAE is provisioned through the shared SAE cache
(a re-run loads it), and for each category the best latent's detection score (F1 by default) is measured on
held-out tokens. The definitions of crossing, re-emergence and the metrics are in
claimgraph.experiments.kinds.emergence.analysis; in short a category *emerges* along an axis when its score starts
below `threshold` and reaches it later, and *re-emerges* when across depth it is present, drops below the
threshold by at least `margin`, and comes back by at least `margin`.

Artifacts: `emergence_heatmap.png` (mean over seeds), `emergence_scores.json` (exactly the matrix drawn, with
the analysis of it), `emergence_table.csv` (one row per seed, size, checkpoint, depth and category: the best
latent, its F1 / precision / recall / AUROC), and per seed `seed<k>/scores.json`.

Categories (default): the span labels base64_span, arabic_span, paren_span and induction (positions whose
reading needs context) and the token categories function, color, animal, number_word, verb, first_name and
digit (readable from the token alone). Note that `induction` positions are mostly surname tokens, so a
last-name token latent detects them partly.

Claim (2) is tested by another experiment of this kind with `--criterion "reemergence_fraction > 0.1 band=0.05"`
(`EmergenceJob.reemergence_criterion`), registered with the reasoning below.

Torch is imported inside `run` and `summarize` only.
"""
from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from claimgraph.experiments.job import Job, JobParams, SeedResult
from claimgraph.experiments.spec import Criterion
from claimgraph.graph.errors import InvalidInput

DEFAULT_CATEGORIES = ["base64_span", "arabic_span", "paren_span", "induction", "cat:function", "cat:color",
                      "cat:animal", "cat:number_word", "cat:verb", "cat:first_name", "cat:digit"]
_MODEL_REF = re.compile(r"(toy:[A-Za-z0-9_-]+|hf:/.+)")


class EmergenceParams(JobParams):
    sizes: list[str] = ["toy:small", "toy:medium"]  # model sizes swept beside the spec's model (toy:<preset> or
    #                                                 hf:/dir); [] sweeps the spec's model alone (no scale axis)
    checkpoints: list[int | str] | None = None  # the same explicit checkpoints for every size (toy steps, hf
    #                                             revisions); None: n_checkpoints per toy size, hf as referenced
    n_checkpoints: int = Field(6, ge=2)  # toy checkpoints picked from the saved ones, log-spaced, ends included
    categories: list[str] = Field(default_factory=lambda: list(DEFAULT_CATEGORIES), min_length=1)  # span-label keys
    score: Literal["f1", "auroc"] = "f1"  # detection score of the best latent per category
    threshold: float = Field(0.5, ge=0.0, le=1.0)  # a category is present where its score >= this (F1 0.5:
    #                                                the latent is right on its firings at least as often as wrong)
    margin: float = Field(0.1, ge=0.0, le=1.0)  # re-emergence needs a fall and a rise of at least this
    architecture: Literal["topk", "relu"] = "topk"  # topk: the same L0 at every cell, so cells are comparable
    k: int = Field(8, ge=1)  # latents kept per token (topk)
    expansion: int = Field(4, ge=1)  # d_sae = expansion * d_model
    l1_coefficient: float = Field(1.0, ge=0.0)  # relu only
    steps: int = Field(400, ge=1)  # SAE optimiser steps per cell
    batch_size: int = Field(256, ge=1)  # activation vectors per SAE step
    lr: float = Field(1e-3, gt=0.0)  # SAE Adam learning rate
    train_tokens: int = Field(32_768, ge=1)  # SAE training activations per cell (whole sequences)
    eval_tokens: int = Field(16_384, ge=1)  # held-out tokens the detection scores are measured on
    model_batch_size: int = Field(64, ge=1)  # sequences per model forward pass
    threads: int | None = Field(1, ge=1)  # torch CPU threads (small matmuls on shared cores: one is fastest)

    @field_validator("sizes")
    @classmethod
    def _refs(cls, v: list[str]) -> list[str]:
        bad = [r for r in v if not _MODEL_REF.fullmatch(r)]
        if bad:
            raise ValueError(f"sizes {bad} are not model references 'toy:<preset>' or 'hf:/abs/dir'")
        if len(set(v)) != len(v):
            raise ValueError(f"sizes {v} repeat a model")
        return v

    @field_validator("categories")
    @classmethod
    def _categories(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"categories {v} repeat a name")
        return v

    @model_validator(mode="after")
    def _sizes(self) -> "EmergenceParams":
        if self.train_tokens < self.batch_size:
            raise ValueError(f"train_tokens={self.train_tokens} is smaller than batch_size={self.batch_size}")
        if self.score == "auroc" and self.threshold < 0.5:
            raise ValueError(f"threshold {self.threshold} is below AUROC chance (0.5); pick e.g. 0.9")
        return self

    def recipe(self):
        """The SAE recipe of every cell (the hook is set per depth)."""
        from claimgraph.experiments.sae.recipe import SaeRecipe

        return SaeRecipe(architecture=self.architecture, k=self.k, expansion=self.expansion,
                         l1_coefficient=self.l1_coefficient, steps=self.steps, batch_size=self.batch_size,
                         lr=self.lr, train_tokens=self.train_tokens)


class EmergenceJob(Job):
    kind = "emergence"
    summary = ("SAEs across checkpoints, layers and model sizes: where each planted category's best latent "
               "crosses a detection threshold, and whether it re-emerges in later layers (heatmap + table)")
    Params = EmergenceParams
    default_seeds = [0]  # one sweep (~60 SAEs) per seed; the models are fixed, a seed changes the SAEs only
    # Claim (1), "features emerge at specific thresholds of time, space and scale", names all three axes, so the
    # metric is the smallest of the three axes' crossing fractions (registered before any sweep was run). It
    # is supported when on every axis more than half of the (category, size) pairs / categories cross: a
    # general claim about features should hold for most of the planted ones. The band, 0.1, is about one
    # category of the 11 on the scale axis (the coarsest), so a verdict never hangs on one category's
    # crossing: supported above 0.6, refuted below 0.4.
    default_criterion = Criterion(metric="emergence_fraction_min", op=">", threshold=0.5, band=0.1)
    # Claim (2), "features can re-emerge in later layers": one (category, size) pair in 33 (0.03) could be a
    # single noisy SAE, so re-emergence must be a pattern: supported when more than 0.15 of the pairs
    # re-emerge (at least 5 of 33), refuted below 0.05 (at most one).
    reemergence_criterion = Criterion(metric="reemergence_fraction", op=">", threshold=0.1, band=0.05)
    metrics = {
        "emergence_fraction_min": "min of time/depth/scale_threshold_fraction (claim 1; needs all three axes)",
        "time_threshold_fraction": "(category, size) pairs below threshold at the first checkpoint that reach it later",
        "depth_threshold_fraction": "(category, size) pairs below threshold at the embedding that reach it deeper "
                                    "(final checkpoint)",
        "scale_threshold_fraction": "categories below threshold in the smallest model that reach it in a larger one",
        "reemergence_count": "(category, size) pairs present, lost by >= margin and back by >= margin across depth",
        "reemergence_fraction": "reemergence_count / (category, size) pairs with at least 3 depths (claim 2)",
        "final_present_fraction": "categories present somewhere in the largest model at its final checkpoint",
    }

    def run(self, ctx: Any, params: EmergenceParams, seed: int) -> SeedResult:
        from claimgraph.experiments.context import torch_threads

        with torch_threads(params.threads):
            return self._run(ctx, params, seed)

    def _models(self, ctx: Any, params: EmergenceParams) -> list[str]:
        if ctx.model_ref is None and not params.sizes:
            raise InvalidInput("the emergence job needs a model: give --model toy:<preset> or hf:/dir, or sizes")
        refs = ([ctx.model_ref] if ctx.model_ref else []) + [r for r in params.sizes if r != ctx.model_ref]
        return refs

    def _checkpoints(self, ref: str, params: EmergenceParams) -> list[int | str | None]:
        from claimgraph.experiments.kinds.emergence.sweep import pick_checkpoints
        from claimgraph.experiments.substrate.load import list_checkpoints

        if params.checkpoints is not None:
            return list(params.checkpoints)
        if ref.startswith("hf:"):
            return [None]  # the model as referenced (hf:/dir@rev names one revision)
        return pick_checkpoints(list_checkpoints(ref), params.n_checkpoints)

    def _run(self, ctx: Any, params: EmergenceParams, seed: int) -> SeedResult:
        import csv
        import time

        from claimgraph.experiments.context import write_json_atomic
        from claimgraph.experiments.kinds.emergence.analysis import analyse
        from claimgraph.experiments.kinds.emergence.sweep import assemble, sweep_size
        from claimgraph.experiments.kinds.sae import EVAL_SEED_OFFSET
        from claimgraph.experiments.substrate.corpus import get_corpus
        from claimgraph.experiments.substrate.load import model_corpus, resolve_device

        device = resolve_device(ctx.device)
        refs = self._models(ctx, params)
        data_ref = ctx.data_ref or next((f"synthetic:{model_corpus(r).name}" for r in refs if model_corpus(r)), None)
        if data_ref is None:
            raise InvalidInput("no data reference for hf models; give --data synthetic:<preset> (the category "
                               "labels come from the synthetic corpus)")
        corpus = get_corpus(data_ref)
        eval_tokens = corpus.sample(math.ceil(params.eval_tokens / corpus.seq_len), seed + EVAL_SEED_OFFSET)
        recipe = params.recipe()
        plan = {r: self._checkpoints(r, params) for r in refs}
        n_cells = sum(len(c) for c in plan.values())
        ctx.log(f"emergence sweep on {data_ref}: {', '.join(f'{r} at {plan[r]}' for r in refs)}; "
                f"{len(params.categories)} categories; {recipe.architecture} SAEs x{recipe.expansion}, "
                f"{recipe.steps} steps; one SAE per depth at each of {n_cells} checkpoints")
        t0 = time.monotonic()
        sizes, rows = [], []

        def on_cell(row: dict[str, Any]) -> None:
            step = int(row["checkpoint"]) if row["checkpoint"].isdigit() else 0  # hf revisions: step 0
            ctx.log_metrics(step, {"score": row["score"], "auroc": row["auroc"], "f1": row["f1"]},
                            model=row["model"], checkpoint=row["checkpoint"], depth=row["depth"],
                            category=row["category"])

        for ref in ctx.progress(refs, total=len(refs), desc="model sizes"):
            size, size_rows = sweep_size(ref, plan[ref], corpus, data_ref, recipe, params.categories, seed,
                                         eval_tokens=eval_tokens, device=device, score=params.score,
                                         batch_size=params.model_batch_size, log=ctx.log, on_cell=on_cell)
            sizes.append(size)
            rows += size_rows
            ctx.log(f"{ref}: {size.n_params} parameters, checkpoints {size.checkpoints}, {len(size.hooks)} depths "
                    f"({time.monotonic() - t0:.0f}s)")
        table = assemble(sizes, params.categories, params.score)
        report = analyse(table, params.threshold, params.margin)
        write_json_atomic(ctx.artifact(f"seed{seed}/scores.json"),
                          {"table": table.model_dump(mode="json"), "report": report.model_dump(mode="json")})
        with open(ctx.artifact(f"seed{seed}/emergence_table.csv"), "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["seed", *rows[0]])
            writer.writeheader()
            writer.writerows({"seed": seed, **r} for r in rows)
        ctx.log("metrics: " + ", ".join(f"{k} {v:.3g}" for k, v in report.metrics.items()) +
                f" ({time.monotonic() - t0:.0f}s)")
        return SeedResult(seed=seed, metrics=report.metrics,
                          details={"table": table.model_dump(mode="json"), "data": data_ref,
                                   "sweep_seconds": round(time.monotonic() - t0, 1)})

    def summarize(self, ctx: Any, params: EmergenceParams, results: list[SeedResult]) -> dict[str, Any]:
        """The heatmap of the mean scores over seeds, the JSON of exactly that matrix and its analysis, the
        table of every seed's cells, and notes on what the numbers mean."""
        import csv

        from claimgraph.experiments.context import write_json_atomic
        from claimgraph.experiments.kinds.emergence.analysis import analyse
        from claimgraph.experiments.kinds.emergence.plots import heatmap

        if not results:
            return {}
        table = mean_table([r.details["table"] for r in results])
        report = analyse(table, params.threshold, params.margin)
        fig = heatmap(table, params.threshold)
        fig.savefig(ctx.artifact("emergence_heatmap.png"), dpi="figure")
        write_json_atomic(ctx.artifact("emergence_scores.json"),
                          {"seeds": [r.seed for r in results], "threshold": params.threshold,
                           "margin": params.margin, "table": table.model_dump(mode="json"),
                           "report": report.model_dump(mode="json")})
        out_csv = ctx.artifact("emergence_table.csv")
        with open(out_csv, "w", newline="") as fh:
            writer = None
            for r in results:
                part = ctx.artifacts_dir / f"seed{r.seed}" / "emergence_table.csv"
                if not part.is_file():
                    continue
                with open(part, newline="") as src:
                    for row in csv.DictReader(src):
                        if writer is None:
                            writer = csv.DictWriter(fh, fieldnames=list(row))
                            writer.writeheader()
                        writer.writerow(row)
        return {"plot": "emergence_heatmap.png", "scores": "emergence_scores.json", "table": "emergence_table.csv",
                "metrics_of_mean": report.metrics, "notes": notes(table, report, params, len(results))}


def mean_table(tables: list[dict[str, Any]]):
    """The cell-wise mean of per-seed score tables (same sizes, checkpoints, depths, categories)."""
    from claimgraph.experiments.kinds.emergence.analysis import ScoreTable

    parsed = [ScoreTable.model_validate(t) for t in tables]
    first = parsed[0]
    for t in parsed[1:]:
        same = (t.categories == first.categories and
                [(s.model, s.checkpoints, s.hooks) for s in t.sizes] ==
                [(s.model, s.checkpoints, s.hooks) for s in first.sizes])
        assert same, "seeds swept different grids; they cannot be averaged"
    sizes = []
    for si, s in enumerate(first.sizes):
        score = [[[sum(t.sizes[si].score[a][b][c] for t in parsed) / len(parsed) for c in range(len(first.categories))]
                  for b in range(len(s.hooks))] for a in range(len(s.checkpoints))]
        sizes.append(s.model_copy(update={"score": score}))
    return first.model_copy(update={"sizes": sizes})


def notes(table: Any, report: Any, params: EmergenceParams, n_seeds: int) -> str:
    """What the numbers mean and what might change them, for the evidence text."""
    m = report.metrics
    sizes = " < ".join(f"{s.model} ({s.n_params / 1e3:.0f}k params, {len(s.hooks)} depths)" for s in table.sizes)
    ckpts = "; ".join(f"{s.model}: {', '.join(s.checkpoints)}" for s in table.sizes)

    def crossed(axis: str) -> str:
        hits = [e for e in report.emergence if e.axis == axis and e.index is not None]
        if not hits:
            return "none"
        return ", ".join(f"{e.category}{'@' + e.size if e.size else ''} at {e.at}" for e in hits)

    def frac(name: str) -> str:
        return f"{m[name]:.2f}" if name in m else "n/a"

    present_at_start = sorted({e.category for e in report.emergence
                               if e.axis == "depth" and e.series and e.series[0] >= params.threshold})
    lines = [
        f"Sweep ({n_seeds} seed{'s' * (n_seeds != 1)}, scores averaged for the heatmap): {sizes}; checkpoints "
        f"{ckpts}. Present = best-latent {table.score_name} >= {params.threshold:g}; re-emergence margin "
        f"{params.margin:g}. {params.architecture} SAEs, {params.expansion}x d_model latents"
        f"{f', k={params.k}' if params.architecture == 'topk' else ''}, {params.steps} steps.",
        (f"Time: fraction {frac('time_threshold_fraction')} (crossings: {crossed('time')})."
         if "time_threshold_fraction" in m else "Time: not measured (one checkpoint per size)."),
        (f"Depth (final checkpoint): fraction {frac('depth_threshold_fraction')} (crossings: {crossed('depth')}); "
         f"already present at the embedding: {', '.join(present_at_start) or 'none'}."
         if "depth_threshold_fraction" in m else "Depth: not measured (one depth)."),
        (f"Scale (final checkpoints): fraction {frac('scale_threshold_fraction')} (crossings: {crossed('scale')})."
         if "scale_threshold_fraction" in m else "Scale: not measured (one model size)."),
        f"Re-emergence across depth at the final checkpoint: {int(m.get('reemergence_count', 0))} "
        f"(fraction {frac('reemergence_fraction')})"
        + (": " + ", ".join(f"{r.category}@{r.size} depths {r.depths}" for r in report.reemergence)
           if report.reemergence else "") + ".",
        "What could change it: the checkpoints are log-spaced and few, so a crossing is located only to the "
        "interval between two of them (more checkpoints would place it, and show whether the rise is abrupt or "
        "gradual; crossing a fixed threshold does not by itself show a sharp transition); the toy sizes span a "
        "small range (larger or more sizes may cross categories the small ones lack); SAE width grows with "
        "d_model, so a larger model also gets more latents to pick the best from; a category already present at "
        "the first point of an axis (token categories at the embedding, or in the smallest model) cannot cross "
        "on it; with 2-3 layers a model has only 3-4 depths for a fall and a rise.",
    ]
    return "\n".join(lines)
