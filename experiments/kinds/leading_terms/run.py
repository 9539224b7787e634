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
from claimgraph.experiments.spec import Criterion, variance_note

from . import CHECKED_TERMS, LeadingTermsJob, LeadingTermsParams
from .corpus import load_sequences
from .model import AttnOnlyOneHot, mean_loss, minibatches, train_sgd
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
    floor = sgd_noise_floor(*train, V, p.batch_size, p.steps, seed, marks, bases.bigram)
    rows: list[dict[str, Any]] = []

    def on_step(step: int, batch_loss: float) -> None:
        if step in marks:
            rows.append(measure(model, terms, coefficients(step, p.lr), step, batch_loss, mean_loss(model, *held)))
            rows[-1]["noise_floor_output"] = floor[step]
            ctx.log_metrics(step, {k: v for k, v in rows[-1].items() if k != "step"})

    train_sgd(model, *train, lr=p.lr, steps=p.steps, batch_size=p.batch_size, seed=seed, on_step=on_step,
              progress=ctx.progress)
    at = {"early": progress_row(rows, loss0, p.early_progress), "mid": progress_row(rows, loss0, p.mid_progress),
          "final": rows[-1]}
    increases, controls = projection_check(model, terms, *held, seed=seed)
    gd_rows: list[dict[str, Any]] = []
    if p.gd_control and at["early"]:
        gd_rows = full_batch_rows(V, p, seed, terms, train, held, int(at["early"]["step"]), marks)
    gd_row = gd_rows[-1] if gd_rows else None
    toy_rows = None
    if p.toy_check and ctx.model_ref is not None:
        from .toy import toy_direct_path_check

        toy_rows = toy_direct_path_check(ctx.model_ref, n=p.toy_sequences, seed=seed,
                                         model_seed=seed if p.model_seeds == "per_replicate" else None,
                                         progress=ctx.progress)

    metrics = seed_metrics(V, loss0, terms, at, increases, controls, gd_row, toy_rows, p.toy_early_fraction)
    ctx.log(f"early step {metrics['step_early']:.0f}: cosines "
            + ", ".join(f"{n} {metrics[f'cos_{n}_early']:.4f}" for n in terms)
            + "; loss increases " + ", ".join(f"{n} {v:.4g}" for n, v in increases.items()))

    marks_at = {k: int(r["step"]) for k, r in at.items() if r and k != "final"}
    plot_cosines(ctx.artifact(f"cosine_seed{seed}.png"), [{"label": f"seed {seed}", "rows": rows}],
                 terms=list(terms), marks=marks_at, control=gd_rows,
                 title=f"Leading terms, {seqs.source}, seed {seed}")
    plot_loss_increase(ctx.artifact(f"projection_seed{seed}.png"), {k: [v] for k, v in increases.items()},
                       controls={k: [v] for k, v in controls.items()},
                       title=f"Projection check, seed {seed}")
    details = {
        "corpus": {"source": seqs.source, "d_vocab": V, "n_positions": bases.n_positions},
        "coefficients": {"output": "s*lr", "value": "lr^2 s(s-1)/2",
                         "attention": "lr^4 s(s-1)(s-2)(3s-1)/24", "position": "lr^4 s(s-1)(s-2)(3s-1)/24",
                         "paper": "W_O ~ s eta B; value ~ (s eta)^2 Phi^T B^T; attention ~ (3s^4+2s^3) eta^4 Q"},
        "checkpoints": rows,
        "gd_control_early": gd_row,
        "gd_checkpoints": gd_rows,
        "loss_increase_control": controls,
        "toy": {"model": ctx.model_ref, "model_seed": seed if p.model_seeds == "per_replicate" else 0,
                "checkpoints": toy_rows} if toy_rows else None,
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


def sgd_noise_floor(inputs: torch.Tensor, targets: torch.Tensor, V: int, batch_size: int | None, steps: int,
                    seed: int, marks: set[int], B: torch.Tensor) -> dict[int, float | None]:
    """The cosine SGD's sampling noise leaves the output term at each marked step: to first order W_O after s
    updates is lr times the sum of the s minibatches' bigram estimates, so the cosine of that sum (the batches
    train_sgd draws, re-drawn here) with the training set's B caps cos_output. 1 for full-batch descent."""
    pairs = (inputs.long() * V + targets.long())                                       # [n, T]
    counts = torch.zeros(V * V, dtype=torch.float64)
    out: dict[int, float | None] = {}
    for step, idx in enumerate(minibatches(inputs.shape[0], batch_size, steps, seed), start=1):
        counts += torch.bincount((pairs if idx is None else pairs[idx]).reshape(-1), minlength=V * V)
        if step in marks:
            c = counts.view(V, V)
            out[step] = trace_cosine(c - c.sum(1, keepdim=True) / V, B)               # sum of batch B's, rescaled
    return out


def projection_check(model: AttnOnlyOneHot, terms: dict[str, torch.Tensor], inputs: torch.Tensor,
                     targets: torch.Tensor, *, seed: int, n_controls: int = 3
                     ) -> tuple[dict[str, float], dict[str, float]]:
    """Held-out loss increase when each leading term's direction is projected out of the trained tensor
    (one tensor at a time, restored afterwards), and its control: the mean increase when a random direction of
    the same norm as the removed component is subtracted instead (`n_controls` directions, seeded)."""
    base = mean_loss(model, inputs, targets)
    learned = model.named_terms()
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, float] = {}
    control: dict[str, float] = {}
    for name, term in terms.items():
        param = learned[name]
        keep = param.detach().clone()
        projected = project_out(keep, term)
        removed = float((keep.double() - projected.double()).norm())
        with torch.no_grad():
            param.copy_(projected)
        out[name] = mean_loss(model, inputs, targets) - base
        rises = []
        for _ in range(n_controls):
            r = torch.randn(keep.shape, generator=gen, dtype=torch.float64)
            with torch.no_grad():
                param.copy_((keep.double() - r * (removed / float(r.norm()))).to(keep.dtype))
            rises.append(mean_loss(model, inputs, targets) - base)
        control[name] = sum(rises) / n_controls
        with torch.no_grad():
            param.copy_(keep)
    return out, control


def full_batch_rows(V: int, p: LeadingTermsParams, seed: int, terms: dict[str, torch.Tensor], train: tuple,
                    held: tuple, steps: int, marks: set[int]) -> list[dict[str, Any]]:
    """Full-batch gradient descent from zero for `steps` updates of the same size (the paper's setting: no
    sampling noise, the gradient of exactly the statistics the bases are built from), measured at the marked
    steps up to `steps` and at `steps` itself (the last row)."""
    gd = AttnOnlyOneHot(V, p.seq_len, positional=p.positional)
    rows: list[dict[str, Any]] = []

    def on_step(step: int, loss: float) -> None:
        if step in marks or step == steps:
            rows.append(measure(gd, terms, coefficients(step, p.lr), step, loss, mean_loss(gd, *held)))
            rows[-1]["noise_floor_output"] = 1.0

    train_sgd(gd, *train, lr=p.lr, steps=steps, batch_size=None, seed=seed, chunk=256, on_step=on_step)
    return rows


def seed_metrics(V: int, loss0: float, terms: dict, at: dict[str, dict | None], increases: dict[str, float],
                 controls: dict[str, float], gd_row: dict | None, toy_rows: list[dict] | None,
                 toy_early_fraction: float) -> dict[str, float]:
    """The flat metrics of one seed (names declared in LeadingTermsJob.metrics); undefined values are NaN."""
    from .toy import early_change_cosine

    def num(v: Any) -> float:
        return float(v) if v is not None else math.nan

    m: dict[str, float] = {"d_vocab": float(V), "loss_init": loss0}
    for label, row in at.items():
        m[f"step_{label}"] = num(row and row["step"])
        m[f"loss_{label}"] = num(row and row["loss_eval"])
        for name in terms:
            for what in ("cos", "ratio"):
                m[f"{what}_{name}_{label}"] = num(row and row[f"{what}_{name}"])
    m["noise_floor_early"] = num(at["early"] and at["early"]["noise_floor_output"])
    m["min_sgd_early_cosine"] = min(m[f"cos_{n}_early"] for n in CHECKED_TERMS)
    for name, inc in increases.items():
        m[f"loss_increase_{name}"] = inc
        m[f"loss_increase_{name}_control"] = controls[name]
    order = increases["output"] > increases["value"] > increases["attention"]
    m["ordering_terms_only"] = float(order)
    m["ordering_holds"] = float(order and all(increases[n] > controls[n] for n in CHECKED_TERMS))
    m["min_early_cosine"] = math.nan
    if gd_row is not None:
        for name in terms:
            for what in ("cos", "ratio"):
                m[f"{what}_{name}_gd_early"] = num(gd_row[f"{what}_{name}"])
        m["min_early_cosine"] = min(m[f"cos_{n}_gd_early"] for n in CHECKED_TERMS)
    if toy_rows:
        m["toy_cos_bigram_final"] = num(toy_rows[-1]["cos_bigram"])
        m["toy_cos_bigram_transposed_final"] = num(toy_rows[-1]["cos_bigram_transposed"])
        if len(toy_rows) > 1:
            m["toy_cos_bigram_change_first"] = num(toy_rows[1]["cos_bigram_change"])
            m["toy_cos_bigram_change_final"] = num(toy_rows[-1]["cos_bigram_change"])
            m["toy_cos_bigram_change_early"] = num(early_change_cosine(toy_rows, toy_early_fraction))
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
                       controls={n: [r.metrics[f"loss_increase_{n}_control"] for r in results] for n in terms},
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

    parts = [f"Full-batch gradient descent (the paper's setting, no sampling noise) to the early step "
             f"(~{mean('step_early')}, {len(results)} seeds): cosine with the leading term "
             + ", ".join(f"{t} {mean(f'cos_{t}_gd_early')} (norm ratio {mean(f'ratio_{t}_gd_early')})"
                         for t in CHECKED_TERMS) + "."]
    parts.append("Minibatch SGD at the same step: " + ", ".join(f"{t} {mean(f'cos_{t}_early')}" for t in CHECKED_TERMS)
                 + f"; the sampling-noise floor of the output cosine for that batch is {mean('noise_floor_early')}"
                 + "; at the end of SGD: " + ", ".join(f"{t} {mean(f'cos_{t}_final')}" for t in CHECKED_TERMS) + ".")
    parts.append("Held-out loss increase on projecting each leading term out of the final weights: "
                 + ", ".join(f"{t} {mean(f'loss_increase_{t}')} (random direction of the same norm "
                             f"{mean(f'loss_increase_{t}_control')})" for t in CHECKED_TERMS)
                 + f"; ordering output > value > attention, each above its control, in {n_order} of "
                 f"{len(results)} seeds.")
    if all("toy_cos_bigram_change_early" in r.metrics for r in results):
        toy = results[0].details["toy"]
        parts.append(f"Toy model {toy['model']} (one model seed per replicate: "
                     f"{'yes' if len({r.details['toy'].get('model_seed') for r in results}) == len(results) else 'no'}): "
                     f"cosine of its embedding->unembedding path's change since initialisation with B "
                     f"{mean('toy_cos_bigram_change_early')} at its early checkpoints "
                     f"({mean('toy_cos_bigram_change_final')} at the last); the path itself "
                     f"{mean('toy_cos_bigram_final')} at the last checkpoint (B^T control "
                     f"{mean('toy_cos_bigram_transposed_final')}).")
    parts.append(interval_covers(results))
    parts.append(f"The paper reports cosines of about 0.998 early in training; the job's registered default "
                 f"criterion is {registered.describe()}.")
    return " ".join(parts)


def interval_covers(results: list[SeedResult]) -> str:
    """Which sources of variation the interval across seeds covers."""
    sources = ["data samples (training and held-out sequences drawn per seed)", "SGD minibatch order"]
    if any(r.details.get("toy") and r.details["toy"].get("model_seed") for r in results):
        sources.append("toy model seeds (one trained toy per replicate, for the toy comparison)")
    return variance_note(sources, len(results))
