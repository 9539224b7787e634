"""An experiment plan: many experiments registered from one YAML or JSON file in one process and one transaction.

    experiments:
      - id: experiment:logit-weights-base64-feature      # optional; default: made from the kind and first claim
        claims: [finding:causal-validation-of-base64-feature-function-via-pinned-feature-sampling]
        kind: logit_weights
        title: logit_weights of the base64-span feature    # optional
        params: {category: base64}                         # as `--param`; dotted names (sae.k: 32) or nested maps
        criterion: "category_effect_z > 3 band=1"          # optional; default: the kind's
        model: toy:default                                 # optional, like data, seeds, device, timeout_s
        seeds: 3-10

Everything `claimgraph experiment add` takes, one entry per experiment; YAML anchors and merge keys (`<<: *real`)
share settings between entries, and top-level keys starting with `x-` hold anchors (they register nothing). The
whole plan is written in one transaction, each entry validated as it is added: a bad entry is reported with the
file, its line and the field, and nothing of the plan is registered. Entries
already registered with the same spec are found again (re-registering a plan is a no-op).

Nothing here imports torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from claimgraph.graph import Node, Store
from claimgraph.graph.errors import InvalidDocument, InvalidInput, NotFound

from .api import add_experiment


class PlanEntry(BaseModel):
    """One experiment of a plan: the fields of `claimgraph experiment add`."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    claims: list[str] = Field(min_length=1)
    kind: str
    title: str | None = None
    text: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    criterion: str | None = None
    model: str | None = None
    data: str | None = None
    seeds: int | str | list[int] | None = None
    device: str | None = None
    timeout_s: float | None = None
    _line: int | None = PrivateAttr(default=None)  # where the entry starts in its plan file


def _entry_lines(root: Any) -> list[int]:
    """The 1-based line of each entry of the composed plan's `experiments` sequence (YAML or JSON)."""
    import yaml

    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "experiments" and isinstance(value, yaml.SequenceNode):
                return [item.start_mark.line + 1 for item in value.value]
    return []


def load_plan(path: str | Path) -> list[PlanEntry]:
    """The entries of a plan file (YAML, or JSON, which YAML reads), each checked against PlanEntry and carrying
    its line; InvalidDocument names the file, line and field. Parsed with the bounded safe loader
    (graph.yamlsafe: no Python objects, no alias bombs)."""
    from claimgraph.graph.yamlsafe import compose_bounded

    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"{where}: no such plan file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidDocument(f"cannot read the plan: {e}", path=where) from None
    root, doc = compose_bounded(text, where, what="is not a valid plan (YAML or JSON)")
    if not isinstance(doc, dict) or not isinstance(doc.get("experiments"), list):
        raise InvalidDocument("a plan is a mapping with a list under 'experiments'", path=where,
                              field="experiments")
    unknown = sorted(k for k in map(str, doc) if k != "experiments" and not k.startswith("x-"))
    if unknown:
        raise InvalidDocument(f"unknown top-level key(s) {', '.join(unknown)}; a plan has 'experiments' and "
                              "x-<name> keys that hold YAML anchors", path=where, field=unknown[0])
    lines = _entry_lines(root)
    entries: list[PlanEntry] = []
    seen: set[str] = set()
    for i, raw in enumerate(doc["experiments"]):
        line = lines[i] if i < len(lines) else None
        if not isinstance(raw, dict):
            raise InvalidDocument("this entry is not a mapping", path=where, line=line, field=f"experiments[{i}]")
        try:
            entry = PlanEntry.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise InvalidDocument(err["msg"], path=where, line=line, field=f"experiments[{i}].{loc}") from None
        if entry.id and entry.id in seen:
            raise InvalidDocument(f"experiment id {entry.id} appears twice", path=where, line=line,
                                  field=f"experiments[{i}].id")
        seen.add(entry.id or "")
        entry._line = line
        entries.append(entry)
    return entries


def add_plan(store: Store, path: str | Path) -> list[Node]:
    """Register every experiment of the plan at `path` in one transaction (each spec validated, each claim looked
    up): all are registered or, on the first bad entry, none (InvalidDocument naming the file, the entry's line
    and what is wrong)."""
    entries = load_plan(path)

    def fail(i: int, e: Exception) -> InvalidDocument:
        label = f" ({entries[i].id})" if entries[i].id else ""
        return InvalidDocument(f"experiments[{i}]{label}: {e}", path=str(path), line=entries[i]._line)

    out = []
    with store.transaction():  # add_experiment validates each spec; the first bad entry rolls back them all
        for i, entry in enumerate(entries):
            try:
                targets = [store.resolve_id(c) for c in entry.claims]
                out.append(add_experiment(store, targets, entry.kind, title=entry.title, text=entry.text,
                                          experiment_id=entry.id, params=entry.params, criterion=entry.criterion,
                                          model=entry.model, data=entry.data, seeds=entry.seeds,
                                          device=entry.device, timeout_s=entry.timeout_s))
            except (InvalidInput, NotFound) as e:
                raise fail(i, e) from None
    return out
