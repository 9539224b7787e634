"""A feature page of an SAE on a Hugging Face model: a tiny random GPT-NeoX saved to a temp dir (synthetic ids
are named by the corpus's vocabulary), an SAE trained on it by the sae job through the CLI and the runner, and its page."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.experiments.pages import PageConfig, feature_page
from claimgraph.graph import Node, Store

SAE_PARAMS = dict(steps=100, batch_size=128, train_tokens=4096, eval_tokens=1024, ce_tokens=512, log_every=50,
                  control="shuffled")  # the sae job's default criterion needs the shuffled control
PAGE = PageConfig(n_tokens=2048, top_k=8, n_bands=4, per_band=3, bins=20, n_logits=6)
CLAIM = "claim:features-are-interpretable"


def _cli(db: Path, *args: str):
    return CliRunner().invoke(app, ["--db", str(db), "--json", *args])


def test_page_of_a_hugging_face_gpt_neox(tmp_path):
    """The page's numbers agree with a direct recomputation; the logit table covers the model's vocabulary."""
    transformers = pytest.importorskip("transformers")
    from claimgraph.experiments.sae import load_sae
    from claimgraph.experiments.substrate.corpus import get_corpus
    from claimgraph.experiments.substrate.load import activations, load_model

    corpus = get_corpus("synthetic:tiny")
    torch.manual_seed(0)
    cfg = transformers.GPTNeoXConfig(vocab_size=len(corpus.vocab), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    transformers.GPTNeoXForCausalLM(cfg).save_pretrained(tmp_path / "neox")
    db = tmp_path / "g.duckdb"
    with Store(db) as s:
        s.add_node(Node(id=CLAIM, type="claim", title="Features are interpretable"))
    r = _cli(db, "experiment", "add", "--claim", CLAIM, "--kind", "sae", "--model", f"hf:{tmp_path / 'neox'}",
             "--data", "synthetic:tiny", "--seeds", "1", "--device", "cpu", *[
                 a for k, v in SAE_PARAMS.items() for a in ("--param", f"{k}={v}")])
    assert r.exit_code == 0, r.output
    out = json.loads(_cli(db, "run", json.loads(r.stdout)["experiment"]["id"]).stdout)
    assert out["status"] == "completed", out
    run_dir = Path(out["run_dir"])
    result = json.loads((run_dir / "result.json").read_text())
    sae = load_sae(run_dir / "artifacts" / result["per_seed"][0]["details"]["conditions"]["trained"]["sae_folder"])
    model = load_model(f"hf:{tmp_path / 'neox'}", progress=False)
    tokens = corpus.sample(PAGE.n_tokens // corpus.seq_len, PAGE.sample_seed)
    with torch.no_grad():
        lat = sae.encode(activations(model, tokens, sae.cfg.hook_name))                      # [N * T, d_sae]
    f = int((lat > 0).float().mean(0).argmax())
    pg = feature_page(run_dir, f, config=PAGE)
    assert pg.model.startswith("hf:") and pg.d_sae == sae.d_sae
    assert pg.density == pytest.approx(float((lat[:, f] > 0).double().mean()))
    assert pg.top_contexts[0].act == pytest.approx(float(lat[:, f].max()), rel=1e-5)
    c = pg.top_contexts[0]  # synthetic ids are named by the corpus, not by the model (it has no tokenizer)
    assert c.tokens == corpus.vocab.decode(tokens[c.seq, c.start:c.start + len(c.tokens)])
    assert len(pg.logits.top) == PAGE.n_logits and sum(pg.logits.histogram.counts) == len(corpus.vocab)
    assert all(e.category == corpus.vocab.category_of(corpus.vocab.id(e.token)) for e in pg.logits.top)
    assert Path(pg.html).is_file()
