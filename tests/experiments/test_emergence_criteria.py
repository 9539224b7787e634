"""Planted truth for the `emergence` criteria: score tables built so that the categories that need context do
(supported) or do not (refuted) cross the threshold on every axis, read by the job's own analysis; and the
token-alone F1 that decides which categories need context, on labels whose answer is known by construction."""
from __future__ import annotations

import pytest
import torch

from claimgraph.experiments.kinds.emergence import EmergenceJob
from claimgraph.experiments.kinds.emergence.analysis import ScoreTable, SizeScores, analyse
from claimgraph.experiments.kinds.emergence.sweep import token_alone_f1
from claimgraph.experiments.spec import Criterion

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


# ---------------------------------------------------------------------------------------------- the real model's shape

LM_DEPTHS = [f"blocks.{d - 1}.hook_resid_post" if d else "blocks.0.hook_resid_pre" for d in range(0, 31, 3)]
LM_CATS = ["base64", "arabic", "code", "prose", "string", "comment", "string&prose", "arabic&doc:po"]
LM_TOKEN_F1 = [0.83, 0.98, 0.73, 0.66, 0.79, 0.21, 0.30, 0.30]  # three categories need context


def _lm_table(series_of: dict[int, list[float]], noise: float, seed: int) -> ScoreTable:
    """One pretrained model, one checkpoint, the 11 registered depths: category c follows series_of[c] (else a
    flat 0.8, present everywhere), every cell perturbed by seeded noise of SD `noise`."""
    g = torch.Generator().manual_seed(seed)
    flat = [0.8] * len(LM_DEPTHS)
    cells = [[min(1.0, max(0.0, series_of.get(c, flat)[d] + noise * float(torch.randn(1, generator=g))))
              for c in range(len(LM_CATS))] for d in range(len(LM_DEPTHS))]
    return ScoreTable(categories=LM_CATS, token_f1=LM_TOKEN_F1,
                      sizes=[SizeScores(model="lm:smollm2-135m", n_params=134_515_008, checkpoints=["final"],
                                        hooks=LM_DEPTHS, score=[cells])])


RISE = [0.1, 0.12, 0.15, 0.3, 0.6, 0.7, 0.72, 0.75, 0.74, 0.7, 0.68]   # absent at the embedding, present from depth 12
LOW = [0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.3, 0.28, 0.3, 0.27, 0.25]    # never present
DIP = [0.8, 0.78, 0.75, 0.3, 0.25, 0.3, 0.7, 0.75, 0.78, 0.8, 0.8]     # present, lost at depths 9-15, back


@pytest.mark.parametrize(("rising", "verdict"), [(3, "supported"), (1, "refuted")])
def test_depth_criterion_on_the_real_model_shape_both_ways(rising, verdict):
    """`depth_threshold_fraction > 0.5 band=0.1`, registered for lm:smollm2-135m: the three context categories
    (indices 5-7) rise past the threshold with depth (all three: supported) or only one of them does (refuted);
    the five token-readable ones are present from the embedding on and are not counted. No time or scale axis,
    so claim (1)'s minimum is absent, not zero."""
    crit = Criterion.parse("depth_threshold_fraction > 0.5 band=0.1")
    series = {c: (RISE if i < rising else LOW) for i, c in enumerate([5, 6, 7])}
    reports = [analyse(_lm_table(series, 0.03, seed), 0.5, 0.1) for seed in range(3)]
    for r in reports:
        assert r.metrics["context_categories"] == 3
        assert "emergence_fraction_min" not in r.metrics and "time_threshold_fraction" not in r.metrics
        assert "scale_threshold_fraction" not in r.metrics
    assert crit.decide([r.metrics["depth_threshold_fraction"] for r in reports]).verdict == verdict


@pytest.mark.parametrize(("dipping", "verdict"), [(3, "supported"), (0, "refuted")])
def test_reemergence_criterion_on_the_real_model_shape_both_ways(dipping, verdict):
    """`reemergence_fraction > 0.1 band=0.05` over the 8 real-text categories and 11 depths with noisy cells:
    three categories that are present, lost for three depths and back (supported), or none, every series flat
    at 0.8 with the same noise (refuted: noise of SD 0.03 does not make a fall and a rise of 0.1 below 0.5)."""
    crit = EmergenceJob.reemergence_criterion
    series = {c: DIP for c in range(dipping)}
    values = [analyse(_lm_table(series, 0.03, seed), 0.5, 0.1).metrics["reemergence_fraction"] for seed in range(3)]
    assert crit.decide(values).verdict == verdict, values
