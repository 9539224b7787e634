"""Which SAE a run names, and which other runs looked at the same SAE and feature (for feature pages).

Runs record their SAE in per-seed `details`: the `sae` job under `conditions.<trained|shuffled>.sae_folder`
(relative to the run's artifacts), feature jobs under `sae_folder` (a path) and/or `sae_key` (a folder of the
provisioned-SAE cache), with the chosen latent under `feature`. No torch here.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from claimgraph.graph.errors import InvalidDocument, InvalidInput, NotFound

if TYPE_CHECKING:
    from claimgraph.experiments.records import RunConfig, RunResult
    from claimgraph.graph import Store

FEATURE_KINDS = ("logit_weights", "ablation", "pinned_sampling")  # job kinds whose runs can relate to a page


class RelatedSeed(BaseModel):
    seed: int
    metrics: dict[str, float]
    details: dict[str, Any] = Field(default_factory=dict, description="The seed's scalar details (category, ...)")


class RelatedRun(BaseModel):
    """A run of a feature job on the same SAE and feature."""

    run_id: str
    kind: str
    experiment_id: str
    run_dir: str
    verdict: str
    reason: str
    criterion: str
    seeds: list[RelatedSeed]
    images: list[str] = Field(default_factory=list, description="PNG artifacts of the matching seeds (absolute paths)")


def resolve_run(store: Store, run: str | Path) -> Path:
    """The folder of run `run`: a run id recorded in the store, or a run folder given as a path."""
    p = Path(run)
    if (p / "config.json").is_file():
        return p
    rows = store.runs(run_id=str(run))
    if not rows:
        raise NotFound(f"no run {str(run)!r} in the store and no run folder at that path; "
                       "list runs with `claimgraph runs`")
    return Path(rows[0]["run_dir"])


def related_run_dirs(store: Store) -> list[Path]:
    """Folders of completed runs of the feature job kinds, candidates for `feature_page(related=...)` (the page
    keeps those that name its SAE and feature)."""
    out = []
    for row in store.runs(status="completed"):
        d = Path(row["run_dir"])
        cfg = _read_json(d / "config.json")
        if cfg and cfg.get("spec", {}).get("kind") in FEATURE_KINDS:
            out.append(d)
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_run(run_dir: Path) -> tuple[RunConfig, RunResult]:
    """(RunConfig, RunResult) of a completed run folder; NotFound / InvalidInput otherwise."""
    from claimgraph.experiments.records import RunConfig, read_result, read_state

    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise NotFound(f"{run_dir} is not a run folder (no config.json); give a run id from `claimgraph runs` "
                       "or a run folder")
    try:
        cfg = RunConfig.model_validate_json(cfg_path.read_text())
    except ValidationError as e:
        raise InvalidDocument(f"not a run config: {e.errors()[0]['msg']}", path=str(cfg_path)) from None
    result = read_result(run_dir)
    if result is None:
        state = read_state(run_dir)
        raise InvalidInput(f"run {cfg.run_id} has no result ({state.status if state else 'no status'}); feature "
                           "pages read completed runs: run the experiment first (`claimgraph run EXP`)")
    return cfg, result


class SaeRef(BaseModel):
    folder: Path
    key: str | None
    seed: int
    condition: str | None


def _sae_entries(details: Any) -> dict[str, Any]:
    """The part of a seed's details that names an SAE: itself, or an `sae` sub-dict."""
    if isinstance(details, dict):
        if "sae_folder" in details or "sae_key" in details:
            return details
        if isinstance(details.get("sae"), dict):
            return _sae_entries(details["sae"])
    return {}


def _sae_paths(entry: dict[str, Any], run_dir: Path) -> list[Path]:
    """Where an entry's SAE may lie: `sae_folder` absolute, or relative to the run's artifacts or the run folder;
    `sae_key` in the provisioned-SAE cache."""
    from claimgraph.experiments.context import cache_dir

    out = []
    if entry.get("sae_folder"):
        p = Path(str(entry["sae_folder"]))
        out += [p] if p.is_absolute() else [run_dir / "artifacts" / p, run_dir / p]
    if entry.get("sae_key"):
        out.append(cache_dir() / "saes" / str(entry["sae_key"]))
    return out


def locate_sae(run_dir: Path, result: RunResult, *, seed: int | None = None, condition: str | None = None) -> SaeRef:
    """The SAE a run names for one of its seeds (default: its first) and, for the sae job, a condition
    (default: trained)."""
    run_id = result.run_id
    seeds = [r.seed for r in result.per_seed]
    if not seeds:
        raise InvalidInput(f"run {run_id} has no per-seed results")
    if seed is None:
        seed = seeds[0]
    if seed not in seeds:
        raise InvalidInput(f"run {run_id} has no seed {seed}; its seeds: {', '.join(map(str, seeds))}")
    details = result.per_seed[seeds.index(seed)].details
    conds = {c: d for c, d in (details.get("conditions") or {}).items() if _sae_entries(d)} \
        if isinstance(details.get("conditions"), dict) else {}
    if conds:
        if condition is None:
            condition = "trained" if "trained" in conds else next(iter(conds))
        if condition not in conds:
            raise InvalidInput(f"run {run_id} has no SAE for condition {condition!r}; its conditions: "
                               f"{', '.join(conds)}")
        entry = _sae_entries(conds[condition])
    else:
        if condition is not None:
            raise InvalidInput(f"run {run_id} ({result.kind}) has one SAE per seed; --condition applies to runs "
                               "with several (the sae job's trained / shuffled)")
        entry = _sae_entries(details)
    if not entry:
        raise NotFound(f"run {run_id} ({result.kind}) names no SAE in its results; feature pages read runs of "
                       f"sae, {', '.join(FEATURE_KINDS)}")
    paths = _sae_paths(entry, run_dir)
    for p in paths:
        if (p / "cfg.json").is_file():
            key = entry.get("sae_key")
            return SaeRef(folder=p.resolve(), key=str(key) if key else None, seed=seed, condition=condition)
    raise NotFound(f"the SAE of run {run_id} is gone (looked in {', '.join(map(str, paths))}); a provisioned SAE "
                   "lives in the cache (CLAIMGRAPH_CACHE): re-run the experiment with --force to train it again")


def _matches(entry: dict[str, Any], run_dir: Path, sae: SaeRef) -> bool:
    if entry.get("sae_key") and (str(entry["sae_key"]) == sae.key or str(entry["sae_key"]) == sae.folder.name):
        return True
    return any(p.is_dir() and p.resolve() == sae.folder for p in _sae_paths(entry, run_dir))


def _feature_of(details: dict[str, Any]) -> int | None:
    f = details.get("feature")
    if isinstance(f, dict):
        f = f.get("index", f.get("feature"))
    return int(f) if isinstance(f, (int, float)) and not isinstance(f, bool) else None


def related_runs(dirs: Iterable[Path], sae: SaeRef, feature: int) -> list[RelatedRun]:
    """Of the run folders `dirs`, the completed runs whose seed details name this SAE and this feature."""
    from claimgraph.experiments.spec import Criterion

    out = []
    seen: set[Path] = set()
    for d in dirs:
        d = Path(d)
        if d.resolve() in seen or not (d / "result.json").is_file():
            continue
        seen.add(d.resolve())
        cfg, result = load_run(d)
        matched = []
        for r in result.per_seed:
            det = r.details
            entry = _sae_entries(det)
            if entry and _matches(entry, d, sae) and _feature_of(det) == feature:
                scalars = {k: v for k, v in det.items()
                           if isinstance(v, (str, int, float, bool)) and k not in ("sae_folder", "sae_key")}
                matched.append(RelatedSeed(seed=r.seed, metrics=r.metrics, details=scalars))
        if not matched:
            continue
        # only the plots of the seeds that studied this SAE's feature (a seed's artifacts are under
        # artifacts/seed<N>/); the other seeds' SAEs chose other features, and run-wide plots mix them
        own = tuple(f"artifacts/seed{m.seed}/" for m in matched)
        images = sorted(str((d / rel).resolve()) for rel in result.artifacts
                        if rel.endswith(".png") and rel.startswith(own))
        out.append(RelatedRun(run_id=cfg.run_id, kind=cfg.spec.kind, experiment_id=cfg.experiment_id,
                              run_dir=str(d), verdict=result.decision.verdict, reason=result.decision.reason,
                              criterion=Criterion.model_validate(cfg.spec.criterion).describe(), seeds=matched,
                              images=images))
    return out
