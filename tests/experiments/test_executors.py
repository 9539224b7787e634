"""Runs handed to an executor through submitit: each seed one task, the command returning at once with the run id,
`runs` following the tasks, `collect` attaching the evidence once, `cancel`, a crashing task, a task over its
time limit. Against a real single-node Slurm (Debian's slurm-wlm and munge, installed and started by the
`slurm` fixture, tests/slurm_cluster.py) and against submitit's local executor (what a laptop without Slurm gets).

The job kind is installed as a user installs a plugin (a module with a `claimgraph.jobs` entry point on
PYTHONPATH, which sbatch exports to the tasks); its computation is real (means of seeded Gaussian samples)."""
from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.graph import Node, Store

JOB = textwrap.dedent('''
    from claimgraph.experiments.job import Job, JobParams, SeedResult
    from claimgraph.experiments.spec import Criterion


    class Params(JobParams):
        n: int = 1000
        sleep_s: float = 0.0
        crash_seed: int = -1   # this seed's task dies (os._exit): no status of its own, the scheduler says FAILED


    class ExecJob(Job):
        kind = "exec_gauss"
        summary = "mean of shifted Gaussian samples"
        Params = Params
        default_criterion = Criterion(metric="mean", op=">", threshold=0.0, band=0.05)
        metrics = {"mean": "sample mean"}
        default_model = None
        default_data = None

        def run(self, ctx, p, seed):
            import os
            import time

            import numpy as np

            if seed == p.crash_seed:
                os._exit(3)
            deadline = time.monotonic() + p.sleep_s
            while time.monotonic() < deadline:
                ctx.heartbeat()
                time.sleep(0.2)
            x = np.random.default_rng(seed).normal(0.5, 1.0, p.n)
            return SeedResult(seed=seed, metrics={"mean": float(x.mean())})
''')


@pytest.fixture
def plugin(install_plugin):
    return install_plugin("cgexecjobs", {"cgexecjobs": JOB}, {"exec_gauss": "cgexecjobs:ExecJob"})


@pytest.fixture
def db(plugin, tmp_path, monkeypatch):
    path = tmp_path / "g.duckdb"
    monkeypatch.setenv("CLAIMGRAPH_DB", str(path))
    monkeypatch.setenv("CLAIMGRAPH_RUNS_DIR", str(tmp_path / "shared" / "runs"))  # "the shared filesystem"
    with Store(path) as s:
        s.add_node(Node(id="claim:samples-are-positive", type="claim", title="Samples are positive"))
    return path


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from slurm_cluster import SlurmCluster, ensure_installed

    why = ensure_installed()
    if why:
        pytest.skip(f"no Slurm to test against: {why}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    old = os.environ.get("SLURM_CONF")
    os.environ.update(cluster.env)
    cluster.start()
    yield cluster
    cluster.stop()
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


def cli(*args: str, code: int = 0) -> dict:
    r = CliRunner().invoke(app, ["--json", *args])
    assert r.exit_code == code, r.output
    return json.loads(r.stdout)


def add(*extra: str, seeds: str = "3") -> str:
    return cli("experiment", "add", "--claim", "claim:samples-are-positive", "--kind", "exec_gauss", "--seeds", seeds,
               *extra)["experiment"]["id"]


def run_status(run_id: str) -> dict:
    (row,) = [r for r in cli("runs")["runs"] if r["run_id"] == run_id]
    return row


def wait_for(run_id: str, statuses: set[str], timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        row = run_status(run_id)
        seen.append(row["status"])
        if row["status"] in statuses:
            row["seen"] = seen
            return row
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} never reached {statuses}; seen {seen}")


def _submitted_then_collected(executor: str, *extra: str) -> None:
    exp = add("--param", "sleep_s=4")
    t0 = time.monotonic()
    out = cli("run", exp, "--executor", executor, *extra)
    assert time.monotonic() - t0 < 30, "the command returns at once"
    assert out["status"] == "queued" and out["executor"] == executor and len(out["job_ids"]) == 3
    if executor == "slurm":
        assert len({j.split("_")[0] for j in out["job_ids"]}) == 1, "one array job, one task per seed"
    rid = out["run_id"]
    row = wait_for(rid, {"running"}, timeout=120)
    assert row["evidence_id"] is None and cli("evidence", "claim:samples-are-positive")["evidence"] == []
    tasks = row["executor"]["tasks"]
    assert set(tasks) == {"0", "1", "2"}
    done = cli("collect", rid, "--wait", "--poll", "0.5")["runs"][0]
    assert done["status"] == "completed" and done["verdict"] == "supported" and done["evidence_id"]
    ev = cli("evidence", "claim:samples-are-positive")["evidence"]
    assert len(ev) == 1 and ev[0]["id"] == done["evidence_id"] and ev[0]["decision"]["n"] == 3
    assert ev[0]["decision"]["ci_low"] < ev[0]["decision"]["mean"] < ev[0]["decision"]["ci_high"]
    # collected once: another command changes nothing, and the seeds' results are what each task computed
    cli("collect", rid)
    assert len(cli("evidence", "claim:samples-are-positive")["evidence"]) == 1
    run_dir = Path(out["run_dir"])
    assert str(run_dir).startswith(os.environ["CLAIMGRAPH_RUNS_DIR"])
    result = json.loads((run_dir / "result.json").read_text())
    assert [r["seed"] for r in result["per_seed"]] == [0, 1, 2]
    for r in result["per_seed"]:
        task = json.loads((run_dir / "tasks" / f"seed-{r['seed']}.result.json").read_text())
        assert task["metrics"] == r["metrics"]


def _cancelled(executor: str) -> None:
    exp = add("--param", "sleep_s=120", seeds="2")
    rid = cli("run", exp, "--executor", executor)["run_id"]
    wait_for(rid, {"running"}, timeout=120)
    row = cli("cancel", rid)["run"]
    assert row["status"] == "killed" and row["evidence_id"] is None
    time.sleep(2)
    assert run_status(rid)["status"] == "killed"
    assert cli("evidence", "claim:samples-are-positive")["evidence"] == []
    r = CliRunner().invoke(app, ["cancel", rid])
    assert r.exit_code == 2 and "already ended (killed)" in r.stderr


def _crashed(executor: str) -> None:
    exp = add("--param", "crash_seed=1", "--param", "sleep_s=1")
    rid = cli("run", exp, "--executor", executor)["run_id"]
    row = wait_for(rid, {"failed", "completed", "killed", "timed-out"}, timeout=180)
    assert row["status"] == "failed" and row["evidence_id"] is None, row
    assert "seed 1" in row["error"]
    assert cli("evidence", "claim:samples-are-positive")["evidence"] == []


# -- submitit's local executor (no Slurm needed) --------------------------------------------------------------
def test_local_executor_submits_follows_and_collects(db):
    _submitted_then_collected("local")


def test_local_executor_cancel_and_crash(db):
    _cancelled("local")
    _crashed("local")


def test_local_executor_task_over_its_time_limit_ends_timed_out(db):
    from claimgraph.experiments.api import add_experiment

    with Store(db) as s:
        exp = add_experiment(s, ["claim:samples-are-positive"], "exec_gauss", params={"sleep_s": 60}, seeds=[0, 1],
                             timeout_s=3).id
    rid = cli("run", exp, "--executor", "local")["run_id"]
    row = wait_for(rid, {"failed", "completed", "killed", "timed-out"}, timeout=120)
    assert row["status"] == "timed-out" and row["evidence_id"] is None, row


# -- a real Slurm ---------------------------------------------------------------------------------------------
def test_slurm_array_is_queued_running_and_collected(slurm, db):
    _submitted_then_collected("slurm", "--time", "5", "--mem", "0.5")


def test_slurm_cancel_and_crashing_task(slurm, db):
    _cancelled("slurm")
    _crashed("slurm")


def test_slurm_task_over_its_time_limit_ends_timed_out(slurm, db):
    exp = add("--param", "sleep_s=600", seeds="1")
    rid = cli("run", exp, "--executor", "slurm", "--time", "1")["run_id"]  # Slurm's smallest limit: one minute
    row = wait_for(rid, {"failed", "completed", "killed", "timed-out"}, timeout=240)
    assert row["status"] == "timed-out" and row["evidence_id"] is None, row["error"]
    assert "time limit" in row["error"]


def test_slurm_refuses_a_partition_it_does_not_have(slurm, db):
    exp = add()
    r = CliRunner().invoke(app, ["run", exp, "--executor", "slurm", "--partition", "nosuchpartition"])
    assert r.exit_code == 1 and "submission to slurm failed" in r.stderr
    (row,) = cli("runs")["runs"]
    assert row["status"] == "failed"


def test_slurm_requeued_task_runs_again_and_the_run_completes(slurm, db):
    import subprocess

    exp = add("--param", "sleep_s=6", seeds="2")
    out = cli("run", exp, "--executor", "slurm", "--time", "5")
    rid, task0 = out["run_id"], out["job_ids"][0]
    wait_for(rid, {"running"}, timeout=120)
    log_file = Path(out["run_dir"]) / "log.txt"
    deadline = time.monotonic() + 60
    while "task seed 0" not in (log_file.read_text() if log_file.exists() else ""):  # seed 0 is computing
        assert time.monotonic() < deadline
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", task0], check=True)  # as after a node failure or a preemption
    deadline = time.monotonic() + 30
    while (row := run_status(rid))["executor"]["tasks"]["0"]["status"] != "queued" and time.monotonic() < deadline:
        assert row["status"] in ("queued", "running"), row  # the killed attempt does not end the run
        time.sleep(0.5)
    assert row["executor"]["tasks"]["0"]["status"] == "queued" and row["status"] in ("queued", "running"), row
    subprocess.run(["scontrol", "update", f"JobId={task0}", "StartTime=now"], check=True)  # skip Slurm's 2-minute hold
    done = cli("collect", rid, "--wait", "--poll", "0.5")["runs"][0]
    assert done["status"] == "completed" and done["evidence_id"], done
    log = log_file.read_text()
    assert log.count("task seed 0") == 2 and log.count("task seed 1") == 1  # seed 0 computed again
