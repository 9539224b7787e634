"""Registry of job kinds: the built-ins (one package each under claimgraph.experiments.kinds) plus any installed
package's entry points in the `claimgraph.jobs` group (`name = "package.module:JobClass"`). Kinds are imported
only when asked for."""
from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from claimgraph.graph.errors import InvalidInput

from .job import Job

BUILTIN: dict[str, str] = {
    "sae": "claimgraph.experiments.kinds.sae:SaeJob",
    "logit_weights": "claimgraph.experiments.kinds.logit_weights:LogitWeightsJob",
    "ablation": "claimgraph.experiments.kinds.ablation:AblationJob",
    "pinned_sampling": "claimgraph.experiments.kinds.pinned_sampling:PinnedSamplingJob",
    "emergence": "claimgraph.experiments.kinds.emergence:EmergenceJob",
    "gradient_decomposition": "claimgraph.experiments.kinds.gradient_decomposition:GradientDecompositionJob",
    "leading_terms": "claimgraph.experiments.kinds.leading_terms:LeadingTermsJob",
}


def _targets() -> dict[str, str]:
    found = dict(BUILTIN)
    for ep in entry_points(group="claimgraph.jobs"):
        found.setdefault(ep.name, ep.value)
    return found


def _importable(target: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(target.split(":")[0]) is not None
    except ModuleNotFoundError:
        return False


def kinds() -> list[str]:
    """Names of every available job kind."""
    return sorted(k for k, t in _targets().items() if _importable(t))


def target_of(kind: str) -> str:
    """`module:Class` of a job kind; InvalidInput lists the known kinds when there is none."""
    targets = _targets()
    if kind not in targets or not _importable(targets[kind]):
        raise InvalidInput(f"unknown job kind {kind!r}; known kinds: {', '.join(kinds()) or 'none'}")
    return targets[kind]


def get_job(kind: str) -> Job[Any]:
    """An instance of the job class for `kind`; InvalidInput lists the known kinds otherwise."""
    target = target_of(kind)
    module, _, attr = target.partition(":")
    cls = getattr(import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Job)):
        raise InvalidInput(f"job kind {kind!r} points at {target}, which is not a claimgraph Job")
    return cls()
