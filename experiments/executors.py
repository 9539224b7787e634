"""Runs handed to an executor through submitit (submission: runner.submit_run): each seed one task (on Slurm, one task of an array job; locally,
one submitit local job), the command returning at once with the run id.

    claimgraph run EXP --executor slurm --partition gpu --gpus 1 --time 60 --mem 16
    claimgraph runs                 # queued / running / completed / failed / killed / timed-out, from Slurm
    claimgraph collect [RUN]        # when every task is done: aggregate the seeds, decide, attach once
    claimgraph cancel RUN

The run folder (config.json, the tasks' results and statuses under tasks/, submitit's scripts and logs under
submitit/) is where the tasks and the submitting machine meet, so it must be on a filesystem the nodes share:
by default the store's folder (`<store>.d/runs/`), or $CLAIMGRAPH_RUNS_DIR / `--runs-dir`. The tasks never
open the database. Every next command (like `runs`) reconciles: it asks the scheduler about runs in flight,
marks them running, ends them failed, killed or timed-out (no evidence) when a task did, and collects them when
every task completed. A task Slurm requeues (node failure, preemption, `scontrol requeue`) is pending again
and computes its seed afresh; the run stays in flight until it ends.

Task states come from the scheduler first (sacct where accounting is on, else `scontrol show job`, which
knows jobs for MinJobAge after they end), then from the task's own status file (tasks/seed-N.status.json);
a local task is its controller process: alive, or ended with the status it wrote.
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from claimgraph.graph import Store
from claimgraph.graph.errors import InvalidInput, NotFound
from claimgraph.graph.models import utcnow

from .records import FINAL, RunState, read_state, write_state

Executor = Literal["local", "slurm"]
EXECUTORS: tuple[str, ...] = ("local", "slurm")
EXECUTOR_FILE = "executor.json"


class ClusterOptions(BaseModel):
    """What a task asks of the scheduler (`claimgraph run --partition --gpus --time --mem`)."""

    partition: str | None = Field(None, description="Slurm partition (default: the cluster's default)")
    gpus: int = Field(0, ge=0, description="GPUs per task")
    time_min: float | None = Field(None, gt=0, description="time limit per task in minutes (default: the spec's "
                                                             "timeout_s)")
    mem_gb: float | None = Field(None, gt=0, description="memory per task in GB")
    cpus: int | None = Field(None, ge=1, description="CPUs per task")


class ExecutorRecord(BaseModel):
    """executor.json in the run folder: how the run was handed out."""

    executor: Executor
    job_ids: list[str] = Field(description="one scheduler job id per seed, in seed order")
    seeds: list[int]
    options: ClusterOptions = ClusterOptions()


def read_record(run_dir: Path) -> ExecutorRecord | None:
    try:
        return ExecutorRecord.model_validate_json((Path(run_dir) / EXECUTOR_FILE).read_text())
    except (OSError, ValueError):
        return None


def slurm_available() -> str | None:
    """None when Slurm's client commands are here and a controller answers, else why not."""
    if not shutil.which("sbatch"):
        return "sbatch is not installed (Debian: apt-get install slurm-wlm)"
    r = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"no Slurm controller answers: {r.stderr.strip() or r.stdout.strip()}"
    return None


@contextmanager
def task_env(values: dict[str, str]):
    """Environment variables for the tasks: sbatch exports the submitting environment, a local job inherits it."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def submitit_executor(kind: Executor, folder: Path, options: ClusterOptions, timeout_s: float | None,
                       name: str) -> Any:
    import submitit

    minutes = options.time_min if options.time_min is not None else (timeout_s / 60 if timeout_s else 60.0)
    if kind == "slurm":
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        params: dict[str, Any] = {"timeout_min": max(1, int(round(minutes))), "name": name,
                                  "slurm_signal_delay_s": 5}
        if options.partition:
            params["slurm_partition"] = options.partition
        if options.gpus:
            params["gpus_per_node"] = options.gpus
        if options.mem_gb:
            params["mem_gb"] = options.mem_gb
        if options.cpus:
            params["cpus_per_task"] = options.cpus
        ex.update_parameters(**params)
    else:
        ex = submitit.AutoExecutor(folder=folder, cluster="local")
        # the task enforces the spec's limit itself (CLAIMGRAPH_RUN_TIMEOUT_S); the controller's is a backstop
        ex.update_parameters(timeout_min=int(math.ceil(minutes)) + 1, gpus_per_node=options.gpus, name=name)
    return ex


# -- what the scheduler says -------------------------------------------------------------------------------
_SLURM: dict[str, str] = {  # Slurm job state -> task status
    "PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued",
    "CONFIGURING": "queued", "RESV_DEL_HOLD": "queued", "SUSPENDED": "running", "STOPPED": "running",
    "RUNNING": "running", "COMPLETING": "running", "RESIZING": "running", "SIGNALING": "running",
    "STAGE_OUT": "running", "COMPLETED": "completed",
    "FAILED": "failed", "NODE_FAIL": "failed", "BOOT_FAIL": "failed", "OUT_OF_MEMORY": "failed",
    "SPECIAL_EXIT": "failed", "REVOKED": "killed", "CANCELLED": "killed", "PREEMPTED": "killed",
    "TIMEOUT": "timed-out", "DEADLINE": "timed-out",
}


class SchedulerUnreachable(Exception):
    """Slurm did not answer (a busy or restarting controller): nothing can be decided this time."""


def _slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state word for each job id ("12_0" for array task 0 of job 12) it still knows. Raises
    SchedulerUnreachable when the controller does not answer: a missing answer must not read as "ended"."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    out: dict[str, str] = {}
    try:
        r = subprocess.run(["sacct", "-n", "-P", "-X", "--format=JobID,State", "-j", ",".join(arrays)],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        r = subprocess.CompletedProcess([], 1, "", str(e))
    if r.returncode == 0 and r.stdout.strip():
        for line in r.stdout.splitlines():
            jid, _, state = line.partition("|")
            out[jid.strip()] = state.split()[0] if state.strip() else "UNKNOWN"
    for arr in arrays:  # without accounting (or for tasks sacct does not list yet): the controller's memory
        try:
            r = subprocess.run(["scontrol", "show", "job", "-o", arr], capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise SchedulerUnreachable(f"scontrol show job {arr} timed out") from None
        if r.returncode != 0:
            if "Invalid job id" in r.stderr:  # ended longer ago than MinJobAge: the tasks' files say how
                continue
            raise SchedulerUnreachable(r.stderr.strip() or f"scontrol exited {r.returncode}")
        for line in r.stdout.splitlines():
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            jid = f"{f['ArrayJobId']}_{f['ArrayTaskId']}" if f.get("ArrayTaskId", "N/A") not in ("N/A", "") \
                else f.get("JobId", "")
            if "JobState" in f and (jid not in out or out[jid] in ("PENDING", "RUNNING")):
                out[jid] = f["JobState"]
    return out


def _alive(pid: int) -> bool:
    from .attach import pid_alive

    return pid_alive(pid)


def task_states(run_dir: Path, record: ExecutorRecord) -> dict[int, tuple[str, str | None]]:
    """seed -> (status, error) of each task: a scheduler that says a task is queued or running wins over the
    task's file (a requeued task's file is its last attempt's); one that says it failed, was cancelled or timed
    out wins over a file that could not say so (SIGKILL); otherwise the task's own final status counts."""
    from .worker import read_task_state, task_result_path

    sched = _slurm_states(record.job_ids) if record.executor == "slurm" else {}
    out: dict[int, tuple[str, str | None]] = {}
    for seed, jid in zip(record.seeds, record.job_ids):
        st = read_task_state(run_dir, seed)
        word = sched.get(jid)
        if record.executor == "slurm":
            s = _SLURM.get(word or "", None)
            if s in ("queued", "running"):
                out[seed] = (s if not (s == "queued" and st and st.status == "running") else "running", None)
            elif s in ("killed", "timed-out") and not (st and st.status == s):  # Slurm cancelled it or hit its limit
                out[seed] = (s, f"Slurm says {word}" + (f"; the task said: {st.error}" if st and st.error else ""))
            elif s == "failed" and not (st and st.status in FINAL and st.status != "completed"):
                out[seed] = (s, f"Slurm says {word}" + (f"; the task said: {st.error}" if st and st.error else
                                                        "; the task died without a status of its own"))
            elif st is not None and st.status in FINAL:
                out[seed] = (st.status, st.error)
            elif s == "completed":
                out[seed] = ("failed", "Slurm says COMPLETED but the task left no final status")
            elif word is None and st is None:
                out[seed] = ("queued", None)  # just submitted: not listed yet
            else:
                out[seed] = ("failed", f"Slurm no longer knows job {jid} and its task left no final status")
        else:
            alive = jid.isdigit() and _alive(int(jid))
            if st is not None and st.status in FINAL:
                out[seed] = (st.status, st.error)
            elif alive:
                out[seed] = ("running" if st is not None else "queued", None)
            else:
                out[seed] = ("failed", f"local job {jid} ended without a final status")
        if out[seed][0] == "completed" and not task_result_path(run_dir, seed).is_file():
            out[seed] = ("failed", "the task said completed but left no result")
    return out


def run_status(states: dict[int, tuple[str, str | None]]) -> tuple[str, str | None]:
    """The run's status from its tasks': the first bad end (timed-out, killed, failed) once any task had one,
    completed when every task completed, else running when any runs, else queued."""
    for bad in ("timed-out", "killed", "failed"):
        for seed, (s, err) in sorted(states.items()):
            if s == bad:
                return bad, f"seed {seed} {bad}" + (f": {err}" if err else "")
    words = {s for s, _ in states.values()}
    if words == {"completed"}:
        return "completed", None
    return ("running" if "running" in words or "completed" in words else "queued"), None


def _cancel_jobs(record: ExecutorRecord) -> None:
    if record.executor == "slurm":
        arrays = sorted({j.split("_")[0] for j in record.job_ids})
        subprocess.run(["scancel", *arrays], capture_output=True, text=True, timeout=60)
    else:
        for jid in record.job_ids:
            if jid.isdigit() and _alive(int(jid)):
                try:  # the submitit controller forwards it to its task
                    os.kill(int(jid), signal.SIGTERM)
                except ProcessLookupError:
                    pass


def update_run(store: Store, row: dict[str, Any]) -> dict[str, Any] | None:
    """Follow one executor run: refresh its status from its tasks, end it when a task ended badly (cancelling
    the others), collect it when every task completed. Returns the updated row when its status changed."""
    from .attach import finalize
    from .worker import read_task_state

    run_dir = Path(row["run_dir"])
    record = read_record(run_dir)
    if record is None:
        return None
    try:
        states = task_states(run_dir, record)
    except SchedulerUnreachable:
        return None  # asked again by the next command
    status, error = run_status(states)
    if status in ("queued", "running"):
        if status != row["status"]:
            started = min((st.started_at for seed in states
                           if (st := read_task_state(run_dir, seed)) and st.started_at), default=None)
            store.put_run(run_id=row["run_id"], status=status, started_at=started)
            return store.runs(run_id=row["run_id"])[0]
        return None
    if status == "completed":
        _collect(run_dir)
        state = read_state(run_dir)
        return finalize(store, row, state)
    _cancel_jobs(record)
    state = RunState(status=status, ended_at=utcnow(), error=error)
    write_state(run_dir, state)
    return finalize(store, row, state, override=status, error=error)


def _collect(run_dir: Path) -> None:
    """Aggregate the seeds in a worker process (summaries and plots may need torch; this process does not)."""
    env = dict(os.environ, CLAIMGRAPH_PROGRESS="0", PYTHONUNBUFFERED="1")
    subprocess.run([sys.executable, "-m", "claimgraph.experiments.worker", "--collect", str(run_dir)], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cancel_run(store: Store, run_id: str) -> dict[str, Any]:
    """Cancel a run in flight (its Slurm jobs, its local jobs, or the worker of a run started here) and record it
    killed, with no evidence."""
    from .attach import finalize

    rows = store.runs(run_id=run_id)
    if not rows:
        raise NotFound(f"no run {run_id!r}; `claimgraph runs` lists them")
    row = rows[0]
    if row["status"] in FINAL:
        raise InvalidInput(f"run {run_id} has already ended ({row['status']}); nothing to cancel")
    run_dir = Path(row["run_dir"])
    record = read_record(run_dir)
    if record is not None:
        _cancel_jobs(record)
    else:
        st = read_state(run_dir)
        pid = (st.pid if st else None) or row.get("pid")
        if pid and _alive(int(pid)):
            os.kill(int(pid), signal.SIGTERM)
    state = RunState(status="killed", ended_at=utcnow(), error="cancelled by `claimgraph cancel`")
    write_state(run_dir, state)
    return finalize(store, row, state, override="killed", error=state.error)


def task_summary(run_dir: Path) -> dict[str, Any] | None:
    """For `runs --json`: the executor, its job ids and each seed's task status; None for a run started here."""
    record = read_record(Path(run_dir))
    if record is None:
        return None
    try:
        states = task_states(Path(run_dir), record)
    except SchedulerUnreachable as e:
        return {"executor": record.executor, "job_ids": record.job_ids, "tasks": None, "unreachable": str(e)}
    return {"executor": record.executor, "job_ids": record.job_ids,
            "tasks": {str(seed): {"status": s, "error": e} for seed, (s, e) in states.items()}}


__all__ = ["ClusterOptions", "EXECUTORS", "cancel_run", "task_states", "update_run"]
