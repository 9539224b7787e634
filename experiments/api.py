"""Registering experiments: an experiment node holds a validated job spec and `tests` the claims it tests.

Nothing here imports torch: parameters are validated against the kind's pydantic Params.
"""
from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from claimgraph.graph import EdgeType, MadeBy, Node, NodeType, Store
from claimgraph.graph.errors import InvalidInput, NotFound
from claimgraph.graph.ids import make_id

from .job import param_names
from .registry import get_job
from .spec import Criterion, JobSpec, check_seeds, parse_seeds


def parse_param(text: str) -> tuple[str, Any]:
    """`k=v` from the command line; v is read as JSON when it parses (numbers, true/false, lists), else a string."""
    if "=" not in text:
        raise InvalidInput(f"--param {text!r} is not of the form name=value")
    key, _, raw = text.partition("=")
    key = key.strip()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def seed_list(seeds: int | str | list[int] | None) -> list[int] | None:
    """Seeds as given on the command line or from Python: a count N (0..N-1), a `parse_seeds` string ("3-10",
    "0,4,9") or a list; None stays None. InvalidInput says what is wrong."""
    if seeds is None:
        return None
    try:
        chosen = list(seeds) if isinstance(seeds, list) else parse_seeds(seeds)
        check_seeds(chosen)
    except ValueError as e:
        raise InvalidInput(str(e)) from None
    if not chosen:
        raise InvalidInput("--seeds names no seed")
    return chosen


def _first_error(e: ValidationError, prefix: str) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"])
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        parts.append(f"{prefix}{loc}: {err['msg']}{got}")
    return "; ".join(parts)


def build_spec(kind: str, *, params: dict[str, Any] | None = None, criterion: Criterion | str | None = None,
               model: str | None = None, data: str | None = None, seeds: int | str | list[int] | None = None,
               device: str | None = None, timeout_s: float | None = None) -> JobSpec:
    """A complete, validated spec: unknown kinds, unknown or ill-typed parameters and criteria on metrics the
    kind does not report are refused here, before anything runs."""
    job = get_job(kind)
    try:
        p = job.Params.model_validate(params or {})
    except ValidationError as e:
        known = ", ".join(param_names(job.Params))
        raise InvalidInput(f"bad parameter for kind {kind!r}: {_first_error(e, 'param ')}. "
                           f"Parameters of {kind}: {known}") from None
    if isinstance(criterion, str):
        try:
            criterion = Criterion.parse(criterion)
        except ValueError as e:
            raise InvalidInput(str(e)) from None
    criterion = criterion or job.default_criterion
    if job.metrics and criterion.metric not in job.metrics:
        raise InvalidInput(f"criterion metric {criterion.metric!r} is not reported by kind {kind!r}; "
                           f"it reports: {', '.join(sorted(job.metrics))}")
    fields: dict[str, Any] = {"kind": kind, "params": p.model_dump(mode="json"), "criterion": criterion,
                              "model": model if model is not None else job.default_model,
                              "data": data if data is not None else job.default_data,
                              "seeds": seed_list(seeds) if seeds is not None else list(job.default_seeds)}
    if device is not None:
        fields["device"] = device
    if timeout_s is not None:
        fields["timeout_s"] = timeout_s
    try:
        spec = JobSpec(**fields)
    except ValidationError as e:
        raise InvalidInput(f"bad experiment spec: {_first_error(e, '')}") from None
    spec = job.resolve_spec(spec)  # e.g. the digest of an SAE given by path (features.target.FeatureJob)
    job.check_spec(spec)  # e.g. a model family or hook the adapter cannot serve (substrate.families.ModelJob)
    return spec


def add_experiment(store: Store, targets: list[str], kind: str, *, title: str | None = None,
                   text: str = "", experiment_id: str | None = None, **spec_fields: Any) -> Node:
    """Register an experiment that tests `targets` (claims or findings). Re-adding the same spec for the same
    targets returns the existing experiment; a different spec gets its own node."""
    if not targets:
        raise InvalidInput("an experiment tests at least one claim or finding (--claim)")
    found = store.get_nodes(targets)
    for t in targets:
        if t not in found:
            raise NotFound(f"no node {t!r} to test; `claimgraph list --type claim` shows claim ids")
        if found[t].type not in (NodeType.claim, NodeType.finding):
            raise InvalidInput(f"{t} is a {found[t].type.value}; experiments test claims or findings")
    spec = build_spec(kind, **spec_fields)
    first = found[targets[0]]
    title = title or f"{kind} test of: {first.title}"
    base = experiment_id or make_id(NodeType.experiment, f"{kind} {first.id.split(':', 1)[1]}")
    spec_json = spec.model_dump(mode="json")
    exp_id, n = base, 1
    while store.has_node(exp_id):
        existing = store.get_node(exp_id)
        tested = {e.dst for e in store.edges(exp_id, direction="out", type=EdgeType.tests)}
        if _current_form(existing.attrs.get("spec")) == spec_json and tested == set(targets):
            return existing
        if experiment_id:
            raise InvalidInput(f"{experiment_id} exists with a different spec; choose another id")
        n += 1
        exp_id = f"{base}-{n}"
    node = Node(id=exp_id, type=NodeType.experiment, title=title,
                text=text or f"Runs the {kind} job on {spec.model} / {spec.data} and decides by "
                             f"{spec.criterion.describe()}.",
                attrs={"kind": kind, "spec": spec_json})
    with store.transaction():
        store.add_node(node, made_by=MadeBy.manual)
        for t in targets:
            store.link(exp_id, EdgeType.tests, t, made_by=MadeBy.manual)
    return store.get_node(exp_id)


def _current_form(stored: Any) -> dict[str, Any] | None:
    """A stored spec with its parameters as the kind's Params write them today (a spec stored before a field was
    nested, e.g. the SAE recipe, names the same computation as the nested one); None when it no longer validates."""
    try:
        spec = JobSpec.model_validate(stored)
        params = get_job(spec.kind).Params.model_validate(spec.params).model_dump(mode="json")
    except (ValidationError, InvalidInput):
        return None
    return spec.model_copy(update={"params": params}).model_dump(mode="json")


def resolve_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """A stored spec's parameters as the kind's Params read them today (defaults of fields added since filled
    in, older flat names nested); InvalidInput when they no longer validate."""
    job = get_job(kind)
    try:
        return job.Params.model_validate(params).model_dump(mode="json")
    except ValidationError as e:
        raise InvalidInput(f"the stored parameters no longer validate for kind {kind!r}: "
                           f"{_first_error(e, 'param ')}") from None


def get_spec(store: Store, experiment_id: str) -> tuple[Node, JobSpec, list[str]]:
    node = store.get_node(experiment_id)
    if node.type != NodeType.experiment:
        raise InvalidInput(f"{experiment_id} is a {node.type.value}, not an experiment")
    try:
        spec = JobSpec.model_validate(node.attrs.get("spec"))
    except ValidationError as e:
        raise InvalidInput(f"{experiment_id} holds an invalid spec: {_first_error(e, '')}") from None
    targets = [e.dst for e in store.edges(experiment_id, direction="out", type=EdgeType.tests)]
    return node, spec, targets


def list_experiments(store: Store) -> list[dict[str, Any]]:
    """Each experiment with its kind, targets, criterion, and latest run's status and verdict."""
    out = []
    for node in store.list_nodes(NodeType.experiment):
        targets = [e.dst for e in store.edges(node.id, direction="out", type=EdgeType.tests)]
        runs = store.runs(node.id)
        latest = runs[0] if runs else None
        spec = node.attrs.get("spec", {})
        out.append({"id": node.id, "title": node.title, "kind": node.attrs.get("kind"), "targets": targets,
                    "criterion": Criterion.model_validate(spec["criterion"]).describe() if spec.get("criterion") else None,
                    "model": spec.get("model"), "seeds": spec.get("seeds"),
                    "last_run": latest["run_id"] if latest else None,
                    "last_status": latest["status"] if latest else None,
                    "verdict": latest["verdict"] if latest else None})
    return out


def plan_groups(experiments: list[dict[str, Any]]) -> list[list[str]]:
    """Experiments (rows of `list_experiments`) grouped by model, to run side by side: the experiments of one
    model stay together, in their order (they share the model's caches: its training, SAEs and activations are
    computed once, by the first of them, and reused by the rest), the group with most experiments first. `run
    --jobs N` keeps N groups running and starts the next as one ends."""
    groups: dict[str, list[str]] = {}
    for e in experiments:
        groups.setdefault(str(e.get("model")), []).append(e["id"])
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))


__all__ = ["add_experiment", "build_spec", "get_spec", "list_experiments", "parse_param", "plan_groups"]
