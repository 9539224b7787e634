"""Planted truth for the `emergence` criteria: score tables built so that the categories that need context do
(supported) or do not (refuted) cross the threshold on every axis, read by the job's own analysis; and the
token-alone F1 that decides which categories need context, on labels whose answer is known by construction."""
from __future__ import annotations

import pytest
import torch

from claimgraph.experiments.kinds.emergence import EmergenceJob
from claimgraph.experiments.kinds.emergence.analysis import ScoreTable, SizeScores, analyse
from claimgraph.experiments.kinds.emergence.sweep import token_alone_f1

CATS = ["ctx_a", "ctx_b", "ctx_c", "tok_a", "tok_b"]
TOKEN_F1 = [0.2, 0.3, 0.1, 0.95, 0.9]          # the last two are readable from the token alone


def _table(emerges: bool, noise: float, seed: int) -> ScoreTable:
    """Three sizes x three checkpoints x three depths. Token categories sit at 0.9 everywhere (present from the
    embedding and from the first checkpoint: they cannot cross). Context categories start at 0.1 and, when
    `emerges`, reach 0.8 at the last checkpoint, at depth >= 1 and in the two larger sizes; otherwise they stay
    at 0.2. `noise` perturbs every cell (seeded)."""
    g = torch.Generator().manual_seed(seed)
    sizes = []
    for si, model in enumerate(["toy:s", "toy:m", "toy:l"]):
        score = []
        for t in range(3):
            row = []
            for d in range(3):
                up = emerges and t == 2 and d >= 1 and si >= 1
                cell = [0.8 if up else 0.1 + 0.1 * (t > 0) for _ in range(3)] + [0.9, 0.9]
                row.append([min(1.0, max(0.0, v + noise * float(torch.randn(1, generator=g)))) for v in cell])
            score.append(row)
        sizes.append(SizeScores(model=model, n_params=1000 * (si + 1), checkpoints=["1", "10", "100"],
                                hooks=["resid_pre0", "resid_post0", "resid_post1"], score=score))
    return ScoreTable(categories=CATS, sizes=sizes, token_f1=TOKEN_F1)


@pytest.mark.parametrize(("emerges", "verdict"), [(True, "supported"), (False, "refuted")])
def test_emergence_criterion_planted_both_ways(emerges, verdict):
    values = [analyse(_table(emerges, 0.02, seed), 0.5, 0.1).metrics["emergence_fraction_min"] for seed in range(3)]
    assert EmergenceJob.default_criterion.decide(values).verdict == verdict, values


def test_token_readable_categories_are_not_counted():
    """Without token_f1 every category counts, and the two token categories (present from the start) can never
    cross: that bound is what capped the old metric."""
    with_f1 = analyse(_table(True, 0.0, 0), 0.5, 0.1).metrics
    without = analyse(_table(True, 0.0, 0).model_copy(update={"token_f1": None}), 0.5, 0.1).metrics
    assert with_f1["context_categories"] == 3 and without["context_categories"] == 5
    assert with_f1["scale_threshold_fraction"] == 1.0
    assert without["scale_threshold_fraction"] == pytest.approx(3 / 5)
    assert with_f1["emergence_fraction_min"] > without["emergence_fraction_min"]


def test_reemergence_criterion_planted_both_ways():
    crit = EmergenceJob.reemergence_criterion

    def table(dip: bool) -> ScoreTable:
        # present at the embedding, lost at depth 1, back at depth 2 (dip) or flat (no dip), every category
        series = [0.9, 0.2, 0.9] if dip else [0.9, 0.85, 0.9]
        score = [[[series[d]] * len(CATS) for d in range(3)]]
        return ScoreTable(categories=CATS, sizes=[SizeScores(model="toy:s", n_params=1, checkpoints=["10"],
                                                             hooks=["a", "b", "c"], score=score)])
    assert crit.decide([analyse(table(True), 0.5, 0.1).metrics["reemergence_fraction"]] * 3).verdict == "supported"
    assert crit.decide([analyse(table(False), 0.5, 0.1).metrics["reemergence_fraction"]] * 3).verdict == "refuted"


def test_token_alone_f1_on_planted_labels():
    g = torch.Generator().manual_seed(0)
    V = 20
    tokens = torch.randint(V, (64, 32), generator=g)                             # [N, T]
    flat = tokens.reshape(-1)
    by_token = (flat < 5)                                                        # exactly a token set: F1 1
    half = (flat < 10) & (torch.rand(flat.shape, generator=g) < 0.5)             # half of tokens 0-9's positions
    context = torch.zeros_like(flat, dtype=torch.bool)
    context[1:] = flat[:-1] == 3                                                 # "previous token was 3": context
    f1 = token_alone_f1(tokens, torch.stack([by_token, half, context], 1), V)
    assert f1[0] == pytest.approx(1.0)
    # best token set for `half`: tokens 0-9, precision 1/2 and recall 1 -> F1 2/3 (by construction, up to sampling)
    assert f1[1] == pytest.approx(2 / 3, abs=0.03)
    # for `context` every token has share ~1/V: no token set can do much better than firing everywhere
    # (F1 ~ 2/(V+1) ~ 0.1; the best of the sampled shares a little more), far below the 0.5 threshold
    assert f1[2] < 0.25
