"""Claim status from mixed evidence (graph.models.STATUS_RULES), on hand-made evidence sets in a real store."""
from __future__ import annotations

import pytest

from claimgraph.graph import EdgeType, MadeBy, Node, NodeType, Store
from claimgraph.graph.models import STATUS_RULES
from claimgraph.graph.queries import node_page, status_from_verdicts, status_reports

CLAIM = "claim:the-feature-has-the-predicted-effect"


def _store_with(tmp_path, evidence: list[dict]) -> Store:
    """A claim tested by one experiment per evidence entry; each entry's attrs become the evidence node's attrs,
    linked as the runner links them (produced, plus supports/refutes for a decided verdict)."""
    s = Store(tmp_path / "s.duckdb")
    s.add_node(Node(id=CLAIM, type=NodeType.claim, title="The feature has the predicted effect"), made_by=MadeBy.manual)
    for i, attrs in enumerate(evidence):
        exp = f"experiment:e{i}"
        ev = f"evidence:e{i}"
        with s.transaction():
            s.add_node(Node(id=exp, type=NodeType.experiment, title=f"experiment {i}"), made_by=MadeBy.manual)
            s.link(exp, EdgeType.tests, CLAIM, made_by=MadeBy.manual)
            s.add_node(Node(id=ev, type=NodeType.evidence, title=f"evidence {i}", attrs=attrs),
                       made_by=MadeBy.experiment)
            s.link(exp, EdgeType.produced, ev, made_by=MadeBy.experiment)
            edge = {"supported": EdgeType.supports, "refuted": EdgeType.refutes}.get(attrs.get("verdict"))
            if edge is not None and attrs.get("decisive", True):
                s.link(ev, edge, CLAIM, made_by=MadeBy.experiment)
    return s


def _ev(verdict: str, kind: str, **extra) -> dict:
    return {"verdict": verdict, "kind": kind, "model": "toy:default", "run_id": f"run-{kind}",
            "experiment": f"experiment:{kind}", "criterion": {"metric": "m", "op": ">", "threshold": 0.1}, **extra}


@pytest.mark.parametrize("verdicts, status", [
    ([], "untested"),
    (["supported"], "supported"),
    (["supported", "supported"], "supported"),
    (["refuted"], "refuted"),
    (["inconclusive", "inconclusive"], "inconclusive"),
    (["supported", "refuted"], "contested"),
    (["supported", "refuted", "inconclusive"], "contested"),
    (["supported", "inconclusive"], "mixed"),
    (["refuted", "inconclusive", "inconclusive"], "mixed"),
])
def test_status_rule(verdicts, status):
    assert status_from_verdicts(verdicts) == status


def test_one_method_supporting_and_two_inconclusive_is_mixed_and_says_who_said_what(tmp_path):
    s = _store_with(tmp_path, [_ev("supported", "logit_weights"), _ev("inconclusive", "ablation"),
                               _ev("inconclusive", "pinned_sampling")])
    report = status_reports(s, [CLAIM])[CLAIM]
    assert report.status == "mixed"
    assert report.by_verdict == {"supported": ["logit_weights on toy:default"],
                                 "inconclusive": ["ablation on toy:default", "pinned_sampling on toy:default"]}
    assert report.describe() == ("mixed (supported: logit_weights on toy:default; "
                                 "inconclusive: ablation on toy:default, pinned_sampling on toy:default)")
    assert node_page(s, CLAIM).status == "mixed"


def test_agreeing_evidence_supports_and_disagreeing_evidence_contests(tmp_path):
    agree = _store_with(tmp_path / "a", [_ev("supported", "sae"), _ev("supported", "sae")])
    assert status_reports(agree, [CLAIM])[CLAIM].describe() == "supported (supported: sae on toy:default x2)"
    disagree = _store_with(tmp_path / "b", [_ev("supported", "sae"), _ev("refuted", "ablation")])
    assert status_reports(disagree, [CLAIM])[CLAIM].status == "contested"


def test_evidence_that_does_not_decide_is_listed_but_does_not_move_the_status(tmp_path):
    s = _store_with(tmp_path, [_ev("supported", "sae"), _ev("refuted", "ablation", decisive=False)])
    report = status_reports(s, [CLAIM])[CLAIM]
    assert report.status == "supported" and report.not_deciding == ["ablation on toy:default"]
    only = _store_with(tmp_path / "only", [_ev("refuted", "ablation", decisive=False)])
    assert status_reports(only, [CLAIM])[CLAIM].status == "untested"


def test_superseded_evidence_is_ignored(tmp_path):
    s = _store_with(tmp_path, [_ev("refuted", "sae", superseded=True), _ev("supported", "sae")])
    assert status_reports(s, [CLAIM])[CLAIM].status == "supported"


def test_the_rules_are_documented_where_users_read_them():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "data-model.md").read_text()
    for word in ("untested", "supported", "refuted", "contested", "mixed", "inconclusive", "decisive"):
        assert word in STATUS_RULES and word in doc
