"""The `emergence` job end to end: on toy:tiny (its checkpoints, every depth) through the CLI and the runner,
evidence attached, the heatmap's numbers recomputed independently (an SAE trained here the plain way and a
per-latent F1 loop) and read back from the PNG's pixels; a re-run loads every SAE from the cache; and the
Hugging Face path on tiny random GPT-NeoX directories (one size, its depths; revisions as checkpoints)."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.graph import Node, Store

CLAIM = "claim:llm-features-emerge-at-thresholds-of-time-space-and-scale"
# a tiny recipe: 4 checkpoints x 3 depths of toy:tiny, 12 SAEs of 64 latents
TINY = {"sizes": [], "n_checkpoints": 4, "sae.expansion": 2, "sae.k": 8, "sae.steps": 100, "sae.batch_size": 128,
        "sae.train_tokens": 4096, "eval_tokens": 2048, "categories": ["base64_span", "arabic_span", "cat:number_word",
                                                                  "cat:digit", "paren_span"]}


def cli(*args: str):
    return CliRunner().invoke(app, ["--json", *args])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One CLI run of the kind on toy:tiny, then a forced re-run (SAEs from the cache)."""
    db = tmp_path_factory.mktemp("emergence") / "g.duckdb"
    mp = pytest.MonkeyPatch()
    mp.setenv("CLAIMGRAPH_DB", str(db))
    with Store(db) as s:
        s.add_node(Node(id=CLAIM, type="claim", title="Large language models exhibit emergent features that "
                        "emerge at specific thresholds of time, space, and scale."))
    args = ["experiment", "add", "--claim", CLAIM, "--kind", "emergence", "--model", "toy:tiny",
            "--data", "synthetic:tiny", "--device", "cpu", "--seeds", "2",
            "--criterion", "time_threshold_fraction > 0.5 band=0.1"]
    for k, v in TINY.items():
        args += ["--param", f"{k}={json.dumps(v)}"]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    exp = json.loads(r.stdout)["experiment"]["id"]
    first = cli("run", exp)
    assert first.exit_code == 0, first.output
    again = cli("run", exp, "--force")
    assert again.exit_code == 0, again.output
    yield json.loads(first.stdout), json.loads(again.stdout)
    mp.undo()


def test_run_completes_and_attaches_evidence(tiny_run):
    out, _ = tiny_run
    assert out["status"] == "completed" and out["verdict"] in ("supported", "refuted", "inconclusive")
    run_dir = Path(out["run_dir"])
    result = json.loads((run_dir / "result.json").read_text())
    assert {"artifacts/emergence_heatmap.png", "artifacts/emergence_scores.json", "artifacts/emergence_table.csv",
            "artifacts/seed0/scores.json", "artifacts/seed0/emergence_table.csv"} <= set(result["artifacts"])
    m = {k: v["mean"] for k, v in result["metrics"].items()}
    # one size: no scale axis, so neither its fraction nor claim 1's minimum is reported
    assert "scale_threshold_fraction" not in m and "emergence_fraction_min" not in m
    for name in ("time_threshold_fraction", "depth_threshold_fraction", "reemergence_fraction",
                 "final_present_fraction"):
        assert 0.0 <= m[name] <= 1.0, name
    ev = json.loads(cli("evidence", CLAIM).stdout)
    assert len(ev["evidence"]) == 1 and ev["evidence"][0]["verdict"] == out["verdict"]
    text = result["summary"]["notes"]
    assert "toy:tiny" in text and "What could change it" in text


def test_table_and_scores_agree_and_metrics_follow_from_them(tiny_run):
    from claimgraph.experiments.kinds.emergence.analysis import ScoreTable, analyse

    out, _ = tiny_run
    art = Path(out["run_dir"]) / "artifacts"
    scores = json.loads((art / "emergence_scores.json").read_text())
    table = ScoreTable.model_validate(scores["table"])
    (size,) = table.sizes
    # the time axis starts at the first checkpoint after initialisation
    assert size.model == "toy:tiny" and size.checkpoints == ["1", "8", "35", "300"]
    assert size.hooks == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert table.categories == TINY["categories"]
    seed0 = ScoreTable.model_validate(json.loads((art / "seed0" / "scores.json").read_text())["table"])
    size = seed0.sizes[0]
    rows = [r for r in csv.DictReader(open(art / "emergence_table.csv")) if r["seed"] == "0"]
    assert len(rows) == 4 * 3 * len(TINY["categories"])
    for row in rows:
        t, d, c = size.checkpoints.index(row["checkpoint"]), int(row["depth"]), table.categories.index(row["category"])
        assert float(row["score"]) == pytest.approx(size.score[t][d][c], abs=1e-12)
        assert float(row["f1"]) == float(row["score"])
        p, r = float(row["precision"]), float(row["recall"])
        assert float(row["f1"]) == pytest.approx(2 * p * r / (p + r) if p + r else 0.0, abs=1e-6)
    result = json.loads((Path(out["run_dir"]) / "result.json").read_text())
    per_seed = result["per_seed"][0]["metrics"]
    assert analyse(seed0, scores["threshold"], scores["margin"]).metrics == pytest.approx(per_seed)
    assert analyse(table, scores["threshold"], scores["margin"]).metrics == pytest.approx(
        result["summary"]["metrics_of_mean"])
    # the trained model reads its planted spans far better than its step-0 initialisation does
    b64 = table.categories.index("base64_span")
    assert max(row[b64] for row in size.score[-1]) > max(row[b64] for row in size.score[0]) + 0.3


def test_replicates_sweep_differently_seeded_models_and_the_evidence_names_the_sources(tiny_run):
    """Model-seed replicates: seed s sweeps replicate s of toy:tiny's family (its own trained weights), and the
    evidence text says the interval covers model seeds, SAE seeds and data samples."""
    from claimgraph.experiments.kinds.emergence.analysis import ScoreTable
    from claimgraph.experiments.substrate.load import TOY_PRESETS, preset_key, seeded_preset

    out, _ = tiny_run
    result = json.loads((Path(out["run_dir"]) / "result.json").read_text())
    seeds = [r["seed"] for r in result["per_seed"]]
    assert seeds == [0, 1]
    trained = [r["details"]["models"]["toy:tiny"] for r in result["per_seed"]]
    art = Path(out["run_dir"]) / "artifacts"
    tables = [ScoreTable.model_validate(json.loads((art / f"seed{s}" / "scores.json").read_text())["table"])
              for s in seeds]
    assert [t.sizes[0].trained for t in tables] == trained
    assert trained == [preset_key(seeded_preset(TOY_PRESETS["tiny"], s)) for s in seeds] and len(set(trained)) == 2
    assert tables[0].sizes[0].score != tables[1].sizes[0].score
    ev = json.loads(cli("evidence", CLAIM).stdout)["evidence"][0]
    for source in ("model seeds", "SAE seeds", "data samples"):
        assert source in ev["text"], ev["text"]
    assert tables[0].token_f1 is not None and len(tables[0].token_f1) == len(TINY["categories"])


@pytest.mark.parametrize("checkpoint, depth", [(3, 2), (0, 1)])
def test_heatmap_cells_recomputed_independently(tiny_run, checkpoint, depth):
    """An SAE trained here with train_sae on activations collected here, and F1 per latent by a plain loop,
    give the same best-latent F1 as the heatmap's matrix."""
    import torch

    from claimgraph.experiments.sae import train_sae
    from claimgraph.experiments.sae.recipe import EVAL_SEED_OFFSET, SaeRecipe
    from claimgraph.experiments.substrate.corpus import get_corpus
    from claimgraph.experiments.substrate.load import activations, list_checkpoints, load_model

    out, _ = tiny_run
    scores = json.loads((Path(out["run_dir"]) / "artifacts" / "seed0" / "scores.json").read_text())
    size = scores["table"]["sizes"][0]
    step = int(size["checkpoints"][checkpoint])
    assert step in list_checkpoints("toy:tiny")
    hook = size["hooks"][depth]
    corpus = get_corpus("synthetic:tiny")
    model = load_model("toy:tiny", checkpoint=step, progress=False)
    seed = 0
    train = corpus.sample(math.ceil(TINY["sae.train_tokens"] / corpus.seq_len), seed)
    acts = activations(model, train, hook, batch_size=64)
    recipe = SaeRecipe(hook=hook, architecture="topk", k=TINY["sae.k"], expansion=TINY["sae.expansion"],
                       steps=TINY["sae.steps"], batch_size=TINY["sae.batch_size"],
                       train_tokens=TINY["sae.train_tokens"])
    cfg = recipe.config(acts.shape[1], seed, model_name=None, dataset_path=None, context_size=corpus.seq_len)
    sae, _ = train_sae(cfg, acts)
    ev = corpus.sample(math.ceil(TINY["eval_tokens"] / corpus.seq_len), seed + EVAL_SEED_OFFSET)
    with torch.no_grad():
        z = sae.encode(activations(model, ev, hook, batch_size=64))             # [N * T, d_sae]
    labels = corpus.span_labels(ev)
    for c, cat in enumerate(TINY["categories"]):
        y = labels[cat].reshape(-1)
        best = 0.0
        for j in range(z.shape[1]):
            fires = z[:, j] > 0
            tp = int((fires & y).sum())
            if tp == 0:
                continue
            precision, recall = tp / int(fires.sum()), tp / int(y.sum())
            best = max(best, 2 * precision * recall / (precision + recall))
        assert size["score"][checkpoint][depth][c] == pytest.approx(best, abs=1e-6), (cat, step, hook)


def test_heatmap_png_shows_the_matrix(tiny_run):
    """Each panel's imshow array equals the JSON matrix, and the saved PNG's pixel at each cell centre has
    the colour of that cell's value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.image import imread

    from claimgraph.experiments.kinds.emergence.analysis import ScoreTable
    from claimgraph.experiments.kinds.emergence.plots import axes_for, heatmap

    out, _ = tiny_run
    art = Path(out["run_dir"]) / "artifacts"
    scores = json.loads((art / "emergence_scores.json").read_text())
    table = ScoreTable.model_validate(scores["table"])
    fig = heatmap(table, scores["threshold"])
    FigureCanvasAgg(fig).draw()
    png = imread(art / "emergence_heatmap.png")
    assert png.shape[:2] == (round(fig.get_figheight() * fig.dpi), round(fig.get_figwidth() * fig.dpi))
    size = table.sizes[0]
    panels = axes_for(fig)
    assert set(panels) == {(0, d) for d in range(3)}
    for (_, d), ax in panels.items():
        img = ax.images[0]
        want = np.array(size.score)[:, d, :].T
        np.testing.assert_array_equal(np.asarray(img.get_array()), want)
        for c in range(len(table.categories)):
            for k in range(len(size.checkpoints)):
                x, y = ax.transData.transform((k, c))
                got = png[png.shape[0] - 1 - int(y), int(x), :3]
                assert np.abs(got - np.array(img.cmap(img.norm(want[c, k]))[:3])).max() < 3 / 255


def test_rerun_loads_saes_from_cache_with_the_same_numbers(tiny_run):
    out, again = tiny_run
    assert not again["cached"] and again["run_id"] != out["run_id"]
    log = (Path(again["run_dir"]) / "log.txt").read_text()
    assert log.count("loaded from cache") == 2 * 12 and "training SAE" not in log   # 12 SAEs x 2 seeds
    a = json.loads((Path(out["run_dir"]) / "artifacts" / "emergence_scores.json").read_text())["table"]
    b = json.loads((Path(again["run_dir"]) / "artifacts" / "emergence_scores.json").read_text())["table"]
    assert a == b


# ---------------------------------------------------------------------------------------------- Hugging Face

@pytest.fixture(scope="module")
def neox_dir(tmp_path_factory):
    """Tiny random GPT-NeoX models whose vocabulary covers the synthetic corpus's ids: the directory itself,
    and two revisions under it (step0, step1) with different weights."""
    import torch
    import transformers

    root = tmp_path_factory.mktemp("neox")
    cfg = transformers.GPTNeoXConfig(vocab_size=320, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    for i, where in enumerate([root, root / "step0", root / "step1"]):
        torch.manual_seed(i)
        transformers.GPTNeoXForCausalLM(cfg).save_pretrained(where)
    small = transformers.GPTNeoXConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, max_position_embeddings=64)
    transformers.GPTNeoXForCausalLM(small).save_pretrained(root.parent / "neox_small_vocab")
    return root


def _run(tmp_path, model_ref, **params):
    from claimgraph.experiments.context import RunContext
    from claimgraph.experiments.kinds.emergence import EmergenceJob, EmergenceParams

    ctx = RunContext(tmp_path, device="cpu", model_ref=model_ref, data_ref="synthetic:tiny", progress=False)
    job, p = EmergenceJob(), EmergenceParams(**{**TINY, **params})
    try:
        ctx.seed = 0
        res = job.run(ctx, p, 0)
        ctx.seed = None
        return res, job.summarize(ctx, p, [res])
    finally:
        ctx.close()


def test_hf_neox_one_size_its_depths(neox_dir, tmp_path):
    res, summary = _run(tmp_path, f"hf:{neox_dir}")
    (size,) = res.details["table"]["sizes"]
    assert size["model"] == f"hf:{neox_dir}" and size["checkpoints"] == ["final"]
    assert size["hooks"] == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert set(res.metrics) == {"context_categories", "depth_threshold_fraction", "reemergence_count",
                                "reemergence_fraction", "final_present_fraction"}
    assert (tmp_path / "artifacts" / "emergence_heatmap.png").stat().st_size > 1000
    assert "Time: not measured (one checkpoint per size)" in summary["notes"]
    assert "Scale: not measured (one model size)" in summary["notes"]


def test_hf_revisions_as_checkpoints(neox_dir, tmp_path):
    res, _ = _run(tmp_path, f"hf:{neox_dir}", checkpoints=["step0", "step1"])
    (size,) = res.details["table"]["sizes"]
    assert size["checkpoints"] == ["step0", "step1"]
    assert size["score"][0] != size["score"][1]  # different weights, different SAEs and scores
    assert "time_threshold_fraction" in res.metrics


def test_hf_vocabulary_smaller_than_the_corpus_is_refused(neox_dir, tmp_path):
    from claimgraph.graph.errors import InvalidInput

    with pytest.raises(InvalidInput, match="vocabulary"):
        _run(tmp_path, f"hf:{neox_dir.parent / 'neox_small_vocab'}")
