"""Starting a run's worker process: forked from a fork server that has already imported torch, transformers and
the job kinds, or, where that cannot hold, a fresh `python -m claimgraph.experiments.worker RUN_DIR`.

A fresh interpreter spends 1.5-2 CPU-seconds importing torch and 3-4 more importing transformers' Llama code
before a run computes anything; `run --all` starts one worker per experiment, so on a small machine that was a
tenth of the main job's CPU time. The fork server (multiprocessing's "forkserver" start method) pays the imports
once per command; each worker is a fork of it, still one process per run with its own status file, heartbeat,
signals and exit code, computing exactly what a fresh worker computes (same code, same libraries).

Modules read some settings once, at import (OpenMP's and MKL's thread settings, HF_HUB_OFFLINE): a worker is
forked only while the environment and the working directory are the ones the server started with; otherwise
(or with CLAIMGRAPH_FORK_WORKERS=0) it is a fresh interpreter, as before.
"""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

# imported by the server before it forks anything (what a worker would import itself)
PRELOAD = ["claimgraph.experiments.launch_preload"]
_RUN_KEYS = {"CLAIMGRAPH_PROGRESS", "PYTHONUNBUFFERED", "CLAIMGRAPH_RUN_TIMEOUT_S"}  # set per run, read at run time
_server: dict[str, Any] = {}


class ForkedWorker:
    """A worker forked from the fork server, with the part of Popen's interface the runner uses: pid, poll,
    wait(timeout) (TimeoutExpired), send_signal, kill and returncode (-N when signal N ended it)."""

    def __init__(self, proc: Any):
        self.proc = proc
        self.pid: int = proc.pid
        self.args = ["claimgraph.experiments.worker (forked)"]

    @property
    def returncode(self) -> int | None:
        code: int | None = self.proc.exitcode
        return code

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return int(self.proc.exitcode)

    def send_signal(self, sig: int) -> None:
        if self.proc.exitcode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _base(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in _RUN_KEYS}


def _context(env: dict[str, str]) -> Any | None:
    """The fork server's context, the server started on first use with the run's environment (per-run keys
    aside); None when workers cannot be forked here (not POSIX, switched off, or a run whose environment or
    working directory is not the one the server started with)."""
    import multiprocessing as mp
    from multiprocessing import forkserver

    if os.environ.get("CLAIMGRAPH_FORK_WORKERS", "1") == "0" or "forkserver" not in mp.get_all_start_methods():
        return None
    ident = (os.getcwd(), tuple(sorted(_base(env).items())))
    if "ctx" not in _server:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        saved = dict(os.environ)
        try:  # the server's imports read the run's environment
            os.environ.clear()
            os.environ.update(_base(env))
            forkserver.ensure_running()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        _server.update(ctx=ctx, ident=ident)
        atexit.register(_stop_server)
    return _server["ctx"] if _server["ident"] == ident else None


def _stop_server() -> None:
    """At exit: stop the server and wait for it, so its workers' CPU time is counted in this command's (`time`
    shows it) and no server outlives its command."""
    from multiprocessing import forkserver

    try:
        forkserver._forkserver._stop()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ChildProcessError):
        pass


def start_worker(run_dir: Path, env: dict[str, str]) -> Any:
    """The worker process of the run in `run_dir`, with environment `env`: forked (ForkedWorker) where it can
    be, else a fresh interpreter (subprocess.Popen)."""
    ctx = _context(env)
    if ctx is None:
        return subprocess.Popen([sys.executable, "-m", "claimgraph.experiments.worker", str(run_dir)], env=env)
    proc = ctx.Process(target=_forked_main, args=(str(run_dir), env), name=f"claimgraph-worker-{Path(run_dir).name}")
    proc.start()
    return ForkedWorker(proc)


def _forked_main(run_dir: str, env: dict[str, str]) -> None:
    """In the forked process: the run's environment, then the worker's main (which leaves with os._exit)."""
    os.environ.clear()
    os.environ.update(env)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    from .worker import main

    main([run_dir])
