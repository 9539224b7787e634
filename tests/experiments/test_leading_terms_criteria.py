"""Planted truth for the `leading_terms` criteria: each registered criterion comes out supported on a case built
to satisfy it and refuted on one built to violate it, through the job's own computation.

- min_early_cosine (default): the leading terms are an expansion in lr * s, so on the built-in tiny language with a
  small step and "early" at 10% of the loss drop they describe full-batch descent almost exactly (supported);
  at 60% of the loss drop the weights have left that regime (refuted). The same job code computes both.
- ordering_holds (main job): a trained model uses its terms in the expected order, above their random-direction
  controls (supported); the same model with the bigram direction already removed from W_O cannot lose anything
  by removing it again, so the ordering fails (refuted).
- toy_cos_bigram_change_early (main job): direct paths whose change is B by construction (supported) or a random
  matrix (refuted), through the toy comparison's own functions.
"""
from __future__ import annotations

import pytest
import torch

from claimgraph.experiments.context import RunContext
from claimgraph.experiments.kinds.leading_terms import LeadingTermsJob
from claimgraph.experiments.kinds.leading_terms.corpus import load_sequences
from claimgraph.experiments.kinds.leading_terms.model import AttnOnlyOneHot, train_sgd
from claimgraph.experiments.kinds.leading_terms.run import projection_check, seed_metrics
from claimgraph.experiments.kinds.leading_terms.terms import corpus_bases, project_out
from claimgraph.experiments.kinds.leading_terms.toy import early_change_cosine, path_rows
from claimgraph.experiments.registry import get_job
from claimgraph.experiments.spec import Criterion

SMALL = dict(seq_len=12, n_train=96, n_eval=32, steps=80, batch_size=16, n_checkpoints=12, n_frequent=4, top_k=3,
             toy_check=False)


def _metric(tmp_path, name: str, seeds=(0, 1, 2), **params) -> list[float]:
    job = get_job("leading_terms")
    ctx = RunContext(tmp_path, device="cpu", model_ref=None, data_ref="builtin:tiny", progress=False)
    p = job.Params(**{**SMALL, **params})
    out = []
    for seed in seeds:
        ctx.seed = seed
        out.append(job.run(ctx, p, seed).metrics[name])
    ctx.close()
    return out


def test_min_early_cosine_supported_inside_the_leading_term_regime(tmp_path):
    values = _metric(tmp_path, "min_early_cosine", lr=0.5, steps=200)
    assert LeadingTermsJob.default_criterion.decide(values).verdict == "supported", values


def test_min_early_cosine_refuted_outside_it(tmp_path):
    values = _metric(tmp_path, "min_early_cosine", lr=2.0, early_progress=0.6, mid_progress=0.9)
    assert LeadingTermsJob.default_criterion.decide(values).verdict == "refuted", values


def _trained_tiny(seed: int):
    seqs = load_sequences("builtin:tiny", 128, 13, seed=seed)
    x, y = seqs.tokens[:96, :-1], seqs.tokens[:96, 1:]
    held = seqs.tokens[96:, :-1], seqs.tokens[96:, 1:]
    V = len(seqs.vocab)
    terms = corpus_bases(x, y, V).terms()
    model = AttnOnlyOneHot(V, 12)
    train_sgd(model, x, y, lr=2.0, steps=80, batch_size=16, seed=seed)
    return model, terms, held, V


def _ordering(model, terms, held, V, seed) -> float:
    increases, controls = projection_check(model, terms, *held, seed=seed)
    at = {"early": None, "mid": None, "final": None}
    return seed_metrics(V, 0.0, terms, at, increases, controls, None, None, 0.1)["ordering_holds"]


def test_ordering_criterion_planted_both_ways():
    crit = Criterion.parse("ordering_holds > 0.5")
    holds, broken = [], []
    for seed in (0, 1, 2):
        model, terms, held, V = _trained_tiny(seed)
        increases, controls = projection_check(model, terms, *held, seed=seed)
        assert all(increases[t] > controls[t] for t in ("output", "value")), (increases, controls)
        holds.append(_ordering(model, terms, held, V, seed))
        with torch.no_grad():  # the planted violation: W_O no longer carries its bigram direction at all
            model.W_O.copy_(project_out(model.W_O, terms["output"]))
        increases, controls = projection_check(model, terms, *held, seed=seed)
        assert abs(increases["output"]) < 1e-4 and abs(controls["output"]) < 1e-4, (increases, controls)
        broken.append(_ordering(model, terms, held, V, seed))
    assert crit.decide(holds).verdict == "supported", holds
    assert crit.decide(broken).verdict == "refuted", broken


def test_projection_control_removes_a_component_of_the_same_norm():
    model, terms, held, _ = _trained_tiny(0)
    before = {n: p.detach().clone() for n, p in model.named_terms().items()}
    projection_check(model, terms, *held, seed=0)
    for n, p in model.named_terms().items():   # every tensor restored afterwards
        torch.testing.assert_close(p.detach(), before[n], rtol=0, atol=0)


def _paths(kind: str, seed: int, V: int = 12, n: int = 8):
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(V, V, generator=g, dtype=torch.float64)
    direction = B if kind == "bigram" else torch.randn(V, V, generator=g, dtype=torch.float64)
    D0 = 5 * torch.randn(V, V, generator=g, dtype=torch.float64)
    steps = [0, 1, 2, 4, 8, 16, 100, 1000]
    paths = [D0 + 0.01 * s * direction + 0.002 * s * torch.randn(V, V, generator=g, dtype=torch.float64)
             for s in steps[:n]]
    return steps[:n], paths, B


def test_toy_criterion_planted_both_ways():
    crit = LeadingTermsJob.toy_criterion
    for kind, verdict in (("bigram", "supported"), ("random", "refuted")):
        values = []
        for seed in (0, 1, 2):
            steps, paths, B = _paths(kind, seed)
            rows = path_rows(steps, paths, B)
            values.append(early_change_cosine(rows, 0.1))
        assert crit.decide(values).verdict == verdict, (kind, values)


def test_early_toy_checkpoints_follow_the_rule():
    steps, paths, B = _paths("bigram", 0)
    rows = path_rows(steps, paths, B)
    for r in rows:   # the planted change has a different cosine at every step, so the mean tells which were used
        r["cos_bigram_change"] = None if r["step"] == 0 else float(r["step"])
    assert early_change_cosine(rows, 0.1) == pytest.approx((1 + 2 + 4 + 8 + 16 + 100) / 6)  # <= 100 of 1000
    assert early_change_cosine(rows, 0.0001) == 1.0   # none that early: the first after step 0
