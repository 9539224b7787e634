"""One seed of the `leading_terms` job (the package's __init__ holds its parameters and criterion): sample the
corpus, compute the bases, train the one-hot model with SGD while measuring it against the leading terms, then
the projection check, the full-batch control, the toy-model comparison, the associations and plots; after all
seeds, the plots across seeds and the notes."""
from __future__ import annotations

import math
from typing import Any

import torch

from claimgraph.experiments.context import RunContext, torch_threads, train_threads
from claimgraph.experiments.job import SeedResult
from claimgraph.experiments.spec import Criterion

from . import CHECKED_TERMS, LeadingTermsJob, LeadingTermsParams
from .corpus import load_sequences
from .model import AttnOnlyOneHot, mean_loss, train_sgd
from .plots import plot_cosines, plot_loss_increase, plot_toy_path
from .terms import basis_associations, coefficients, corpus_bases, norm_ratio, project_out, trace_cosine


def run_seed(ctx: RunContext, p: LeadingTermsParams, seed: int) -> SeedResult:
    with torch_threads(train_threads()):
        metrics, details = _run_seed(ctx, p, seed)
    return SeedResult(seed=seed, metrics=metrics, details=details)


def _run_seed(ctx: RunContext, p: LeadingTermsParams, seed: int) -> tuple[dict[str, float], dict[str, Any]]:
    seqs = load_sequences(ctx.data_ref, p.n_train + p.n_eval, p.seq_len + 1, seed)
    tokens = seqs.tokens                                                        # [n, seq_len + 1]
    V = len(seqs.vocab)
    train = tokens[:p.n_train, :-1], tokens[:p.n_train, 1:]                     # [n_train, T] twice
    held = tokens[p.n_train:, :-1], tokens[p.n_train:, 1:]                      # [n_eval, T] twice
    ctx.log(f"corpus {seqs.source}: {V} tokens, {p.n_train} x {p.seq_len} training positions")

    bases = corpus_bases(*train, V)
    terms = {k: v for k, v in bases.terms().items() if p.positional or k != "position"}
    model = AttnOnlyOneHot(V, p.seq_len, positional=p.positional)
    loss0 = mean_loss(model, *held)
    assert abs(loss0 - math.log(V)) < 1e-4, f"zero-initialised model must predict uniformly: {loss0} vs log V"

    marks = checkpoint_steps(p.steps, p.n_checkpoints)
    rows: list[dict[str, Any]] = []

    def on_step(step: int, batch_loss: float) -> None:
        if step in marks:
            rows.append(measure(model, terms, coefficients(step, p.lr), step, batch_loss, mean_loss(model, *held)))
            ctx.log_metrics(step, {k: v for k, v in rows[-1].items() if k != "step"})

    train_sgd(model, *train, lr=p.lr, steps=p.steps, batch_size=p.batch_size, seed=seed, on_step=on_step,
              progress=ctx.progress)
    at = {"early": progress_row(rows, loss0, p.early_progress), "mid": progress_row(rows, loss0, p.mid_progress),
          "final": rows[-1]}
    increases = projection_check(model, terms, *held)
    gd_row = None
    if p.gd_control and at["early"]:
        gd_row = full_batch_control(V, p, seed, terms, train, held, int(at["early"]["step"]))
    toy_rows = None
    if p.toy_check and ctx.model_ref is not None:
        from .toy import toy_direct_path_check

        toy_rows = toy_direct_path_check(ctx.model_ref, n=p.toy_sequences, seed=seed, progress=ctx.progress)

    metrics = seed_metrics(V, loss0, terms, at, increases, gd_row, toy_rows)
    ctx.log(f"early step {metrics['step_early']:.0f}: cosines "
            + ", ".join(f"{n} {metrics[f'cos_{n}_early']:.4f}" for n in terms)
            + "; loss increases " + ", ".join(f"{n} {v:.4g}" for n, v in increases.items()))

    marks_at = {k: int(r["step"]) for k, r in at.items() if r and k != "final"}
    plot_cosines(ctx.artifact(f"cosine_seed{seed}.png"), [{"label": f"seed {seed}", "rows": rows}],
                 terms=list(terms), marks=marks_at, control=gd_row,
                 title=f"Leading terms, {seqs.source}, seed {seed}")
    plot_loss_increase(ctx.artifact(f"projection_seed{seed}.png"), {k: [v] for k, v in increases.items()},
                       title=f"Projection check, seed {seed}")
    details = {
        "corpus": {"source": seqs.source, "d_vocab": V, "n_positions": bases.n_positions},
        "coefficients": {"output": "s*lr", "value": "lr^2 s(s-1)/2",
                         "attention": "lr^4 s(s-1)(s-2)(3s-1)/24", "position": "lr^4 s(s-1)(s-2)(3s-1)/24",
                         "paper": "W_O ~ s eta B; value ~ (s eta)^2 Phi^T B^T; attention ~ (3s^4+2s^3) eta^4 Q"},
        "checkpoints": rows,
        "gd_control_early": gd_row,
        "toy": {"model": ctx.model_ref, "checkpoints": toy_rows} if toy_rows else None,
        "loss_increase": increases,
        "associations": basis_associations(bases, seqs.vocab, n_frequent=p.n_frequent, k=p.top_k),
    }
    return metrics, details


def checkpoint_steps(steps: int, n: int) -> set[int]:
    """Steps 1-3 (where the value and attention terms first appear), `n` log-spaced steps up to `steps`, and the last."""
    out = {1, 2, 3, steps}
    for i in range(n):
        out.add(max(1, min(steps, round(math.exp(math.log(steps) * i / max(1, n - 1))))))
    return out


def measure(model: AttnOnlyOneHot, terms: dict[str, torch.Tensor], coef: dict[str, float], step: int,
            batch_loss: float | None, loss_eval: float) -> dict[str, Any]:
    """One checkpoint row: cosine and norm ratio of each learned tensor with its leading term, and the losses."""
    row: dict[str, Any] = {"step": step, "loss_batch": batch_loss, "loss_eval": loss_eval}
    learned = model.named_terms()
    for name, term in terms.items():
        row[f"cos_{name}"] = trace_cosine(learned[name], term)
        row[f"ratio_{name}"] = norm_ratio(learned[name], term, coef[name])
    return row


def progress_row(rows: list[dict], loss0: float, fraction: float) -> dict | None:
    """The first checkpoint at step >= 3 whose held-out loss has made `fraction` of the total drop from loss0 to
    the last checkpoint's loss; None when the loss did not drop."""
    drop = loss0 - rows[-1]["loss_eval"]
    if not drop > 0:
        return None
    return next(r for r in rows if (r["step"] >= 3 and loss0 - r["loss_eval"] >= fraction * drop) or r is rows[-1])


def projection_check(model: AttnOnlyOneHot, terms: dict[str, torch.Tensor], inputs: torch.Tensor,
                     targets: torch.Tensor) -> dict[str, float]:
    """Held-out loss increase when each leading term's direction is projected out of the trained tensor
    (one tensor at a time, restored afterwards)."""
    base = mean_loss(model, inputs, targets)
    learned = model.named_terms()
    out: dict[str, float] = {}
    for name, term in terms.items():
        param = learned[name]
        keep = param.detach().clone()
        with torch.no_grad():
            param.copy_(project_out(keep, term))
        out[name] = mean_loss(model, inputs, targets) - base
        with torch.no_grad():
            param.copy_(keep)
    return out


def full_batch_control(V: int, p: LeadingTermsParams, seed: int, terms: dict[str, torch.Tensor], train: tuple, held: tuple,
                       steps: int) -> dict[str, Any]:
    """The checkpoint row of full-batch gradient descent from zero after `steps` updates of the same size: the
    leading terms' own error, without SGD's sampling noise."""
    gd = AttnOnlyOneHot(V, p.seq_len, positional=p.positional)
    train_sgd(gd, *train, lr=p.lr, steps=steps, batch_size=None, seed=seed, chunk=256)
    return measure(gd, terms, coefficients(steps, p.lr), steps, None, mean_loss(gd, *held))


def seed_metrics(V: int, loss0: float, terms: dict, at: dict[str, dict | None], increases: dict[str, float],
                 gd_row: dict | None, toy_rows: list[dict] | None) -> dict[str, float]:
    """The flat metrics of one seed (names declared in LeadingTermsJob.metrics); undefined values are NaN."""
    def num(v: Any) -> float:
        return float(v) if v is not None else math.nan

    m: dict[str, float] = {"d_vocab": float(V), "loss_init": loss0}
    for label, row in at.items():
        m[f"step_{label}"] = num(row and row["step"])
        m[f"loss_{label}"] = num(row and row["loss_eval"])
        for name in terms:
            for what in ("cos", "ratio"):
                m[f"{what}_{name}_{label}"] = num(row and row[f"{what}_{name}"])
    m["min_early_cosine"] = min(m[f"cos_{n}_early"] for n in CHECKED_TERMS)
    for name, inc in increases.items():
        m[f"loss_increase_{name}"] = inc
    m["ordering_holds"] = float(increases["output"] > increases["value"] > increases["attention"])
    if gd_row is not None:
        for name in terms:
            for what in ("cos", "ratio"):
                m[f"{what}_{name}_gd_early"] = num(gd_row[f"{what}_{name}"])
        m["min_gd_early_cosine"] = min(m[f"cos_{n}_gd_early"] for n in CHECKED_TERMS)
    if toy_rows:
        m["toy_cos_bigram_final"] = num(toy_rows[-1]["cos_bigram"])
        m["toy_cos_bigram_transposed_final"] = num(toy_rows[-1]["cos_bigram_transposed"])
        if len(toy_rows) > 1:
            m["toy_cos_bigram_change_first"] = num(toy_rows[1]["cos_bigram_change"])
            m["toy_cos_bigram_change_final"] = num(toy_rows[-1]["cos_bigram_change"])
    return m


def summarize(ctx: RunContext, params: LeadingTermsParams, results: list[SeedResult]) -> dict[str, Any]:
    """The plots across seeds and the notes."""
    if not results:
        return {}
    terms = list(results[0].details["loss_increase"])
    plot_cosines(ctx.artifact("cosine_over_training.png"),
                 [{"label": f"seed {r.seed}", "rows": r.details["checkpoints"]} for r in results],
                 terms=terms, title=f"Leading terms, {len(results)} seeds")
    plot_loss_increase(ctx.artifact("projection_loss_increase.png"),
                       {n: [r.metrics[f"loss_increase_{n}"] for r in results] for n in terms},
                       title=f"Projection check, {len(results)} seeds")
    toy = [r.details["toy"] for r in results if r.details.get("toy")]
    if toy:
        plot_toy_path(ctx.artifact("toy_direct_path.png"), toy, [r.seed for r in results])
    n_order = sum(int(r.metrics["ordering_holds"]) for r in results)
    return {"ordering_holds_seeds": n_order, "n_seeds": len(results),
            "notes": summary_notes(results, n_order, LeadingTermsJob.default_criterion)}


def summary_notes(results: list[SeedResult], n_order: int, registered: Criterion) -> str:
    """Observed values in words, for the evidence node: cosines, norm ratios, the projection check."""
    import statistics

    def mean(key: str) -> str:
        vals = [r.metrics[key] for r in results if math.isfinite(r.metrics.get(key, math.nan))]
        return f"{statistics.fmean(vals):.4f}" if vals else "n/a"

    parts = [f"Early checkpoint (step ~{mean('step_early')}, {len(results)} seeds): cosine with the leading term "
             + ", ".join(f"{t} {mean(f'cos_{t}_early')} (norm ratio {mean(f'ratio_{t}_early')})" for t in CHECKED_TERMS)
             + "; at the end: " + ", ".join(f"{t} {mean(f'cos_{t}_final')}" for t in CHECKED_TERMS) + "."]
    parts.append("Held-out loss increase on projecting each leading term out of the final weights: "
                 + ", ".join(f"{t} {mean(f'loss_increase_{t}')}" for t in CHECKED_TERMS)
                 + f"; ordering output > value > attention in {n_order} of {len(results)} seeds.")
    if all("min_gd_early_cosine" in r.metrics for r in results):
        parts.append("Control, full-batch gradient descent to the same step (no sampling noise): "
                     + ", ".join(f"{t} {mean(f'cos_{t}_gd_early')}" for t in CHECKED_TERMS) + ".")
    if all("toy_cos_bigram_final" in r.metrics for r in results):
        parts.append(f"Toy model {results[0].details['toy']['model']}: cosine of its embedding->unembedding path "
                     f"with B {mean('toy_cos_bigram_final')} at its last checkpoint (B^T control "
                     f"{mean('toy_cos_bigram_transposed_final')}); of its change since initialisation "
                     f"{mean('toy_cos_bigram_change_first')} at the first checkpoint after step 0 and "
                     f"{mean('toy_cos_bigram_change_final')} at the last.")
    parts.append(f"The paper reports cosines of about 0.998 early in training; the job's registered default "
                 f"criterion is {registered.describe()}.")
    return " ".join(parts)
