"""The `sae` job kind: Params validation without torch, a shuffled-control run on toy:tiny through a real
RunContext, SAELens artifacts that reload to the same metrics, and CE-recovered on hand-set SAEs."""
from __future__ import annotations

import json

import pytest

from claimgraph.experiments.kinds.sae import SaeJob, SaeParams
from claimgraph.experiments.registry import get_job

SMALL = {"sae.steps": 150, "sae.batch_size": 128, "sae.train_tokens": 8192, "eval_tokens": 4096, "log_every": 50}


def test_registered():
    assert isinstance(get_job("sae"), SaeJob)


@pytest.mark.parametrize("bad", [
    {"colour": "red"},
    {"sae.colour": "red"},
    {"sae.architecture": "gated"},
    {"control": "random"},
    {"sae.hook": "blocks.0.attn.hook_pattern"},
    {"sae.hook": "blocks.x.mlp.hook_post"},
    {"sae.steps": 0},
    {"sae.l1_coefficient": -1.0},
    {"sae.expansion": 0},
    {"sae.resample_fractions": [1.5]},
    {"sae.train_tokens": 100, "sae.batch_size": 256},
    {"sae": {"architecture": "topk", "d_sae": 8, "k": 16}},
    {"architecture": "topk", "d_sae": 8, "k": 16},
])
def test_params_refuse_unknown_fields_and_bad_values(bad):
    with pytest.raises(ValueError):
        SaeParams(**bad)


def test_recipe_is_set_in_part_and_stored_specs_with_flat_fields_still_read():
    """`sae.steps=500` (command line), `sae={"steps": 500}` (Python) and the flat `steps=500` of specs stored
    before the recipe was nested all mean the default recipe with 500 steps; what is stored is nested."""
    want = SaeParams().sae.model_copy(update={"steps": 500})
    for given in ({"sae.steps": 500}, {"sae": {"steps": 500}}, {"steps": 500}):
        p = SaeParams(**given)
        assert p.sae == want, given
        assert p.model_dump()["sae"]["steps"] == 500 and "steps" not in p.model_dump()


def test_an_experiment_stored_with_flat_recipe_fields_is_found_again(store):
    """A store written before the recipe was nested holds `params.steps`; adding the same experiment now (nested
    `sae.steps`) finds that node instead of adding a second one."""
    from claimgraph.experiments.api import add_experiment, build_spec
    from claimgraph.graph import Node, NodeType

    store.add_node(Node(id="claim:c", type=NodeType.claim, title="A claim"))
    new = build_spec("sae", params={"sae.steps": 300})
    old_params = {**{k: v for k, v in new.params.items() if k != "sae"}, **new.params["sae"]}
    exp = add_experiment(store, ["claim:c"], "sae", params={"sae.steps": 300}, experiment_id="experiment:sae-c")
    store.add_node(exp.model_copy(update={"attrs": {**exp.attrs, "spec": {**exp.attrs["spec"], "params": old_params}}}))
    again = add_experiment(store, ["claim:c"], "sae", params={"sae.steps": 300}, experiment_id="experiment:sae-c")
    assert again.id == exp.id and again.attrs["spec"]["params"] == old_params
    assert SaeParams.model_validate(old_params) == SaeParams.model_validate(new.params)


def test_params_defaults_and_criterion():
    p = SaeParams()
    assert p.sae.hook == "blocks.0.mlp.hook_post" and p.control == "shuffled" and p.sae.architecture == "relu"
    assert SaeParams(**{"sae.hook": "blocks.3.hook_resid_post"}).sae.hook == "blocks.3.hook_resid_post"
    crit = SaeJob.default_criterion
    assert crit.metric == "single_token_frac_common_diff" and crit.op == ">"
    assert crit.decide([0.3, 0.32, 0.31]).verdict == "supported"
    assert crit.decide([0.0, 0.01, -0.01]).verdict == "refuted"
    assert crit.decide([0.1, 0.12, 0.08]).verdict == "inconclusive"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from claimgraph.experiments.context import RunContext

    run_dir = tmp_path_factory.mktemp("sae_run")
    ctx = RunContext(run_dir, device="cpu", model_ref="toy:tiny", data_ref="synthetic:tiny", progress=False)
    job, params = SaeJob(), SaeParams(**SMALL)
    ctx.seed = 0
    result = job.run(ctx, params, 0)
    ctx.seed = None
    summary = job.summarize(ctx, params, [result])
    ctx.close()
    return run_dir, params, result, summary


def test_shuffled_control_reports_both_conditions(tiny_run):
    run_dir, params, result, summary = tiny_run
    m = result.metrics
    for cond in ("trained", "shuffled"):
        for name in ("l0", "mse", "fve", "dead_frac", "dense_frac", "single_token_frac", "ce_recovered",
                     "ce_clean", "ce_sae", "ce_zero"):
            assert f"{cond}_{name}" in m, f"{cond}_{name} missing"
        assert 0.0 <= m[f"{cond}_single_token_frac"] <= 1.0
        assert m[f"{cond}_l0"] > 0
    assert m["single_token_frac_diff"] == pytest.approx(m["shuffled_single_token_frac"] - m["trained_single_token_frac"])
    # the shuffled model is a different (and much worse) language model than the trained one
    assert m["shuffled_ce_clean"] > m["trained_ce_clean"] + 0.5
    # the trained SAE reconstructs its activations well enough to matter
    assert m["trained_fve"] > 0.5 and m["trained_ce_recovered"] > 0.5
    assert (run_dir / "artifacts" / "single_token_share.png").stat().st_size > 1000
    assert summary["plot"] == "single_token_share.png"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["condition"] for r in rows} == {"trained", "shuffled"}
    assert [r["step"] for r in rows if r["condition"] == "trained"] == [0, 50, 100, 149]
    assert all(r["seed"] == 0 for r in rows)
    assert result.details["model"]["ref"] == "toy:tiny" and result.details["model"]["cache_key"]


def test_saved_sae_reloads_and_reproduces_metrics(tiny_run):
    from claimgraph.experiments.sae import evaluate_sae, load_sae
    from claimgraph.experiments.sae.recipe import EVAL_SEED_OFFSET
    from claimgraph.experiments.substrate.corpus import get_corpus
    from claimgraph.experiments.substrate.load import activations, load_model

    run_dir, params, result, _ = tiny_run
    folder = run_dir / "artifacts" / result.details["conditions"]["trained"]["sae_folder"]
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["hook_name"] == params.sae.hook and cfg["model_name"] == "toy:tiny" and cfg["architecture"] == "standard"
    assert cfg["d_in"] == 128 and cfg["d_sae"] == 256 and cfg["context_size"] == 32
    sae = load_sae(folder)
    corpus = get_corpus("synthetic:tiny")
    tokens = corpus.sample(params.eval_tokens // corpus.seq_len, EVAL_SEED_OFFSET)
    acts = activations(load_model("toy:tiny", progress=False), tokens, params.sae.hook, batch_size=64)
    rep = evaluate_sae(sae, acts, tokens.reshape(-1))
    for k, v in rep.metrics.items():
        assert v == result.metrics[f"trained_{k}"], k


def test_same_seed_same_metrics(tiny_run, tmp_path):
    from claimgraph.experiments.context import RunContext

    _, params, result, _ = tiny_run
    ctx = RunContext(tmp_path, device="cpu", model_ref="toy:tiny", data_ref="synthetic:tiny", progress=False)
    again = SaeJob().run(ctx, params.model_copy(update={"control": "none"}), 0)
    ctx.close()
    assert again.metrics == {k: v for k, v in result.metrics.items() if k.startswith("trained_")}


def test_ce_recovered_identity_and_zero_saes():
    """Hand-set SAEs with known outcomes: relu(x) - relu(-x) = x reconstructs exactly (recovered 1, CE equal to
    clean); an all-zero SAE outputs zeros (CE equal to zero-ablation, recovered 0)."""
    import torch

    from claimgraph.experiments.sae import SaeRecipe, ce_loss_recovered
    from claimgraph.experiments.sae.relu import ReluSAE
    from claimgraph.experiments.substrate.corpus import get_corpus
    from claimgraph.experiments.substrate.load import load_model

    model = load_model("toy:tiny", progress=False)
    tokens = get_corpus("synthetic:tiny").sample(16, seed=5)
    hook, d = "blocks.0.mlp.hook_post", model.d_mlp
    sae = ReluSAE(SaeRecipe(d_sae=2 * d).config(d, 0))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    ce = ce_loss_recovered(model, sae, tokens, hook, batch_size=5)
    assert ce["ce_sae"] == pytest.approx(ce["ce_clean"], abs=1e-5)
    assert ce["ce_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert ce["ce_zero"] > ce["ce_clean"] + 0.1
    with torch.no_grad():
        for p in sae.parameters():
            p.zero_()
    ce0 = ce_loss_recovered(model, sae, tokens, hook, batch_size=5)
    assert ce0["ce_sae"] == pytest.approx(ce0["ce_zero"], abs=1e-5)
    assert ce0["ce_recovered"] == pytest.approx(0.0, abs=1e-4)


def test_unknown_hook_on_model_is_refused(tmp_path):
    from claimgraph.experiments.context import RunContext
    from claimgraph.graph.errors import InvalidInput

    ctx = RunContext(tmp_path, device="cpu", model_ref="toy:tiny", data_ref="synthetic:tiny", progress=False)
    with pytest.raises(InvalidInput, match="no hook"):
        SaeJob().run(ctx, SaeParams(**{**SMALL, "sae.hook": "blocks.7.mlp.hook_post"}), 0)
    ctx.close()
