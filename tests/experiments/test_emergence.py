"""Emergence logic on hand-made score tables (crossings, re-emergence with a margin, the metrics), the batched
best-latent scores against select.detection_scores, the heatmap's drawn arrays and PNG colours against its
table, and the job's parameters and criteria (no model training here: all of it runs in seconds)."""
from __future__ import annotations

import numpy as np
import pytest

from claimgraph.experiments.kinds.emergence import EmergenceJob, EmergenceParams
from claimgraph.experiments.kinds.emergence.analysis import (
    ScoreTable,
    SizeScores,
    analyse,
    first_crossing,
    mean_table,
    reemergence,
)
from claimgraph.experiments.registry import get_job

TH, MARGIN = 0.5, 0.1


# ---------------------------------------------------------------------------------------------- crossings

@pytest.mark.parametrize("series, expected", [
    ([0.1, 0.3, 0.55, 0.7], 2),          # rising: crosses where it first reaches the threshold
    ([0.1, 0.5, 0.2, 0.9], 1),           # >= counts; the first crossing, even if it dips later
    ([0.2, 0.3, 0.45, 0.49], None),      # never reaches it
    ([0.6, 0.2, 0.9], None),             # present from the start: no emergence
    ([0.5, 0.9], None),                  # exactly at the threshold at the start is present
    ([0.2], None),                       # one point: no axis
    ([], None),
])
def test_first_crossing(series, expected):
    assert first_crossing(series, TH) == expected


@pytest.mark.parametrize("series, expected", [
    ([0.8, 0.3, 0.9], (0, 1, 2)),                    # present, lost, back
    ([0.2, 0.8, 0.75, 0.3, 0.4, 0.85], (1, 3, 5)),   # the best peak before and after the dip
    ([0.55, 0.48, 0.56], None),                      # wiggle around the threshold within the margin
    ([0.58, 0.45, 0.54], None),                      # falls 0.13 but rises only 0.09
    ([0.9, 0.6, 0.95], None),                        # dips but never below the threshold: not lost
    ([0.3, 0.1, 0.35], None),                        # a dip among absent scores is not re-emergence
    ([0.2, 0.6, 0.9], None),                         # plain emergence
    ([0.9, 0.6, 0.3], None),                         # fades
    ([0.7, 0.3], None),                              # too short
    ([0.6, 0.5, 0.4, 0.6], (0, 2, 3)),               # the first dip j=1 is not below the threshold; j=2 is
])
def test_reemergence_needs_a_fall_and_a_rise_beyond_the_margin(series, expected):
    assert reemergence(series, TH, MARGIN) == expected


def test_reemergence_margin_boundary():
    assert reemergence([0.6, 0.45, 0.6], TH, 0.15) == (0, 1, 2)  # exactly the margin counts
    assert reemergence([0.6, 0.45, 0.6], TH, 0.1500001) is None


# ---------------------------------------------------------------------------------------------- analysis

def _table() -> ScoreTable:
    """Two sizes x 3 checkpoints x 3 depths x 3 categories with known outcomes:
    cat a: small - time crossing at ckpt 2 (depth 2), depth crossing at depth 2; big - present from ckpt 0.
    cat b: small - present at depth 0 throughout (no time or depth crossing), re-emerges across depth at the end;
           big - the same.
    cat c: never present in small; big: crosses at ckpt 1 (depth 1), depth crossing at 1 -> scale crossing."""
    def grid(cells):  # cells[ckpt][depth] = (a, b, c)
        return [[list(c) for c in row] for row in cells]

    small = grid([
        [(0.1, 0.8, 0.1), (0.2, 0.7, 0.1), (0.3, 0.8, 0.2)],
        [(0.1, 0.8, 0.1), (0.2, 0.6, 0.1), (0.45, 0.8, 0.2)],
        [(0.1, 0.9, 0.1), (0.3, 0.3, 0.2), (0.7, 0.85, 0.4)],
    ])
    big = grid([
        [(0.6, 0.8, 0.1), (0.6, 0.7, 0.1), (0.6, 0.8, 0.2)],
        [(0.6, 0.8, 0.1), (0.6, 0.6, 0.55), (0.6, 0.8, 0.2)],
        [(0.6, 0.9, 0.2), (0.6, 0.35, 0.8), (0.6, 0.95, 0.7)],
    ])
    hooks = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    return ScoreTable(categories=["a", "b", "c"], sizes=[
        SizeScores(model="toy:small", n_params=10, checkpoints=["0", "10", "100"], hooks=hooks, score=small),
        SizeScores(model="toy:big", n_params=20, checkpoints=["0", "10", "100"], hooks=hooks, score=big)])


def test_analyse_hand_made_table():
    t = _table()
    assert t.time_series(0, 0) == [0.3, 0.45, 0.7]
    assert t.depth_series(1, 2) == [0.2, 0.8, 0.7]
    assert t.scale_series(2) == [0.4, 0.8]
    r = analyse(t, TH, MARGIN)
    m = r.metrics
    # time: (a, small) crosses at ckpt 100; (c, big) at ckpt 10; (a, big), (b, *) present at 0; (c, small) never
    assert m["time_threshold_fraction"] == pytest.approx(2 / 6)
    # depth at the final ckpt: (a, small) at depth 2, (c, big) at depth 1; (b, *) present at 0; (a, big) at 0
    assert m["depth_threshold_fraction"] == pytest.approx(2 / 6)
    # scale: a 0.7 -> 0.6 present at small; b present; c 0.4 -> 0.8 crosses
    assert m["scale_threshold_fraction"] == pytest.approx(1 / 3)
    assert m["emergence_fraction_min"] == pytest.approx(1 / 3)
    # re-emergence at the final ckpt: b in both sizes (0.9 -> 0.3 -> 0.85, 0.9 -> 0.35 -> 0.95)
    assert m["reemergence_count"] == 2 and m["reemergence_fraction"] == pytest.approx(2 / 6)
    assert {(x.category, x.size, x.depths) for x in r.reemergence} == {("b", "toy:small", (0, 1, 2)),
                                                                       ("b", "toy:big", (0, 1, 2))}
    # at earlier checkpoints b dips to 0.6 / 0.6 (not below threshold): only the final checkpoint counts
    assert {x.checkpoint for x in r.reemergence_all_checkpoints} == {"100"}
    assert m["final_present_fraction"] == 1.0
    where = {(e.axis, e.category, e.size): e.at for e in r.emergence if e.index is not None}
    assert where == {("time", "a", "toy:small"): "100", ("time", "c", "toy:big"): "10",
                     ("depth", "a", "toy:small"): "blocks.1.hook_resid_post",
                     ("depth", "c", "toy:big"): "blocks.0.hook_resid_post", ("scale", "c", None): "toy:big"}


def test_axes_with_one_point_report_no_metric():
    t = _table()
    one = ScoreTable(categories=t.categories, sizes=[t.sizes[0].model_copy(update={
        "checkpoints": ["100"], "score": [t.sizes[0].score[-1]]})])
    m = analyse(one, TH, MARGIN).metrics
    assert "time_threshold_fraction" not in m and "scale_threshold_fraction" not in m
    assert "emergence_fraction_min" not in m
    assert m["depth_threshold_fraction"] == pytest.approx(1 / 3)
    two_depths = ScoreTable(categories=["a"], sizes=[SizeScores(model="m", n_params=1, checkpoints=["0"],
                                                                hooks=["h0", "h1"], score=[[[0.9], [0.1]]])])
    m2 = analyse(two_depths, TH, MARGIN).metrics
    assert "reemergence_fraction" not in m2 and "reemergence_count" not in m2


@pytest.mark.parametrize("bad", [
    dict(score=[[[0.1, 0.2]]]),                     # 2 categories for 1
    dict(score=[[[0.1]], [[0.2]]]),                 # 2 checkpoints for 1
    dict(hooks=["h0", "h1"]),                       # 2 depths, one cell
])
def test_score_table_refuses_ragged_shapes(bad):
    size = dict(model="m", n_params=1, checkpoints=["0"], hooks=["h0"], score=[[[0.1]]])
    with pytest.raises(ValueError):
        ScoreTable(categories=["a"], sizes=[SizeScores(**{**size, **bad})])


def test_score_table_refuses_unordered_sizes():
    t = _table()
    with pytest.raises(ValueError, match="ascending"):
        ScoreTable(categories=t.categories, sizes=list(reversed(t.sizes)))


def test_mean_table_averages_cells():
    t = _table()
    other = t.model_copy(deep=True)
    other.sizes[0].score[2][1][0] = 0.9
    mean = mean_table([t.model_dump(mode="json"), other.model_dump(mode="json")])
    assert mean.sizes[0].score[2][1][0] == pytest.approx((0.3 + 0.9) / 2)
    assert mean.sizes[1].score == t.sizes[1].score


# ---------------------------------------------------------------------------------------------- detection

def test_best_latents_matches_detection_scores_column_by_column():
    import torch

    from claimgraph.experiments.features.select import detection_scores
    from claimgraph.experiments.kinds.emergence.sweep import best_latents

    g = torch.Generator().manual_seed(0)
    m, d = 3000, 40
    labels = torch.rand(m, 3, generator=g) < torch.tensor([0.1, 0.3, 0.02])          # [M, 3]
    acts = torch.relu(torch.randn(m, d, generator=g) - 1.0)                          # sparse noise latents
    acts[:, 7] = labels[:, 0] * (1 + torch.rand(m, generator=g))                     # a perfect detector of 0
    acts[:, 11] = (labels[:, 1] | (torch.rand(m, generator=g) < 0.1)) * 2.0           # a leaky one of label 1
    acts[:, 12] = torch.round(acts[:, 12] * 2) / 2                                   # ties in activations
    for by in ("f1", "auroc"):
        best = best_latents(acts, labels, by=by)
        for c in range(3):
            det = detection_scores(acts, labels[:, c])
            j = det.best(by)
            assert int(best["latent"][c]) == j
            for k in ("f1", "precision", "recall", "auroc"):
                assert float(best[k][c]) == pytest.approx(float(getattr(det, k)[j]), abs=1e-6), (by, c, k)
            assert int(best["n_pos"][c]) == det.n_pos
    best = best_latents(acts, labels)
    assert int(best["latent"][0]) == 7 and float(best["f1"][0]) == 1.0 and float(best["auroc"][0]) == 1.0
    assert int(best["latent"][1]) == 11


def test_pick_checkpoints_log_spaced_ends_included():
    from claimgraph.experiments.kinds.emergence.sweep import pick_checkpoints

    steps = [0, 1, 2, 6, 13, 32, 75, 178, 422, 1000]
    assert pick_checkpoints(steps, 6) == [0, 2, 13, 32, 178, 1000]
    assert pick_checkpoints(steps, 2) == [0, 1000]
    assert pick_checkpoints([0, 5, 9], 6) == [0, 5, 9]


# ---------------------------------------------------------------------------------------------- heatmap

def test_heatmap_draws_exactly_the_table(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.image import imread

    from claimgraph.experiments.kinds.emergence.plots import DPI, axes_for, heatmap, panel_matrix

    t = _table()
    t.sizes[0] = t.sizes[0].model_copy(update={"hooks": t.sizes[0].hooks[:2],
                                               "score": [row[:2] for row in t.sizes[0].score]})
    fig = heatmap(t, TH)
    path = tmp_path / "h.png"
    fig.savefig(path, dpi="figure")
    panels = axes_for(fig)
    assert set(panels) == {(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)}  # small has 2 depths, its third panel is off
    for (si, d), ax in panels.items():
        drawn = np.asarray(ax.images[0].get_array())
        want = np.array([[t.sizes[si].score[k][d][c] for k in range(3)] for c in range(3)])
        np.testing.assert_array_equal(drawn, want)
        np.testing.assert_array_equal(panel_matrix(t, si, d), want)
    # the PNG's pixel at each cell centre has the colour of that cell's value
    FigureCanvasAgg(fig).draw()
    png = imread(path)                                                           # [H, W, 4] floats
    assert png.shape[0] == round(fig.get_figheight() * DPI)
    for (si, d), ax in panels.items():
        img = ax.images[0]
        for c in range(3):
            for k in range(3):
                x, y = ax.transData.transform((k, c))
                value = t.sizes[si].score[k][d][c]
                rgba = img.cmap(img.norm(value))
                got = png[png.shape[0] - 1 - int(y), int(x), :3]
                assert np.abs(got - np.array(rgba[:3])).max() < 3 / 255, (si, d, c, k, value)


# ---------------------------------------------------------------------------------------------- the job kind

def test_registered():
    assert isinstance(get_job("emergence"), EmergenceJob)


def test_sae_recipe_keeps_the_kinds_defaults_when_set_in_part():
    """Emergence's cells use TopK SAEs (k=8, 4x, 400 steps, 32k tokens): setting one field of the recipe keeps
    the others at the kind's defaults, not at the recipe class's ReLU defaults; flat names of stored specs too."""
    default = EmergenceParams().sae
    assert (default.architecture, default.k, default.expansion, default.steps, default.train_tokens) == \
        ("topk", 8, 4, 400, 32_768)
    for given in ({"sae.steps": 50}, {"sae": {"steps": 50}}, {"steps": 50}):
        assert EmergenceParams(**given).sae == default.model_copy(update={"steps": 50}), given


@pytest.mark.parametrize("bad", [
    {"colour": "red"},
    {"sizes": ["small"]},
    {"sizes": ["toy:small", "toy:small"]},
    {"categories": []},
    {"categories": ["cat:color", "cat:color"]},
    {"n_checkpoints": 1},
    {"threshold": 1.5},
    {"score": "auroc", "threshold": 0.3},
    {"sae.architecture": "gated"},
    {"sae.train_tokens": 100, "sae.batch_size": 256},
])
def test_params_refuse_bad_values(bad):
    with pytest.raises(ValueError):
        EmergenceParams(**bad)


def test_criteria_name_declared_metrics():
    job = EmergenceJob()
    assert job.default_criterion.metric == "emergence_fraction_min"
    assert job.reemergence_criterion.metric in job.metrics
    for name in ("time_threshold_fraction", "depth_threshold_fraction", "scale_threshold_fraction",
                 "reemergence_count", "reemergence_fraction", "final_present_fraction"):
        assert name in job.metrics
    crit = job.default_criterion  # over the three seeds' sweeps; one sweep alone decides nothing (issue 13)
    assert crit.decide([0.7, 0.72, 0.68]).verdict == "supported"
    assert crit.decide([0.3, 0.32, 0.28]).verdict == "refuted"
    assert crit.decide([0.55, 0.56, 0.54]).verdict == "inconclusive"
    assert crit.decide([0.7]).decisive is False
    assert set(analyse(_table(), TH, MARGIN).metrics) <= set(job.metrics)
