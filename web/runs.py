"""The web layer's one adapter to claimgraph.experiments: experiments, run folders, criteria, feature pages.

Everything experiments-specific that the pages show comes through here, imported inside the functions, so a
`serve` that only shows graph pages never imports torch (a feature page does: it runs the model), and a move of
experiments' modules changes this file alone. Run pages read the run folder's own files (config.json,
status.json, log.txt, result.json, artifacts/; see claimgraph.experiments.records), never the process.
"""
from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from claimgraph.graph.errors import InvalidInput, NotFound

LOG_TAIL_LINES = 80
LOG_TAIL_BYTES = 64 * 1024
IMAGE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg")
_PAGE_NAME = re.compile(r"feature-(?P<n>\d+)(?:-(?P<cond>[a-z]+)-seed(?P<seed>\d+))?")  # pages.page_name


def experiments(store: Any) -> list[dict[str, Any]]:
    """`experiment list --json`: each experiment with its kind, targets, criterion, latest run and verdict."""
    from claimgraph.experiments.api import list_experiments

    return list_experiments(store)


def stale_check() -> Any:
    """The graph's StaleCheck (claimgraph.experiments.staleness.stale_evidence): which evidence no longer matches
    the code, model, data or parameters that would produce it now."""
    from claimgraph.experiments.staleness import stale_evidence

    return stale_evidence


def criterion_text(criterion: dict[str, Any] | None) -> str:
    """A registered criterion (as stored on evidence and specs) in words, as the CLI prints it."""
    if not criterion:
        return ""
    from claimgraph.experiments.spec import Criterion

    return Criterion.model_validate(criterion).describe()


def run_row(store: Any, run_id: str) -> dict[str, Any]:
    """The store's record of run `run_id`; NotFound says where to find run ids."""
    rows = store.runs(run_id=run_id)
    if not rows:
        raise NotFound(f"no run {run_id!r}; the runs page (or `claimgraph runs`) lists them")
    return rows[0]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last `lines` lines of a log (reads at most its last 64 KiB)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - LOG_TAIL_BYTES))
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    out = text.splitlines()
    if size > LOG_TAIL_BYTES and out:
        out = out[1:]  # the first line read is cut
    return out[-lines:]


def _features_named(per_seed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """(seed, feature) pairs a run's per-seed details name: the latent a feature job studied."""
    from claimgraph.experiments.pages.runs import _feature_of

    out = []
    for r in per_seed:
        f = _feature_of(r.get("details") or {})
        if f is not None:
            out.append({"seed": r.get("seed"), "feature": f})
    return out


def _sae_conditions(per_seed: list[dict[str, Any]]) -> list[str]:
    """The sae job's SAE conditions a run's first seed recorded, `trained` first (the CLI's default)."""
    details = (per_seed[0].get("details") or {}) if per_seed else {}
    conds = details.get("conditions")
    found = [c for c, d in conds.items() if isinstance(d, dict) and "sae_folder" in d] if isinstance(conds, dict) else []
    return sorted(found, key=lambda c: (c != "trained", c))


def with_folder_status(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run records, each one the store still has queued or running given what its folder says now.

    The web opens the store read-only, so a run that ended (a worker whose launching command has gone, or a run
    on a cluster whose tasks finished) stays queued or running in the store until a `claimgraph` command
    reconciles it. Such a row gets `folder_status` (the final status in its status.json) or `folder_note`
    (how many of its executor tasks have completed, failed or are running, from the tasks' status files);
    rows the store has already ended are returned as they are."""
    from claimgraph.experiments.records import FINAL, read_state
    from claimgraph.experiments.worker import read_task_state, task_state_path

    out = []
    for row in rows:
        if row.get("status") in FINAL or not row.get("run_dir"):
            out.append(row)
            continue
        run_dir = Path(row["run_dir"])
        state = read_state(run_dir)
        extra: dict[str, Any] = {}
        if state is not None and state.status in FINAL:
            extra["folder_status"] = state.status
            extra["folder_note"] = "ended; the store records it at the next claimgraph command (e.g. claimgraph runs)"
        else:
            seeds = ((_read_json(run_dir / "config.json") or {}).get("spec") or {}).get("seeds") or []
            tasks = [seed for seed in seeds if task_state_path(run_dir, seed).exists()]
            if tasks:
                counts: dict[str, int] = {}
                for seed in tasks:
                    st = getattr(read_task_state(run_dir, seed), "status", None) or "unknown"
                    counts[st] = counts.get(st, 0) + 1
                parts = [f"{counts.pop('completed', 0)} of {len(seeds)} seeds completed"]
                parts += [f"{n} {st}" for st, n in sorted(counts.items())]
                extra["folder_note"] = ", ".join(parts) + " (tasks' status files)"
        out.append({**row, **extra} if extra else row)
    return out


def run_view(row: dict[str, Any]) -> dict[str, Any]:
    """A run page's data from its record and its folder: config, status, result, log tail, images, features."""
    run_dir = Path(row["run_dir"])
    config = _read_json(run_dir / "config.json")
    status = _read_json(run_dir / "status.json")
    result = _read_json(run_dir / "result.json")
    spec = (config or {}).get("spec") or {}
    root = run_dir / "artifacts"
    images = sorted(str(p.relative_to(run_dir)) for p in root.rglob("*")
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) if root.is_dir() else []
    per_seed = (result or {}).get("per_seed") or []
    pages = []  # feature pages computed before (by the CLI or this server), from their file names
    for p in sorted((run_dir / "features").glob("feature-*.html")) if (run_dir / "features").is_dir() else []:
        m = _PAGE_NAME.fullmatch(p.stem)
        if m:
            pages.append({"feature": int(m["n"]), "condition": m["cond"], "seed": int(m["seed"]) if m["seed"] else None})
    pages.sort(key=lambda x: (x["feature"], x["condition"] or "", x["seed"] or 0))
    return {
        "run": row,
        "folder_exists": run_dir.is_dir(),
        "kind": spec.get("kind"),
        "spec": spec,
        "criterion": criterion_text(spec.get("criterion")),
        "targets": (config or {}).get("targets") or [],
        "status": status,
        "result": None if result is None else {k: result.get(k) for k in (
            "decision", "metrics", "summary", "seeds", "effect_size", "wall_s", "reused_from", "artifacts")},
        "per_seed": [{"seed": r.get("seed"), "metrics": r.get("metrics") or {}} for r in per_seed],
        "log_tail": log_tail(run_dir / "log.txt"),
        "images": images,
        "features": _features_named(per_seed),
        "sae_conditions": _sae_conditions(per_seed),
        "has_sae": bool(_sae_conditions(per_seed)) or any(
            isinstance(r.get("details"), dict) and ("sae_folder" in r["details"] or "sae_key" in r["details"])
            for r in per_seed),
        "feature_pages": pages,
    }


def run_file(row: dict[str, Any], rel: str) -> Path:
    """A file of the run's folder, by its path relative to it; only inside artifacts/ and features/, and never
    outside the folder (no `..`, no links out)."""
    run_dir = Path(row["run_dir"]).resolve()
    parts = Path(rel).parts
    if not parts or parts[0] not in ("artifacts", "features") or ".." in parts or Path(rel).is_absolute():
        raise NotFound(f"no file {rel!r} in run {row['run_id']}: only artifacts/ and features/ are served")
    path = (run_dir / rel).resolve()
    if not path.is_relative_to(run_dir) or not path.is_file():
        raise NotFound(f"no file {rel!r} in run {row['run_id']}")
    return path


# -- feature pages ---------------------------------------------------------------------------------
_PAGES: OrderedDict[tuple, Any] = OrderedDict()  # computed pages; a completed run's folder never changes
_PAGES_MAX = 32
_PAGES_LOCK = threading.Lock()


def feature_page(access: Any, run_id: str, feature: int, *, seed: int | None = None,
                 condition: str | None = None, device: str = "cpu") -> Any:
    """The FeaturePage of latent `feature` of run `run_id`'s SAE (as `claimgraph feature --json` gives it),
    computed on first request (its HTML and PNGs written to the run folder, as the CLI does) and then kept.
    The store is read (run folder, related runs) and let go before the model runs."""
    from claimgraph.experiments.pages.page import feature_page as compute
    from claimgraph.experiments.pages.runs import related_run_dirs

    if feature < 0:
        raise InvalidInput(f"feature must be a latent index (0 or more), got {feature}")
    with access.read() as s:
        run_dir = Path(run_row(s, run_id)["run_dir"])
        candidates = related_run_dirs(s)
    key = (str(run_dir), feature, seed, condition, device)
    with _PAGES_LOCK:
        if key in _PAGES:
            _PAGES.move_to_end(key)
            return _PAGES[key]
    page = compute(run_dir, feature, seed=seed, condition=condition, related=candidates, device=device)
    with _PAGES_LOCK:
        _PAGES[key] = page
        while len(_PAGES) > _PAGES_MAX:
            _PAGES.popitem(last=False)
    return page


def feature_images(page: Any) -> dict[str, str]:
    """The page's PNGs as paths relative to its run folder (for the run-file route)."""
    if not page.html:
        return {}
    folder = Path(page.html).parent.resolve()
    run_dir = Path(page.run_dir).resolve()
    return {k: str((folder / name).relative_to(run_dir)) for k, name in page.images.items()}


def related_images(related: Any) -> list[str]:
    """A related run's PNGs relative to its own folder."""
    run_dir = Path(related.run_dir).resolve()
    out = []
    for img in related.images:
        try:
            out.append(str(Path(img).resolve().relative_to(run_dir)))
        except ValueError:
            continue
    return out


def visible_token(token: str) -> str:
    """A token as feature pages show it (spaces as middle dots, newlines as arrows)."""
    from claimgraph.experiments.pages.html import visible

    return visible(token)
