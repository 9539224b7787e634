"""Training and loading toy models: the tiny preset learns the corpus, the cache is a load (never a retrain),
checkpoints hold the saved weights, concurrent first loads share one cache entry, schedules are right."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from claimgraph.experiments.substrate import list_checkpoints, load_model, model_corpus
from claimgraph.experiments.substrate import load as load_mod
from claimgraph.experiments.substrate.corpus import CORPUS_PRESETS
from claimgraph.experiments.substrate.model import ToyConfig
from claimgraph.experiments.substrate.train import TrainConfig, checkpoint_steps, lm_loss, lr_at
from claimgraph.graph.errors import InvalidInput, NotFound

MICRO = load_mod.ToyPreset(corpus="tiny", model=ToyConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=32, n_ctx=32,
                                                           d_vocab=load_mod._V),
                           train=TrainConfig(steps=12, batch_size=8, warmup_steps=2, n_checkpoints=6, n_eval=8))


@pytest.fixture(scope="module")
def tiny():
    return load_model("toy:tiny", progress=False)


def test_schedules():
    cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))           # warm-up rises
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))          # cosine falls
    assert lr_at(100, cfg) == pytest.approx(1e-4)                    # ends at lr * min_lr_ratio
    steps = checkpoint_steps(300, 10)
    assert steps[0] == 0 and steps[-1] == 300 and len(steps) >= 6
    ratios = [b / a for a, b in zip(steps[1:], steps[2:])]
    assert max(ratios) / min(ratios) < 1.6, "checkpoints are not log-spaced"
    assert len(checkpoint_steps(12, 6)) >= 6


def test_tiny_learns_the_corpus(tiny):
    corpus = model_corpus("toy:tiny")
    assert corpus.config == CORPUS_PRESETS["tiny"] and tiny.vocab is not None
    held_out = corpus.sample(256, seed=2024)  # not the training or evaluation seed
    with torch.no_grad():
        logits = tiny(held_out)
        loss = float(lm_loss(logits, held_out))
        untrained = float(lm_loss(load_model("toy:tiny@0", progress=False)(held_out), held_out))
    uni = corpus.unigram_entropy()
    assert untrained > uni, "step 0 should be about uniform over the vocabulary"
    assert abs(untrained - math.log(len(corpus.vocab))) < 0.2
    assert loss < uni - 1.5, f"tiny model loss {loss:.3f} not clearly below unigram entropy {uni:.3f}"
    # the deterministic pair bigrams are learned: such -> as etc.
    v = corpus.vocab
    probs = logits.softmax(-1)
    pairs = [("such", "as"), ("rather", "than"), ("according", "to")]
    p = [probs[:, :-1][held_out[:, :-1] == v.id(a)][:, v.id(b)] for a, b in pairs]
    assert float(torch.cat(p).mean()) > 0.8
    # it cannot beat the planted entropy of base64 chars (uniform over 64) inside spans
    labels = corpus.span_labels(held_out)
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), held_out[:, 1:], reduction="none")
    inside = labels["base64_span"][:, 1:] & labels["base64_span"][:, :-1]
    assert float(nll[inside].mean()) > math.log(64) - 0.1


def test_cache_files_and_config(tiny):
    path: Path = tiny.cache_path
    assert path.parent == Path(os.environ["CLAIMGRAPH_CACHE"]) / "models"
    cfg = json.loads((path / "config.json").read_text())
    preset = load_mod.TOY_PRESETS["tiny"]
    assert ToyConfig(**cfg["model"]) == preset.model and TrainConfig(**cfg["train"]) == preset.train
    assert cfg["final_eval_loss"] < cfg["unigram_entropy"]
    curve = json.loads((path / "curve.json").read_text())
    assert len(curve["loss"]) == preset.train.steps and curve["eval_step"] == cfg["checkpoints"]
    assert (path / "curve.png").stat().st_size > 1000
    steps = list_checkpoints("toy:tiny")
    assert steps == cfg["checkpoints"] and steps[0] == 0 and steps[-1] == preset.train.steps and len(steps) >= 6
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_second_load_is_a_load_not_a_retrain(tiny):
    path = tiny.cache_path
    runs = list(load_mod.TRAINING_RUNS)
    mtimes = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}
    again = load_model("toy:tiny", progress=False)
    assert load_mod.TRAINING_RUNS == runs
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == mtimes
    for (n, a), (_, b) in zip(tiny.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n


def test_checkpoints_hold_the_saved_weights(tiny):
    from safetensors.torch import load_file

    steps = list_checkpoints("toy:tiny")
    mid = steps[len(steps) // 2]
    m = load_model(f"toy:tiny@{mid}", progress=False)
    assert m.step == mid
    saved = load_file(str(tiny.cache_path / f"ckpt-{mid}.safetensors"))
    for name, t in m.state_dict().items():
        assert torch.equal(t, saved[name]), name
    same = load_model("toy:tiny", checkpoint=mid, progress=False)
    assert torch.equal(same.W_E, m.W_E)
    assert not torch.equal(m.W_E, tiny.W_E) and tiny.step == steps[-1]
    assert torch.equal(load_model("toy:tiny", checkpoint="last", progress=False).W_U, tiny.W_U)
    with pytest.raises(NotFound, match="available steps"):
        load_model("toy:tiny@7777", progress=False)
    with pytest.raises(InvalidInput):
        load_model("toy:tiny@abc", progress=False)
    with pytest.raises(InvalidInput):
        load_model(f"toy:tiny@{mid}", checkpoint=steps[-1], progress=False)


def test_bad_references():
    for ref in ("toy:nope", "tiny", "gpt2", "foo:bar"):
        with pytest.raises(InvalidInput):
            load_model(ref, progress=False)
    assert model_corpus("hf:/nowhere") is None and list_checkpoints("hf:/nowhere") == []
    with pytest.raises(NotFound):
        load_model("hf:/nowhere/at/all", progress=False)
    with pytest.raises(InvalidInput, match="absolute"):
        load_model("hf:relative/dir", progress=False)


def test_lost_rename_race_uses_the_winners_copy(monkeypatch, tmp_path):
    """Fake at one seam: while this process trains, a 'winner' finishes the same cache entry first (we copy our
    own result into place to play it), so our rename fails and the winner's folder must be used intact."""
    import shutil

    monkeypatch.setenv("CLAIMGRAPH_CACHE", str(tmp_path))
    real_train = load_mod.train
    final = tmp_path / "models" / load_mod.preset_key(MICRO)

    def train_then_lose(model, corpus, cfg, *, seed, out_dir, progress):
        summary = real_train(model, corpus, cfg, seed=seed, out_dir=out_dir, progress=progress)
        shutil.copytree(out_dir, final)
        (final / "config.json").write_text(json.dumps({"model": MICRO.model.model_dump(), "winner": True}))
        return summary

    monkeypatch.setattr(load_mod, "train", train_then_lose)
    got = load_mod.ensure_trained("micro", MICRO, progress=False)
    assert got == final and json.loads((final / "config.json").read_text())["winner"] is True
    assert [p.name for p in (tmp_path / "models").iterdir() if not p.name.startswith(".")] == [final.name]
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
def test_concurrent_first_loads_share_one_entry(tmp_path):
    """Two processes load the same untrained preset at once: one trains, the other uses its result."""
    script = ("import sys\nfrom claimgraph.experiments.substrate import load as L\n"
              "p = L.ToyPreset.model_validate_json(sys.argv[1])\n"
              "print(L.ensure_trained('micro', p, progress=False), len(L.TRAINING_RUNS))\n")
    env = {**os.environ, "CLAIMGRAPH_CACHE": str(tmp_path), "CLAIMGRAPH_TRAIN_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script, MICRO.model_dump_json()], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    lines = [o[0].split() for o in outs]
    assert lines[0][0] == lines[1][0]
    assert sorted(int(line[1]) for line in lines) == [0, 1], "exactly one process trained"
    entries = [p for p in (tmp_path / "models").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and (entries[0] / "config.json").is_file()
    assert len(list(entries[0].glob("ckpt-*.safetensors"))) >= 6


def test_one_layer_preset_is_default_with_one_block():
    """docs/preregistration/2026-11-21-feature-identification.md registers toy:one-layer as toy:default with
    n_layers=1 and nothing else changed (corpus, widths, training, seed)."""
    one, default = load_mod.TOY_PRESETS["one-layer"], load_mod.TOY_PRESETS["default"]
    assert one.model.n_layers == 1 and default.model.n_layers == 2
    assert one.model_copy(update={"model": one.model.model_copy(update={"n_layers": 2})}) == default
    assert load_mod.preset_key(one) != load_mod.preset_key(default)
