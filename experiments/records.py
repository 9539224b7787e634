"""Run folders: the files a run leaves behind, readable without claimgraph.

    <store>.d/runs/<experiment slug>/<run id>/
        config.json        resolved spec, experiment, tested claims, config hash, code version
        environment.json   python, package versions, git commit and dirty flag, device, host
        status.json        status, pid, heartbeat, start/end times, error
        log.txt            the job's log
        metrics.jsonl      per-step metrics (one JSON object per line)
        artifacts/         files the job wrote (their sha256 go in result.json)
        result.json        per-seed metrics, summary, decision, artifact hashes
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from .codeversion import code_version
from .context import write_json_atomic
from .job import SeedResult
from .spec import Criterion, Decision, JobSpec

RunStatus = Literal["queued", "running", "completed", "failed", "killed", "timed-out"]
FINAL: frozenset[str] = frozenset({"completed", "failed", "killed", "timed-out"})
PACKAGE_ROOT = Path(__file__).resolve().parent


class RunConfig(BaseModel):
    """config.json: everything that determines the computation."""

    run_id: str
    experiment_id: str
    targets: list[str] = Field(description="Claims/findings the experiment tests")
    spec: JobSpec
    device: str = Field(description="Resolved device the run uses")
    config_hash: str
    code_version: str
    inputs: dict[str, Any] = Field(default_factory=dict)


class RunState(BaseModel):
    """status.json: the lifecycle, refreshed by heartbeats while running."""

    status: RunStatus
    pid: int | None = None
    host: str = Field(default_factory=socket.gethostname)
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None


class MetricSummary(BaseModel):
    mean: float | None
    sd: float | None
    values: list[float | None]


class RunResult(BaseModel):
    """result.json: what the run computed, and the verdict by the registered criterion."""

    run_id: str
    experiment_id: str
    kind: str
    seeds: list[int]
    per_seed: list[SeedResult] = Field(description="What each seed computed, in seed order")
    metrics: dict[str, MetricSummary]
    summary: dict[str, Any] = Field(default_factory=dict)
    decision: Decision
    effect_size: float | None
    artifacts: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256")
    wall_s: float
    reused_from: str | None = Field(None, description="Run folder whose computation this result re-decides")


def read_state(run_dir: Path) -> RunState | None:
    p = Path(run_dir) / "status.json"
    try:
        return RunState.model_validate_json(p.read_text())
    except (OSError, ValueError):
        return None


def write_state(run_dir: Path, state: RunState) -> None:
    write_json_atomic(Path(run_dir) / "status.json", state.model_dump(mode="json"))


def read_result(run_dir: Path) -> RunResult | None:
    p = Path(run_dir) / "result.json"
    try:
        return RunResult.model_validate_json(p.read_text())
    except (OSError, ValueError):
        return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_hashes(run_dir: Path) -> dict[str, str]:
    root = Path(run_dir) / "artifacts"
    if not root.exists():
        return {}
    return {str(p.relative_to(run_dir)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def input_fingerprint(spec: JobSpec) -> dict[str, Any]:
    """What the spec's model and data references point at: `{"model": digest, "data": digest}` as the kind
    computes them (`Job.input_fingerprint`: content digests of local weights and files, cached per stat)."""
    from .registry import get_job

    return dict(get_job(spec.kind).input_fingerprint(spec))


def params_digest(params: dict[str, Any]) -> str:
    """Hash of a kind's resolved parameters (every field, defaults filled in, as its Params dump them)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(code: str, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """An evidence row's fingerprint: what produced it, each part comparable with what would produce it now
    (claimgraph.experiments.staleness): the kind's code version, the model's and the data's digests, the
    resolved parameters' hash."""
    return {"code_version": code, "model": inputs.get("model"), "data": inputs.get("data"),
            "params": params_digest(params)}


def config_hash(spec: JobSpec, device: str, inputs: dict[str, Any]) -> str:
    """Hash of what determines the computation: the spec less its criterion and time limit (they decide and
    bound a run, they do not change what it computes), the device, the inputs and the kind's code version
    (codeversion.py: its own package and what it imports, so editing another kind keeps this one's cache)."""
    payload = {"spec": spec.model_dump(mode="json", exclude={"criterion", "timeout_s"}), "device": device,
               "inputs": inputs, "code": code_version(spec.kind)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def conclude(criterion: Criterion, per_seed: list[dict[str, float]]) -> tuple[Decision, dict[str, MetricSummary],
                                                                              float | None]:
    """The verdict, per-metric summaries and effect size for per-seed metrics under a registered criterion.
    The effect size is the mean of an `effect_size` metric when the job reports one, else the criterion
    metric's mean minus the threshold (in the metric's units)."""
    decision = criterion.decide([m.get(criterion.metric) for m in per_seed])
    summaries = metric_summaries(per_seed)
    effect: float | None
    if "effect_size" in summaries and summaries["effect_size"].mean is not None:
        effect = summaries["effect_size"].mean
    else:
        effect = decision.mean - criterion.threshold if decision.mean is not None else None
    return decision, summaries, effect


def metric_summaries(per_seed: list[dict[str, float]]) -> dict[str, MetricSummary]:
    names = sorted({k for m in per_seed for k in m})
    out = {}
    for k in names:
        vals = [m.get(k) for m in per_seed]
        finite = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
        mean = sum(finite) / len(finite) if finite else None
        sd = (math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
              if len(finite) > 1 and mean is not None else None)
        out[k] = MetricSummary(mean=mean, sd=sd, values=[None if v is None else float(v) for v in vals])
    return out


def _git(*args: str) -> str | None:
    # --no-optional-locks: reading the state must not take .git/index.lock (a worker killed mid-`git status`
    # would leave the lock behind and block the user's next commit)
    try:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(PACKAGE_ROOT), *args], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str, kind: str) -> dict[str, Any]:
    """environment.json: interpreter, packages, git state, device, the kind's code version."""
    packages: dict[str, str | None] = {}
    for name in ("claimgraph", "torch", "numpy", "duckdb", "pydantic", "transformers", "safetensors"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None
    env: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(), "host": socket.gethostname(),
        "cpu_count": os.cpu_count(), "packages": packages, "git_commit": commit, "git_dirty": dirty,
        "device": device, "code_version": code_version(kind),
    }
    env["cpu"] = cpu_info()
    env["torch_settings"] = torch_settings()
    if device.startswith("cuda"):
        import torch

        env["cuda"] = {"name": torch.cuda.get_device_name(0), "torch_cuda": torch.version.cuda}
    return env


def cpu_info() -> dict[str, Any]:
    """The CPU's model name and instruction-set flags (Linux /proc/cpuinfo; elsewhere the platform's processor
    string): a different CPU can round differently (vector widths, FMA), which moves trained models."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())     # the first processor's entry
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or None
    flags = (fields.get("flags") or fields.get("Features") or "").split() or None
    return {"model": model, "flags": flags, "machine": platform.machine()}


def torch_settings() -> dict[str, Any]:
    """The torch settings a run's numbers depend on: CPU threads (intra- and inter-op, and the environment
    variables that set them), deterministic-algorithm mode, cuDNN determinism and benchmarking."""
    import torch

    return {
        "num_threads": torch.get_num_threads(), "num_interop_threads": torch.get_num_interop_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CLAIMGRAPH_TRAIN_THREADS",
                                              "CUBLAS_WORKSPACE_CONFIG")},
    }
