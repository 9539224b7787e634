"""The shuffled-weights experiment of the claim page seed, end to end through the CLI at test size: it completes on
CPU, attaches evidence with a verdict to the claim, re-running is served from the cache, --force recomputes the
same numbers; and the sae job runs on a local Hugging Face GPT-NeoX directory."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from claimgraph.cli.main import app

CLAIM = ("claim:learned-features-reflect-the-functionality-of-the-model-and-not-just-the-data-distribution-as-"
         "evidenced-by-interpretable-downstream-effects-not-used-in-dictionary-learning")
SMALL = ["steps=120", "batch_size=128", "train_tokens=4096", "eval_tokens=4096", "ce_tokens=1024"]


def cli(db, *args):
    r = CliRunner().invoke(app, ["--db", str(db), "--json", *args])
    assert r.exit_code == 0, (r.stdout, r.stderr)
    return json.loads(r.stdout)


def test_shuffled_weights_experiment_runs_caches_and_recomputes(tmp_path, seeds_dir):
    db = tmp_path / "g.duckdb"
    cli(db, "ingest", "--no-embed", str(next(seeds_dir.glob("003_*"))))
    params = [x for p in SMALL for x in ("--param", p)]
    exp = cli(db, "experiment", "add", "--claim", CLAIM, "--kind", "sae", "--model", "toy:tiny",
              "--data", "synthetic:tiny", "--seeds", "2", *params)["experiment"]["id"]
    from claimgraph.experiments.substrate.load import load_model

    load_model("toy:tiny", progress=False)  # trained into the session cache once, outside the timing below
    t0 = time.monotonic()
    out = cli(db, "run", exp)
    took = time.monotonic() - t0
    assert out["status"] == "completed" and out["verdict"] in ("supported", "refuted", "inconclusive")
    assert took < 60, f"test-size run took {took:.0f}s"
    result = json.loads((Path(out["run_dir"]) / "result.json").read_text())
    diffs = result["metrics"]["single_token_frac_diff"]["values"]
    assert len(diffs) == 2 and all(math.isfinite(d) for d in diffs)
    assert any(k.startswith("artifacts/sae_shuffled/seed1/") for k in result["artifacts"])

    ev = cli(db, "evidence", CLAIM)
    assert ev["status"] == out["verdict"] and ev["evidence"][0]["id"] == out["evidence_id"]
    assert ev["evidence"][0]["criterion"]["metric"] == "single_token_frac_common_diff"
    page = cli(db, "show", CLAIM)
    assert page["status"] == out["verdict"] and page["evidence"][0]["id"] == out["evidence_id"]

    again = cli(db, "run", exp)
    assert again["cached"] and again["run_id"] == out["run_id"]
    forced = cli(db, "run", exp, "--force")
    assert not forced["cached"] and forced["run_id"] != out["run_id"]
    rerun = json.loads((Path(forced["run_dir"]) / "result.json").read_text())
    assert rerun["metrics"]["single_token_frac_diff"]["values"] == diffs  # same seeds, same numbers on CPU


def test_sae_job_on_a_tiny_gpt_neox(tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    from claimgraph.experiments.context import RunContext
    from claimgraph.experiments.registry import get_job

    torch.manual_seed(0)
    cfg = transformers.GPTNeoXConfig(vocab_size=320, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    path = tmp_path / "neox"
    transformers.GPTNeoXForCausalLM(cfg).save_pretrained(path)
    job = get_job("sae")
    ctx = RunContext(tmp_path / "run", device="cpu", model_ref=f"hf:{path}", data_ref="synthetic:tiny", progress=False)
    ctx.seed = 0
    params = job.Params(**dict(p.split("=") for p in SMALL))
    r = job.run(ctx, params, 0)
    ctx.close()
    assert 0 <= r.metrics["trained_single_token_frac"] <= 1 and math.isfinite(r.metrics["single_token_frac_diff"])
    assert (ctx.artifacts_dir / "sae_trained" / "seed0" / "cfg.json").is_file()
    saved = json.loads((ctx.artifacts_dir / "sae_trained" / "seed0" / "cfg.json").read_text())
    assert saved["d_in"] == 64 and saved["model_name"] == f"hf:{path}"  # the MLP width (intermediate_size)
