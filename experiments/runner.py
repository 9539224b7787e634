"""Running experiments: cache lookup, run folder, a worker process, and attaching the outcome as evidence.

The runner holds the database only for short bookkeeping transactions: it records the run as queued,
lets go of the file, waits for the worker (which never opens the database), then attaches the result in
one transaction. A run whose process died is found by `reconcile` on the next command.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from claimgraph.graph import Store
from claimgraph.graph.errors import ClaimgraphError, InvalidInput
from claimgraph.graph.ids import slugify
from claimgraph.graph.models import utcnow

from .api import get_spec, resolve_params, seed_list
from .attach import attach_result, disk_full, finalize, pid_alive
from .codeversion import code_version
from .context import resolve_device, write_json_atomic
from .executors import (
    EXECUTOR_FILE,
    EXECUTORS,
    ClusterOptions,
    Executor,
    ExecutorRecord,
    slurm_available,
    submitit_executor,
    task_env,
    update_run,
)
from .records import (
    FINAL,
    RunConfig,
    RunState,
    conclude,
    config_hash,
    input_fingerprint,
    read_result,
    read_state,
    write_state,
)
from .registry import get_job
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


def reconcile(store: Store) -> list[dict[str, Any]]:
    """Find runs recorded as queued/running whose process has ended or died, and give them a final status.
    Returns the rows it changed. Cheap when nothing is in flight (one query)."""
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
            changed.append(finalize(store, row, state))
            continue
        # the worker's pid once it has written one, else the launching command's (recorded with the queued run):
        # a run queued a moment ago, whose worker is still starting, is alive while its launcher is
        pid = (state.pid if state else None) or row["pid"]
        same_host = ((state.host if state else None) or row["host"]) == socket.gethostname()
        beat = ((state.heartbeat_at or state.started_at) if state else None) or row["created_at"]
        age = (utcnow() - beat).total_seconds() if beat else float("inf")
        if same_host and pid:
            dead = not pid_alive(pid)
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
            changed.append(finalize(store, row, state, override="failed", error=why))
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
    if not any(cfg.spec.criterion.metric in p.metrics for p in original.per_seed):
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
    # the parameters as the kind's Params resolve them today (a field added since, with its default), and the
    # inputs as they are now (Job.resolve_spec): what the run computes with, hashed and fingerprinted
    spec = JobSpec.model_validate({**spec.model_dump(), "params": resolve_params(spec.kind, spec.params)})
    spec = get_job(spec.kind).resolve_spec(spec)
    wanted = (device or spec.device).strip().lower()
    if executor == "slurm" and (wanted in ("auto", "cuda") or wanted.startswith("cuda:")):
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
                  device=cfg.device, run_dir=str(run_dir), pid=os.getpid())  # put_run records this host


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
        row = finalize(store, store.runs(run_id=cfg.run_id)[0], early, override="killed", error=early.error)
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
    row = finalize(store, store.runs(run_id=cfg.run_id)[0], state, override=override, error=error)
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


def submit_run(store: Store, experiment_id: str, *, executor: Executor, seeds: int | str | list[int] | None = None,
               device: str | None = None, force: bool = False, options: ClusterOptions | None = None,
               runs_dir: str | Path | None = None) -> RunOutcome:
    """Hand a run to `executor` (each seed one task) and return at once with its RunOutcome (status queued), or
    the cached outcome when an identical run completed. Reconcile (any next command) follows it from there."""
    if executor not in EXECUTORS:
        raise InvalidInput(f"unknown executor {executor!r}; use {' or '.join(EXECUTORS)} (or none, to run here)")
    options = options or ClusterOptions()
    if executor == "slurm":
        why = slurm_available()
        if why:
            raise ClaimgraphError(f"cannot submit to Slurm: {why}")
    reconcile(store)
    cfg, run_dir = prepare_run(store, experiment_id, device=device, seeds=seeds, runs_dir=runs_dir,
                               executor=executor, gpus=options.gpus)
    if not force:
        served = _reuse(store, cfg, run_dir)
        if served is not None:
            return served
    record_queued(store, cfg, run_dir)
    env = {"CLAIMGRAPH_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
    if cfg.spec.timeout_s:
        env["CLAIMGRAPH_RUN_TIMEOUT_S"] = str(cfg.spec.timeout_s)
    from .worker import run_task

    try:
        ex = submitit_executor(executor, run_dir / "submitit", options, cfg.spec.timeout_s,
                                f"claimgraph-{cfg.run_id}")
        with task_env(env):
            jobs = ex.map_array(run_task, [str(run_dir)] * len(cfg.spec.seeds), cfg.spec.seeds)
    except Exception as e:  # sbatch refused (bad partition, too much memory...): the run ends failed, said why
        why = f"submission to {executor} failed: {type(e).__name__}: {str(e).strip()[-600:]}"
        write_state(run_dir, RunState(status="failed", error=why, ended_at=utcnow()))
        store.put_run(run_id=cfg.run_id, status="failed", error=why, ended_at=utcnow())
        raise ClaimgraphError(why) from None
    record = ExecutorRecord(executor=executor, job_ids=[str(j.job_id) for j in jobs], seeds=cfg.spec.seeds,
                            options=options)
    write_json_atomic(run_dir / EXECUTOR_FILE, record.model_dump(mode="json"))
    return RunOutcome(run_id=cfg.run_id, experiment_id=experiment_id, status="queued", run_dir=str(run_dir),
                      job_ids=record.job_ids, executor=executor)
