"""The contract every job kind fulfils. Importing a job module must not import torch: `experiment add`
validates parameters without it, so heavy imports go inside `run`.

A job kind is a subclass of Job with:
- `kind`: the name users type (`--kind sae`);
- `summary`: one line for `claimgraph experiment kinds`;
- `Params`: a pydantic model whose defaults run on a 2-core CPU in about a minute on the toy substrate
  (extra fields forbidden, so a typo is refused at `experiment add`);
- `default_criterion`: the registered decision rule used when the user gives none;
- `metrics`: name -> one-line meaning of each per-seed metric it reports (a criterion must name one);
- `run(ctx, params, seed)`: one seed's computation, returning its metrics;
- optionally `summarize(ctx, params, results)`: after all seeds (plots across seeds, tables).

A built-in kind is a package, `claimgraph.experiments.kinds.<kind>`: its `__init__` declares the class (the
names above, no methods) and its `run.py` holds the computation, `run_seed(ctx, params, seed)` and optionally
`summarize(ctx, params, results)`, which `Job.run` and `Job.summarize` import on first use. A kind written as
one module (a plugin) overrides `run` (and `summarize`) instead.
"""
from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from claimgraph.graph.errors import InvalidInput

from .spec import Criterion, JobSpec

if TYPE_CHECKING:
    from .context import RunContext


class JobParams(BaseModel):
    """Base for every kind's Params: unknown fields are an error, values are validated on assignment.

    A field holding a model (the SAE recipe `sae`) is set in part: `{"sae": {"steps": 200}}` and the command
    line's `--param sae.steps=200` both mean "this kind's default recipe with steps 200", never the recipe class's
    own defaults. `flat_aliases` maps names read at the top level onto such a field (specs stored before the
    field existed).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    flat_aliases: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _partial_nested(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            path = cls.flat_aliases.get(str(key), str(key)).split(".")
            if len(path) > 1 and path[0] not in cls.model_fields:
                out[key] = value  # not a field: extra="forbid" names it
                continue
            _set_path(out, path, value)
        for name, value in out.items():
            field = cls.model_fields.get(name)
            default = field.get_default(call_default_factory=True) if field is not None else None
            if isinstance(value, dict) and isinstance(default, BaseModel):
                out[name] = _merge(default.model_dump(), value)
        return out


class SeedResult(BaseModel):
    """What one seed of a job computed. `metrics` are scalars (the criterion reads one of them);
    `details` is any JSON-able structure worth keeping (tables, top tokens)."""

    seed: int
    metrics: dict[str, float]
    details: dict[str, Any] = Field(default_factory=dict)


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        node = tree.get(key)
        if isinstance(node, BaseModel):
            node = node.model_dump()
        tree[key] = node = dict(node) if isinstance(node, dict) else {}
        tree = node
    last = path[-1]
    tree[last] = _merge(tree[last], value) if isinstance(tree.get(last), dict) and isinstance(value, dict) else value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def param_names(params: type[BaseModel], prefix: str = "") -> list[str]:
    """The names a user can set, nested models' fields dotted (`sae.steps`)."""
    out = []
    for name, field in params.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            out += param_names(type(default), f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


P = TypeVar("P", bound=JobParams)


class Job(Generic[P]):
    """A job kind; `Job[XParams]` types `run`'s and `summarize`'s params as the kind's own Params."""

    kind: ClassVar[str]
    summary: ClassVar[str]
    Params: type[P]
    default_criterion: ClassVar[Criterion]
    metrics: ClassVar[dict[str, str]] = {}
    default_model: ClassVar[str | None] = "toy:default"
    default_data: ClassVar[str | None] = "synthetic:default"
    default_seeds: ClassVar[list[int]] = [0, 1, 2]

    def check_spec(self, spec: JobSpec) -> None:
        """Refuse (InvalidInput), at `experiment add`, a spec this kind could not run; by default a model or data
        reference naming a local path that does not exist (`hf:/x`, `text:/x.txt`). Kinds on a substrate model
        check their references fully (substrate.families.ModelJob)."""
        from pathlib import Path

        for what, ref in (("model", spec.model), ("data", spec.data)):
            if ref and ":" in ref:
                rest = ref.partition(":")[2].split("@")[0]
                if rest.startswith(("/", "~", "./")) and not Path(rest).expanduser().exists():
                    raise InvalidInput(f"{what} {ref!r}: {rest} does not exist")

    def input_fingerprint(self, spec: JobSpec) -> dict[str, str | None]:
        """Digests of what the spec's model and data references point at (`context.ref_digest`): part of the
        config hash and of each evidence row's fingerprint, so a changed model or corpus recomputes and marks
        the evidence it produced stale. Kinds on substrate models resolve revisions and gguf files too."""
        from .context import ref_digest

        return {"model": ref_digest(spec.model), "data": ref_digest(spec.data)}

    def resolve_spec(self, spec: JobSpec) -> JobSpec:
        """The spec with what its inputs are now written into its params (the digest of a file a parameter
        names), at `experiment add` and again before each run, so the config hash changes when the file does;
        refuses (InvalidInput) inputs that are no longer those the experiment registered. By default the spec."""
        return spec

    def input_provenance(self, spec: JobSpec) -> dict[str, Any] | None:
        """Where the run's inputs come from, recorded in environment.json as `model_provenance`; None by default."""
        return None

    @classmethod
    def computation(cls) -> ModuleType | None:
        """The kind package's `run.py` (imported now), or None for a kind without one."""
        name = f"{cls.__module__}.run"
        try:
            return import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            return None

    def run(self, ctx: RunContext, params: P, seed: int) -> SeedResult:
        """Compute one seed: `run_seed(ctx, params, seed)` of the kind's run.py. Use ctx.device, ctx.model_ref,
        ctx.data_ref, ctx.log, ctx.log_metrics, ctx.artifact."""
        comp = self.computation()
        if comp is None or not hasattr(comp, "run_seed"):
            raise NotImplementedError(f"job kind {self.kind!r} has no run.py with run_seed beside "
                                      f"{type(self).__module__}, and does not override run")
        result: SeedResult = comp.run_seed(ctx, params, seed)
        return result

    def summarize(self, ctx: RunContext, params: P, results: list[SeedResult]) -> dict[str, Any]:
        """Optional work across seeds (plots, tables): `summarize(ctx, params, results)` of the kind's run.py
        when it has one. Returns JSON-able details for the result file."""
        comp = self.computation()
        fn = getattr(comp, "summarize", None)
        return dict(fn(ctx, params, results)) if fn is not None else {}
