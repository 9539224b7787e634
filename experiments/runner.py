"""Running experiments: cache lookup, run folder, a worker process, and attaching the outcome as evidence.

The runner holds the database only for short bookkeeping transactions: it records the run as queued,
lets go of the file, waits for the worker (which never opens the database), then attaches the result in
one transaction. A run whose process died is found by `reconcile` on the next command.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from claimgraph.graph import EdgeType, MadeBy, Node, NodeType, Store
from claimgraph.graph.errors import InvalidInput, NotFound
from claimgraph.graph.ids import slugify
from claimgraph.graph.models import utcnow
from claimgraph.graph.portable import stored_path

from .api import get_spec, resolve_params, seed_list
from .codeversion import code_version
from .context import resolve_device, write_json_atomic
from .records import (
    FINAL,
    RunConfig,
    RunResult,
    RunState,
    conclude,
    config_hash,
    fingerprint,
    input_fingerprint,
    read_result,
    read_state,
    write_state,
)
from .spec import JobSpec

STALE_S = float(os.environ.get("CLAIMGRAPH_STALE_S", "60"))  # heartbeat age after which a run on another host is dead
KILL_GRACE_S = 10.0


class RunOutcome(BaseModel):
    """What `claimgraph run` reports."""

    run_id: str
    experiment_id: str
    status: str
    cached: bool = False
    verdict: str | None = None
    evidence_id: str | None = None
    run_dir: str
    reason: str | None = None
    error: str | None = None
    reused_from: str | None = None
    executor: str | None = Field(None, description="local or slurm for a run handed to an executor; None when "
                                                   "it ran in this command's own worker")
    job_ids: list[str] = Field(default_factory=list, description="the executor's job id of each seed's task")


def _pid_alive(pid: int) -> bool:
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
                      evidence_id=node.id, ended_at=utcnow())
    return node.id


def _finalize(store: Store, row: dict[str, Any], state: RunState | None, *, override: str | None = None,
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


def reconcile(store: Store) -> list[dict[str, Any]]:
    """Find runs recorded as queued/running whose process has ended or died, and give them a final status.
    Returns the rows it changed. Cheap when nothing is in flight (one query)."""
    from .executors import EXECUTOR_FILE, update_run

    changed = []
    for row in store.runs(status="running") + store.runs(status="queued"):
        run_dir = Path(row["run_dir"])
        if (run_dir / EXECUTOR_FILE).exists():  # handed to Slurm or submitit's local executor
            updated = update_run(store, row)
            if updated is not None and updated["status"] in FINAL:
                changed.append(updated)
            continue
        state = read_state(run_dir)
        if state is not None and state.status in FINAL:
            changed.append(_finalize(store, row, state))
            continue
        pid = (state.pid if state else None) or row["pid"]
        same_host = (state.host if state else row["host"]) == os.uname().nodename
        beat = (state.heartbeat_at or state.started_at) if state else row["created_at"]
        age = (utcnow() - beat).total_seconds() if beat else float("inf")
        if same_host and pid:
            dead = not _pid_alive(pid)
        else:
            dead = age > STALE_S
        if not dead and state is not None and state.status == "running" and row["status"] == "queued":
            # the worker computes (its launcher may be gone): the record says so
            store.put_run(run_id=row["run_id"], status="running", pid=state.pid, host=state.host,
                          started_at=state.started_at)
        if dead:
            why = disk_full(run_dir) or (f"process {pid} died without a final status" if pid
                                         else "the run never started")
            if state is not None:
                state.status, state.error, state.ended_at = "failed", why, utcnow()
                try:
                    write_state(run_dir, state)
                except OSError:
                    pass
            changed.append(_finalize(store, row, state, override="failed", error=why))
    return changed


def _reuse(store: Store, cfg: RunConfig, run_dir: Path) -> RunOutcome | None:
    """Serve a run from a completed one with the same computation (config hash). The same experiment and
    criterion: that run itself. Another experiment or criterion: a new run record that re-decides the cached
    per-seed metrics by this experiment's criterion, with its own evidence, and nothing recomputed."""
    done = [(r, res) for r in store.runs(config_hash=cfg.config_hash, status="completed")
            if (res := read_result(Path(r["run_dir"]))) is not None]
    configs = {r["run_id"]: RunConfig.model_validate_json((Path(r["run_dir"]) / "config.json").read_text())
               for r, _ in done}
    for row, res in done:
        if row["experiment_id"] == cfg.experiment_id and configs[row["run_id"]].spec.criterion == cfg.spec.criterion:
            if not (row["evidence_id"] and store.has_node(row["evidence_id"])):
                attach_result(store, Path(row["run_dir"]))
                row = store.runs(run_id=row["run_id"])[0]
            return RunOutcome(run_id=row["run_id"], experiment_id=cfg.experiment_id, status="completed", cached=True,
                              verdict=row["verdict"], evidence_id=row["evidence_id"], run_dir=row["run_dir"],
                              reused_from=res.reused_from)
    if not done:
        return None
    # re-decide from a run that computed (not from one that itself re-decided), so notes do not nest
    row, original = next(((r, res) for r, res in done if res.reused_from is None), done[0])
    source, prior = Path(row["run_dir"]), configs[row["run_id"]]
    decision, summaries, effect = conclude(cfg.spec.criterion, [p.metrics for p in original.per_seed])
    if decision.n == 0:
        raise InvalidInput(f"the cached computation {row['run_id']} reports no {cfg.spec.criterion.metric!r}; "
                           f"it reports: {', '.join(sorted(original.metrics))}")
    notes = (f"Computation reused from run {original.run_id} ({prior.experiment_id}), registered there under "
             f"{prior.spec.criterion.describe()}; this verdict applies {cfg.spec.criterion.describe()}.")
    if original.summary.get("notes"):
        notes += f" Notes of that run: {original.summary['notes']}"
    result = original.model_copy(update={
        "run_id": cfg.run_id, "experiment_id": cfg.experiment_id, "decision": decision, "metrics": summaries,
        "effect_size": effect, "reused_from": str(source), "wall_s": 0.0,
        "summary": {**original.summary, "notes": notes},
        # relative to this run's folder like a computed run's own (portable store)
        "artifacts": {os.path.relpath(source / k, run_dir): v for k, v in original.artifacts.items()}})
    run_dir.mkdir(parents=True, exist_ok=False)
    write_json_atomic(run_dir / "config.json", cfg.model_dump(mode="json"))
    write_json_atomic(run_dir / "result.json", result.model_dump(mode="json"))
    now = utcnow()
    write_state(run_dir, RunState(status="completed", started_at=now, ended_at=now))
    store.put_run(run_id=cfg.run_id, experiment_id=cfg.experiment_id, config_hash=cfg.config_hash,
                  status="completed", device=cfg.device, run_dir=str(run_dir), started_at=now, ended_at=now)
    evidence_id = attach_result(store, run_dir)
    return RunOutcome(run_id=cfg.run_id, experiment_id=cfg.experiment_id, status="completed", cached=True,
                      verdict=decision.verdict, evidence_id=evidence_id, run_dir=str(run_dir), reason=decision.reason,
                      reused_from=str(source))


def runs_root(store: Store, runs_dir: str | Path | None = None) -> Path:
    """Where run folders go: `runs_dir`, else $CLAIMGRAPH_RUNS_DIR (a filesystem a cluster's nodes share), else
    the store's own folder (`<store>.d/runs`)."""
    chosen = runs_dir or os.environ.get("CLAIMGRAPH_RUNS_DIR")
    return Path(chosen).expanduser().resolve() if chosen else store.home / "runs"


def new_run_id(chash: str) -> str:
    """A run id: UTC time, the config hash's start, and 32 random bits, so two runs started in the same second
    (threads, processes, machines) never share one."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{chash[:8]}-{secrets.token_hex(4)}"


def prepare_run(store: Store, experiment_id: str, *, device: str | None = None,
                seeds: int | str | list[int] | None = None, runs_dir: str | Path | None = None,
                executor: str | None = None, gpus: int = 0) -> tuple[RunConfig, Path]:
    """Resolve the spec into a RunConfig (without creating anything). `seeds` overrides the spec's: a count N
    (0..N-1), a string such as "3-10", or a list (`api.seed_list`). On a cluster (`executor="slurm"`) the
    device is the task's: `auto` is cuda when the task asks for GPUs, else cpu (this machine's CUDA says nothing
    of the nodes')."""
    _, spec, targets = get_spec(store, experiment_id)
    if seeds is not None:
        spec = spec.model_copy(update={"seeds": seed_list(seeds)})
    # the parameters as the kind's Params resolve them today (a field added since, with its default): what
    # the run computes with, hashed and fingerprinted
    spec = JobSpec.model_validate({**spec.model_dump(), "params": resolve_params(spec.kind, spec.params)})
    wanted = (device or spec.device).strip().lower()
    if executor == "slurm" and wanted in ("auto", "cuda") or (executor == "slurm" and wanted.startswith("cuda:")):
        dev = wanted if wanted != "auto" else ("cuda" if gpus else "cpu")
    else:
        dev = resolve_device(wanted)
    inputs = input_fingerprint(spec)
    chash = config_hash(spec, dev, inputs)
    run_id = new_run_id(chash)
    run_dir = runs_root(store, runs_dir) / slugify(experiment_id.split(":", 1)[1])[:80] / run_id
    cfg = RunConfig(run_id=run_id, experiment_id=experiment_id, targets=targets, spec=spec, device=dev,
                    config_hash=chash, code_version=code_version(spec.kind), inputs=inputs)
    return cfg, run_dir


def record_queued(store: Store, cfg: RunConfig, run_dir: Path) -> None:
    """Create the run folder (config.json, status queued) and the run record, before anything computes."""
    run_dir.mkdir(parents=True, exist_ok=False)
    write_json_atomic(run_dir / "config.json", cfg.model_dump(mode="json"))
    write_state(run_dir, RunState(status="queued"))
    store.put_run(run_id=cfg.run_id, experiment_id=cfg.experiment_id, config_hash=cfg.config_hash, status="queued",
                  device=cfg.device, run_dir=str(run_dir))


def run_experiment(store: Store, experiment_id: str, *, device: str | None = None,
                   seeds: int | str | list[int] | None = None,
                   force: bool = False, progress: bool = True,
                   on_start: Callable[[str, Path], None] | None = None,
                   runs_dir: str | Path | None = None) -> RunOutcome:
    """Run an experiment (or serve it from cache) and attach its evidence. The database is not held while
    the job computes. For a run handed to Slurm or submitit's local executor, see executors.submit_run."""
    reconcile(store)
    cfg, run_dir = prepare_run(store, experiment_id, device=device, seeds=seeds, runs_dir=runs_dir)
    if not force:
        served = _reuse(store, cfg, run_dir)
        if served is not None:
            return served
    record_queued(store, cfg, run_dir)
    store.release()

    env = dict(os.environ, CLAIMGRAPH_PROGRESS="1" if progress else "0", PYTHONUNBUFFERED="1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch threads sleep rather than spin on shared cores
    if cfg.spec.timeout_s:
        env["CLAIMGRAPH_RUN_TIMEOUT_S"] = str(cfg.spec.timeout_s)
    received: list[int] = []
    procs: list[subprocess.Popen] = []

    def forward(signum, frame):
        # a signal for this command is for its run: pass SIGTERM on to the worker once (it records itself
        # killed); a signal before the worker exists keeps it from starting
        received.append(signum)
        if procs and procs[0].poll() is None and len(received) == 1:
            procs[0].send_signal(signal.SIGTERM)

    # the handlers go in before the worker starts: a signal that came between the start and the handlers
    # used to kill this command alone and leave the worker computing, unwatched
    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    override = error = None
    try:
        if not received:
            procs.append(subprocess.Popen([sys.executable, "-m", "claimgraph.experiments.worker", str(run_dir)],
                                          env=env))
    except BaseException:
        for sig, h in old.items():
            signal.signal(sig, h)
        raise
    if not procs:  # signalled before the worker started
        for sig, h in old.items():
            signal.signal(sig, h)
        early = RunState(status="killed", ended_at=utcnow(), error=f"killed by {signal.Signals(received[0]).name} "
                                                                   "before the worker started")
        write_state(run_dir, early)
        row = _finalize(store, store.runs(run_id=cfg.run_id)[0], early, override="killed", error=early.error)
        return RunOutcome(run_id=cfg.run_id, experiment_id=experiment_id, status=row["status"],
                          run_dir=str(run_dir), error=row["error"])
    proc = procs[0]
    if on_start:
        on_start(cfg.run_id, run_dir)
    marked_running = False
    try:
        deadline = time.monotonic() + cfg.spec.timeout_s + KILL_GRACE_S if cfg.spec.timeout_s else None
        while True:
            try:
                proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() > deadline:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=KILL_GRACE_S)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    override, error = "timed-out", f"exceeded its {cfg.spec.timeout_s:g}s limit"
                    break
                if received and proc.poll() is None:
                    try:
                        proc.wait(timeout=KILL_GRACE_S)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    break
                if not marked_running:
                    st = read_state(run_dir)
                    if st is not None and st.status == "running":  # `runs` shows it computing
                        store.put_run(run_id=cfg.run_id, status="running", pid=st.pid, host=st.host,
                                      started_at=st.started_at)
                        store.release()
                        marked_running = True
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    state = read_state(run_dir)
    if received and override is None and (state is None or state.status != "completed"):
        # this command was signalled and passed it on: killed, even if the worker died of the signal before it
        # could say so itself
        override = "killed"
        if state is None or state.status not in FINAL:
            error = f"killed by {signal.Signals(received[0]).name} (passed on to the worker)"
    if override is None and (state is None or state.status not in FINAL):
        override, error = "failed", (disk_full(run_dir, proc.returncode)
                                     or f"worker exited with code {proc.returncode} without a final status")
    if override and state is not None:
        state.status, state.error, state.ended_at = override, error or state.error, utcnow()  # type: ignore[assignment]
        try:
            write_state(run_dir, state)
        except OSError:
            pass  # the folder's disk is full: the record in the store still says what happened
    row = _finalize(store, store.runs(run_id=cfg.run_id)[0], state, override=override, error=error)
    result = read_result(run_dir) if row["status"] == "completed" else None
    return RunOutcome(run_id=cfg.run_id, experiment_id=experiment_id, status=row["status"], verdict=row["verdict"],
                      evidence_id=row["evidence_id"], run_dir=str(run_dir),
                      reason=result.decision.reason if result else None, error=row["error"])


def run_stale(store: Store, *, device: str | None = None, progress: bool = True,
              on_start: Callable[[str, Path], None] | None = None,
              run: Callable[..., RunOutcome] | None = None) -> list[RunOutcome]:
    """Re-run exactly the experiments whose current evidence is stale (staleness.stale_experiments), each on the
    seeds its stale run used, recomputed (`force`: the point is today's code, model and data). `run` starts one
    (default run_experiment; an executor's submit function for cluster runs)."""
    from .staleness import stale_experiments

    start = run or run_experiment
    out = []
    for item in stale_experiments(store):
        out.append(start(store, item["experiment"], device=device, seeds=item["seeds"], force=True,
                         progress=progress, on_start=on_start))
    return out
