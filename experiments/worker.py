"""The process a run computes in: `python -m claimgraph.experiments.worker RUN_DIR`.

It reads config.json, runs every seed of the job, and writes result.json and the final status. It never
opens the database, so a run can also be started on another machine that shares the run folder.
Exit codes: 0 completed, 1 failed, 143 killed (SIGTERM/SIGINT).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from claimgraph.graph.models import utcnow

from .context import RunContext, write_json_atomic
from .job import SeedResult
from .records import RunConfig, RunResult, RunState, artifact_hashes, conclude, environment, write_state

HEARTBEAT_S = 2.0


class Killed(BaseException):
    """Raised in the worker when it receives SIGTERM or SIGINT (not an Exception, so jobs cannot swallow it)."""


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def run_worker(run_dir: Path, *, progress: bool = True) -> int:
    from .registry import get_job

    run_dir = Path(run_dir)
    cfg = RunConfig.model_validate_json((run_dir / "config.json").read_text())
    state = RunState(status="running", pid=os.getpid(), started_at=utcnow(), heartbeat_at=utcnow())
    lock = threading.Lock()

    def beat() -> None:
        with lock:
            if state.status == "running":
                state.heartbeat_at = utcnow()
                write_state(run_dir, state)

    def finish(status: str, error: str | None = None) -> None:
        with lock:
            state.status = status  # type: ignore[assignment]
            state.ended_at = utcnow()
            state.error = error
            write_state(run_dir, state)

    def on_signal(signum, frame):
        raise Killed(signal.Signals(signum).name)

    stop = threading.Event()

    timeout = float(os.environ.get("CLAIMGRAPH_RUN_TIMEOUT_S", "0") or 0)
    timed_out = threading.Event()
    started = time.monotonic()

    def heartbeat_loop() -> None:
        while not stop.wait(HEARTBEAT_S):
            beat()
            if timeout and time.monotonic() - started > timeout and not timed_out.is_set():
                timed_out.set()  # the run enforces its own limit even if the launching process is gone
                os.kill(os.getpid(), signal.SIGTERM)

    ctx = RunContext(run_dir, device=cfg.device, model_ref=cfg.spec.model, data_ref=cfg.spec.data,
                     progress=progress, status_writer=beat)
    t0 = time.monotonic()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:  # from the first "running" report on, a signal ends the run as killed
        write_state(run_dir, state)
        threading.Thread(target=heartbeat_loop, daemon=True).start()
        job = get_job(cfg.spec.kind)
        write_json_atomic(run_dir / "environment.json", {**environment(cfg.device, cfg.spec.kind),
                                                         "model_provenance": job.input_provenance(cfg.spec)})
        params = job.Params.model_validate(cfg.spec.params)
        ctx.log(f"run {cfg.run_id}: {cfg.spec.kind} on {cfg.spec.model} / {cfg.spec.data}, device {cfg.device}, "
                f"seeds {cfg.spec.seeds}")
        results: list[SeedResult] = []
        for seed in cfg.spec.seeds:
            ctx.seed = seed
            _seed_everything(seed)
            res = job.run(ctx, params, seed)
            assert res.seed == seed, f"job returned seed {res.seed} for seed {seed}"
            results.append(res)
            ctx.log("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(res.metrics.items())))
        ctx.seed = None
        summary = job.summarize(ctx, params, results)
        metric = cfg.spec.criterion.metric
        decision, summaries, effect = conclude(cfg.spec.criterion, [r.metrics for r in results])
        if decision.n == 0:
            raise RuntimeError(f"the job reported no values of the criterion's metric {metric!r}; "
                               f"it reports: {', '.join(sorted(results[0].metrics)) if results else 'nothing'}")
        result = RunResult(run_id=cfg.run_id, experiment_id=cfg.experiment_id, kind=cfg.spec.kind,
                           seeds=cfg.spec.seeds, per_seed=results,
                           metrics=summaries, summary=summary, decision=decision, effect_size=effect,
                           artifacts=artifact_hashes(run_dir), wall_s=round(time.monotonic() - t0, 3))
        write_json_atomic(run_dir / "result.json", result.model_dump(mode="json"))
        ctx.log(f"verdict: {decision.verdict} ({decision.reason})")
        stop.set()
        finish("completed")
        return 0
    except Killed as k:
        stop.set()
        if timed_out.is_set():
            ctx.log(f"timed out after {timeout:g}s")
            finish("timed-out", f"exceeded its {timeout:g}s limit")
        else:
            ctx.log(f"killed by {k}")
            finish("killed", f"killed by {k}")
        return 143
    except Exception as e:  # a failing job must end in a final status, whatever it raised
        stop.set()
        tb = traceback.format_exc()
        try:
            ctx.log("failed:\n" + tb)
        except Exception:
            pass
        finish("failed", f"{type(e).__name__}: {e}")
        return 1
    finally:
        stop.set()
        ctx.close()


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m claimgraph.experiments.worker RUN_DIR", file=sys.stderr)
        sys.exit(2)
    progress = os.environ.get("CLAIMGRAPH_PROGRESS", "1") != "0"
    sys.exit(run_worker(Path(sys.argv[1]), progress=progress))


if __name__ == "__main__":
    main()
