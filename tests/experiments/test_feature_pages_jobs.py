"""Feature pages of the feature jobs' runs: logit_weights, ablation and pinned_sampling run on toy:tiny through
the CLI and the runner with one small SAE recipe (so they share one provisioned SAE and choose the same
feature); the page of the logit_weights run finds the other runs through the store as related, with their
verdicts and metrics as their result.json records them."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.experiments.pages import PageConfig, feature_page, page_for_run, related_run_dirs, resolve_run
from claimgraph.graph import Node, Store
from claimgraph.graph.errors import InvalidInput

KINDS = ("logit_weights", "ablation", "pinned_sampling")
SAE = {"steps": 200, "train_tokens": 8192, "batch_size": 128}  # a small SAE: trains in a few seconds
SMALL = {"logit_weights": {"n_random": 50, "scale_tokens": 2048},
         "ablation": {"measure_tokens": 2048, "kl_positions": 32},
         "pinned_sampling": {"n_prompts": 16, "prompt_len": 12, "n_new": 8}}
PAGE = PageConfig(n_tokens=2048, top_k=6, n_bands=3, per_band=2, bins=20, n_logits=6)
CLAIM = "claim:features-have-interpretable-downstream-effects"


def _cli(db: Path, *args: str):
    return CliRunner().invoke(app, ["--db", str(db), "--json", *args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    db = tmp_path_factory.mktemp("pages_jobs") / "g.duckdb"
    with Store(db) as s:
        s.add_node(Node(id=CLAIM, type="claim", title="Features have interpretable downstream effects"))
    out = {}
    for kind in KINDS:
        params = ["--param", f"sae={json.dumps(SAE)}", "--param", "select_tokens=4096"]
        params += [a for k, v in SMALL[kind].items() for a in ("--param", f"{k}={v}")]
        r = _cli(db, "experiment", "add", "--claim", CLAIM, "--kind", kind, "--model", "toy:tiny", "--data",
                 "synthetic:tiny", "--seeds", "1", "--device", "cpu", *params)
        assert r.exit_code == 0, r.output
        r = _cli(db, "run", json.loads(r.stdout)["experiment"]["id"])
        assert r.exit_code == 0, r.output
        run = json.loads(r.stdout)
        out[kind] = (run, json.loads((Path(run["run_dir"]) / "result.json").read_text()))
    return db, out


def test_page_of_a_feature_job_run_lists_the_related_runs(runs):
    db, out = runs
    run, result = out["logit_weights"]
    details = result["per_seed"][0]["details"]
    with Store(db) as s:
        run_dir = resolve_run(s, run["run_id"])
        candidates = related_run_dirs(s)
    assert sorted(map(str, candidates)) == sorted(r["run_dir"] for r, _ in out.values())
    # the three jobs share the provisioned SAE and choose the same feature on it
    assert {(r["per_seed"][0]["details"]["sae_key"], r["per_seed"][0]["details"]["feature"])
            for _, r in out.values()} == {(details["sae_key"], details["feature"])}
    page = feature_page(run_dir, details["feature"], related=candidates, config=PAGE)
    assert page.kind == "logit_weights" and page.sae_key == details["sae_key"]
    assert Path(page.sae_folder) == Path(details["sae_folder"]).resolve() and page.hook == details["hook"]
    assert sorted(r.kind for r in page.related) == sorted(KINDS)
    for rel in page.related:
        r, res = out[rel.kind]
        assert rel.run_id == r["run_id"] and rel.verdict == res["decision"]["verdict"]
        assert rel.seeds[0].metrics == res["per_seed"][0]["metrics"]
        assert rel.seeds[0].details["category"] == "base64" and rel.seeds[0].details["feature"] == page.feature
        assert set(rel.images) == {str((Path(r["run_dir"]) / a).resolve()) for a in res["artifacts"]
                                   if a.endswith(".png") and a.startswith("artifacts/seed0/")}
        assert rel.images
    html = Path(page.html).read_text()
    for rel in page.related:
        assert rel.run_id in html and f"verdict-{rel.verdict}" in html
    srcs = re.findall(r'<img src="([^"]+)"', html)  # links stay inside the page's folder; the rest is embedded
    assert sorted(x for x in srcs if not x.startswith("data:")) == sorted(page.images.values())
    assert sum(x.startswith("data:image/png;base64,") for x in srcs) == sum(len(r.images) for r in page.related)
    # the page's own detection of base64 spans agrees with the job's choice of this feature for them
    assert page.labels[0].label == "base64_span"
    # what `claimgraph feature RUN FEATURE` calls: the same page, found through the store
    with Store(db) as s:
        again = page_for_run(s, run["run_id"], page.feature, config=PAGE)
        assert s.runs(run_id=run["run_id"])  # the store is usable after it was released for the computation
    assert again.model_dump(exclude={"html", "images"}) == page.model_dump(exclude={"html", "images"})
    # another feature of the same SAE has no related runs
    other = (page.feature + 1) % page.d_sae
    assert feature_page(run_dir, other, related=candidates, config=PAGE, write=False).related == []


def test_condition_is_refused_for_a_single_sae_run(runs):
    _, out = runs
    run, result = out["ablation"]
    with pytest.raises(InvalidInput, match="has one SAE per seed; --condition applies"):
        feature_page(Path(run["run_dir"]), 0, condition="trained", config=PAGE, write=False)
