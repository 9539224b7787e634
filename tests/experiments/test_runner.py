"""The run lifecycle through the CLI: registration refuses bad specs, runs complete and attach evidence, the cache
serves identical specs, --force recomputes, killed/crashed/timed-out/failed runs end in a final status and attach
nothing.

These tests use a job kind installed the way a user installs one (a package with a `claimgraph.jobs` entry
point, written to a temp dir on sys.path), so they exercise the plugin path and stay independent of the
built-in kinds' run time. Its computation is real (means of seeded Gaussian samples); only its purpose is a test.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.graph import Node, Store

JOB_MODULE = textwrap.dedent('''
    from claimgraph.experiments.job import Job, JobParams, SeedResult
    from claimgraph.experiments.spec import Criterion


    class Params(JobParams):
        n: int = 2000          # samples per step
        shift: float = 0.5     # true mean of the samples
        steps: int = 3
        sleep_s: float = 0.0   # pause per step, to have a run that lasts
        fail: bool = False
        write_mb: float = 0.0  # an artifact this large (a run that fills a small disk)
        undefined: bool = False  # report the mean as NaN (a metric the job defines only under a condition)


    class GaussJob(Job):
        kind = "gauss"
        summary = "mean of shifted Gaussian samples"
        Params = Params
        default_criterion = Criterion(metric="mean", op=">", threshold=0.0, band=0.05)
        metrics = {"mean": "sample mean", "sd": "sample standard deviation"}
        default_model = None
        default_data = None

        def run(self, ctx, p, seed):
            import time
            import torch

            g = torch.Generator().manual_seed(seed)
            for step in ctx.progress(range(p.steps), total=p.steps, desc="steps"):
                x = torch.randn(p.n, generator=g) + p.shift
                ctx.log_metrics(step, {"mean": x.mean().item()})
                time.sleep(p.sleep_s)
            if p.fail:
                raise ValueError("asked to fail")
            if p.write_mb:
                with open(ctx.artifact("big.bin"), "wb") as f:
                    for _ in range(int(p.write_mb * 16)):
                        f.write(b"x" * 65536)
            ctx.artifact("samples.txt").write_text(" ".join(f"{v:.4f}" for v in x[:10].tolist()))
            return SeedResult(seed=seed, metrics={"mean": float("nan") if p.undefined else x.mean().item(),
                                                  "sd": x.std().item()})
''')


@pytest.fixture
def plugin(install_plugin):
    return install_plugin("cgtestjobs", {"cgtestjobs": JOB_MODULE}, {"gauss": "cgtestjobs:GaussJob"})


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "g.duckdb"
    monkeypatch.setenv("CLAIMGRAPH_DB", str(path))
    with Store(path) as s:
        s.add_node(Node(id="claim:samples-are-positive", type="claim", title="Samples are positive"))
        s.add_node(Node(id="paper:p", type="paper", title="P"))
    return path


def cli(*args: str):
    r = CliRunner().invoke(app, ["--json", *args])
    return r


def add(*extra: str) -> str:
    r = cli("experiment", "add", "--claim", "claim:samples-are-positive", "--kind", "gauss", *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["experiment"]["id"]


def test_plugin_kind_is_listed(plugin, db):
    r = cli("experiment", "kinds")
    assert r.exit_code == 0, r.output
    kinds = {k["kind"]: k for k in json.loads(r.stdout)["kinds"]}
    assert kinds["gauss"]["criterion"].startswith("mean > 0")


@pytest.mark.parametrize("args, message", [
    (["--kind", "nope"], "unknown job kind 'nope'; known kinds:"),
    (["--kind", "gauss", "--param", "n=lots"], "param n: Input should be a valid integer"),
    (["--kind", "gauss", "--param", "colour=red"], "param colour: Extra inputs are not permitted"),
    (["--kind", "gauss", "--param", "novalue"], "not of the form name=value"),
    (["--kind", "gauss", "--criterion", "accuracy > 0.5"], "not reported by kind 'gauss'"),
    (["--kind", "gauss", "--criterion", "mean is big"], "not of the form"),
    (["--kind", "gauss", "--device", "tpu"], "device"),
])
def test_bad_specs_are_refused_before_anything_runs(plugin, db, args, message):
    r = CliRunner().invoke(app, ["experiment", "add", "--claim", "claim:samples-are-positive", *args])
    assert r.exit_code == 2, r.output
    assert message in r.stderr
    with Store(db) as s:
        assert s.list_nodes("experiment") == [] and s.runs() == []


def test_experiment_must_test_a_claim_or_finding(plugin, db):
    r = CliRunner().invoke(app, ["experiment", "add", "--claim", "paper:p", "--kind", "gauss"])
    assert r.exit_code == 2 and "experiments test claims or findings" in r.stderr


def test_run_attaches_evidence_then_serves_cache_then_force_recomputes(plugin, db):
    exp = add("--seeds", "3")
    assert add("--seeds", "3") == exp  # same spec, same experiment
    r = cli("run", exp)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["status"] == "completed" and not out["cached"] and out["verdict"] == "supported"
    run_dir = Path(out["run_dir"])
    for f in ("config.json", "environment.json", "status.json", "log.txt", "metrics.jsonl", "result.json"):
        assert (run_dir / f).is_file(), f
    result = json.loads((run_dir / "result.json").read_text())
    assert result["decision"]["n"] == 3 and result["seeds"] == [0, 1, 2]
    assert abs(result["metrics"]["mean"]["mean"] - 0.5) < 0.05
    assert set(result["artifacts"]) == {"artifacts/samples.txt"}
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["device"] == "cpu" and env["packages"]["torch"] and "git_dirty" in env
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 9

    ev = json.loads(cli("evidence", "claim:samples-are-positive").stdout)
    assert ev["status"] == "supported" and len(ev["evidence"]) == 1
    first = ev["evidence"][0]
    assert first["verdict"] == "supported" and first["decision"]["ci_low"] > 0.05
    assert first["effect_size"] == pytest.approx(result["metrics"]["mean"]["mean"])

    again = json.loads(cli("run", exp).stdout)
    assert again["cached"] and again["run_id"] == out["run_id"] and again["evidence_id"] == out["evidence_id"]

    forced = json.loads(cli("run", exp, "--force").stdout)
    assert not forced["cached"] and forced["run_id"] != out["run_id"]
    ev = json.loads(cli("evidence", "claim:samples-are-positive").stdout)
    assert [e["run_id"] for e in ev["evidence"]] == [forced["run_id"]]  # the older evidence is superseded
    ev_all = json.loads(cli("evidence", "claim:samples-are-positive", "--all").stdout)
    assert len(ev_all["evidence"]) == 2

    # same seed, same numbers
    r2 = json.loads((Path(forced["run_dir"]) / "result.json").read_text())
    assert r2["metrics"]["mean"]["values"] == result["metrics"]["mean"]["values"]

    runs = json.loads(cli("runs", exp).stdout)["runs"]
    assert [r["status"] for r in runs] == ["completed", "completed"]
    page = json.loads(cli("show", "claim:samples-are-positive").stdout)
    assert page["status"] == "supported" and page["node"]["status"] == "supported"


def test_refuting_and_inconclusive_verdicts(plugin, db):
    exp = add("--seeds", "3", "--param", "shift=-0.5", "--id", "experiment:negative")
    out = json.loads(cli("run", exp).stdout)
    assert out["verdict"] == "refuted"
    exp2 = add("--seeds", "3", "--param", "shift=0.0", "--param", "n=50", "--id", "experiment:null")
    out2 = json.loads(cli("run", exp2).stdout)
    assert out2["verdict"] == "inconclusive"
    with Store(db) as s:
        kinds = {e.type.value for e in s.edges(out2["evidence_id"])}
        assert kinds == {"produced"}  # inconclusive evidence is kept with no supports/refutes edge
    status = json.loads(cli("evidence", "claim:samples-are-positive").stdout)["status"]
    assert status == "mixed"  # refuted beside inconclusive evidence (graph.models.STATUS_RULES)


def test_more_seeds_on_the_command_line(plugin, db):
    exp = add("--seeds", "2")
    out = json.loads(cli("run", exp, "--seeds", "4").stdout)
    result = json.loads((Path(out["run_dir"]) / "result.json").read_text())
    assert result["seeds"] == [0, 1, 2, 3]


def test_fresh_seed_range_for_a_replication(plugin, db):
    exp = add("--seeds", "3-5", "--id", "experiment:replication")
    spec = json.loads(cli("experiment", "list").stdout)["experiments"]
    assert [e["seeds"] for e in spec if e["id"] == exp] == [[3, 4, 5]]
    out = json.loads(cli("run", exp).stdout)
    assert json.loads((Path(out["run_dir"]) / "result.json").read_text())["seeds"] == [3, 4, 5]
    r = cli("experiment", "add", "--claim", "claim:samples-are-positive", "--kind", "gauss", "--seeds", "5-3")
    assert r.exit_code == 2 and "'5-3' is not a seed or a range" in r.stderr
    r = cli("run", exp, "--seeds", "0")
    assert r.exit_code == 2 and "at least 1" in r.stderr


def test_failing_job_ends_failed_and_attaches_nothing(plugin, db):
    exp = add("--param", "fail=true")
    r = cli("run", exp)
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert out["status"] == "failed" and "asked to fail" in out["error"] and out["evidence_id"] is None
    assert "ValueError: asked to fail" in (Path(out["run_dir"]) / "log.txt").read_text()
    assert json.loads(cli("evidence", "claim:samples-are-positive").stdout)["status"] == "untested"


def _started(proc: subprocess.Popen, deadline: float) -> Path:
    """The run folder from the command's "started; folder" line, reading stderr with a deadline (a bare
    readline() would wait forever on a command that never prints it)."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stderr.readline()
            if not line:
                break
            if "started; folder" in line:
                return Path(line.rsplit("folder ", 1)[1].strip())
    finally:
        sel.close()
    proc.kill()
    raise AssertionError("run did not start")


def _start_cli_run(exp: str, *, wait_running: bool = True) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-m", "claimgraph.cli.main", "run", exp], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, CLAIMGRAPH_PROGRESS="0"))
    deadline = time.monotonic() + 60
    run_dir = _started(proc, deadline)
    if not wait_running:
        return proc, run_dir
    while time.monotonic() < deadline:  # wait until the worker is computing
        status = run_dir / "status.json"
        if status.exists() and json.loads(status.read_text())["status"] == "running":
            return proc, run_dir
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("worker did not report running")


def test_sigterm_kills_the_run_and_attaches_nothing(plugin, db):
    exp = add("--param", "sleep_s=2", "--param", "steps=100", "--seeds", "1")
    proc, run_dir = _start_cli_run(exp)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 1
    state = json.loads((run_dir / "status.json").read_text())
    assert state["status"] == "killed"
    runs = json.loads(cli("runs", exp).stdout)["runs"]
    assert runs[0]["status"] == "killed" and runs[0]["evidence_id"] is None
    assert not (run_dir / "result.json").exists()
    assert json.loads(cli("evidence", "claim:samples-are-positive").stdout)["evidence"] == []


def test_sigterm_the_moment_a_run_starts_still_ends_it_killed(plugin, db):
    """The race behind the SIGTERM test's hangs under load: the command used to install its forwarding handler
    after starting the worker and printing "started", so a SIGTERM in between killed the command alone and left
    the worker computing (and holding the test's pipes) for the whole run. Now the handler is in first."""
    exp = add("--param", "sleep_s=2", "--param", "steps=100", "--seeds", "1")
    proc, run_dir = _start_cli_run(exp, wait_running=False)
    proc.send_signal(signal.SIGTERM)  # at once: the worker may not even have its own handlers yet
    proc.communicate(timeout=60)
    assert proc.returncode == 1
    row = json.loads(cli("runs", exp).stdout)["runs"][0]
    assert row["status"] == "killed" and row["evidence_id"] is None, row
    state = json.loads((run_dir / "status.json").read_text())
    assert state["status"] == "killed" and not (run_dir / "result.json").exists()


def test_a_run_whose_processes_died_is_marked_on_the_next_command(plugin, db):
    exp = add("--param", "sleep_s=2", "--param", "steps=100", "--seeds", "1")
    proc, run_dir = _start_cli_run(exp)
    worker_pid = json.loads((run_dir / "status.json").read_text())["pid"]
    proc.kill()  # the launching command dies without cleaning up ...
    proc.wait()
    os.kill(worker_pid, signal.SIGKILL)  # ... and so does the worker
    time.sleep(0.5)
    r = CliRunner().invoke(app, ["runs", exp])  # any next command notices
    assert r.exit_code == 0
    assert "ended: failed" in r.stderr
    runs = json.loads(cli("runs", exp).stdout)["runs"]
    assert runs[0]["status"] == "failed" and "died" in runs[0]["error"] and runs[0]["evidence_id"] is None


def test_a_run_queued_a_moment_ago_is_left_alone_while_its_launcher_lives(plugin, db):
    """Between a run's record (queued) and its worker's first word there are seconds of start-up; another
    command's reconcile in that window used to find no pid and no heartbeat and fail it ("the run never
    started"), and the run then completed with that error left on its record. The queued record now carries
    the launching process: alive, the run stays queued; gone before any worker started, the run fails."""
    from claimgraph.experiments.runner import prepare_run, reconcile, record_queued

    exp = add("--seeds", "1")
    dead = subprocess.Popen(["true"])
    dead.wait()
    with Store(db) as s:
        cfg, run_dir = prepare_run(s, exp)
        record_queued(s, cfg, run_dir)
        assert s.runs(run_id=cfg.run_id)[0]["pid"] == os.getpid()
        assert reconcile(s) == [] and s.runs(run_id=cfg.run_id)[0]["status"] == "queued"
        s.put_run(run_id=cfg.run_id, pid=dead.pid)  # as if the launching command had died
        (changed,) = reconcile(s)
        assert changed["status"] == "failed" and f"process {dead.pid}" in changed["error"]
    # a run that completes normally carries no error
    run = json.loads(cli("run", exp).stdout)
    row = json.loads(cli("runs", exp).stdout)["runs"][0]
    assert run["status"] == row["status"] == "completed" and row["error"] is None


def test_timeout_ends_timed_out(plugin, db):
    from claimgraph.experiments.api import add_experiment

    with Store(db) as s:
        node = add_experiment(s, ["claim:samples-are-positive"], "gauss", params={"sleep_s": 1, "steps": 100},
                              seeds=[0], timeout_s=3)
    r = cli("run", node.id)
    out = json.loads(r.stdout)
    assert r.exit_code == 1 and out["status"] == "timed-out" and out["evidence_id"] is None


def _computed_then_reused(db, seeds: str) -> tuple[str, dict, str, dict]:
    """Run an experiment, then a second one of the same computation under another criterion (a re-decision):
    (first experiment, its run outcome, second experiment, its run outcome)."""
    with Store(db) as s:
        s.add_node(Node(id="claim:samples-are-large", type="claim", title="Samples are large"))
    first = add("--seeds", seeds)
    out = json.loads(cli("run", first).stdout)
    r = cli("experiment", "add", "--claim", "claim:samples-are-large", "--kind", "gauss", "--seeds", seeds,
            "--criterion", "mean > 2 band=0.1")
    second = json.loads(r.stdout)["experiment"]["id"]
    return first, out, second, json.loads(cli("run", second).stdout)


def test_same_computation_under_another_criterion_is_re_decided_not_recomputed(plugin, db):
    first, out, second, again = _computed_then_reused(db, "3")
    assert again["cached"] and again["reused_from"] == out["run_dir"] and again["run_id"] != out["run_id"]
    assert again["verdict"] == "refuted" and out["verdict"] == "supported"
    new_dir = Path(again["run_dir"])
    assert not (new_dir / "log.txt").exists()  # nothing ran
    result = json.loads((new_dir / "result.json").read_text())
    original = json.loads((Path(out["run_dir"]) / "result.json").read_text())
    assert result["per_seed"] == original["per_seed"] and "reused from run" in result["summary"]["notes"]
    ev = json.loads(cli("evidence", "claim:samples-are-large").stdout)
    assert ev["status"] == "refuted"
    # recorded relative to the store's folder (portable store)
    assert str(db.parent / (db.name + ".d") / ev["evidence"][0]["reused_from"]) == out["run_dir"]
    assert json.loads(cli("evidence", "claim:samples-are-positive").stdout)["status"] == "supported"
    # running the second experiment again is a plain cache hit on its own record
    third = json.loads(cli("run", second).stdout)
    assert third["cached"] and third["run_id"] == again["run_id"]
    # a third criterion re-decides from the run that computed, not from the re-decided one
    r = cli("experiment", "add", "--claim", "claim:samples-are-large", "--kind", "gauss", "--seeds", "3",
            "--criterion", "mean > 0.5 band=0.1")
    fourth = json.loads(cli("run", json.loads(r.stdout)["experiment"]["id"]).stdout)
    assert fourth["cached"] and fourth["reused_from"] == out["run_dir"]
    notes = json.loads((Path(fourth["run_dir"]) / "result.json").read_text())["summary"]["notes"]
    assert notes.count("reused from run") == 1


def test_a_moved_store_with_its_folder_works_on_another_path(plugin, db, tmp_path, monkeypatch):
    """Portable stores: run folders are recorded relative to `<db>.d/`, so the store and its folder moved
    elsewhere (and renamed) still find their runs: cache hits read result.json there, nothing points back."""
    import shutil

    exp, out, _, reused = _computed_then_reused(db, "2")
    assert reused["cached"] and reused["reused_from"] == out["run_dir"]
    old_home = str(db.parent / (db.name + ".d"))
    with Store(db) as s:
        assert s.sql("SELECT run_dir FROM runs WHERE run_dir LIKE '/%'") == []

    moved = tmp_path / "elsewhere" / "copy.duckdb"
    moved.parent.mkdir()
    shutil.move(str(db), moved)
    shutil.move(old_home, str(moved) + ".d")
    monkeypatch.setenv("CLAIMGRAPH_DB", str(moved))
    new_home = moved.parent / (moved.name + ".d")
    runs = json.loads(cli("runs", exp).stdout)["runs"]
    assert [Path(r["run_dir"]) for r in runs] == [new_home / Path(out["run_dir"]).relative_to(old_home)]
    again = json.loads(cli("run", exp).stdout)  # the cache reads result.json through the recorded folder
    assert again["cached"] and again["run_id"] == out["run_id"] and Path(again["run_dir"]).is_dir()
    ev = json.loads(cli("evidence", "claim:samples-are-positive").stdout)
    assert ev["status"] == "supported" and (new_home / ev["evidence"][0]["run_dir"] / "result.json").is_file()
    with Store(moved) as s:
        texts = s.sql("SELECT run_dir FROM runs UNION ALL SELECT coalesce(source, '') FROM nodes "
                      "UNION ALL SELECT attrs::VARCHAR FROM nodes UNION ALL SELECT coalesce(source, '') FROM edges")
    assert not [t for (t,) in texts if old_home in t]


def test_a_real_run_is_exported_with_its_evidence_and_imports_back(plugin, db, tmp_path):
    """The evidence of a real run, as JSON-LD (rdflib), GraphML (networkx) and Parquet, carries the verdict,
    value, interval, criterion and run that result.json holds; the JSON-LD imports back into an equal store."""
    import networkx as nx
    import rdflib

    from claimgraph.graph.exchange import read_snapshot, snapshot_equal
    from claimgraph.graph.exchange.vocab import CG, PROV

    exp = add("--seeds", "3")
    out = json.loads(cli("run", exp).stdout)
    result = json.loads((Path(out["run_dir"]) / "result.json").read_text())
    d = result["decision"]
    for fmt, name in (("json", "g.jsonld"), ("graphml", "g.graphml"), ("parquet", "pq")):
        r = cli("export", "--format", fmt, "-o", str(tmp_path / name))
        assert r.exit_code == 0, r.output
    g = rdflib.Graph()
    g.parse(tmp_path / "g.jsonld", format="json-ld")
    ev = rdflib.URIRef("urn:claimgraph:" + out["evidence_id"])
    one = lambda p: next(iter(g.objects(ev, rdflib.URIRef(CG + p)))).toPython()
    assert one("verdict") == d["verdict"] == "supported"
    assert (one("value"), one("ciLow"), one("ciHigh"), one("seedCount")) == (d["mean"], d["ci_low"], d["ci_high"], 3)
    assert one("criterion") == "mean > 0 band=0.05" and one("runId") == out["run_id"]
    run = next(iter(g.objects(ev, rdflib.URIRef(PROV + "wasGeneratedBy"))))
    assert str(run) == f"urn:claimgraph:run/{out['run_id']}"
    assert str(next(iter(g.objects(run, rdflib.URIRef(CG + "runDir"))))) == \
        str(Path(out["run_dir"]).relative_to(db.parent / (db.name + ".d")))
    claim = rdflib.URIRef("urn:claimgraph:claim:samples-are-positive")
    assert str(next(iter(g.objects(claim, rdflib.URIRef(CG + "status"))))) == "supported"
    gm = nx.read_graphml(tmp_path / "g.graphml")
    assert gm.nodes["claim:samples-are-positive"]["evidence_supported"] == 1
    assert gm.nodes[out["evidence_id"]]["ci_low"] == pytest.approx(d["ci_low"])
    import duckdb

    assert duckdb.sql(f"SELECT verdict, value FROM '{tmp_path / 'pq' / 'evidence.parquet'}'").fetchall() == \
        [("supported", d["mean"])]
    copy = tmp_path / "copy.duckdb"
    r = CliRunner().invoke(app, ["--db", str(copy), "import", str(tmp_path / "g.jsonld"), "--no-embed"])
    assert r.exit_code == 0, r.output
    with Store(db) as a, Store(copy) as b:
        sa, sb = read_snapshot(a, vectors=False), read_snapshot(b, vectors=False)
        assert snapshot_equal(sa, sb) == {}
    ev_copy = json.loads(CliRunner().invoke(app, ["--db", str(copy), "--json", "evidence",
                                                  "claim:samples-are-positive"]).stdout)
    assert ev_copy["status"] == "supported" and ev_copy["evidence"][0]["run_id"] == out["run_id"]


def test_one_seed_records_metrics_but_no_verdict(plugin, db):
    """Issue 13: fewer seeds than the rule needs give an 'insufficient seeds' inconclusive that does not count."""
    exp = add("--seeds", "1", "--param", "shift=2.0")  # a clear effect: one seed would have said "supported"
    out = json.loads(cli("run", exp).stdout)
    assert out["status"] == "completed" and out["verdict"] == "inconclusive" and "insufficient seeds" in out["reason"]
    ev = json.loads(cli("evidence", "claim:samples-are-positive").stdout)
    (e,) = ev["evidence"]
    assert e["decisive"] is False and e["decision"]["n"] == 1 and e["decision"]["mean"] > 1.5
    assert e["decision"]["ci_low"] is None and "insufficient seeds" in e["title"]
    assert set(e["metrics"]) == {"mean", "sd"}  # the metrics are recorded
    assert ev["status"] == "untested" and ev["status_report"]["not_deciding"] == ["gauss"]
    with Store(db) as s:  # no supports/refutes edge
        assert [x for x in s.edges("claim:samples-are-positive", direction="in") if x.type.value in
                ("supports", "refutes")] == []
    # the same computation under a rule that says one run decides gets a verdict
    exp1 = add("--seeds", "1", "--param", "shift=2.0", "--criterion", "mean > 0 band=0.05 min_seeds=1")
    out1 = json.loads(cli("run", exp1).stdout)
    assert out1["verdict"] == "supported" and out1["cached"]
    assert "one run decides" in json.loads(cli("experiment", "list").stdout)["experiments"][1]["criterion"]


def test_a_metric_undefined_in_every_seed_records_metrics_but_no_verdict(plugin, db):
    """Issue 11: a criterion metric the job reports as undefined (NaN) in every seed (the gradient decomposition's
    myopic drop where the framework predicts none) is an 'insufficient seeds' inconclusive that decides nothing,
    not a failed run; a criterion on a metric the job does not report at all is still refused."""
    exp = add("--param", "undefined=true")
    out = json.loads(cli("run", exp).stdout)
    assert out["status"] == "completed" and out["verdict"] == "inconclusive"
    assert "no finite values of mean in any seed" in out["reason"]
    (e,) = json.loads(cli("evidence", "claim:samples-are-positive").stdout)["evidence"]
    assert e["decisive"] is False and e["decision"]["n"] == 0 and e["metrics"]["sd"]["mean"] > 0
    # re-deciding the same computation under another criterion on the same undefined metric: recorded too
    exp2 = add("--param", "undefined=true", "--criterion", "mean > 1")
    out2 = json.loads(cli("run", exp2).stdout)
    assert out2["cached"] and out2["verdict"] == "inconclusive" and "no finite values" in out2["reason"]


def test_several_experiments_in_one_command(plugin, db):
    """Issue 16: `run EXP EXP...` and `run --all` run experiments one after another in one process (the main job
    started one process per experiment); a failed one does not stop the others, and the command exits 1."""
    good, bad = add("--param", "shift=2.0"), add("--param", "fail=true")
    r = CliRunner().invoke(app, ["--json", "run", good, bad])
    assert r.exit_code == 1
    runs = json.loads(r.stdout)["runs"]
    assert [(o["experiment_id"], o["status"]) for o in runs] == [(good, "completed"), (bad, "failed")]
    r = CliRunner().invoke(app, ["run", "--all"])  # the good one from the cache, the failed one again
    assert r.exit_code == 1 and "(cached)" in r.stdout and "2 of 2 run: 1 completed or queued, 1 not" in r.stderr
    for args, message in ((["run", "--all", good], "give no EXP"), (["run"], "or --all"),
                          (["run", "--stale", "--all"], "--stale re-runs")):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2 and message in r.stderr, r.stderr


def test_groups_keep_a_model_together_largest_first():
    from claimgraph.experiments.api import plan_groups

    rows = [{"id": f"e{k}", "model": m} for k, m in enumerate(["a", "b", "a", "c", "a", "b", None])]
    assert plan_groups(rows) == [["e0", "e2", "e4"], ["e1", "e5"], ["e3"], ["e6"]]
    assert plan_groups([]) == []


def test_run_jobs_runs_groups_in_child_processes(plugin, db):
    """`run --all --jobs 2`: each group a `claimgraph run` process; their outcomes come back as one JSON."""
    a, b = add("--param", "shift=2.0"), add("--param", "shift=1.5")
    r = CliRunner().invoke(app, ["--json", "run", "--all", "--jobs", "2"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["groups"] == [[a, b]]  # one model (none): one group
    assert sorted((o["experiment_id"], o["status"]) for o in out["runs"]) == [(a, "completed"), (b, "completed")]
    # two groups at once share the cores: each child's torch gets cores/2 threads unless the user set them
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    want = os.environ.get("OMP_NUM_THREADS") or str(max(1, cores // 2))
    for o in out["runs"]:
        env = json.loads((Path(o["run_dir"]) / "environment.json").read_text())
        assert env["torch_settings"]["env"]["OMP_NUM_THREADS"] == want and env["torch_settings"]["num_threads"] == int(want), env
    r = CliRunner().invoke(app, ["run", a, b, "--jobs", "2", "--seeds", "2"])
    assert r.exit_code == 2 and "--jobs runs groups" in r.stderr


# -- issue 19: defects that lose data or crash ------------------------------------------------------------
def test_seeds_per_experiment_are_bounded(plugin, db):
    t0 = time.monotonic()
    r = CliRunner().invoke(app, ["experiment", "add", "--claim", "claim:samples-are-positive", "--kind", "gauss",
                                 "--seeds", "0-100000000"])
    assert r.exit_code == 2 and "names 100,000,001 seeds, over the limit of 1,000 per experiment" in r.stderr
    assert time.monotonic() - t0 < 10
    assert json.loads(cli("experiment", "list").stdout)["experiments"] == []
    r = CliRunner().invoke(app, ["run", add(), "--seeds", "5000"])
    assert r.exit_code == 2 and "over the limit" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--kind", "sae", "--model", "toy:nope"], "unknown toy model preset 'nope'"),
    (["--kind", "sae", "--data", "synthetic:nope"], "unknown synthetic corpus preset 'nope'"),
    (["--kind", "sae", "--data", "text:nope"], "unknown text corpus 'nope'"),
    (["--kind", "sae", "--model", "hf:/no/such/model"], "no model directory at /no/such/model"),
    (["--kind", "gauss", "--model", "hf:/no/such/model"], "/no/such/model does not exist"),
    (["--kind", "gauss", "--data", "text:/no/such/file.txt"], "/no/such/file.txt does not exist"),
])
def test_model_and_data_are_checked_at_experiment_add(plugin, db, args, message):
    r = CliRunner().invoke(app, ["experiment", "add", "--claim", "claim:samples-are-positive", *args])
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert json.loads(cli("experiment", "list").stdout)["experiments"] == []


def test_runs_shows_running_and_a_worker_outlives_its_killed_launcher(plugin, db):
    """Killing only `claimgraph run` (SIGKILL: no chance to pass it on) leaves the worker computing: the record
    says running meanwhile, and the result attaches once, on the next command after it ends (README, Runs)."""
    exp = add("--param", "sleep_s=0.5", "--param", "steps=12", "--seeds", "2")
    proc, run_dir = _start_cli_run(exp)
    deadline = time.monotonic() + 30
    while (row := json.loads(cli("runs", exp).stdout)["runs"][0])["status"] != "running":
        assert time.monotonic() < deadline, row
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    worker = json.loads((run_dir / "status.json").read_text())["pid"]
    assert json.loads(cli("runs", exp).stdout)["runs"][0]["status"] == "running"
    while json.loads((run_dir / "status.json").read_text())["status"] == "running":
        assert time.monotonic() < deadline + 60
        time.sleep(0.3)
    for _ in range(2):  # the next commands: it attaches once
        row = json.loads(cli("runs", exp).stdout)["runs"][0]
    assert row["status"] == "completed" and row["evidence_id"] and row["pid"] == worker
    ev = json.loads(cli("evidence", "claim:samples-are-positive").stdout)["evidence"]
    assert [e["id"] for e in ev] == [row["evidence_id"]]
    with Store(db) as s:
        assert len(s.edges(exp, direction="out", type="produced")) == 1


def test_run_ids_cannot_collide(plugin, db):
    import threading

    from claimgraph.experiments.runner import new_run_id, prepare_run

    exp = add()
    with Store(db) as s:
        ids = {prepare_run(s, exp)[0].run_id for _ in range(20)}  # same config, same second
    assert len(ids) == 20
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.extend(new_run_id("a" * 64) for _ in range(500))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 2000


def test_a_run_on_a_full_disk_is_recorded_as_disk_full(plugin, db, tmp_path, monkeypatch):
    full = tmp_path / "small-disk"
    full.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(full)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {r.stderr.strip()}")
    try:
        monkeypatch.setenv("CLAIMGRAPH_RUNS_DIR", str(full))
        exp = add("--param", "write_mb=4", "--param", "steps=1", "--seeds", "2")
        r = cli("run", exp)
        out = json.loads(r.stdout)
        assert r.exit_code == 1 and out["status"] == "failed" and out["evidence_id"] is None
        assert out["error"].startswith("disk full (ENOSPC)"), out["error"]
        row = json.loads(cli("runs", exp).stdout)["runs"][0]
        assert row["status"] == "failed" and "disk full" in row["error"] and "died" not in row["error"]
    finally:
        subprocess.run(["umount", "-l", str(full)], capture_output=True)


def test_the_worker_refuses_what_is_not_a_run_folder_and_creates_nothing(tmp_path):
    """`--help` once made the worker create a folder named --help with a failed status.json in it."""
    def worker(*args):
        return subprocess.run([sys.executable, "-m", "claimgraph.experiments.worker", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    ok = worker("--help")
    assert ok.returncode == 0 and "usage:" in ok.stdout
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    for args in (["not-there"], [str(empty)], ["--collect", "not-there"]):
        r = worker(*args)
        assert r.returncode == 2 and "not a run folder" in r.stderr, (args, r.stderr)
    assert worker().returncode == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["not-a-run"]  # nothing written anywhere
