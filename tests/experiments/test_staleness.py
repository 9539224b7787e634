"""Stale evidence: each evidence row keeps the fingerprint of what produced it (the kind's code version, the model's
and data's digests, the resolved parameters); when one changes, `list`, `show`, `evidence` and the web page mark
exactly that evidence stale, the claim's status says it rests on stale evidence, and `run --stale` re-runs
exactly those experiments.

Two job kinds installed as a user installs a plugin (one module each, with `claimgraph.jobs` entry points in a
temp dir on sys.path), so editing one kind's module is a real change of that kind's code version and of nothing
else's; their models are real folders of weight files whose content the fingerprint digests. The computation is
real (means of seeded Gaussian samples)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.graph import Node, Store

KIND = textwrap.dedent('''
    from claimgraph.experiments.job import Job, JobParams, SeedResult
    from claimgraph.experiments.spec import Criterion

    SHIFT = 0.5


    class Params(JobParams):
        n: int = 500


    class {cls}(Job):
        kind = "{kind}"
        summary = "mean of shifted Gaussian samples"
        Params = Params
        default_criterion = Criterion(metric="mean", op=">", threshold=0.0, band=0.05)
        metrics = {{"mean": "sample mean"}}
        default_data = None

        def run(self, ctx, p, seed):
            import torch

            g = torch.Generator().manual_seed(seed)
            x = torch.randn(p.n, generator=g) + SHIFT
            return SeedResult(seed=seed, metrics={{"mean": x.mean().item()}})
''')


@pytest.fixture
def plugins(install_plugin, tmp_path, monkeypatch):
    root = install_plugin("cgstale", {f"cgstale_{k}": KIND.format(kind=k, cls=c) for k, c in
                                      (("alpha", "AlphaJob"), ("beta", "BetaJob"))},
                          {"alpha": "cgstale_alpha:AlphaJob", "beta": "cgstale_beta:BetaJob"})
    monkeypatch.setenv("CLAIMGRAPH_CACHE", str(tmp_path / "cache"))
    _forget_plugins()
    yield root
    _forget_plugins()


def _forget_plugins() -> None:
    """Drop the plugin modules and code versions this process holds (a test edits the modules' source)."""
    import importlib
    import sys

    from claimgraph.experiments.codeversion import code_version

    for name in ("cgstale_alpha", "cgstale_beta"):
        sys.modules.pop(name, None)
    importlib.invalidate_caches()
    code_version.cache_clear()


def _model(folder: Path, weights: bytes) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"note": "weights for a planted test"}')
    (folder / "model.safetensors").write_bytes(weights)
    return f"hf:{folder}"


def cli(*args: str) -> dict:
    r = CliRunner().invoke(app, ["--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def text(*args: str) -> str:
    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.fixture
def store(plugins, tmp_path, monkeypatch):
    path = tmp_path / "g.duckdb"
    monkeypatch.setenv("CLAIMGRAPH_DB", str(path))
    with Store(path) as s:
        for c in ("a", "b", "c"):
            s.add_node(Node(id=f"claim:{c}", type="claim", title=f"Claim {c}"))
    models = {m: _model(tmp_path / f"model-{m}", m.encode() * 1000) for m in ("a", "b", "c")}
    exps = {}
    for claim, kind, model in (("a", "alpha", "a"), ("b", "beta", "b"), ("c", "beta", "c")):
        exps[claim] = cli("experiment", "add", "--claim", f"claim:{claim}", "--kind", kind, "--model",
                          models[model], "--seeds", "3")["experiment"]["id"]
        assert cli("run", exps[claim])["status"] == "completed"
    return path, exps, tmp_path


def _stale_rows() -> dict[str, str]:
    return {r["attrs"]["experiment"]: r["stale"] for r in cli("list", "--type", "evidence")["nodes"] if r["stale"]}


def test_changed_code_and_model_make_exactly_their_evidence_stale_and_run_stale_reruns_them(store, plugins):
    from claimgraph.experiments.codeversion import code_version

    path, exps, tmp = store
    ev = {c: cli("evidence", f"claim:{c}")["evidence"] for c in "abc"}
    for c in "abc":
        (e,) = ev[c]
        assert e["verdict"] == "supported" and e["stale"] is None
        assert set(e["fingerprint"]) == {"code_version", "model", "data", "params"}
        assert e["fingerprint"]["model"].startswith("sha256:")
    assert _stale_rows() == {}
    assert "STALE" not in text("list", "--type", "claim")

    # a fix in kind alpha's code: its code version changes, beta's does not
    old_alpha, old_beta = code_version("alpha"), code_version("beta")
    src = plugins / "cgstale_alpha.py"
    src.write_text(src.read_text().replace("SHIFT = 0.5", "SHIFT = 0.25  # fixed"))
    code_version.cache_clear()
    assert code_version("alpha") != old_alpha and code_version("beta") == old_beta
    # new weights for experiment b's model; c's model is untouched
    (tmp / "model-b" / "model.safetensors").write_bytes(b"retrained" * 2000)

    stale = _stale_rows()
    assert set(stale) == {exps["a"], exps["b"]}
    assert "code of kind alpha changed" in stale[exps["a"]] and "model" not in stale[exps["a"]]
    assert f"the model hf:{tmp / 'model-b'} changed" in stale[exps["b"]] and "code of kind" not in stale[exps["b"]]

    claims = {r["id"]: r for r in cli("list", "--type", "claim")["nodes"]}
    assert claims["claim:a"]["stale"] == "rests on stale evidence: alpha on hf:" + str(tmp / "model-a")
    assert claims["claim:b"]["stale"].startswith("rests on stale evidence: beta")
    assert claims["claim:c"]["stale"] is None
    assert all(claims[f"claim:{c}"]["status"] == "supported" for c in "abc")  # stale still counts, flagged
    listing = text("list", "--type", "claim")
    assert listing.count("STALE") == 2

    page = cli("show", "claim:a")
    assert page["status_report"]["stale"] == [f"alpha on hf:{tmp / 'model-a'}"]
    assert page["evidence"][0]["stale"] and "code of kind alpha" in page["evidence"][0]["stale"]
    assert "rests on stale evidence" in text("show", "claim:a")
    assert "[STALE]" in text("show", "claim:a") and "[STALE]" not in text("show", "claim:c")
    ev_page = cli("show", ev["b"][0]["id"])
    assert "model" in ev_page["node"]["stale"]
    assert cli("show", "claim:c")["status_report"]["stale"] == []
    out = cli("evidence", "claim:b")
    assert out["evidence"][0]["stale"] and "rests on stale evidence" in text("evidence", "claim:b")
    assert cli("evidence", "claim:c")["evidence"][0]["stale"] is None

    # the web page (it reaches experiments through web/runs.py)
    from claimgraph.web import Settings, create_app

    web = create_app(Settings(path, port=8000))
    with TestClient(web, base_url="http://127.0.0.1:8000") as c:
        html_a, html_c = c.get("/node/claim:a").text, c.get("/node/claim:c").text
        nodes = c.get("/nodes.json?type=claim").json()["nodes"]
    web.state.access.close()
    assert 'class="stale"' in html_a and "code of kind alpha changed" in html_a and "rests on stale evidence" in html_a
    assert 'class="stale"' not in html_c
    assert {n["id"] for n in nodes if n["stale"]} == {"claim:a", "claim:b"}

    # re-run exactly the stale experiments, on the seeds they used
    reruns = cli("run", "--stale")["runs"]
    assert sorted(r["experiment_id"] for r in reruns) == sorted([exps["a"], exps["b"]])
    assert all(r["status"] == "completed" and not r["cached"] for r in reruns)
    assert _stale_rows() == {} and cli("run", "--stale")["runs"] == []
    new_a = cli("evidence", "claim:a")["evidence"]
    assert len(new_a) == 1 and new_a[0]["seeds"] == [0, 1, 2] and new_a[0]["fingerprint"]["code_version"] == \
        code_version("alpha")
    assert new_a[0]["decision"]["mean"] < ev["a"][0]["decision"]["mean"]  # the fixed code computed it


def test_evidence_of_several_claims_in_one_call_is_each_claims_own(store):
    """`evidence A B` (one process for the main job's closing screen): --json a list of what each call gives,
    the text one table per claim, --csv one table with a claim column; a claim named twice comes once."""
    import csv
    import io

    one = [cli("evidence", f"claim:{c}") for c in "ab"]
    assert cli("evidence", "claim:a", "claim:b", "claim:a") == one
    shown = text("evidence", "claim:a", "claim:b")
    assert shown.index("claim:a:") < shown.index("claim:b:") and shown.count("supported") >= 2
    rows = list(csv.DictReader(io.StringIO(text("evidence", "claim:a", "claim:b", "--csv"))))
    assert [r["claim"] for r in rows] == ["claim:a", "claim:b"]
    assert [r["id"] for r in rows] == [e["evidence"][0]["id"] for e in one]


def test_a_changed_parameter_default_makes_evidence_stale(store, plugins):

    _, exps, _ = store
    src = plugins / "cgstale_beta.py"  # a new parameter with a default: runs would now resolve it
    src.write_text(src.read_text().replace("    n: int = 500\n", "    n: int = 500\n    trim: float = 0.0\n"))
    _forget_plugins()
    stale = _stale_rows()
    assert set(stale) == {exps["b"], exps["c"]}
    assert all("parameters resolve differently" in why for why in stale.values())


def test_evidence_from_before_fingerprints_is_stale_and_hand_made_evidence_is_not(store):
    path, exps, _ = store
    with Store(path) as s:
        (e,) = [n for n in s.list_nodes("evidence") if n.attrs["experiment"] == exps["c"]]
        old = {k: v for k, v in e.attrs.items() if k != "fingerprint"}  # as a run before fingerprints wrote it
        s.add_node(Node(id="evidence:older", type="evidence", title=e.title, attrs=old))
        s.add_node(Node(id="evidence:by-hand", type="evidence", title="read in a paper",
                        attrs={"verdict": "supported", "run_id": "-", "experiment": "-", "criterion": {}}))
    stale = {r["id"]: r["stale"] for r in cli("list", "--type", "evidence")["nodes"]}
    assert "before fingerprints" in stale["evidence:older"]
    assert stale["evidence:by-hand"] is None and stale[e.id] is None
