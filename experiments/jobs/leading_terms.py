"""Job kind `leading_terms`: do early-training weights follow the closed forms built from corpus statistics?

Tests the claims of Im, Oh, Fang & Li, "How Do Transformers Learn to Associate Tokens: Gradient Leading Terms
Bring Mechanistic Interpretability". One seed:
1. draws n_train + n_eval sequences from the data reference (`synthetic:<preset>` from the substrate, or the
   built-in `builtin:<preset>` topic-bigram language) with the seed;
2. computes the bases B (bigram), Phi (context), Sigma = B^T B (interchangeability) and the attention terms Q, q on
   the training sequences (claimgraph.experiments.dynamics.leading_terms);
3. trains the paper's attention-only one-hot transformer from zero with plain SGD, measuring at log-spaced steps
   the cosine (trace inner product over Frobenius norms) of W_O, W_V, W_QK, pos with B, Phi^T B^T, Q, q, and the
   norm ratio against the derived coefficients;
4. "early" is the first checkpoint (step >= 3, where every term is defined) at which the held-out loss has made
   `early_progress` of its total drop (log V at step 0 to the final held-out loss), "mid" likewise for
   `mid_progress`: a rule tied to learning progress rather than to a step count, fixed before any run;
5. projects each leading term out of the final weights and reports the held-out loss increase
   (the paper's expected ordering: output > value > attention);
6. lists the top token associations of the most frequent tokens under B, Sigma and Phi;
7. writes cosine-over-training and projection PNGs.
The verdict metric is `min_early_cosine`, the smallest of the output, value and attention cosines at "early".
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from ..spec import Criterion
from .base import Job, JobParams, SeedResult

if TYPE_CHECKING:
    from ..context import RunContext

CHECKED_TERMS = ("output", "value", "attention")  # the three of the paper's Theorem 4.1, in expected causal order


class LeadingTermsParams(JobParams):
    seq_len: int = Field(32, ge=2, le=512, description="Predicted positions per sequence (the model reads seq_len tokens)")
    n_train: int = Field(2048, ge=8, description="Training sequences; the corpus statistics are computed on exactly these")
    n_eval: int = Field(512, ge=8, description="Held-out sequences: loss along training and the projection check")
    # lr and steps were set from held-out loss curves on synthetic:default alone (lr 10 stable, 30 oscillating,
    # 100 diverging; the loss has levelled off near the bigram entropy by ~300-600 steps), never from cosines.
    lr: float = Field(10.0, gt=0, description="Plain SGD step size (no momentum, no weight decay)")
    steps: int = Field(600, ge=4, description="SGD updates from zero initialisation")
    batch_size: int = Field(32, ge=1, description="Sequences per update, drawn with replacement")
    positional: bool = Field(True, description="Learned relative-position score bias pos[t - j], as in the paper")
    n_checkpoints: int = Field(40, ge=4, description="Log-spaced steps at which cosines and held-out loss are measured")
    early_progress: float = Field(0.1, gt=0, lt=1, description="'early': held-out loss has made this fraction of its drop")
    mid_progress: float = Field(0.5, gt=0, lt=1, description="'mid': likewise, later in training")
    n_frequent: int = Field(10, ge=1, description="Most frequent tokens whose associations are listed")
    top_k: int = Field(5, ge=1, description="Associated tokens listed per token and basis mapping")

    @model_validator(mode="after")
    def _ordered(self) -> "LeadingTermsParams":
        if self.mid_progress <= self.early_progress:
            raise ValueError(f"mid_progress ({self.mid_progress}) must exceed early_progress ({self.early_progress})")
        return self


class LeadingTermsJob(Job):
    kind = "leading_terms"
    summary = "Cosine of SGD-trained attention-only weights with closed-form gradient leading terms (B, Phi, Sigma, Q)"
    Params = LeadingTermsParams
    # Registered before any run. The paper reports cosines of about 0.998 or higher early in training. If the
    # closed forms hold on our corpus, the worst of the three early cosines should clear 0.99 by more than the
    # band (0.995); an interval wholly below 0.985 means they describe the early weights clearly worse than the
    # paper states. "Early" is fixed by learning progress (10% of the held-out loss drop), not by a step count.
    default_criterion = Criterion(metric="min_early_cosine", op=">", threshold=0.99, band=0.005)
    metrics = {
        "min_early_cosine": "smallest of cos_output_early, cos_value_early, cos_attention_early (the verdict metric)",
        **{f"cos_{t}_{w}": f"cosine (trace inner product / Frobenius norms) of the learned {t} tensor with its "
                           f"leading term at the {w} checkpoint"
           for t in ("output", "value", "attention", "position") for w in ("early", "mid", "final")},
        **{f"ratio_{t}_{w}": f"|learned {t}| / |c(s) x leading term| at the {w} checkpoint (1 = right size)"
           for t in ("output", "value", "attention", "position") for w in ("early", "mid", "final")},
        **{f"loss_increase_{t}": f"held-out loss increase (nats) when the {t} leading term is projected out of "
                                 f"the final weights" for t in ("output", "value", "attention", "position")},
        "ordering_holds": "1 when loss_increase_output > loss_increase_value > loss_increase_attention, else 0",
        **{f"step_{w}": f"SGD step of the {w} checkpoint (early/mid: first step >= 3 with that share of the "
                        f"held-out loss drop)" for w in ("early", "mid", "final")},
        **{f"loss_{w}": f"held-out loss at the {w} checkpoint" for w in ("early", "mid", "final")},
        "loss_init": "held-out loss at zero initialisation (log d_vocab)",
        "d_vocab": "vocabulary size",
    }
    default_model = None
    default_data = "synthetic:default"

    def run(self, ctx: "RunContext", params: LeadingTermsParams, seed: int) -> SeedResult:
        import torch

        from ..dynamics.leading_terms import basis_associations, coefficients, corpus_bases
        from ..dynamics.leading_terms_corpus import load_sequences
        from ..dynamics.leading_terms_model import AttnOnlyOneHot, mean_loss, train_sgd

        p = params
        seqs = load_sequences(ctx.data_ref, p.n_train + p.n_eval, p.seq_len + 1, seed)
        tokens = seqs.tokens                                                        # [n, seq_len + 1]
        V = len(seqs.vocab)
        x_tr, y_tr = tokens[:p.n_train, :-1], tokens[:p.n_train, 1:]                 # [n_train, T]
        x_ev, y_ev = tokens[p.n_train:, :-1], tokens[p.n_train:, 1:]                 # [n_eval, T]
        ctx.log(f"corpus {seqs.source}: {V} tokens, {p.n_train} x {p.seq_len} training positions")

        bases = corpus_bases(x_tr, y_tr, V)
        terms = {k: v for k, v in bases.terms().items() if p.positional or k != "position"}
        model = AttnOnlyOneHot(V, p.seq_len, positional=p.positional)
        loss0 = mean_loss(model, x_ev, y_ev)
        assert abs(loss0 - math.log(V)) < 1e-4, f"zero-initialised model must predict uniformly: {loss0} vs log V"

        marks = checkpoint_steps(p.steps, p.n_checkpoints)
        rows: list[dict[str, Any]] = []

        def on_step(step: int, batch_loss: float) -> None:
            if step in marks:
                rows.append(measure(model, terms, coefficients(step, p.lr), step, batch_loss,
                                    mean_loss(model, x_ev, y_ev)))
                ctx.log_metrics(step, {k: v for k, v in rows[-1].items() if k != "step"})

        train_sgd(model, x_tr, y_tr, lr=p.lr, steps=p.steps, batch_size=p.batch_size, seed=seed,
                  on_step=on_step, progress=ctx.progress)

        early = progress_row(rows, loss0, p.early_progress)
        mid = progress_row(rows, loss0, p.mid_progress)
        final = rows[-1]
        increases = projection_check(model, terms, x_ev, y_ev)

        metrics: dict[str, float] = {"d_vocab": float(V), "loss_init": loss0}
        for label, row in (("early", early), ("mid", mid), ("final", final)):
            metrics[f"step_{label}"] = float(row["step"]) if row else math.nan
            metrics[f"loss_{label}"] = row["loss_eval"] if row else math.nan
            for name in terms:
                for what in ("cos", "ratio"):
                    v = row.get(f"{what}_{name}") if row else None
                    metrics[f"{what}_{name}_{label}"] = v if v is not None else math.nan
        metrics["min_early_cosine"] = min(metrics[f"cos_{n}_early"] for n in CHECKED_TERMS)
        for name, inc in increases.items():
            metrics[f"loss_increase_{name}"] = inc
        metrics["ordering_holds"] = float(increases["output"] > increases["value"] > increases["attention"])
        ctx.log(f"early step {metrics['step_early']:.0f}: cosines " +
                ", ".join(f"{n} {metrics[f'cos_{n}_early']:.4f}" for n in terms) +
                f"; loss increases " + ", ".join(f"{n} {v:.4g}" for n, v in increases.items()))

        from ..dynamics.leading_terms_plots import plot_cosines, plot_loss_increase

        step_marks = {k: int(r["step"]) for k, r in (("early", early), ("mid", mid)) if r}
        plot_cosines(ctx.artifact(f"cosine_seed{seed}.png"), [{"label": f"seed {seed}", "rows": rows}],
                     terms=list(terms), marks=step_marks, title=f"Leading terms, {seqs.source}, seed {seed}")
        plot_loss_increase(ctx.artifact(f"projection_seed{seed}.png"), {k: [v] for k, v in increases.items()},
                           title=f"Projection check, seed {seed}")

        details = {
            "corpus": {"source": seqs.source, "d_vocab": V, "n_positions": bases.n_positions},
            "coefficients": {"output": "s*lr", "value": "lr^2 s(s-1)/2",
                             "attention": "lr^4 s(s-1)(s-2)(3s-1)/24", "position": "lr^4 s(s-1)(s-2)(3s-1)/24",
                             "paper": "W_O ~ s eta B; value ~ (s eta)^2 Phi^T B^T; attention ~ (3s^4+2s^3) eta^4 Q"},
            "checkpoints": rows,
            "loss_increase": increases,
            "associations": basis_associations(bases, seqs.vocab, n_frequent=p.n_frequent, k=p.top_k),
        }
        return SeedResult(seed=seed, metrics=metrics, details=details)

    def summarize(self, ctx: "RunContext", params: LeadingTermsParams, results: list[SeedResult]) -> dict[str, Any]:
        from ..dynamics.leading_terms_plots import plot_cosines, plot_loss_increase

        if not results:
            return {}
        terms = [k.removeprefix("cos_").removesuffix("_early") for k in results[0].metrics
                 if k.startswith("cos_") and k.endswith("_early")]
        plot_cosines(ctx.artifact("cosine_over_training.png"),
                     [{"label": f"seed {r.seed}", "rows": r.details["checkpoints"]} for r in results],
                     terms=terms, title=f"Leading terms, {len(results)} seeds")
        plot_loss_increase(ctx.artifact("projection_loss_increase.png"),
                           {n: [r.metrics[f"loss_increase_{n}"] for r in results] for n in terms},
                           title=f"Projection check, {len(results)} seeds")
        n_order = sum(int(r.metrics["ordering_holds"]) for r in results)
        return {"ordering_holds_seeds": n_order, "n_seeds": len(results),
                "notes": summary_notes(results, n_order, self.default_criterion)}


def summary_notes(results: list[SeedResult], n_order: int, registered: Criterion) -> str:
    """Observed values in words, for the evidence node: cosines, norm ratios, the projection check."""
    import statistics

    def mean(key: str) -> str:
        vals = [r.metrics[key] for r in results if math.isfinite(r.metrics.get(key, math.nan))]
        return f"{statistics.fmean(vals):.4f}" if vals else "n/a"

    parts = [f"Early checkpoint (step ~{mean('step_early')}, {len(results)} seeds): cosine with the leading term "
             + ", ".join(f"{t} {mean(f'cos_{t}_early')} (norm ratio {mean(f'ratio_{t}_early')})" for t in CHECKED_TERMS)
             + f"; at the end: " + ", ".join(f"{t} {mean(f'cos_{t}_final')}" for t in CHECKED_TERMS) + "."]
    parts.append("Held-out loss increase on projecting each leading term out of the final weights: "
                 + ", ".join(f"{t} {mean(f'loss_increase_{t}')}" for t in CHECKED_TERMS)
                 + f"; ordering output > value > attention in {n_order} of {len(results)} seeds.")
    parts.append(f"The paper reports cosines of about 0.998 early in training; the job's registered default "
                 f"criterion is {registered.describe()}.")
    return " ".join(parts)


def checkpoint_steps(steps: int, n: int) -> set[int]:
    """Steps 1-3 (where the value and attention terms first appear), `n` log-spaced steps up to `steps`, and the last."""
    out = {1, 2, 3, steps}
    for i in range(n):
        out.add(max(1, min(steps, round(math.exp(math.log(steps) * i / max(1, n - 1))))))
    return out


def measure(model, terms: dict, coef: dict[str, float], step: int, batch_loss: float, loss_eval: float) -> dict:
    """One checkpoint row: cosine and norm ratio of each learned tensor with its leading term, and the losses."""
    from ..dynamics.leading_terms import norm_ratio, trace_cosine

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
    for row in rows:
        if row["step"] >= 3 and (loss0 - row["loss_eval"]) >= fraction * drop:
            return row
    return rows[-1]


def projection_check(model, terms: dict, inputs, targets) -> dict[str, float]:
    """Held-out loss increase when each leading term's direction is projected out of the trained tensor
    (one tensor at a time, restored afterwards)."""
    import torch

    from ..dynamics.leading_terms import project_out
    from ..dynamics.leading_terms_model import mean_loss

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
