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
from .analysis import EmergenceReport, ScoreTable, SizeScores, analyse, depth_of, mean_table
from .plots import heatmap
from .sweep import (
    assemble,
    category_labels,
    pick_checkpoints,
    sweep_size,
    sweep_text,
    text_token_f1,
    token_alone_f1,
)


def run_seed(ctx: RunContext, params: EmergenceParams, seed: int) -> SeedResult:
    with torch_threads(params.threads):
        return _run_seed(ctx, params, seed)


def _run_seed(ctx: RunContext, params: EmergenceParams, seed: int) -> SeedResult:
    if (ctx.data_ref or "").startswith("text:"):
        return _run_seed_text(ctx, params, seed)
    device = resolve_device(ctx.device)
    refs = model_refs(ctx, params)
    corpora = (model_corpus(r) for r in refs)
    data_ref = ctx.data_ref or next((f"synthetic:{c.name}" for c in corpora if c is not None), None)
    if data_ref is None:
        raise InvalidInput("no data reference for hf models; give --data synthetic:<preset> (the category "
                           "labels come from the synthetic corpus) or text:<recipe>")
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
    for ref in ctx.progress(refs, total=len(refs), desc="model sizes"):
        size, size_rows = sweep_size(ref, plan[ref], corpus, data_ref, recipe, params.categories, seed,
                                     eval_tokens=eval_tokens, device=device, score=params.score,
                                     batch_size=params.model_batch_size, log=ctx.log, on_cell=_metrics_logger(ctx),
                                     model_seed=seeds_of[ref], depths=params.depths)
        sizes.append(size)
        rows += size_rows
        ctx.log(f"{ref}: {size.n_params} parameters, checkpoints {size.checkpoints}, {len(size.hooks)} depths "
                f"({time.monotonic() - t0:.0f}s)")
    return _seed_result(ctx, params, seed, sizes, rows, token_f1, t0,
                        {"data": data_ref, "model_seed": {r: int(v or 0) for r, v in seeds_of.items()}})


def _run_seed_text(ctx: RunContext, params: EmergenceParams, seed: int) -> SeedResult:
    """One seed on a real-text corpus: the spec's one model (lm: or hf:), its checkpoints and chosen depths."""
    from claimgraph.experiments.substrate.load import corpus_for
    from claimgraph.experiments.substrate.text import record_corpus

    from .textcats import check_categories

    if ctx.model_ref is None or ctx.model_ref.startswith("toy:") or params.sizes:
        raise InvalidInput(f"on {ctx.data_ref} the sweep reads one lm: or hf: model (--model) and sizes=[]; got "
                           f"model {ctx.model_ref} and sizes {params.sizes}")
    check_categories(params.categories)
    device = resolve_device(ctx.device)
    corpus, data_ref = corpus_for(ctx.model_ref, ctx.data_ref)
    record_corpus(ctx.artifacts_dir, corpus)
    token_f1 = text_token_f1(corpus, params.categories)
    ctx.log("token-alone F1 (token sets ranked on the train split, scored on the eval split): "
            + ", ".join(f"{c} {f:.2f}" for c, f in zip(params.categories, token_f1)))
    ckpts = list(params.checkpoints) if params.checkpoints is not None else [None]
    recipe = params.sae
    ctx.log(f"emergence sweep on {data_ref}: {ctx.model_ref} at {ckpts}, depths "
            f"{params.depths if params.depths is not None else 'all'}; {len(params.categories)} categories; "
            f"{recipe.architecture} SAEs x{recipe.expansion}, {recipe.steps} steps on {recipe.train_tokens} tokens; "
            f"scored on {params.eval_tokens} held-out tokens")
    t0 = time.monotonic()
    size, rows, read = sweep_text(ctx.model_ref, ckpts, corpus, data_ref, recipe, params.categories, seed,
                                  eval_tokens=params.eval_tokens, pool=params.text_pool, depths=params.depths,
                                  device=device, score=params.score, batch_size=min(params.model_batch_size, 16),
                                  log=ctx.log, on_cell=_metrics_logger(ctx))
    ctx.log(f"{ctx.model_ref}: {size.n_params} parameters, {len(size.hooks)} depths; positives in the scoring "
            f"windows: {read['positives']} ({time.monotonic() - t0:.0f}s)")
    return _seed_result(ctx, params, seed, [size], rows, token_f1, t0,
                        {"data": data_ref, "model_seed": {ctx.model_ref: 0}, "text": read})


def _metrics_logger(ctx: RunContext) -> Any:
    def on_cell(row: dict[str, Any]) -> None:
        step = int(row["checkpoint"]) if row["checkpoint"].isdigit() else 0  # hf revisions: step 0
        ctx.log_metrics(step, {"score": row["score"], "auroc": row["auroc"], "f1": row["f1"]},
                        model=row["model"], checkpoint=row["checkpoint"], depth=row["depth"],
                        category=row["category"])
    return on_cell


def _seed_result(ctx: RunContext, params: EmergenceParams, seed: int, sizes: list[SizeScores],
                 rows: list[dict[str, Any]], token_f1: list[float], t0: float, details: dict[str, Any]) -> SeedResult:
    """The seed's score table and its analysis, written as seed<k>/scores.json and seed<k>/emergence_table.csv."""
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
                      details={"table": table.model_dump(mode="json"), **details,
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
            "metrics_of_mean": report.metrics,
            "notes": notes(table, report, params, len(results), data_ref=ctx.data_ref,
                           spread=cell_spread([r.details["table"] for r in results]))}


def cell_spread(tables: list[dict[str, Any]]) -> float | None:
    """The median over cells of the SD across seeds of a cell's score (how much one SAE and sample move a
    cell; what a re-emergence margin has to beat); None with one seed."""
    if len(tables) < 2:
        return None
    parsed = [ScoreTable.model_validate(t) for t in tables]
    sds = []
    for si, s in enumerate(parsed[0].sizes):
        for a in range(len(s.checkpoints)):
            for b in range(len(s.hooks)):
                for c in range(len(parsed[0].categories)):
                    v = [t.sizes[si].score[a][b][c] for t in parsed]
                    m = sum(v) / len(v)
                    sds.append(math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)))
    return sorted(sds)[len(sds) // 2]


def notes(table: ScoreTable, report: EmergenceReport, params: EmergenceParams, n_seeds: int, *,
          data_ref: str | None = None, spread: float | None = None) -> str:
    """What the numbers mean and what might change them, for the evidence text."""
    m = report.metrics
    text = (data_ref or "").startswith("text:")
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
    how_tok = ("the best token set ranked on the train split, scored on the eval split" if text else
               "the current token as the only input")
    depths_of = {s.model: [depth_of(h) for h in s.hooks] for s in table.sizes}
    lines = [
        f"Token-alone F1 ({how_tok}): {tok or 'not measured'}; emergence is tested on the "
        f"{len(context)} categories below {params.threshold:g}, which need context: {', '.join(context) or 'none'}.",
        f"Sweep ({n_seeds} seed{'s' * (n_seeds != 1)}, scores averaged for the heatmap): {sizes}"
        + (f" at depths {', '.join(f'{k}: {v}' for k, v in depths_of.items())}" if params.depths is not None else "")
        + f"; checkpoints {ckpts}. Present = best-latent {table.score_name} >= {params.threshold:g}; re-emergence "
        f"margin {params.margin:g}. {params.sae.architecture} SAEs, {params.sae.expansion}x d_model latents"
        f"{f', k={params.sae.k}' if params.sae.architecture == 'topk' else ''}, {params.sae.steps} steps"
        + (f" of {params.sae.batch_size} on {params.sae.train_tokens} train-split tokens, scored on "
           f"{params.eval_tokens} eval-split tokens (windows drawn per seed from the first {params.text_pool:g}x as "
           "many of each split, whose activations come from one forward pass)" if text else "") + ".",
        (f"Time: fraction {frac('time_threshold_fraction')} (crossings: {crossed('time')})."
         if "time_threshold_fraction" in m else "Time: not measured (one checkpoint per size)."),
        (f"Depth (final checkpoint): fraction {frac('depth_threshold_fraction')} (crossings: {crossed('depth')}); "
         f"already present at the embedding: {', '.join(present_at_start) or 'none'}."
         if "depth_threshold_fraction" in m else "Depth: not measured (one depth, or no category needs context)."),
        (f"Scale (final checkpoints): fraction {frac('scale_threshold_fraction')} (crossings: {crossed('scale')})."
         if "scale_threshold_fraction" in m else "Scale: not measured (one model size)."),
        f"Re-emergence across depth at the final checkpoint: {int(m.get('reemergence_count', 0))} "
        f"(fraction {frac('reemergence_fraction')})"
        + (": " + ", ".join(f"{r.category}@{r.size} depths "
                            f"{'/'.join(str(depth_of(h)) for h in r.hooks)} (peak/dip/return)"
                            for r in report.reemergence) if report.reemergence else "") + "."
        + (f" A cell's score moves by a median SD of {spread:.3f} across seeds (SAE and sample)."
           if spread is not None else ""),
    ]
    if text:
        lines.append(
            "What could change it: the depths are a subset (a fall and rise between two swept depths is missed, "
            "and a dip at one depth can be one SAE's miss, which the margin and the seeds guard against only in "
            "part); the SAEs are small and trained on a few thousand tokens, so a wider SAE trained on more text "
            "may find a detector where these find none; rare categories have a few hundred positives or fewer "
            "in a seed's scoring windows; the labels come from character rules (text.py), so a category is what "
            "its rule marks; one pretrained model"
            + (" (4-bit weights dequantized to float32)" if any(s.model.startswith("lm:") for s in table.sizes) else "")
            + " and one corpus.")
        sources = ["SAE seeds (initialisation and batch order)",
                   "data samples (each seed's SAE training windows and scoring windows)"]
        lines.append(variance_note(sources, n_seeds) + " Not model seeds: " + ", ".join(s.model for s in table.sizes)
                     + " is one pretrained model, so the interval says nothing about other training runs of it.")
        return "\n".join(lines)
    lines += [
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
