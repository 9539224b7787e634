"""The `leading_terms` job kind: parameters, a run through a RunContext in a temp dir (metrics, plots, details),
and one run through the real runner that attaches evidence to a claim."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from claimgraph.experiments.context import RunContext
from claimgraph.experiments.registry import get_job

TINY = dict(seq_len=12, n_train=96, n_eval=32, lr=2.0, steps=80, batch_size=16, n_checkpoints=12,
            n_frequent=4, top_k=3)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def job():
    return get_job("leading_terms")


@pytest.fixture(scope="module")
def tiny_run(job, tmp_path_factory):
    """Two seeds of the job at test size on the built-in tiny language, then summarize."""
    run_dir = tmp_path_factory.mktemp("run")
    ctx = RunContext(run_dir, device="cpu", model_ref=None, data_ref="builtin:tiny", progress=False)
    params = job.Params(**TINY)
    results = []
    for seed in (0, 1):
        ctx.seed = seed
        results.append(job.run(ctx, params, seed))
    ctx.seed = None
    summary = job.summarize(ctx, params, results)
    ctx.close()
    return run_dir, params, results, summary


def test_params_refuse_unknown_and_inconsistent_fields(job):
    with pytest.raises(ValidationError, match="Extra inputs"):
        job.Params(learning_rate=1.0)
    with pytest.raises(ValidationError, match="mid_progress"):
        job.Params(early_progress=0.5, mid_progress=0.5)
    with pytest.raises(ValidationError):
        job.Params(lr=0)
    p = job.Params()
    assert p.lr == 10.0 and p.steps == 600 and p.positional


def test_spec_validation_knows_the_metrics(job):
    from claimgraph.experiments.api import build_spec
    from claimgraph.graph.errors import InvalidInput

    spec = build_spec("leading_terms", params={"steps": 50})
    assert spec.criterion.metric == "min_early_cosine" and spec.data == "synthetic:default"
    assert build_spec("leading_terms", criterion="cos_output_mid > 0.9").criterion.threshold == 0.9
    with pytest.raises(InvalidInput, match="not reported"):
        build_spec("leading_terms", criterion="accuracy > 0.5")


def test_run_reports_declared_metrics_and_a_verdict_metric(job, tiny_run):
    _, params, results, _ = tiny_run
    for r in results:
        m = r.metrics
        assert set(m) <= set(job.metrics), f"undeclared metrics: {set(m) - set(job.metrics)}"
        early = [m[f"cos_{t}_early"] for t in ("output", "value", "attention")]
        assert all(math.isfinite(c) and -1 <= c <= 1 + 1e-9 for c in early)
        assert m["min_sgd_early_cosine"] == min(early)
        gd = [m[f"cos_{t}_gd_early"] for t in ("output", "value", "attention")]
        assert m["min_early_cosine"] == min(gd)   # the verdict: full-batch gradient descent (the paper's setting)
        # the noise floor caps the SGD output cosine (to first order; a little slack for the higher terms)
        assert 0 < m["noise_floor_early"] < 1 and m["cos_output_early"] <= m["noise_floor_early"] + 0.02
        rows = r.details["gd_checkpoints"]
        assert rows[-1]["step"] == m["step_early"] and rows[0]["step"] == 1 and len(rows) >= 3
        assert m["loss_init"] == pytest.approx(math.log(m["d_vocab"]), abs=1e-5)
        assert m["loss_final"] < m["loss_mid"] <= m["loss_early"] < m["loss_init"]
        assert 3 <= m["step_early"] <= m["step_mid"] <= m["step_final"] == params.steps
        assert m["ordering_terms_only"] == float(m["loss_increase_output"] > m["loss_increase_value"]
                                                 > m["loss_increase_attention"])
        assert m["ordering_holds"] == float(m["ordering_terms_only"] == 1 and all(
            m[f"loss_increase_{t}"] > m[f"loss_increase_{t}_control"] for t in ("output", "value", "attention")))
        # removing W_O's bigram direction must hurt: it carries most of what the model learned
        assert m["loss_increase_output"] > 0.1


def test_early_checkpoint_follows_the_registered_progress_rule(tiny_run):
    _, params, results, _ = tiny_run
    for r in results:
        rows = r.details["checkpoints"]
        loss0, drop = r.metrics["loss_init"], r.metrics["loss_init"] - r.metrics["loss_final"]
        early = next(row for row in rows if row["step"] == r.metrics["step_early"])
        assert loss0 - early["loss_eval"] >= params.early_progress * drop
        before = [row for row in rows if 3 <= row["step"] < early["step"]]
        assert all(loss0 - row["loss_eval"] < params.early_progress * drop for row in before)
        assert r.metrics["cos_output_early"] == early["cos_output"]


def test_full_batch_control_equals_the_run_when_the_batch_is_the_training_set(job, tmp_path):
    """With batch_size = n_train, SGD is gradient descent: the control must reproduce the run's early row."""
    ctx = RunContext(tmp_path, device="cpu", model_ref=None, data_ref="builtin:tiny", progress=False)
    ctx.seed = 0
    r = job.run(ctx, job.Params(**{**TINY, "batch_size": TINY["n_train"], "steps": 40}), 0)
    ctx.close()
    for t in ("output", "value", "attention", "position"):
        assert r.metrics[f"cos_{t}_gd_early"] == pytest.approx(r.metrics[f"cos_{t}_early"], abs=1e-5), t
        assert r.metrics[f"ratio_{t}_gd_early"] == pytest.approx(r.metrics[f"ratio_{t}_early"], rel=1e-4), t
    assert r.details["gd_control_early"]["loss_eval"] == pytest.approx(r.metrics["loss_early"], abs=1e-5)


def test_run_writes_plots_metrics_and_readable_associations(tiny_run):
    run_dir, params, results, summary = tiny_run
    art = run_dir / "artifacts"
    for name in ("cosine_seed0.png", "projection_seed0.png", "cosine_seed1.png", "projection_seed1.png",
                 "cosine_over_training.png", "projection_loss_increase.png"):
        data = (art / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, name
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["seed"] for r in rows} == {0, 1}
    assert all("cos_output" in r and "loss_eval" in r for r in rows)
    assoc = results[0].details["associations"]
    assert len(assoc["tokens"]) == params.n_frequent
    for basis in ("bigram", "interchangeability", "context", "context_lift"):
        assert all(len(v) == params.top_k for v in assoc[basis].values()), basis
    assert summary["ordering_holds_seeds"] == sum(int(r.metrics["ordering_holds"]) for r in results)
    assert summary["n_seeds"] == 2 and "0.998" in summary["notes"]
    json.dumps([r.model_dump(mode="json") for r in results], allow_nan=False)  # the result file stays strict JSON


def test_runner_attaches_evidence_to_a_claim(file_store):
    """The job through the real worker subprocess: run folder, verdict, evidence node on the claim."""
    from claimgraph.experiments.api import add_experiment
    from claimgraph.experiments.runner import run_experiment
    from claimgraph.graph import EdgeType, Node

    claim = "claim:closed-form-weight-characterizations-via-gradient-leading-terms"
    file_store.add_node(Node(id=claim, type="claim", title="Closed-form weight characterizations via gradient "
                                                           "leading terms"))
    exp = add_experiment(file_store, [claim], "leading_terms", params={**TINY, "toy_check": False},
                         data="builtin:tiny", seeds=[0], device="cpu")
    assert exp.attrs["spec"]["model"] == "toy:default"  # the kind's default, not used with toy_check off
    out = run_experiment(file_store, exp.id, progress=False)
    assert out.status == "completed", out.error
    assert out.verdict in ("supported", "refuted", "inconclusive")
    result = json.loads((Path(out.run_dir) / "result.json").read_text())
    assert "artifacts/cosine_over_training.png" in json.dumps(result["artifacts"])
    assert result["decision"]["n"] == 1
    ev = file_store.get_node(out.evidence_id)
    assert ev.attrs["verdict"] == out.verdict and ev.attrs["criterion"]["metric"] == "min_early_cosine"
    assert ev.attrs["criterion"]["threshold"] == 0.99 and "min_early_cosine" in ev.attrs["metrics"]
    assert "paper reports" in ev.text and "loss increase" in ev.text   # observed values and reference in words
    edge = {"supported": EdgeType.supports, "refuted": EdgeType.refutes}.get(out.verdict)
    linked = [e for e in file_store.edges(out.evidence_id, direction="out") if e.dst == claim]
    assert [e.type for e in linked] == ([edge] if edge else [])


@pytest.mark.slow
def test_toy_model_comparison(job, tmp_path):
    """With a toy reference the job compares the toy's embedding->unembedding path with B at each checkpoint
    (trains toy:tiny once per test session)."""
    ctx = RunContext(tmp_path, device="cpu", model_ref="toy:tiny", data_ref="builtin:tiny", progress=False)
    params = job.Params(**{**TINY, "toy_sequences": 128})
    ctx.seed = 0
    r = job.run(ctx, params, 0)
    ctx.seed = None
    summary = job.summarize(ctx, params, [r])
    ctx.close()
    assert set(r.metrics) <= set(job.metrics), f"undeclared metrics: {set(r.metrics) - set(job.metrics)}"
    rows = r.details["toy"]["checkpoints"]
    assert rows[0]["step"] == 0 and rows[0]["cos_bigram_change"] is None and len(rows) >= 6
    # a trained toy's direct path leans towards B and not towards the wrong basis B^T
    assert r.metrics["toy_cos_bigram_final"] > r.metrics["toy_cos_bigram_transposed_final"] + 0.05
    assert r.metrics["toy_cos_bigram_change_final"] > 0.05
    assert (tmp_path / "artifacts" / "toy_direct_path.png").read_bytes()[:8] == PNG
    assert "Toy model toy:tiny" in summary["notes"]
    from claimgraph.graph.errors import InvalidInput

    ctx = RunContext(tmp_path / "hf", device="cpu", model_ref="hf:/nowhere", data_ref="builtin:tiny",
                     progress=False)
    with pytest.raises(InvalidInput, match="toy models only"):
        job.run(ctx, params, 0)
    ctx.close()
