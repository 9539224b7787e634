"""The `gradient_decomposition` job kind end to end: registry, parameters, a tiny run through a real
RunContext in a temporary run folder (plots, metrics, checks), and the across-seed summary."""
from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from claimgraph.experiments.context import RunContext
from claimgraph.experiments.kinds.gradient_decomposition import GradientDecompositionJob
from claimgraph.experiments.registry import get_job, kinds
from claimgraph.graph.errors import InvalidInput

TINY = dict(n_in=5, n_out=3, d_model=8, n_heads=2, d_mlp=16, steps=12, batch_size=8, probe_sequences=96,
            risk_sequences=16, log_every=5)


def test_kind_is_registered():
    assert "gradient_decomposition" in kinds()
    assert isinstance(get_job("gradient_decomposition"), GradientDecompositionJob)


def test_params_refuse_unknown_and_invalid_fields():
    P = GradientDecompositionJob.Params
    with pytest.raises(ValidationError):
        P(stepz=10)
    with pytest.raises(ValidationError):
        P(pairing="diagonal")
    with pytest.raises(ValidationError):
        P(lr=0)
    assert P().model_dump()["pairing"] == "auto"


def test_default_criterion_reads_a_reported_metric_and_spec_builds():
    from claimgraph.experiments.api import build_spec

    job = GradientDecompositionJob
    assert job.default_criterion.metric in job.metrics
    spec = build_spec("gradient_decomposition", params={"steps": 50})
    assert spec.model is None and spec.data is None and spec.params["steps"] == 50
    with pytest.raises(InvalidInput):
        build_spec("gradient_decomposition", params={"steps": 50, "bogus": 1})


def _ctx(tmp_path, **kw) -> RunContext:
    ctx = RunContext(tmp_path, device="cpu", model_ref=kw.get("model_ref"), data_ref=kw.get("data_ref"),
                     progress=False)
    ctx.seed = 0
    return ctx


def test_refuses_model_and_corpus_references(tmp_path):
    job = GradientDecompositionJob()
    p = job.Params(**TINY)
    with pytest.raises(InvalidInput, match="trains its own model"):
        job.run(_ctx(tmp_path / "a", model_ref="toy:default"), p, 0)
    with pytest.raises(InvalidInput, match="majority task"):
        job.run(_ctx(tmp_path / "b", data_ref="text:/some/file.txt"), p, 0)
    with pytest.raises(InvalidInput, match="layer"):
        job.run(_ctx(tmp_path / "c"), job.Params(**{**TINY, "layer": 3}), 0)


@pytest.mark.parametrize("pairing", ["position", "set"])
def test_job_runs_end_to_end_and_writes_plots(tmp_path, pairing):
    job = GradientDecompositionJob()
    p = job.Params(**TINY, pairing=pairing)
    ctx = _ctx(tmp_path)
    try:
        res = job.run(ctx, p, 0)
        summary = job.summarize(ctx, p, [res])
    finally:
        ctx.close()
    m = res.metrics
    assert set(job.metrics) == set(m), "metrics and their declared descriptions disagree"
    # NaN by definition: the myopic criterion where the framework predicts no drop, the intervention link
    # without per-position influences (the "set" pairing)
    undefined = {k for k, v in m.items() if not math.isfinite(v)}
    allowed = {"myopic_corr_drop_predicted"} | (set() if pairing == "position" else
                                                {"precache_score_rank_corr", "precache_score_median",
                                                 "influence_ratio_median"})
    assert undefined <= allowed, m
    assert math.isfinite(m["myopic_corr_drop_predicted"]) == (m["precache_influence_share"]
                                                              >= p.myopic_min_precache_share)
    if pairing == "position":
        link = res.details["intervention_link"]
        assert len(link["score"]) == len(link["ratio"]) == len(res.details["positions"])
        assert all(v >= 0 for v in link["score"] + link["kl_own"] + link["kl_later"])
        assert -1 <= m["precache_score_rank_corr"] <= 1
    assert m["decomposition_check_error"] < 1e-4          # parts agree with the definitions (float32)
    assert m["adam_sum_error"] < 1e-5                     # part updates add up to Adam's updates
    assert m["replay_max_diff"] == 0.0                    # the tracked replay is the normal run, bit for bit
    assert m["risk_end"] < 1e-10 < m["risk_start"]
    assert m["influence_sum_ratio"] == pytest.approx(1.0, abs=0.05)
    shares = m["direct_influence_share"] + m["precache_influence_share"] + m["shared_influence_share"]
    assert shares == pytest.approx(1.0, abs=1e-9)
    assert m["myopic_corr_drop"] == pytest.approx(m["probe_corr_normal"] - m["probe_corr_myopic"])
    assert 0 <= m["task_accuracy"] <= 1 and -1 <= m["probe_corr_normal"] <= 1

    arts = {f.name for f in (tmp_path / "artifacts").iterdir()}
    assert {"influence_seed0.png", "probe_corr_seed0.png", "influence_summary.png",
            "probe_corr_summary.png"} <= arts
    for name in arts:
        assert (tmp_path / "artifacts" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    d = res.details
    n_groups = len(d["positions"]) if pairing == "position" else 1
    assert all(len(v) == n_groups for v in d["influence_by_group"].values())
    assert set(d["probe_corr_by_position"]) == {"init", "normal", "myopic", "split"}
    json.dumps(d)                                         # details are JSON-able
    assert summary["n_seeds"] == 1
    assert "at initialisation" in summary["notes"] and "One replicate" in summary["notes"]
    iv = summary["intervals"]["direct_influence_share"]
    assert iv["ci_low"] == iv["mean"] == iv["ci_high"] == m["direct_influence_share"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["condition"] for r in rows} == {"normal", "myopic", "split", "tracked"}


def test_job_runs_on_a_substrate_corpus(tmp_path):
    pytest.importorskip("claimgraph.experiments.substrate.corpus")
    job = GradientDecompositionJob()
    p = job.Params(**{**TINY, "steps": 6, "probe_sequences": 64})
    ctx = _ctx(tmp_path, data_ref="synthetic:tiny")
    try:
        with pytest.raises(InvalidInput, match="corpus feature"):
            job.run(ctx, job.Params(**{**TINY, "corpus_feature": "no_such_label"}), 0)
        res = job.run(ctx, p, 0)
    finally:
        ctx.close()
    m = res.metrics
    assert "probe_corr_split" not in m and "first_output_accuracy" not in m   # no segments to split
    assert set(m) <= set(job.metrics)
    assert m["replay_max_diff"] == 0.0 and m["decomposition_check_error"] < 1e-4
    assert m["influence_sum_ratio"] == pytest.approx(1.0, abs=0.05)
    assert res.details["pairing"] == "set" and res.details["feature"] == "paren_span"
    assert len(res.details["positions"]) == 30                     # synthetic:tiny has 32 tokens per sequence
    assert (tmp_path / "artifacts" / "influence_seed0.png").is_file()
