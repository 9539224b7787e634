"""The `emergence` kind on a real-text corpus (the path lm:smollm2-135m takes on text:mixed), end to end on a tiny
random Llama saved with SmolLM2's real tokenizer reading text:small (the 135M model's own run is the registered
experiment; here the same code runs in seconds): the chosen depths from one forward pass, SAEs trained on each
seed's own windows, the table recomputed independently, evidence naming what the interval covers, the re-run
from the cache; and the text categories and their token-alone F1 on planted labels."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from claimgraph.cli.main import app  # noqa: E402
from claimgraph.experiments.kinds.emergence.textcats import (  # noqa: E402
    TEXT_CATEGORIES,
    category_masks,
    parse_category,
    token_set_f1,
)
from claimgraph.graph import Node, Store  # noqa: E402
from claimgraph.graph.errors import InvalidInput  # noqa: E402

from .conftest import tiny_smollm2_llama  # noqa: E402

CLAIM = "claim:features-first-seen-in-early-layers-can-appear-again-in-later-layers"
DEPTHS = [0, 2, 4]
TINY = {"depths": DEPTHS, "sae.architecture": "topk", "sae.k": 8, "sae.expansion": 2, "sae.steps": 40,
        "sae.batch_size": 64, "sae.train_tokens": 1024, "eval_tokens": 512, "model_batch_size": 8}


def cli(*args: str):
    return CliRunner().invoke(app, ["--json", *args])


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny random 4-block Llama with SmolLM2's tokenizer: reads text: corpora like lm:smollm2-135m does."""
    return tiny_smollm2_llama(tmp_path_factory.mktemp("llama") / "llama", n_layers=4)


@pytest.fixture(scope="module")
def corpus(llama):
    from claimgraph.experiments.substrate.load import corpus_for

    return corpus_for(llama, "text:small")[0]


# ---------------------------------------------------------------------------------------------- categories

def test_token_set_f1_in_sample_overfits_a_large_vocabulary():
    """Planted: a label independent of the token (5% of positions at random) over a 5,000-token Zipf vocabulary.
    No token set can beat firing everywhere (F1 2p/(1+p) ~ 0.1) on new positions, but ranked on the scored
    positions themselves the rare tokens seen once inside the label get share 1 and the in-sample F1 is far
    higher; ranked on another sample (the real-text sweep: train split) it stays near the truth. A label that
    is a token set gets F1 1 either way."""
    g = np.random.default_rng(0)
    V, M = 5000, 4000
    p = 1 / np.arange(1, V + 1)
    fit_tok, tok = (g.choice(V, M, p=p / p.sum()) for _ in range(2))
    fit_y, y = (g.random(M) < 0.05 for _ in range(2))
    labels = np.stack([y, tok < 50], 1)
    fit_labels = np.stack([fit_y, fit_tok < 50], 1)
    in_sample = token_set_f1(tok, labels, tok, labels, V)
    held_out = token_set_f1(fit_tok, fit_labels, tok, labels, V)
    chance = 2 * y.mean() / (1 + y.mean())
    assert in_sample[0] > 0.3 > chance + 0.15
    assert held_out[0] < chance + 0.05
    assert in_sample[1] == pytest.approx(1.0) and held_out[1] == pytest.approx(1.0)


def test_token_alone_f1_wrapper_is_the_in_sample_optimum():
    """The toy sweep's token_alone_f1 equals the best token set found by brute force on a tiny vocabulary."""
    from itertools import combinations

    from claimgraph.experiments.kinds.emergence.sweep import token_alone_f1

    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(6, (8, 16), generator=g)
    y = (torch.rand(tokens.shape, generator=g) < (tokens.float() + 1) / 8).reshape(-1, 1)
    best = 0.0
    for r in range(1, 7):
        for s in combinations(range(6), r):
            fires = torch.isin(tokens.reshape(-1), torch.tensor(s))
            tp = int((fires & y[:, 0]).sum())
            best = max(best, 2 * tp / (int(fires.sum()) + int(y.sum())))
    assert token_alone_f1(tokens, y, 6)[0] == pytest.approx(best)


def test_category_expressions(corpus):
    from claimgraph.experiments.substrate.text import LABELS

    rows = np.arange(corpus.n_windows("train"))
    m = category_masks(corpus, "train", rows, ["string", "prose", "string&prose", "arabic&doc:po", "arabic",
                                               "string&!prose", "doc:po"])
    string, prose, doc, ar_po, ar, lit, po = (m[..., i] for i in range(7))
    assert np.array_equal(doc, string & prose) and np.array_equal(lit, string & ~prose) and doc.any()
    assert np.array_equal(ar_po, ar & po) and ar_po.any() and (ar & ~po).any()
    kinds = np.array([d["kind"] for d in corpus.documents])
    assert set(kinds[corpus.doc_index["train"][po]]) == {"po"}
    assert not m[corpus.doc_index["train"] < 0].any()  # separators are in no category
    assert np.array_equal(string, corpus.labels["train"][..., LABELS.index("string")])
    assert parse_category("string&!prose") == [(False, "string"), (True, "prose")]
    for bad, msg in (("strings", "neither a label"), ("doc:html", "neither a label"), ("!prose", "no positive")):
        with pytest.raises(InvalidInput, match=msg):
            parse_category(bad)
    assert all(parse_category(c) for c in TEXT_CATEGORIES)


# ---------------------------------------------------------------------------------------------- one forward pass

def test_several_hooks_from_one_pass_equal_single_captures(llama, corpus, monkeypatch):
    from claimgraph.experiments.substrate import acts_cache
    from claimgraph.experiments.substrate.load import load_model

    model = load_model(llama, progress=False)
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]
    tokens = corpus.window_slice("eval", 0, 3)
    many = model.capture_many(tokens, hooks)
    for h in hooks:
        assert torch.equal(many[h], model.capture(tokens, h))
    passes = []
    real = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, t: passes.append(len(t)) or real(self, t))
    got = acts_cache.cached_activations_many(model, corpus, hooks, split="eval", stop=5, batch_size=2)
    assert passes == [2, 2, 1]  # one forward pass per batch for the three hooks
    for h in hooks:
        assert got[h].manifest["build"]["hooks_in_pass"] == hooks
        assert torch.equal(got[h].tensor(), model.capture(corpus.window_slice("eval", 0, 5), h).reshape(5 * 64, -1))
    passes.clear()
    one = acts_cache.cached_activations(model, corpus, hooks[1], split="eval", stop=5)  # the same entry, found
    assert one.folder == got[hooks[1]].folder and passes == []


# ---------------------------------------------------------------------------------------------- the kind, end to end

@pytest.fixture(scope="module")
def text_run(llama, tmp_path_factory):
    """`experiment add` on the tiny Llama and text:small with the kind's text defaults, a run of 2 seeds, and a
    forced re-run."""
    db = tmp_path_factory.mktemp("emergence-text") / "g.duckdb"
    mp = pytest.MonkeyPatch()
    mp.setenv("CLAIMGRAPH_DB", str(db))
    with Store(db) as s:
        s.add_node(Node(id=CLAIM, type="claim", title="Features first seen in early layers can appear again later."))
    args = ["experiment", "add", "--claim", CLAIM, "--kind", "emergence", "--model", llama, "--data", "text:small",
            "--device", "cpu", "--seeds", "2", "--criterion", "reemergence_fraction > 0.1 band=0.05"]
    for k, v in TINY.items():
        args += ["--param", f"{k}={json.dumps(v)}"]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    exp = json.loads(r.stdout)["experiment"]
    first = cli("run", exp["id"])
    assert first.exit_code == 0, first.output
    again = cli("run", exp["id"], "--force")
    assert again.exit_code == 0, again.output
    yield exp, json.loads(first.stdout), json.loads(again.stdout)
    mp.undo()


def test_text_defaults_are_written_into_the_spec(text_run):
    exp, _, _ = text_run
    params = exp["attrs"]["spec"]["params"]
    assert params["categories"] == TEXT_CATEGORIES and params["sizes"] == [] and params["depths"] == DEPTHS


def test_run_attaches_evidence_with_depth_metrics_only(text_run):
    _, out, _ = text_run
    assert out["status"] == "completed"
    result = json.loads((Path(out["run_dir"]) / "result.json").read_text())
    m = result["metrics"]
    assert {"depth_threshold_fraction", "reemergence_fraction", "context_categories"} <= set(m)
    for absent in ("time_threshold_fraction", "scale_threshold_fraction", "emergence_fraction_min"):
        assert absent not in m  # one checkpoint, one model: no time or scale axis, and no claim-(1) minimum
    text = result["summary"]["notes"]
    for phrase in ("SAE seeds", "data samples", "Not model seeds", "Time: not measured", "Scale: not measured",
                   "ranked on the train split"):
        assert phrase in text, phrase
    ev = json.loads(cli("evidence", CLAIM).stdout)["evidence"]
    assert len(ev) == 1 and ev[0]["verdict"] == out["verdict"] and "Not model seeds" in ev[0]["text"]


def test_chosen_depths_from_one_pass_and_seeds_read_their_own_windows(text_run):
    from claimgraph.experiments.kinds.emergence.analysis import ScoreTable

    _, out, _ = text_run
    result = json.loads((Path(out["run_dir"]) / "result.json").read_text())
    art = Path(out["run_dir"]) / "artifacts"
    tables = [ScoreTable.model_validate(json.loads((art / f"seed{s}" / "scores.json").read_text())["table"])
              for s in (0, 1)]
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]
    assert [t.sizes[0].hooks for t in tables] == [hooks, hooks] and tables[0].sizes[0].checkpoints == ["final"]
    read = [r["details"]["text"] for r in result["per_seed"]]
    assert read[0]["train_windows"] != read[1]["train_windows"] and read[0]["eval_windows"] != read[1]["eval_windows"]
    assert all(max(r["train_windows"]) < r["pools"]["train"] == 24 for r in read)  # 1.5 x 16 windows of 64
    assert tables[0].token_f1 == tables[1].token_f1 and len(tables[0].token_f1) == len(TEXT_CATEGORIES)
    log = (Path(out["run_dir"]) / "log.txt").read_text()
    assert log.count("one forward pass") == 2  # the train pool and the eval pool, every depth at once


def test_cells_recomputed_independently(text_run, llama, corpus):
    """For seed 1 at every depth: the SAE named in the table, the model's activations captured directly on the
    seed's scoring windows (separators dropped), and F1 per latent by a plain loop give the table's score; the
    SAE's provenance holds the seed's training windows."""
    from claimgraph.experiments.sae import load_sae
    from claimgraph.experiments.substrate.load import load_model

    _, out, _ = text_run
    result = json.loads((Path(out["run_dir"]) / "result.json").read_text())
    read = result["per_seed"][1]["details"]["text"]
    rows = [r for r in csv.DictReader(open(Path(out["run_dir"]) / "artifacts" / "emergence_table.csv"))
            if r["seed"] == "1"]
    assert len(rows) == len(DEPTHS) * len(TEXT_CATEGORIES)
    model = load_model(llama, progress=False)
    windows = np.array(read["eval_windows"])
    tokens = corpus.window_slice("eval", 0, None)[windows]
    keep = tokens.reshape(-1) != corpus.manifest["separator_id"]
    labels = category_masks(corpus, "eval", windows, TEXT_CATEGORIES).reshape(-1, len(TEXT_CATEGORIES))[keep.numpy()]
    from claimgraph.experiments.context import cache_dir

    for depth, hook in zip(DEPTHS, ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]):
        cell = [r for r in rows if int(r["depth"]) == depth]
        folder = cache_dir() / "saes" / cell[0]["sae"]
        prov = json.loads((folder / "provenance.json").read_text())
        assert prov["sample"]["windows"] == read["train_windows"] and prov["recipe"]["hook"] == hook
        sae = load_sae(folder)
        with torch.no_grad():
            z = sae.encode(model.capture(tokens, hook).reshape(-1, 32)[keep])             # [M, d_sae]
        for r in cell:
            y = torch.from_numpy(labels[:, TEXT_CATEGORIES.index(r["category"])])
            best = 0.0
            for j in range(z.shape[1]):
                fires = z[:, j] > 0
                tp = int((fires & y).sum())
                if tp:
                    best = max(best, 2 * tp / (int(fires.sum()) + int(y.sum())))
            assert float(r["score"]) == pytest.approx(best, abs=1e-6), (depth, r["category"])


def test_depth_heatmap_draws_the_table(text_run):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from claimgraph.experiments.kinds.emergence.analysis import ScoreTable
    from claimgraph.experiments.kinds.emergence.plots import axes_for, depth_matrix, heatmap

    _, out, _ = text_run
    scores = json.loads((Path(out["run_dir"]) / "artifacts" / "emergence_scores.json").read_text())
    table = ScoreTable.model_validate(scores["table"])
    fig = heatmap(table, scores["threshold"])
    FigureCanvasAgg(fig).draw()
    (ax,) = axes_for(fig).values()
    assert list(axes_for(fig)) == [(0, None)]
    want = depth_matrix(table, 0)
    assert want.shape == (len(TEXT_CATEGORIES), len(DEPTHS))
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), want)
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(d) for d in DEPTHS]


def test_rerun_loads_every_sae_and_activation_from_the_cache(text_run):
    _, out, again = text_run
    log = (Path(again["run_dir"]) / "log.txt").read_text()
    assert log.count("loaded from cache") == 2 * len(DEPTHS) and "training SAE" not in log
    assert "one forward pass" not in log
    a = json.loads((Path(out["run_dir"]) / "artifacts" / "emergence_scores.json").read_text())["table"]
    b = json.loads((Path(again["run_dir"]) / "artifacts" / "emergence_scores.json").read_text())["table"]
    assert a == b


@pytest.mark.parametrize("extra, model, msg", [
    ({"sizes": ["toy:small"]}, None, "sizes"),
    ({"depths": [0, 5]}, None, "has 4 blocks"),
    ({"categories": ["base64", "strings"]}, None, "neither a label"),
    ({}, "toy:tiny", "synthetic token ids"),
])
def test_text_specs_refused_at_add(llama, extra, model, msg):
    from claimgraph.experiments.api import build_spec

    with pytest.raises(InvalidInput, match=msg):
        build_spec("emergence", params={**TINY, **extra}, model=model or llama, data="text:small")
