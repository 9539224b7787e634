"""Stale evidence: evidence whose fingerprint no longer matches what would produce it now.

Each evidence row a run attaches keeps its fingerprint (`attrs.fingerprint`, records.fingerprint): the kind's
code version (codeversion.code_version), the digests of the model and the data it ran on (Job.input_fingerprint)
and the hash of its resolved parameters. Here each part is recomputed from the current code, files and the
kind's Params, and compared. Torch-free and cheap: code versions are cached per process, file digests per stat.

Evidence that an experiment produced before fingerprints were recorded (it has a `kind` but no fingerprint)
is stale too: nothing says it matches today's code. Evidence added by hand (no `kind`) is never stale, and
evidence superseded by a later run of its experiment is not checked.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from claimgraph.graph import EdgeType, Node, NodeType, Store
from claimgraph.graph.errors import ClaimgraphError

from .codeversion import code_version
from .records import params_digest
from .registry import get_job
from .spec import JobSpec

PARTS = ("code_version", "model", "data", "params")


def current_fingerprint(kind: str, model: str | None, data: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """What the fingerprint of a run of `kind` on `model` / `data` with `params` would be now. A part that cannot be
    computed (a kind no longer installed, a model folder gone, parameters that no longer validate) is a string
    starting with "unavailable: " and the reason."""
    from .api import resolve_params

    out: dict[str, Any] = {}
    try:
        job = get_job(kind)
    except ClaimgraphError as e:
        return {p: f"unavailable: {e}" for p in PARTS}
    try:
        out["code_version"] = code_version(kind)
    except (OSError, ValueError, SyntaxError) as e:
        out["code_version"] = f"unavailable: {e}"
    try:
        resolved = resolve_params(kind, params)
        out["params"] = params_digest(resolved)
    except ClaimgraphError as e:
        out["params"], resolved = f"unavailable: {e}", params
    try:
        spec = JobSpec.model_construct(kind=kind, params=resolved, model=model, data=data,
                                       criterion=job.default_criterion)  # only the references are read
        inputs = job.input_fingerprint(spec)
        out["model"], out["data"] = inputs.get("model"), inputs.get("data")
    except (ClaimgraphError, OSError, ValueError) as e:
        out["model"] = out["data"] = f"unavailable: {e}"
    return out


def _reasons(attrs: dict[str, Any], now: dict[str, Any]) -> list[str]:
    stored = attrs.get("fingerprint") or {}
    kind = attrs.get("kind")
    out = []
    for part in PARTS:
        if stored.get(part) == now.get(part):
            continue
        cur = now.get(part)
        if isinstance(cur, str) and cur.startswith("unavailable: "):
            out.append(f"{part} cannot be checked ({cur[len('unavailable: '):]})")
        elif part == "code_version":
            out.append(f"the code of kind {kind} changed (version {stored.get(part)} -> {cur})")
        elif part == "params":
            out.append(f"{kind}'s parameters resolve differently now (a default changed or a field was added)")
        else:
            ref = attrs.get(part)
            out.append(f"the {part} {ref} changed (digest {str(stored.get(part))[:19]} -> {str(cur)[:19]})")
    return out


def stale_evidence(nodes: Iterable[Node]) -> dict[str, str]:
    """For the evidence among `nodes` that is stale, id -> why (the parts that differ, in words). This is the
    graph's `StaleCheck`: pass it as `stale=` to graph.queries.status_reports and node_page."""
    out: dict[str, str] = {}
    memo: dict[tuple, dict[str, Any]] = {}
    for n in nodes:
        a = n.attrs
        if n.type != NodeType.evidence or not a.get("kind") or a.get("superseded"):
            continue  # hand-made evidence says nothing of code; superseded evidence was replaced already
        if not isinstance(a.get("fingerprint"), dict):
            out[n.id] = "recorded before fingerprints: nothing says it matches the current code, model and data"
            continue
        params = a.get("params")
        if not isinstance(params, dict):
            out[n.id] = "its parameters were not recorded"
            continue
        key = (a["kind"], a.get("model"), a.get("data"), repr(sorted(params.items())))
        if key not in memo:
            memo[key] = current_fingerprint(a["kind"], a.get("model"), a.get("data"), params)
        reasons = _reasons(a, memo[key])
        if reasons:
            out[n.id] = "; ".join(reasons)
    return out


def stale_experiments(store: Store) -> list[dict[str, Any]]:
    """The experiments whose current (not superseded) evidence is stale: `{"experiment", "evidence", "seeds",
    "reason"}` each, in id order: what `claimgraph run --stale` re-runs (on the seeds the stale run used)."""
    produced: dict[str, str] = {}  # evidence -> the experiment that produced it
    for e in store.edges(type=EdgeType.produced):
        produced[e.dst] = e.src
    current = [n for n in store.get_nodes(produced).values()
               if n.type == NodeType.evidence and not n.attrs.get("superseded")]
    stale = stale_evidence(current)
    out: dict[str, dict[str, Any]] = {}
    for n in sorted(current, key=lambda n: n.id):
        if n.id in stale:
            exp = produced[n.id]
            out.setdefault(exp, {"experiment": exp, "evidence": n.id, "seeds": n.attrs.get("seeds"),
                                 "reason": stale[n.id]})
    return [out[k] for k in sorted(out)]


__all__ = ["current_fingerprint", "stale_evidence", "stale_experiments"]
