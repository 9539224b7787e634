"""One seed of `emergence`: for every model size and chosen checkpoint, one SAE per depth (sweep.py) and every
category's best-latent score on held-out tokens, the score table and its analysis (analysis.py), and the
seed's table of cells; after all seeds, the heatmap of the mean table (plots.py), its JSON and the notes."""
from __future__ import annotations

import csv
import math
import time
from typing import Any

from claimgraph.experiments.context import RunContext, resolve_device, torch_threads, write_json_atomic
from claimgraph.experiments.job import SeedResult
from claimgraph.experiments.sae.recipe import EVAL_SEED_OFFSET
from claimgraph.experiments.spec import variance_note
from claimgraph.experiments.substrate.corpus import get_corpus
from claimgraph.experiments.substrate.load import list_checkpoints, model_corpus
from claimgraph.graph.errors import InvalidInput

from . import EmergenceParams
from .analysis import EmergenceReport, ScoreTable, SizeScores, analyse, mean_table
from .plots import heatmap
from .sweep import assemble, category_labels, pick_checkpoints, sweep_size, token_alone_f1


def run_seed(ctx: RunContext, params: EmergenceParams, seed: int) -> SeedResult:
    with torch_threads(params.threads):
        return _run_seed(ctx, params, seed)


def _run_seed(ctx: RunContext, params: EmergenceParams, seed: int) -> SeedResult:
    device = resolve_device(ctx.device)
    refs = model_refs(ctx, params)
    corpora = (model_corpus(r) for r in refs)
    data_ref = ctx.data_ref or next((f"synthetic:{c.name}" for c in corpora if c is not None), None)
    if data_ref is None:
        raise InvalidInput("no data reference for hf models; give --data synthetic:<preset> (the category "
                           "labels come from the synthetic corpus)")
    corpus = get_corpus(data_ref)
    eval_tokens = corpus.sample(math.ceil(params.eval_tokens / corpus.seq_len), seed + EVAL_SEED_OFFSET)
    recipe = params.sae
    model_seed = seed if params.model_seeds == "per_replicate" else None
    seeds_of = {r: model_seed if r.startswith("toy:") else None for r in refs}  # one pretrained hf model each
    plan = {r: checkpoints_of(r, params, seeds_of[r]) for r in refs}
    token_f1 = token_alone_f1(eval_tokens, category_labels(corpus, eval_tokens, params.categories), len(corpus.vocab))
    ctx.log("token-alone F1: " + ", ".join(f"{c} {f:.2f}" for c, f in zip(params.categories, token_f1)))
    n_cells = sum(len(c) for c in plan.values())
    ctx.log(f"emergence sweep on {data_ref}: {', '.join(f'{r} at {plan[r]}' for r in refs)}; "
            f"{len(params.categories)} categories; {recipe.architecture} SAEs x{recipe.expansion}, "
            f"{recipe.steps} steps; one SAE per depth at each of {n_cells} checkpoints")
    t0 = time.monotonic()
    sizes: list[SizeScores] = []
    rows: list[dict[str, Any]] = []

    def on_cell(row: dict[str, Any]) -> None:
        step = int(row["checkpoint"]) if row["checkpoint"].isdigit() else 0  # hf revisions: step 0
        ctx.log_metrics(step, {"score": row["score"], "auroc": row["auroc"], "f1": row["f1"]},
                        model=row["model"], checkpoint=row["checkpoint"], depth=row["depth"],
                        category=row["category"])

    for ref in ctx.progress(refs, total=len(refs), desc="model sizes"):
        size, size_rows = sweep_size(ref, plan[ref], corpus, data_ref, recipe, params.categories, seed,
                                     eval_tokens=eval_tokens, device=device, score=params.score,
                                     batch_size=params.model_batch_size, log=ctx.log, on_cell=on_cell,
                                     model_seed=seeds_of[ref])
        sizes.append(size)
        rows += size_rows
        ctx.log(f"{ref}: {size.n_params} parameters, checkpoints {size.checkpoints}, {len(size.hooks)} depths "
                f"({time.monotonic() - t0:.0f}s)")
    table = assemble(sizes, params.categories, params.score, token_f1)
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
                               "model_seed": {r: int(v or 0) for r, v in seeds_of.items()},
                               "models": {s.model: s.trained for s in sizes},
                               "sweep_seconds": round(time.monotonic() - t0, 1)})


def model_refs(ctx: RunContext, params: EmergenceParams) -> list[str]:
    """The spec's model, then the other sizes."""
    if ctx.model_ref is None and not params.sizes:
        raise InvalidInput("the emergence job needs a model: give --model toy:<preset> or hf:/dir, or sizes")
    refs = ([ctx.model_ref] if ctx.model_ref else []) + [r for r in params.sizes if r != ctx.model_ref]
    return refs


def checkpoints_of(ref: str, params: EmergenceParams, model_seed: int | None = None) -> list[int | str | None]:
    """The checkpoints swept for one model size: for a toy, n_checkpoints of its saved steps after step 0 (the
    time axis starts at the first checkpoint after initialisation, where something has been learnt)."""
    if params.checkpoints is not None:
        return list(params.checkpoints)
    if ref.startswith("hf:"):
        return [None]  # the model as referenced (hf:/dir@rev names one revision)
    return [*pick_checkpoints([s for s in list_checkpoints(ref, model_seed) if s > 0], params.n_checkpoints)]


def summarize(ctx: RunContext, params: EmergenceParams, results: list[SeedResult]) -> dict[str, Any]:
    """The heatmap of the mean scores over seeds, the JSON of exactly that matrix and its analysis, the
    table of every seed's cells, and notes on what the numbers mean."""
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
        writer: csv.DictWriter[str] | None = None
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


def notes(table: ScoreTable, report: EmergenceReport, params: EmergenceParams, n_seeds: int) -> str:
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
    context = [c for c, needs in zip(table.categories, table.needs_context(params.threshold)) if needs]
    tok = ", ".join(f"{c} {f:.2f}" for c, f in zip(table.categories, table.token_f1 or []))
    lines = [
        f"Token-alone F1 (the current token as the only input): {tok or 'not measured'}; emergence is tested on the "
        f"{len(context)} categories below {params.threshold:g}, which need context: {', '.join(context) or 'none'}.",
        f"Sweep ({n_seeds} seed{'s' * (n_seeds != 1)}, scores averaged for the heatmap): {sizes}; checkpoints "
        f"{ckpts}. Present = best-latent {table.score_name} >= {params.threshold:g}; re-emergence margin "
        f"{params.margin:g}. {params.sae.architecture} SAEs, {params.sae.expansion}x d_model latents"
        f"{f', k={params.sae.k}' if params.sae.architecture == 'topk' else ''}, {params.sae.steps} steps.",
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
        variance_note((["model seeds (each replicate sweeps its own trained toy models: init and data order)"]
                       if params.model_seeds == "per_replicate" and any(s.model.startswith("toy:")
                                                                         for s in table.sizes) else []) +
                      ["SAE seeds", "data samples (SAE training and held-out tokens drawn per seed)"], n_seeds),
    ]
    return "\n".join(lines)
