"""Ending a run in the store: the evidence node a result becomes, attaching it in one transaction, and recording
a final status. Shared by the runner (runs computed by this command's worker) and the executors (runs handed
to Slurm or submitit's local executor)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from claimgraph.graph import EdgeType, MadeBy, Node, NodeType, Store
from claimgraph.graph.errors import NotFound
from claimgraph.graph.ids import slugify
from claimgraph.graph.models import utcnow
from claimgraph.graph.portable import stored_path

from .records import RunConfig, RunResult, RunState, fingerprint, read_result


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def disk_full(run_dir: Path, returncode: int | None = None) -> str | None:
    """'disk full (ENOSPC) ...' when the worker said so by its exit code or the run folder's filesystem has no
    space left, else None: a run that died of a full disk is recorded as that, not as "process died"."""
    from .worker import DISK_FULL_EXIT

    try:
        st = os.statvfs(run_dir)
        full = st.f_bavail * st.f_frsize < 64 * 1024
    except OSError:
        full = False
    if returncode == DISK_FULL_EXIT or full:
        return (f"disk full (ENOSPC): no space left on the filesystem of {run_dir}; free some space (or choose "
                "another folder with --runs-dir) and run it again")
    return None


def evidence_node(config: RunConfig, result: RunResult) -> Node:
    d = result.decision
    crit = config.spec.criterion
    if d.mean is None:
        value = "no value"
    elif d.n > 1 and d.ci_low is not None and d.ci_high is not None:
        value = f"{d.mean:.3g} [{d.ci_low:.3g}, {d.ci_high:.3g}]"
    else:
        value = f"{d.mean:.3g}"
    verdict = d.verdict if d.decisive else f"{d.verdict} (insufficient seeds)"
    title = f"{verdict}: {crit.metric} = {value} ({config.spec.kind}, {d.n} seed{'s' * (d.n != 1)})"
    notes = result.summary.get("notes") if isinstance(result.summary, dict) else None
    text = d.reason + (f"\n{notes}" if notes else "")
    attrs: dict[str, Any] = {
        "verdict": d.verdict, "run_id": config.run_id, "experiment": config.experiment_id,
        "criterion": crit.model_dump(mode="json"), "decision": d.model_dump(mode="json"),
        "effect_size": result.effect_size,
        "metrics": {k: v.model_dump(mode="json") for k, v in result.metrics.items()},
        "kind": config.spec.kind, "model": config.spec.model, "data": config.spec.data,
        "seeds": config.spec.seeds, "device": config.device, "config_hash": config.config_hash,
        "run_dir": str(Path(config.run_id)), "artifacts": result.artifacts, "superseded": False,
        "reused_from": result.reused_from, "params": config.spec.params,
        "fingerprint": fingerprint(config.code_version, config.inputs, config.spec.params),
        "decisive": d.decisive,
    }
    return Node(id=f"evidence:{slugify(config.experiment_id.split(':', 1)[1])}-{config.run_id.lower()}"[:220],
                type=NodeType.evidence, title=title, text=text, attrs=attrs)


def attach_result(store: Store, run_dir: Path) -> str:
    """Attach a completed run's result to the graph in one transaction; returns the evidence id."""
    config = RunConfig.model_validate_json((run_dir / "config.json").read_text())
    result = read_result(run_dir)
    if result is None:
        raise NotFound(f"{run_dir} has no readable result.json")
    node = evidence_node(config, result)
    # portable store: the run folder (and a reused one) as recorded relative to the store's folder
    source = stored_path(store, run_dir)
    node.attrs["run_dir"] = source
    if result.reused_from:
        node.attrs["reused_from"] = stored_path(store, result.reused_from)
    verdict_edge = {"supported": EdgeType.supports, "refuted": EdgeType.refutes}.get(result.decision.verdict) \
        if result.decision.decisive else None
    with store.transaction():
        for old in store.edges(config.experiment_id, direction="out", type=EdgeType.produced):
            if old.dst != node.id:
                prev = store.get_node(old.dst)
                if not prev.attrs.get("superseded"):
                    store.add_node(prev.model_copy(update={"attrs": {**prev.attrs, "superseded": True}}),
                                   made_by=MadeBy.experiment, source=prev.provenance.source if prev.provenance else None,
                                   source_hash=prev.provenance.source_hash if prev.provenance else None)
        store.add_node(node, made_by=MadeBy.experiment, source=source, source_hash=config.config_hash)
        store.link(config.experiment_id, EdgeType.produced, node.id, made_by=MadeBy.experiment,
                   source=source, source_hash=config.config_hash)
        if verdict_edge is not None:
            for target in config.targets:
                if store.has_node(target):
                    store.link(node.id, verdict_edge, target, made_by=MadeBy.experiment, source=source,
                               source_hash=config.config_hash, attrs={"run_id": config.run_id})
        store.put_run(run_id=config.run_id, status="completed", verdict=result.decision.verdict,
                      evidence_id=node.id, ended_at=utcnow(), error=None)
    return node.id


def finalize(store: Store, row: dict[str, Any], state: RunState | None, *, override: str | None = None,
              error: str | None = None) -> dict[str, Any]:
    """Record a run's final status (attaching evidence when it completed) and return the updated row."""
    run_dir = Path(row["run_dir"])
    status = override or (state.status if state else "failed")
    if status == "completed" and read_result(run_dir) is not None:
        attach_result(store, run_dir)
    else:
        if status == "completed":
            status, error = "failed", "status says completed but result.json is missing or unreadable"
        store.put_run(run_id=row["run_id"], status=status, ended_at=(state.ended_at if state and state.ended_at
                                                                      else utcnow()),
                      error=error or (state.error if state else None))
    return store.runs(run_id=row["run_id"])[0]
