"""The sae and causal feature kinds on a real-text corpus (text:small) end to end through the CLI and runner:
a tiny randomly initialised Llama saved with SmolLM2's real tokenizer (no download), so the text path (eval
split, cached fixed slices, tokenizer category sets, null and dose-response designs, corpus manifest in the run
folder, model and corpus named on the claim page) runs in the normal suite. The numbers of a random model mean
nothing; the metrics' ability to pass and fail is shown on planted truth in test_feature_nulls.py."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.experiments.registry import get_job
from claimgraph.graph import Node, Store

transformers = pytest.importorskip("transformers")

CLAIM = "claim:features-reflect-the-model"
SAE = {"hook": "blocks.1.hook_resid_post", "architecture": "topk", "k": 8, "expansion": 2, "steps": 60,
       "train_tokens": 2048, "batch_size": 128}
RUNS = {
    "sae": {"eval_tokens": 1024, "ce_tokens": 128, "criterion": "single_token_frac_common_diff > 0.1 band=0.05"},
    "logit_weights": {"category": "base64", "scale_tokens": 128, "n_random": 50, "select_tokens": 1024,
                      "criterion": "category_effect_pct_live > 0.95 band=0.03"},
    "ablation": {"category": "arabic", "n_null": 20, "null_pairs": 2, "null_windows": 16, "null_len": 32,
                 "select_tokens": 1024, "criterion": "null_drop_z > 3 band=1"},
    "ablation:precaching": {"kind": "ablation", "mode": "precaching", "group_size": 4, "group_min_lift": 1.5,
                            "null_pairs": 2, "null_windows": 4, "null_len": 32, "null_t_min": 4, "horizon": 6,
                            "select_tokens": 1024, "criterion": "code_minus_prose_log_excess > 0 band=0.1"},
    "pinned_sampling": {"category": "base64", "multiples": "[1,2]", "at_multiple": 2, "n_controls": 2,
                        "n_prompts": 3, "prompt_len": 8, "n_new": 4, "select_tokens": 1024,
                        "criterion": "share_over_controls > 0.1 band=0.05"},
}


def _cli(*args: str):
    return CliRunner().invoke(app, ["--json", *args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import os

    import torch

    from claimgraph.experiments.substrate.load import tokenizer_for

    root = tmp_path_factory.mktemp("text_jobs")
    tok = tokenizer_for("lm:smollm2-135m")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                                   tie_word_embeddings=True)
    transformers.LlamaForCausalLM(cfg).save_pretrained(root / "llama")
    tok.save_pretrained(root / "llama")
    db = root / "g.duckdb"
    old = os.environ.get("CLAIMGRAPH_DB")
    os.environ["CLAIMGRAPH_DB"] = str(db)
    with Store(db) as s:
        s.add_node(Node(id=CLAIM, type="claim", title="Features reflect the model"))
    out = {}
    try:
        for name, p in RUNS.items():
            kind = p.get("kind", name)
            args = ["--param", f"sae={json.dumps(SAE)}"]
            args += [a for k, v in p.items() if k not in ("criterion", "kind") for a in ("--param", f"{k}={v}")]
            r = _cli("experiment", "add", "--claim", CLAIM, "--kind", kind, "--model", f"hf:{root / 'llama'}",
                     "--data", "text:small", "--seeds", "0-1", "--criterion", p["criterion"], *args)
            assert r.exit_code == 0, r.output
            r = _cli("run", json.loads(r.stdout)["experiment"]["id"])
            assert r.exit_code == 0, r.output
            run = json.loads(r.stdout)
            assert run["status"] == "completed" and run["evidence_id"], run
            out[name] = (run, json.loads((Path(run["run_dir"]) / "result.json").read_text()))
        out["show"] = json.loads(_cli("show", CLAIM).stdout)
    finally:
        if old is None:
            os.environ.pop("CLAIMGRAPH_DB", None)
        else:
            os.environ["CLAIMGRAPH_DB"] = old
    return out


def test_each_kind_reports_its_declared_metrics_on_text(runs):
    for name in RUNS:
        run, result = runs[name]
        kind = RUNS[name].get("kind", name)
        declared = get_job(kind).metrics
        patterns = [re.compile(re.escape(k).replace("<cond>", "(trained|shuffled)").replace("<m>", r"[0-9.]+") + "$")
                    for k in declared]
        for metric in result["per_seed"][0]["metrics"]:
            assert any(p.match(metric) for p in patterns), (name, metric)
        assert result["decision"]["reason"].startswith(RUNS[name]["criterion"].split()[0])
        # the corpus' documents with their provenance are in the run folder
        docs = (Path(run["run_dir"]) / "artifacts" / "corpus" / "documents.jsonl").read_text().splitlines()
        assert docs and {"package", "version", "path", "sha256"} <= set(json.loads(docs[0]))
        assert "notes" in result["summary"]


def test_text_path_details(runs):
    d = runs["logit_weights"][1]["per_seed"][0]["details"]
    assert d["label"] == "base64" and d["predict"] == "base64"
    assert 0 <= d["selection"]["open_recall"] <= 1 and 0 < d["selection"]["open_share"] < 1
    m = runs["logit_weights"][1]["per_seed"][0]["metrics"]
    assert 0.2 < m["base_rate"] < 0.5  # base64-alphabet tokens of SmolLM2's vocabulary
    assert 0 <= m["category_effect_pct_live"] <= 1
    ab = runs["ablation"][1]["per_seed"][0]
    assert ab["details"]["predict"] == "arabic" and len(ab["details"]["null_latents"]) == 20
    ps = runs["pinned_sampling"][1]["per_seed"][0]
    assert set(ps["details"]["share_by_condition"]) >= {"baseline", "feature_x1", "feature_x2", "control1_x2"}
    pc = runs["ablation:precaching"][1]
    d0, d1 = (r["details"] for r in pc["per_seed"])
    assert d0["mode"] == "precaching" and {x["group"] for x in d0["latents"]} == {"code", "prose"}
    assert all(x["n_pairs"] <= 2 and len(x["kl_by_offset"]) == 6 for x in d0["latents"])
    assert {"code_minus_prose_log_excess", "code_above_null_share"} <= set(pc["per_seed"][0]["metrics"])
    assert "own measurement windows" in pc["summary"]["notes"]
    sae = runs["sae"][1]["per_seed"][0]
    assert {"trained_token_r2", "shuffled_single_token_frac_common", "token_r2_diff"} <= set(sae["metrics"])


def test_show_names_model_and_corpus_per_evidence(runs):
    ev = runs["show"]["evidence"]
    assert len(ev) == len(RUNS)
    assert all(e["model"].startswith("hf:") and e["data"] == "text:small" for e in ev)
