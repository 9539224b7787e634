"""`model_seeds` of the causal feature kinds (logit_weights, ablation, pinned_sampling): with "per_replicate" seed s
reads replicate s of the toy preset's family (its own initialisation and training order), trains its SAE on that
model and chooses its feature there, so the interval covers model training; "fixed" (the default, so experiments
registered before the parameter keep their meaning) reads the preset's one model. Real training on toy:tiny."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.experiments.registry import get_job
from claimgraph.graph import Node, Store

CLAIM = "claim:features-have-interpretable-downstream-effects"
SAE = {"steps": 200, "train_tokens": 8192, "batch_size": 128}
SMALL = ["--param", f"sae={json.dumps(SAE)}", "--param", "select_tokens=4096", "--param", "n_random=100",
         "--param", "scale_tokens=2048"]


def _cli(*args: str):
    return CliRunner().invoke(app, ["--json", *args])


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    import os

    path = tmp_path_factory.mktemp("model_seeds_db") / "g.duckdb"
    old = os.environ.get("CLAIMGRAPH_DB")
    os.environ["CLAIMGRAPH_DB"] = str(path)
    with Store(path) as s:
        s.add_node(Node(id=CLAIM, type="claim", title="Features have interpretable downstream effects"))
    yield path
    if old is None:
        os.environ.pop("CLAIMGRAPH_DB", None)
    else:
        os.environ["CLAIMGRAPH_DB"] = old


def _run(*extra: str) -> dict:
    r = _cli("experiment", "add", "--claim", CLAIM, "--kind", "logit_weights", "--model", "toy:tiny", "--data",
             "synthetic:tiny", "--seeds", "2", "--device", "cpu", *SMALL, *extra)
    assert r.exit_code == 0, r.output
    r = _cli("run", json.loads(r.stdout)["experiment"]["id"])
    assert r.exit_code == 0, r.output
    run = json.loads(r.stdout)
    assert run["status"] == "completed", run
    return json.loads((Path(run["run_dir"]) / "result.json").read_text())


def test_default_is_fixed():
    for kind in ("logit_weights", "ablation", "pinned_sampling"):
        assert get_job(kind).Params().model_seeds == "fixed"


def test_per_replicate_reads_a_model_per_seed(db):
    from claimgraph.experiments.features.target import SELECT_OFFSET, choose_feature
    from claimgraph.experiments.sae import load_sae
    from claimgraph.experiments.substrate.load import load_model, model_corpus, model_family

    rep = _run("--param", "model_seeds=per_replicate")
    fixed = _run()
    family = model_family("toy:tiny", [0, 1], progress=False)
    d_rep = [s["details"] for s in rep["per_seed"]]
    d_fix = [s["details"] for s in fixed["per_seed"]]
    # seed s read replicate s: replicate 0 is the preset itself, replicate 1 another trained model
    assert [d["model_cache_key"] for d in d_rep] == [family[0].name, family[1].name]
    assert family[0] != family[1] and [d["model_seed"] for d in d_rep] == [0, 1]
    assert all("model_seed" not in d for d in d_fix)  # fixed: both seeds on the preset's one model
    # each SAE was trained on its seed's model (the provenance names the model's training key)
    trained = [json.loads((Path(d["sae_folder"]) / "provenance.json").read_text())["model"]["trained"] for d in d_rep]
    assert trained == [family[0].name, family[1].name]
    fixed_trained = {json.loads((Path(d["sae_folder"]) / "provenance.json").read_text())["model"]["trained"]
                     for d in d_fix}
    assert fixed_trained == {family[0].name}
    # seed 0 is the same computation either way; seed 1 differs (another model, so another SAE and feature scores)
    assert d_rep[0]["sae_folder"] == d_fix[0]["sae_folder"]
    assert rep["per_seed"][0]["metrics"] == fixed["per_seed"][0]["metrics"]
    assert d_rep[1]["sae_folder"] != d_fix[1]["sae_folder"]
    assert rep["per_seed"][1]["metrics"] != fixed["per_seed"][1]["metrics"]
    # independently: seed 1's feature is the best detector in its SAE on replicate 1
    model = load_model("toy:tiny", model_seed=1, progress=False)
    choice = choose_feature(model, load_sae(d_rep[1]["sae_folder"]), model_corpus("toy:tiny"), d_rep[1]["hook"],
                            "base64", seed=1, n_tokens=4096)
    assert choice["feature"] == d_rep[1]["feature"] and choice["select_seed"] == 1 + SELECT_OFFSET
    # the notes (hence the evidence text) say what each interval covers
    assert "covers model seeds and SAE seeds" in rep["summary"]["notes"]
    assert "on the one trained model" in fixed["summary"]["notes"]


@pytest.mark.parametrize("model, extra, match", [
    ("lm:smollm2-135m", [], "lm:smollm2-135m is one trained model"),
    ("toy:tiny@100", [], "names a checkpoint"),
    ("toy:tiny", ["--param", "sae_path=/nonexistent"], "SAE given by path"),
])
def test_per_replicate_refuses_what_has_no_replicates(db, model, extra, match):
    r = _cli("experiment", "add", "--claim", CLAIM, "--kind", "ablation", "--model", model, "--seeds", "2",
             "--param", "model_seeds=per_replicate", *extra)
    assert r.exit_code == 2 and "model_seeds" in r.output and match in r.output, r.output
    with Store(db, read_only=True) as s:
        assert not [n for n in s.list_nodes("experiment") if n.attrs.get("kind") == "ablation"]  # nothing written
