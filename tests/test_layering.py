"""The import graph, read from the source with ast (claimgraph.experiments.codeversion), points one way:

- packages: cli and the web UI (two shells; `claimgraph serve` starts the web UI, which renders with the CLI's
  page helpers) -> ingest, experiments -> graph; graph imports none of them, ingest and experiments not each
  other nor a shell, and nothing above graph/ imports duckdb;
- graph/ imports neither torch nor sentence_transformers when a module is imported (lazily inside functions is
  how the embedder is loaded by the commands that need it);
- inside experiments: kinds -> libraries -> core, never back. The core is the top-level modules (job contract,
  spec, registry, runner, worker, records, context, api, codeversion); the libraries are substrate < sae <
  features < pages, each importing only those before it; a kind imports the core, the libraries and its own
  package, never another kind;
- no import cycles when modules are imported (imports at module level); an import inside a function may close a
  cycle only within one unit (a top-level package, or inside experiments one library, one kind or the core), so
  a cycle between two folders, even through a lazy import, fails. A kind's `__init__` never imports its `run.py`:
  the job contract loads it by name, which keeps the `__init__` torch-free;
- a kind's `__init__` imports no torch when imported, and a fresh process that registers every kind's spec never
  loads torch.

Each rule is also run on small planted packages that break it, so a checker that finds nothing is caught.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from claimgraph.experiments.codeversion import Import, import_graph

REPO = Path(__file__).resolve().parents[1]
TOP = ("graph", "ingest", "experiments", "cli", "web")
# which claimgraph packages each one may import (itself always)
MAY_IMPORT = {"graph": set(), "ingest": {"graph"}, "experiments": {"graph"},
              "cli": {"graph", "ingest", "experiments", "web"}, "web": {"graph", "ingest", "experiments", "cli"}}
LIBRARIES = ("substrate", "sae", "features", "pages")  # in layer order: each may import those before it
HEAVY = ("torch", "sentence_transformers", "transformers")


def packages(root: Path = REPO) -> dict[str, Path]:
    return {f"claimgraph.{p}": root / p for p in TOP if (root / p / "__init__.py").is_file()}


@pytest.fixture(scope="module")
def graph() -> dict[str, list[Import]]:
    return import_graph(packages())


def top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "claimgraph" and len(parts) > 1 else None


def unit(module: str) -> tuple[str, str] | None:
    """('core', name), ('library', name) or ('kind', name) for a module of claimgraph.experiments."""
    parts = module.split(".")
    if parts[:2] != ["claimgraph", "experiments"]:
        return None
    if len(parts) == 2:
        return ("core", "__init__")
    if parts[2] == "kinds":
        return ("kind", parts[3]) if len(parts) > 3 else ("kinds", "")
    if parts[2] in LIBRARIES:
        return ("library", parts[2])
    return ("core", parts[2])


# ---------------------------------------------------------------------------------------------- checkers

def package_violations(g: Mapping[str, list[Import]]) -> list[str]:
    out = []
    for src, imports in g.items():
        for i in imports:
            a, b = top(src), top(i.dst)
            if a in MAY_IMPORT and b is not None and b != a and b not in MAY_IMPORT[a]:
                out.append(f"{src}:{i.lineno} imports {i.dst} ({a} may import {sorted(MAY_IMPORT[a]) or 'nothing'})")
            if i.dst.split(".")[0] == "duckdb" and a != "graph":
                out.append(f"{src}:{i.lineno} imports duckdb; only graph/ talks to the database")
    return out


def module_level(g: Mapping[str, list[Import]], start: str) -> dict[str, list[str]]:
    """External modules imported when `start` is imported (module-level imports, followed through claimgraph
    modules and their parent packages), with the chain that reaches each."""
    found: dict[str, list[str]] = {}
    seen: set[str] = set()
    todo: list[tuple[str, list[str]]] = [(start, [start])]
    while todo:
        m, chain = todo.pop()
        parts = m.split(".")
        for name in [".".join(parts[:k]) for k in range(1, len(parts) + 1)]:
            if name in seen or name not in g:
                continue
            seen.add(name)
            for i in g[name]:
                if i.lazy or i.type_only:
                    continue
                if i.dst in g or top(i.dst):
                    todo.append((i.dst, [*chain, f"{i.dst} ({name}:{i.lineno})"]))
                else:
                    found.setdefault(i.dst.split(".")[0], [*chain, f"{i.dst} ({name}:{i.lineno})"])
    return found


def heavy_at_import(g: Mapping[str, list[Import]], modules: list[str]) -> list[str]:
    out = []
    for m in modules:
        for ext, chain in module_level(g, m).items():
            if ext in HEAVY:
                out.append(f"importing {m} imports {ext}: " + " -> ".join(chain))
    return out


def experiments_violations(g: Mapping[str, list[Import]]) -> list[str]:
    out = []
    for src, imports in g.items():
        u = unit(src)
        if u is None:
            continue
        for i in imports:
            v = unit(i.dst)
            if v is None or v == u:
                continue
            where = f"{src}:{i.lineno} imports {i.dst}"
            if u[0] == "core" and v[0] != "core":
                out.append(f"{where}: the core imports no library or kind")
            elif u[0] == "library" and v[0] == "library" and LIBRARIES.index(v[1]) > LIBRARIES.index(u[1]):
                out.append(f"{where}: library {u[1]} may import only {list(LIBRARIES[:LIBRARIES.index(u[1])])}")
            elif u[0] == "library" and v[0] in ("kind", "kinds"):
                out.append(f"{where}: a library imports no kind")
            elif u[0] == "kind" and v[0] == "kind":
                out.append(f"{where}: a kind imports no other kind")
    return out


def where(module: str) -> str:
    """The unit a module belongs to: inside experiments its core, library or kind; else its top-level package."""
    u = unit(module)
    return f"experiments:{u[0]}:{u[1]}" if u is not None else (top(module) or module)


def cycles(g: Mapping[str, list[Import]], *, lazy: bool = False) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself), over the imports
    that run when a module is imported, or with `lazy` over every import that runs, functions' included."""
    edges = {m: sorted({i.dst for i in imports if i.dst in g and not i.type_only and (lazy or not i.lazy)})
             for m, imports in g.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan, iterative over each node's edges
        work = [(v, iter(edges[v]))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1 or node in edges[node]:
                        out.append(sorted(comp))
            elif nxt not in index:
                index[nxt] = low[nxt] = counter[0]
                counter[0] += 1
                stack.append(nxt)
                on.add(nxt)
                work.append((nxt, iter(edges[nxt])))
            elif nxt in on:
                low[node] = min(low[node], index[nxt])

    for v in edges:
        if v not in index:
            strong(v)
    return out


def unresolved(g: Mapping[str, list[Import]]) -> list[str]:
    """claimgraph imports (lazy ones included) naming a module that does not exist: after a move, a lazy import
    left at the old path fails only when its function is called, so it is checked here from the source."""
    return [f"{src}:{i.lineno} imports {i.dst}, which is no module of the tree" for src, imports in g.items()
            for i in imports if top(i.dst) in TOP and i.dst not in g]


def kind_inits(g: Mapping[str, list[Import]]) -> list[str]:
    return sorted(m for m in g if (u := unit(m)) is not None and u[0] == "kind" and m.count(".") == 3)


# ---------------------------------------------------------------------------------------------- the tree

def test_packages_point_one_way(graph):
    assert not package_violations(graph), "\n".join(package_violations(graph))


def test_graph_imports_no_torch_or_embedder_at_import(graph):
    bad = heavy_at_import(graph, [m for m in graph if top(m) == "graph"])
    assert not bad, "\n".join(bad)


def test_experiments_layers(graph):
    assert not experiments_violations(graph), "\n".join(experiments_violations(graph))


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_lazy_import_cycles_stay_inside_one_unit(graph):
    found = [c for c in cycles(graph, lazy=True) if len({where(m) for m in c}) > 1]
    assert not found, "cycles across folders:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_every_claimgraph_import_names_a_module(graph):
    assert not unresolved(graph), "\n".join(unresolved(graph))


def test_kind_inits_are_torch_free(graph):
    inits = kind_inits(graph)
    assert len(inits) >= 7, inits
    bad = heavy_at_import(graph, inits)
    assert not bad, "\n".join(bad)


def test_every_kind_folder_is_a_registered_kind(graph):
    from claimgraph.experiments.registry import BUILTIN, get_job

    folders = {m.rsplit(".", 1)[1] for m in kind_inits(graph)}
    assert folders == set(BUILTIN), (folders, set(BUILTIN))
    for kind, target in BUILTIN.items():
        assert target.startswith(f"claimgraph.experiments.kinds.{kind}:"), target
        assert get_job(kind).kind == kind


def test_registering_every_kind_does_not_load_torch():
    """What `experiment add` does for each kind (its Params, a full spec), in a fresh process."""
    code = ("import sys\nfrom claimgraph.experiments.api import build_spec\n"
            "from claimgraph.experiments.registry import kinds\n"
            "for k in kinds():\n    build_spec(k)\n"
            "heavy = sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules)\n"
            "assert not heavy, heavy\nprint(len(kinds()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 7


# ---------------------------------------------------------------------------------------------- planted

def _planted(tmp_path: Path, files: dict[str, str]) -> dict[str, list[Import]]:
    """A fake claimgraph tree (graph/, experiments/, ...) with these files, and its import graph."""
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for pkg in TOP:
        for d in [tmp_path / pkg, *(p for p in (tmp_path / pkg).rglob("*") if p.is_dir())]:
            if d.is_dir() and not (d / "__init__.py").exists():
                (d / "__init__.py").write_text("")
    return import_graph(packages(tmp_path))


def test_checkers_find_planted_violations(tmp_path):
    g = _planted(tmp_path, {
        "graph/store.py": "import duckdb\nfrom claimgraph.experiments import runner\n",
        "graph/embed.py": "from sentence_transformers import SentenceTransformer\n",
        "graph/lazy.py": "def load():\n    import torch\n",
        "ingest/parse.py": "import duckdb\n",
        "experiments/runner.py": "from .features import select\n",
        "experiments/features/select.py": "from claimgraph.experiments.pages import page\n",
        "experiments/pages/page.py": "def back():\n    from claimgraph.experiments.features import select\n",
        "experiments/sae/train.py": "from claimgraph.experiments.kinds.ablation import run\n",
        "experiments/kinds/ablation/__init__.py": "import torch\n\ndef run():\n    from .run import go\n",
        "experiments/kinds/ablation/run.py": "from claimgraph.experiments.kinds.sae import SaeParams\nfrom . import X\n",
        "experiments/kinds/sae/__init__.py": "from .params import SaeParams\n",
        "experiments/kinds/sae/params.py": "from claimgraph.experiments.kinds.sae import other, SaeParams\n",
        "experiments/kinds/sae/other.py": "",
        "web/runs.py": "def page():\n    from claimgraph.experiments.features.pages import feature_page\n",
    })
    assert unresolved(g) == ["claimgraph.web.runs:2 imports claimgraph.experiments.features.pages, which is no "
                             "module of the tree"], unresolved(g)
    pkg = "\n".join(package_violations(g))
    assert "graph.store:2 imports claimgraph.experiments.runner" in pkg
    assert "ingest.parse:1 imports duckdb" in pkg and "graph.store:1" not in pkg
    heavy = "\n".join(heavy_at_import(g, [m for m in g if top(m) == "graph"]))
    assert "graph.embed imports sentence_transformers" in heavy and "graph.lazy" not in heavy
    exp = "\n".join(experiments_violations(g))
    assert "experiments.runner:1 imports claimgraph.experiments.features.select: the core" in exp
    assert "features.select:1 imports claimgraph.experiments.pages.page: library features" in exp
    assert "sae.train:1 imports claimgraph.experiments.kinds.ablation" in exp and "a library imports no kind" in exp
    assert "a kind imports no other kind" in exp
    found = cycles(g)
    assert ["claimgraph.experiments.kinds.sae", "claimgraph.experiments.kinds.sae.params"] in found
    assert not any("kinds.ablation" in m for c in found for m in c), "a lazy import does not run at import time"
    lazy = cycles(g, lazy=True)
    assert ["claimgraph.experiments.kinds.ablation", "claimgraph.experiments.kinds.ablation.run"] in lazy
    across = [c for c in lazy if len({where(m) for m in c}) > 1]
    assert across == [["claimgraph.experiments.features.select", "claimgraph.experiments.pages.page"]], across
    assert "kinds.ablation imports torch" in "\n".join(heavy_at_import(g, kind_inits(g)))


def test_imports_are_resolved_with_their_context(tmp_path):
    g = _planted(tmp_path, {
        "experiments/a/b.py": textwrap.dedent("""
            from typing import TYPE_CHECKING
            from . import c
            from .. import spec
            from ..spec import Criterion
            if TYPE_CHECKING:
                import torch
            else:
                import json
            def f():
                from claimgraph.experiments.a import c as again
            class K:
                import numpy
        """),
        "experiments/a/c.py": "",
        "experiments/spec.py": "",
    })
    got = {(i.dst, i.lazy, i.type_only) for i in g["claimgraph.experiments.a.b"]}
    assert got == {("typing", False, False), ("claimgraph.experiments.a.c", False, False),
                   ("claimgraph.experiments.spec", False, False), ("torch", False, True), ("json", False, False),
                   ("claimgraph.experiments.a.c", True, False), ("numpy", False, False)}, got
