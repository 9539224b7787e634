"""Which code a run depends on, read from the source with `ast`: the imports of claimgraph's modules, and the
code version of each job kind.

A kind's code version is the hash of every module of `claimgraph.experiments` that its runs can execute: the
kind's own package (every file in it: the job contract loads its run.py by name), the modules those import, transitively, and the worker that runs every
job with what the worker imports. An import counts wherever it is written (at module level, inside a
function, under `if TYPE_CHECKING:`), and importing `a.b.c` counts `a.b` and `a` too, since Python runs their
`__init__` first. Counting too much only makes a cached run recompute; counting too little would serve a
result the current code did not compute. So editing one kind changes that kind's version alone, editing a
library (sae/, substrate/, features/) changes the versions of the kinds that import it, and editing the worker
or what it imports (context, records, spec, the job contract) changes them all. The runner, the API and the
CLI decide nothing a run computes, and are not part of any version.

The same scanner serves tests/test_layering.py, which checks that imports point one way.
"""
from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PACKAGE = "claimgraph.experiments"
PACKAGE_ROOT = Path(__file__).resolve().parent
WORKER = f"{PACKAGE}.worker"


@dataclass(frozen=True)
class Import:
    """One imported module as written in a source file."""

    src: str  # the importing module
    dst: str  # the imported module, e.g. "torch.nn" or "claimgraph.experiments.sae.train"
    lineno: int
    lazy: bool  # inside a function: runs when the function is called, not when the module is imported
    type_only: bool  # under `if TYPE_CHECKING:`: never runs


def module_files(packages: Mapping[str, Path]) -> dict[str, Path]:
    """Module name -> source file for every .py file below each package folder (`{"claimgraph.graph": .../graph}`);
    a package's `__init__.py` is named by the package."""
    out: dict[str, Path] = {}
    for name, root in packages.items():
        for path in sorted(Path(root).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((name, *parts))] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


_PARSED: dict[tuple[str, int, int], ast.Module] = {}  # (path, size, mtime_ns) -> tree: kinds share most modules


def _parse(path: Path) -> ast.Module:
    """The file's syntax tree, parsed once per process while the file is unchanged (every kind's code version
    reads the worker's and the libraries' modules: parsing them once makes `list`'s staleness check cheap)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    tree = _PARSED.get(key)
    if tree is None:
        tree = _PARSED[key] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return tree


_IMPORTS: dict[tuple[str, str, int, int, frozenset[str]], list[Import]] = {}


def imports_of(module: str, path: Path, known: Iterable[str] = ()) -> list[Import]:
    """Every import statement in `path` (the source of `module`), resolved to module names. `from X import a`
    names X.a when X.a is one of the `known` modules, else X; relative imports are resolved against `module`.
    Kept per process while the file is unchanged."""
    known = frozenset(known)
    st = path.stat()
    key = (module, str(path), st.st_size, st.st_mtime_ns, known)
    if key not in _IMPORTS:
        _IMPORTS[key] = _read_imports(module, path, known)
    return list(_IMPORTS[key])


def _read_imports(module: str, path: Path, known: frozenset[str]) -> list[Import]:
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    out: list[Import] = []

    def visit(node: ast.AST, lazy: bool, type_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                visit(stmt, lazy, True)
            for stmt in node.orelse:
                visit(stmt, lazy, type_only)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append(Import(module, alias.name, node.lineno, lazy, type_only))
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                out.append(Import(module, candidate if candidate in known else base, node.lineno, lazy, type_only))
            return
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner, type_only)

    visit(_parse(path), False, False)
    return out


def import_graph(packages: Mapping[str, Path]) -> dict[str, list[Import]]:
    """The imports of every module below the package folders, keyed by importing module."""
    files = module_files(packages)
    return {m: imports_of(m, p, files) for m, p in files.items()}


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(graph: Mapping[str, list[Import]] | Callable[[str], list[Import] | None], start: Iterable[str]) -> set[str]:
    """The modules reachable from `start` through any import, parent packages included. `graph` is an import
    graph, or a function giving one module's imports (None for a module outside it), so only what is reached
    is read."""
    imports = graph if callable(graph) else graph.get
    seen: set[str] = set()
    todo = list(start)
    while todo:
        m = todo.pop()
        for name in (m, *_parents(m)):
            if name not in seen and (found := imports(name)) is not None:
                seen.add(name)
                todo.extend(i.dst for i in found)
    return seen


def _kind_module(kind: str) -> str:
    from .registry import target_of

    return target_of(kind).partition(":")[0]


def _files_signature(files: Mapping[str, Path]) -> str:
    """A digest of every file's name, size, modification and change times and inode: it changes when any file
    of the package is added, removed or written (ctime cannot be set back by hand)."""
    h = hashlib.sha256()
    for m, path in sorted(files.items()):
        st = path.stat()
        h.update(f"{m}\0{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n".encode())
    return h.hexdigest()


_SAVED = "code-versions.json"  # in cache_dir(): {"signature": ..., "versions": {kind: [module, version]}}


@lru_cache(maxsize=64)
def code_version(kind: str, root: Path | None = None) -> str:
    """Hash of the code a run of `kind` can execute (see the module docstring), read from `root` (default: this
    package's folder, PACKAGE_ROOT; tests read an edited copy). Cached per process; for a built-in kind read
    from PACKAGE_ROOT, also in the cache folder while no file of the package changed (`_files_signature`), so a
    command that checks evidence for staleness does not parse the package again (0.2 s a process)."""
    files = module_files({PACKAGE: root or PACKAGE_ROOT})
    module = _kind_module(kind)
    if module in files and root is None:
        from .context import cache_dir, write_json_atomic

        signature = _files_signature(files)
        saved_path: Path | None = None
        try:
            saved_path = cache_dir() / _SAVED  # cache_dir() makes the folder: it may not be writable
            saved = json.loads(saved_path.read_text())
        except (OSError, ValueError):
            saved = {}
        if not isinstance(saved, dict) or saved.get("signature") != signature:
            saved = {"signature": signature, "versions": {}}
        got = saved["versions"].get(kind)
        if isinstance(got, list) and got[:1] == [module] and len(got) == 2:
            return str(got[1])
        version = _compute(kind, module, files)
        saved["versions"][kind] = [module, version]
        try:
            if saved_path is not None:
                write_json_atomic(saved_path, saved)
        except OSError:
            pass  # a read-only cache: computed again next time
        return version
    return _compute(kind, module, files)


@lru_cache(maxsize=16)
def module_version(module: str, root: Path | None = None) -> str:
    """Hash of one module of this package and every module of it that it can import, transitively (the same
    closure as a kind's code version, without the worker), read from `root` (default PACKAGE_ROOT): what a cache
    of that module's results must be keyed by, so that editing any code the result depends on computes it again."""
    files = module_files({PACKAGE: root or PACKAGE_ROOT})
    if module not in files:
        raise ValueError(f"{module} is not a module of {PACKAGE}")
    return _closure_hash(files, {module})


def _closure_hash(files: dict[str, Path], start: set[str]) -> str:
    """Hash of the names and sources of the modules of `files` reachable from `start` through their imports."""
    def imports(m: str) -> list[Import] | None:
        return imports_of(m, files[m], files) if m in files else None

    h = hashlib.sha256()
    for m in sorted(closure(imports, start)):
        h.update(m.encode())
        h.update(files[m].read_bytes())
    return h.hexdigest()[:16]


def _compute(kind: str, module: str, files: dict[str, Path]) -> str:
    if module in files:
        own = {m for m in files if m == module or m.startswith(module + ".")}
    else:  # a kind installed from another package (entry point): its module's files and what they import
        from importlib.util import find_spec

        spec = find_spec(module)
        if spec is None or spec.origin is None:
            raise ValueError(f"job kind {kind!r}: module {module} has no source file")
        origin = Path(spec.origin)
        extra = module_files({module: origin.parent}) if origin.name == "__init__.py" else {module: origin}
        files = {**files, **extra}
        own = set(extra)
    return _closure_hash(files, own | {WORKER})
