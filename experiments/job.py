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
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from .spec import Criterion


class JobParams(BaseModel):
    """Base for every kind's Params: unknown fields are an error, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SeedResult(BaseModel):
    """What one seed of a job computed. `metrics` are scalars (the criterion reads one of them);
    `details` is any JSON-able structure worth keeping (tables, top tokens)."""

    seed: int
    metrics: dict[str, float]
    details: dict[str, Any] = Field(default_factory=dict)


class Job(ABC):
    kind: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type[JobParams]]
    default_criterion: ClassVar[Criterion]
    metrics: ClassVar[dict[str, str]] = {}
    default_model: ClassVar[str | None] = "toy:default"
    default_data: ClassVar[str | None] = "synthetic:default"
    default_seeds: ClassVar[list[int]] = [0, 1, 2]

    @abstractmethod
    def run(self, ctx: "RunContext", params: Any, seed: int) -> SeedResult:  # noqa: F821
        """Compute one seed. Use ctx.device, ctx.model_ref, ctx.data_ref, ctx.log, ctx.log_metrics, ctx.artifact."""

    def summarize(self, ctx: "RunContext", params: Any, results: list[SeedResult]) -> dict[str, Any]:  # noqa: F821
        """Optional: work across seeds (plots, tables). Returns JSON-able details for the result file."""
        return {}
