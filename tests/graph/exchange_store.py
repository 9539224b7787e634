"""A real store for the exchange tests: a copy of the bundled documents ingested with the real encoder, suggestions
computed from those vectors and decided (one accepted, one rejected), and an experiment with evidence.

The evidence is written through the same Store calls the runner makes when it attaches a run (experiment
-tests-> claim, -produced-> evidence, evidence -supports-> claim, a run record), without running a job: runs
themselves are tested in tests/experiments, where a real run is exported too.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from claimgraph.graph import EdgeType, MadeBy, Node, Store

REPO = Path(__file__).resolve().parents[2]
CLAIM = "claim:learned-features-reflect-the-functionality-of-the-model-and-not-just-the-data-distribution"
EXPERIMENT = "experiment:shuffled-weights-control"
EVIDENCE = "evidence:shuffled-weights-control-r2"
OLD_EVIDENCE = "evidence:shuffled-weights-control-r1"
DECISION = {"verdict": "supported", "mean": 0.373, "ci_low": 0.36, "ci_high": 0.386, "n": 3,
            "reason": "the 95% CI lies above 0.15"}
CRITERION = {"metric": "single_token_frac_diff", "op": ">", "threshold": 0.1, "band": 0.05, "confidence": 0.95}


def _evidence_attrs(run_id: str, decision: dict, superseded: bool) -> dict:
    return {"verdict": decision["verdict"], "run_id": run_id, "experiment": EXPERIMENT, "criterion": CRITERION,
            "decision": decision, "metrics": {"single_token_frac_diff": {"mean": decision["mean"], "n": 3}},
            "kind": "sae", "seeds": [0, 1, 2], "run_dir": f"runs/shuffled-weights-control/{run_id}",
            "artifacts": {"artifacts/sae_seed0/cfg.json": "ab" * 32}, "superseded": superseded}


def build(db: Path) -> Path:
    """The store at `db`, its documents in `papers/` beside it (a project folder, as a researcher keeps one)."""
    import shutil

    from claimgraph.graph.similarity import accept, reject, suggest
    from claimgraph.ingest import ingest_paths

    shutil.copytree(REPO / "data" / "papers", db.parent / "papers")
    with Store(db) as s:
        ingest_paths(s, [db.parent / "papers"], embed=True, progress=False)
        claim = next(n.id for n in s.list_nodes("claim") if n.id.startswith(CLAIM))
        s.add_node(Node(id=EXPERIMENT, type="experiment", title="Shuffled-weights control",
                        attrs={"kind": "sae", "seeds": [0, 1, 2], "criterion": CRITERION}))
        s.link(EXPERIMENT, EdgeType.tests, claim)
        for run_id, decision, superseded, ev in (
                ("r1", {**DECISION, "verdict": "inconclusive", "mean": 0.12, "ci_low": 0.01, "ci_high": 0.2}, True,
                 OLD_EVIDENCE),
                ("r2", DECISION, False, EVIDENCE)):
            run_dir = f"runs/shuffled-weights-control/{run_id}"
            s.add_node(Node(id=ev, type="evidence", title=f"{decision['verdict']}: single_token_frac_diff",
                            text=decision["reason"], attrs=_evidence_attrs(run_id, decision, superseded)),
                       made_by=MadeBy.experiment, source=run_dir, source_hash="c0ffee" * 10)
            s.link(EXPERIMENT, EdgeType.produced, ev, made_by=MadeBy.experiment, source=run_dir,
                   source_hash="c0ffee" * 10)
            if decision["verdict"] == "supported":
                s.link(ev, EdgeType.supports, claim, made_by=MadeBy.experiment, source=run_dir,
                       source_hash="c0ffee" * 10, attrs={"run_id": run_id})
            now = datetime.now(timezone.utc)
            s.put_run(run_id=run_id, experiment_id=EXPERIMENT, config_hash="c0ffee" * 10, status="completed",
                      device="cpu", run_dir=str(s.home / run_dir), pid=1234, started_at=now, ended_at=now,
                      verdict=decision["verdict"], evidence_id=ev)
        pairs = suggest(s, threshold=0.5)
        assert len(pairs) >= 2, "the bundled documents give at least two suggestions at 0.5"
        accept(s, pairs[0].src, pairs[0].dst)
        reject(s, pairs[1].src, pairs[1].dst)
    return db


def claim_id(s: Store) -> str:
    return next(n.id for n in s.list_nodes("claim") if n.id.startswith(CLAIM))
