"""Planted truth for the `gradient_decomposition` criteria.

- precache_score_rank_corr (default, the intervention link): the pre-caching scores are computed by the job's
  own function on real (random, large-init) transformers; the influence ratios they are compared with are planted
  as a known function of the scores, increasing (the link holds: supported) or decreasing (it is reversed:
  refuted). A model where the true influence ratio is known without the decomposition does not exist; the
  decomposition itself is checked against its definitions in test_gradient_decomposition.py.
- The score's own planted truth: at the final residual stream no later block reads the ablated position, so
  every later KL is exactly zero (score 0); below it the later positions read it (score > 0).
- myopic_corr_drop_predicted (main job): seeds where pre-caching built the feature decide it, with a drop
  (supported) or none (refuted); seeds where the framework predicts no drop never decide it.
"""
from __future__ import annotations

import math

import torch

from claimgraph.experiments.kinds.gradient_decomposition import GradientDecompositionJob
from claimgraph.experiments.kinds.gradient_decomposition.intervention import (
    influence_ratios,
    precache_scores,
    rank_correlation,
)
from claimgraph.experiments.kinds.gradient_decomposition.majority import MajorityConfig, sample
from claimgraph.experiments.kinds.gradient_decomposition.run import predicted_drop
from claimgraph.experiments.kinds.gradient_decomposition.transformer import Transformer, TransformerConfig

TASK = MajorityConfig()
POSITIONS = TASK.useless_positions()


def _model(seed: int) -> Transformer:
    torch.manual_seed(seed)
    cfg = TransformerConfig(d_vocab=TASK.d_vocab, n_ctx=TASK.n_ctx, d_model=16, n_heads=2, d_mlp=32, n_layers=2,
                            init_std=0.5)
    return Transformer(cfg).double()


def _scores(seed: int, layer: int) -> dict[str, list[float]]:
    model = _model(seed)
    tokens = sample(TASK, 256, seed=seed + 100).tokens[:, :-1]
    W = torch.randn(len(POSITIONS), 16, TASK.n_vocab, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed))
    return precache_scores(model, tokens, layer, POSITIONS, W)


def test_precache_score_is_zero_where_no_later_position_reads_the_feature():
    final = _scores(0, layer=2)              # the last residual stream: only the unembedding reads it
    assert all(kl == 0.0 for kl in final["kl_later"]) and all(kl > 0 for kl in final["kl_own"])
    assert all(s == 0.0 for s in final["score"])
    mid = _scores(0, layer=1)                # the second block's attention reads position t from later ones
    assert all(kl > 0 for kl in mid["kl_later"]) and min(mid["score"]) > 0


def test_intervention_link_criterion_planted_both_ways():
    crit = GradientDecompositionJob.default_criterion
    tracks, reversed_ = [], []
    for seed in (0, 1, 2):
        score = _scores(seed, layer=1)["score"]
        assert len(set(score)) == len(score), "scores must differ between positions for the ranks to mean anything"
        tracks.append(rank_correlation(score, [2 * s + 0.1 for s in score]))
        reversed_.append(rank_correlation(score, [1 / s for s in score]))
    assert crit.decide(tracks).verdict == "supported", tracks
    assert crit.decide(reversed_).verdict == "refuted", reversed_


def test_rank_correlation_and_ratios_by_hand():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # ties take the average rank: ranks (1.5, 1.5, 3) and (1, 2, 3) -> 0.866...
    assert abs(rank_correlation([1, 1, 2], [1, 2, 3]) - math.sqrt(3) / 2) < 1e-12
    assert math.isnan(rank_correlation([1, 2], [1, 2])) and math.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))
    assert math.isnan(rank_correlation([1, 2, float("nan")], [1, 2, 3]))   # NaN pairs dropped: 2 left
    cum = torch.tensor([[1.0, -2.0, 0.0], [3.0, 1.0, 5.0], [0.0, 0.0, 0.0]])
    r = influence_ratios(cum)
    assert r[:2] == [3.0, 0.5] and math.isnan(r[2])


def test_myopic_criterion_planted_both_ways():
    crit = GradientDecompositionJob.myopic_criterion
    share, low = 0.5, 0.01
    assert crit.decide([predicted_drop(d, share, 0.2) for d in (0.20, 0.25, 0.22)]).verdict == "supported"
    assert crit.decide([predicted_drop(d, share, 0.2) for d in (0.0, 0.01, -0.01)]).verdict == "refuted"
    # where the framework predicts no drop, nothing is decided, whatever the drop
    assert crit.decide([predicted_drop(d, low, 0.2) for d in (0.3, 0.0, 0.2)]).verdict == "inconclusive"
