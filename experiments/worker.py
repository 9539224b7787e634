"""The process a run computes in: `python -m claimgraph.experiments.worker RUN_DIR`.

It reads config.json, runs every seed of the job, and writes result.json and the final status. It never
opens the database, so a run can also be started on another machine that shares the run folder.
Exit codes: 0 completed, 1 failed, 143 killed (SIGTERM/SIGINT), 28 disk full before the status could be written.

A run split over an executor's tasks (experiments/executors.py) computes one seed per task (`run_task`, called by
submitit) and is concluded by `python -m claimgraph.experiments.worker --collect RUN_DIR` (`collect_worker`).
"""
from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from claimgraph.graph.models import utcnow

from .context import RunContext, write_json_atomic
from .job import SeedResult
from .records import RunConfig, RunResult, RunState, artifact_hashes, conclude, environment

HEARTBEAT_S = 2.0
DISK_FULL_EXIT = 28  # the worker's exit code when the disk filled up before it could record its status (ENOSPC)


class Killed(BaseException):
    """Raised in the worker when it receives SIGTERM or SIGINT (not an Exception, so jobs cannot swallow it)."""


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class Lifecycle:
    """One process's status file (a whole run's status.json, or one task's under tasks/): "running" with a
    heartbeat from the start, a final status at the end, SIGTERM/SIGINT turned into Killed, and a time limit
    the process enforces on itself (so it holds when the launching process is gone).

    The first signal raises Killed once; later ones are ignored, so writing the final status cannot itself be
    interrupted (a second SIGTERM, from a scheduler's or a user's retry, used to abort the clean-up half-way)."""

    def __init__(self, state_path: Path, *, timeout: float = 0.0):
        self.path = Path(state_path)
        self.state = RunState(status="running", pid=os.getpid(), started_at=utcnow(), heartbeat_at=utcnow())
        self.timeout = timeout
        self.timed_out = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._signalled = False

    def _write(self) -> None:
        write_json_atomic(self.path, self.state.model_dump(mode="json"))

    def beat(self) -> None:
        with self._lock:
            if self.state.status == "running":
                self.state.heartbeat_at = utcnow()
                self._write()

    def finish(self, status: str, error: str | None = None) -> None:
        self._stop.set()
        with self._lock:
            self.state.status = status  # type: ignore[assignment]
            self.state.ended_at = utcnow()
            self.state.error = error
            self._write()

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._signalled:
            return
        self._signalled = True
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            signal.signal(s, signal.SIG_IGN)
        raise Killed(signal.Signals(signum).name)

    def _heartbeat_loop(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(HEARTBEAT_S):
            self.beat()
            if self.timeout and time.monotonic() - started > self.timeout and not self.timed_out.is_set():
                self.timed_out.set()
                os.kill(os.getpid(), signal.SIGTERM)

    def _on_time_warning(self, signum: int, frame: object) -> None:
        self.timed_out.set()
        self._on_signal(signum, frame)

    def start(self, *, time_warning: int | None = None) -> None:
        """Install the signal handlers, then report running (from then on a signal ends the run killed).
        `time_warning`: the signal a scheduler sends shortly before the task's time limit (submitit's
        Slurm tasks: USR2); it ends the task timed-out."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if time_warning is not None:
            signal.signal(time_warning, self._on_time_warning)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write()
        threading.Thread(target=self._heartbeat_loop, daemon=True).start()

    def ended(self, ctx: RunContext | None, exc: BaseException) -> int:
        """Record how the process ended from the exception that ended it; returns the exit code."""
        if isinstance(exc, Killed):
            if self.timed_out.is_set() and str(exc) == "SIGUSR2":
                _log(ctx, "the scheduler's time limit came (its warning signal, SIGUSR2)")
                self.finish("timed-out", "reached the scheduler's time limit (SIGUSR2 warning)")
            elif self.timed_out.is_set():
                _log(ctx, f"timed out after {self.timeout:g}s")
                self.finish("timed-out", f"exceeded its {self.timeout:g}s limit")
            else:
                _log(ctx, f"killed by {exc}")
                self.finish("killed", f"killed by {exc}")
            return 143
        _log(ctx, "failed:\n" + "".join(traceback.format_exception(exc)))
        self.finish("failed", failure_text(exc))
        return 1


def failure_text(exc: BaseException) -> str:
    """How a run's failure reads in its status: a full disk says so (ENOSPC), whatever the job raised."""
    e: BaseException | None = exc
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return f"disk full (ENOSPC): {e}"
        e = e.__cause__ or e.__context__
    return f"{type(exc).__name__}: {exc}"


def _log(ctx: RunContext | None, message: str) -> None:
    try:
        if ctx is not None:
            ctx.log(message)
        else:
            print(message, file=sys.stderr, flush=True)
    except Exception:  # the log itself may be what failed (a full disk): the status still gets written
        pass


def _timeout() -> float:
    return float(os.environ.get("CLAIMGRAPH_RUN_TIMEOUT_S", "0") or 0)


def _compute_seeds(cfg: RunConfig, ctx: RunContext, job: Any, params: Any, seeds: list[int]) -> list[SeedResult]:
    results: list[SeedResult] = []
    for seed in seeds:
        ctx.seed = seed
        _seed_everything(seed)
        res = job.run(ctx, params, seed)
        assert res.seed == seed, f"job returned seed {res.seed} for seed {seed}"
        results.append(res)
        ctx.log("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(res.metrics.items())))
    ctx.seed = None
    return results


def _conclude(cfg: RunConfig, ctx: RunContext, job: Any, params: Any, results: list[SeedResult],
              t0: float) -> RunResult:
    """Summarize across seeds, decide by the registered criterion and write result.json."""
    summary = job.summarize(ctx, params, results)
    metric = cfg.spec.criterion.metric
    decision, summaries, effect = conclude(cfg.spec.criterion, [r.metrics for r in results])
    if not any(metric in r.metrics for r in results):  # a wrong name or a bug; a reported NaN is recorded
        raise RuntimeError(f"the job reported no values of the criterion's metric {metric!r}; "
                           f"it reports: {', '.join(sorted(results[0].metrics)) if results else 'nothing'}")
    result = RunResult(run_id=cfg.run_id, experiment_id=cfg.experiment_id, kind=cfg.spec.kind,
                       seeds=[r.seed for r in results], per_seed=results,
                       metrics=summaries, summary=summary, decision=decision, effect_size=effect,
                       artifacts=artifact_hashes(ctx.run_dir), wall_s=round(time.monotonic() - t0, 3))
    write_json_atomic(ctx.run_dir / "result.json", result.model_dump(mode="json"))
    ctx.log(f"verdict: {decision.verdict} ({decision.reason})")
    return result


def _lived(run_dir: Path, life: Lifecycle, progress: bool, body: Callable[[RunConfig, RunContext, Any, Any], None],
           *, time_warning: int | None = None) -> int:
    """Run `body(cfg, ctx, job, params)` inside `life`: running from the start (signals end it killed), then
    completed, or the final status of whatever it raised; returns the exit code."""
    from .registry import get_job

    ctx: RunContext | None = None
    try:  # from the first "running" report on, a signal ends the run as killed
        life.start(time_warning=time_warning)
        cfg = RunConfig.model_validate_json((run_dir / "config.json").read_text())
        ctx = RunContext(run_dir, device=cfg.device, model_ref=cfg.spec.model, data_ref=cfg.spec.data,
                         progress=progress, status_writer=life.beat)
        job = get_job(cfg.spec.kind)
        body(cfg, ctx, job, job.Params.model_validate(cfg.spec.params))
        life.finish("completed")
        return 0
    except BaseException as e:  # a failing job must end in a final status, whatever it raised
        if isinstance(e, (SystemExit, KeyboardInterrupt)) and not isinstance(e, Killed):
            raise
        return life.ended(ctx, e)
    finally:
        if ctx is not None:
            try:
                ctx.close()
            except OSError:
                pass


def _write_environment(run_dir: Path, cfg: RunConfig, job: Any) -> None:
    write_json_atomic(run_dir / "environment.json", {**environment(cfg.device, cfg.spec.kind),
                                                     "model_provenance": job.input_provenance(cfg.spec)})


def run_worker(run_dir: Path, *, progress: bool = True) -> int:
    """A whole run in this process: every seed, then the summary, the verdict and result.json."""
    run_dir = Path(run_dir)
    t0 = time.monotonic()

    def body(cfg: RunConfig, ctx: RunContext, job: Any, params: Any) -> None:
        _write_environment(run_dir, cfg, job)
        ctx.log(f"run {cfg.run_id}: {cfg.spec.kind} on {cfg.spec.model} / {cfg.spec.data}, device {cfg.device}, "
                f"seeds {cfg.spec.seeds}")
        _conclude(cfg, ctx, job, params, _compute_seeds(cfg, ctx, job, params, cfg.spec.seeds), t0)

    return _lived(run_dir, Lifecycle(run_dir / "status.json", timeout=_timeout()), progress, body)


# -- runs split over an executor's tasks (experiments/executors.py): one seed per task, then a collect ----------
TASKS = "tasks"


def task_state_path(run_dir: Path, seed: int) -> Path:
    return Path(run_dir) / TASKS / f"seed-{seed}.status.json"


def read_task_state(run_dir: Path, seed: int) -> RunState | None:
    """One executor task's status file, or None where it is missing or unreadable."""
    try:
        return RunState.model_validate_json(task_state_path(run_dir, seed).read_text())
    except (OSError, ValueError):
        return None


def task_result_path(run_dir: Path, seed: int) -> Path:
    return Path(run_dir) / TASKS / f"seed-{seed}.result.json"


def run_task(run_dir: str, seed: int) -> int:
    """One seed of a run as one executor task (a Slurm array task, a submitit local job): computes it and writes
    tasks/seed-N.result.json and tasks/seed-N.status.json. Called by submitit in the task's process; raises
    when the seed did not complete, so the scheduler records the task failed too."""
    run_path = Path(run_dir)
    progress = os.environ.get("CLAIMGRAPH_PROGRESS", "0") != "0"
    task_result_path(run_path, seed).unlink(missing_ok=True)  # a requeued task computes its seed afresh
    life = Lifecycle(task_state_path(run_path, seed), timeout=_timeout())
    warning = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")

    def body(cfg: RunConfig, ctx: RunContext, job: Any, params: Any) -> None:
        if not (run_path / "environment.json").exists():
            _write_environment(run_path, cfg, job)
        ctx.log(f"run {cfg.run_id} task seed {seed}: {cfg.spec.kind} on {cfg.spec.model} / {cfg.spec.data} on "
                f"{socket.gethostname()}")
        (res,) = _compute_seeds(cfg, ctx, job, params, [seed])
        write_json_atomic(task_result_path(run_path, seed), res.model_dump(mode="json"))

    code = _lived(run_path, life, progress, body,
                  time_warning=getattr(signal, f"SIG{warning}", None) if os.environ.get("SLURM_JOB_ID") else None)
    if code:
        raise RuntimeError(f"seed {seed} of {run_path.name} ended {life.state.status}: {life.state.error}")
    return code


def collect_worker(run_dir: Path, *, progress: bool = False) -> int:
    """After every task completed: read the seeds' results, summarize, decide, write result.json; the run's
    status.json ends completed (or failed, with why)."""
    run_dir = Path(run_dir)
    t0 = time.monotonic()

    def body(cfg: RunConfig, ctx: RunContext, job: Any, params: Any) -> None:
        results = []
        for seed in cfg.spec.seeds:
            p = task_result_path(run_dir, seed)
            try:
                results.append(SeedResult.model_validate_json(p.read_text()))
            except (OSError, ValueError) as e:
                raise RuntimeError(f"seed {seed} left no readable result ({p}): {e}") from None
        ctx.log(f"collecting {len(results)} seeds of run {cfg.run_id}")
        _conclude(cfg, ctx, job, params, results, t0)

    return _lived(run_dir, Lifecycle(run_dir / "status.json", timeout=_timeout()), progress, body)


def main() -> None:
    args = sys.argv[1:]
    collect = args[:1] == ["--collect"]
    if collect:
        args = args[1:]
    usage = "usage: python -m claimgraph.experiments.worker [--collect] RUN_DIR"
    if args in (["-h"], ["--help"]):
        print(usage)
        sys.exit(0)
    if len(args) != 1:
        print(usage, file=sys.stderr)
        sys.exit(2)
    if not (Path(args[0]) / "config.json").is_file():  # before any status is written: nothing is created
        print(f"{args[0]}: not a run folder (no config.json in it); {usage}", file=sys.stderr)
        sys.exit(2)
    progress = os.environ.get("CLAIMGRAPH_PROGRESS", "1") != "0"
    try:
        code = (collect_worker if collect else run_worker)(Path(args[0]), progress=progress)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        # not even the final status could be written: the exit code tells the launcher why
        print(f"disk full (ENOSPC): {e}", file=sys.stderr, flush=True)
        os._exit(DISK_FULL_EXIT)
    # the final status is written: leave now, without waiting for threads a job may have left behind (a
    # non-daemon thread would keep the process, and the run's launcher, waiting after the run has ended)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
