"""Per-kind code versions: a run's config hash covers the code of its own kind and of what that kind imports, so
editing one kind recomputes that kind's runs only, while cached runs of the others stay valid. The edits are made
to a copy of the experiments package (the installed one is never touched)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from claimgraph.experiments import codeversion
from claimgraph.experiments.codeversion import PACKAGE_ROOT, code_version
from claimgraph.experiments.registry import BUILTIN

FEATURE_KINDS = {"logit_weights", "ablation", "pinned_sampling"}


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "experiments"
    shutil.copytree(PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


def _edit(root: Path, rel: str) -> None:
    path = root / rel
    path.write_text(path.read_text() + "\n# edited\n")
    code_version.cache_clear()


def _versions(root: Path) -> dict[str, str]:
    return {k: code_version(k, root) for k in BUILTIN}


@pytest.fixture
def tree(tmp_path):
    code_version.cache_clear()
    yield _copy(tmp_path)
    code_version.cache_clear()


def test_a_copy_has_the_same_versions_and_they_differ_between_kinds(tree):
    assert _versions(tree) == {k: code_version(k) for k in BUILTIN}
    assert len(set(_versions(tree).values())) == len(BUILTIN)


@pytest.mark.parametrize("edited, changed", [
    ("kinds/leading_terms/run.py", {"leading_terms"}),
    ("kinds/gradient_decomposition/majority.py", {"gradient_decomposition"}),
    ("kinds/emergence/plots.py", {"emergence"}),          # every file of the kind's package counts
    ("kinds/sae/__init__.py", {"sae"}),
    ("features/target.py", FEATURE_KINDS),                # a library: the kinds that import it
    ("features/select.py", FEATURE_KINDS | {"emergence"}),
    ("sae/train.py", FEATURE_KINDS | {"emergence", "sae"}),
    ("worker.py", set(BUILTIN)),                          # what runs every job: all of them
    ("spec.py", set(BUILTIN)),
    ("runner.py", set()),                                 # bookkeeping outside the run: none
    ("api.py", set()),
])
def test_an_edit_changes_the_versions_of_the_kinds_that_run_it(tree, edited, changed):
    before = _versions(tree)
    _edit(tree, edited)
    after = _versions(tree)
    assert {k for k in BUILTIN if after[k] != before[k]} == changed


@pytest.mark.parametrize("edited, changes", [
    ("features/target.py", True), ("features/select.py", True), ("sae/topk.py", True),  # it or what it imports
    ("substrate/corpus.py", True), ("spec.py", True),
    ("kinds/ablation/run.py", False), ("runner.py", False), ("worker.py", False),       # what it does not
])
def test_a_module_version_covers_what_the_module_imports(tree, edited, changes):
    # the key of the latent-score cache (features.target): an edit to any code the scores depend on recomputes
    module = f"{codeversion.PACKAGE}.features.target"
    before = codeversion.module_version(module, tree)
    assert before == codeversion.module_version(module)  # the copy reads as the installed package
    _edit(tree, edited)
    codeversion.module_version.cache_clear()
    assert (codeversion.module_version(module, tree) != before) is changes


def test_editing_one_kind_keeps_another_kinds_cached_run(tmp_path, tree, monkeypatch):
    """A real leading_terms run, then the same experiment against edited copies of the code: served from the
    cache when another kind changed, recomputed (a new config hash, nothing to reuse) when its own did."""
    from claimgraph.experiments.api import add_experiment
    from claimgraph.experiments.runner import _reuse, prepare_run, run_experiment
    from claimgraph.graph import Node, NodeType, Store

    # the full-batch run stays on: it is what leading_terms' verdict metric measures
    small = {"n_train": 64, "n_eval": 16, "seq_len": 8, "steps": 20, "n_checkpoints": 4, "toy_check": False}
    with Store(tmp_path / "g.duckdb") as store:
        store.add_node(Node(id="claim:leading-terms", type=NodeType.claim, title="Early weights follow leading terms"))
        exp = add_experiment(store, ["claim:leading-terms"], "leading_terms", params=small, seeds=[0],
                             data="builtin:default")
        first = run_experiment(store, exp.id, device="cpu", progress=False)
        assert first.status == "completed" and not first.cached, first
        first_hash = store.runs(run_id=first.run_id)[0]["config_hash"]

        monkeypatch.setattr(codeversion, "PACKAGE_ROOT", tree)
        code_version.cache_clear()
        _edit(tree, "kinds/gradient_decomposition/run.py")
        _edit(tree, "features/target.py")
        served = run_experiment(store, exp.id, device="cpu", progress=False)
        assert served.cached and served.run_id == first.run_id

        _edit(tree, "kinds/leading_terms/terms.py")
        cfg, run_dir = prepare_run(store, exp.id, device="cpu")
        assert cfg.config_hash != first_hash
        assert _reuse(store, cfg, run_dir) is None


def test_versions_saved_in_the_cache_folder_are_used_until_a_file_of_the_package_changes(tree, tmp_path,
                                                                                         monkeypatch):
    """The installed package's versions are kept in the cache folder: a new process (here: the per-process cache
    cleared) reads them back without parsing, and any edit, addition or removal of a file computes them again."""
    monkeypatch.setattr(codeversion, "PACKAGE_ROOT", tree)
    monkeypatch.setenv("CLAIMGRAPH_CACHE", str(tmp_path / "cache"))
    computed: list[str] = []
    real = codeversion._compute
    monkeypatch.setattr(codeversion, "_compute", lambda kind, *a: computed.append(kind) or real(kind, *a))
    first = {k: code_version(k) for k in ("sae", "ablation")}
    assert computed == ["sae", "ablation"] and (tmp_path / "cache" / codeversion._SAVED).exists()
    code_version.cache_clear()
    assert {k: code_version(k) for k in ("sae", "ablation")} == first and computed == ["sae", "ablation"]

    _edit(tree, "kinds/sae/plots.py")                       # an edit of sae's own code
    assert code_version("sae") != first["sae"] and code_version("ablation") == first["ablation"]
    assert computed[2:] == ["sae", "ablation"]
    code_version.cache_clear()
    (tree / "features" / "new_module.py").write_text("X = 1\n")  # a new file: computed again (and unchanged)
    assert code_version("ablation") == first["ablation"] and computed[4:] == ["ablation"]
    assert code_version("sae", tree) == code_version("sae")  # an explicit root is never read from the cache folder
    assert computed[5:] == ["sae", "sae"]
