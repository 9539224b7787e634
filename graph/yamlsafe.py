"""Safe, bounded YAML: the safe loader only (no Python objects), and a refusal before construction for
documents whose aliases would expand them past a stated size ("billion laughs"), or that nest too deeply.

YAML aliases (`*name`) refer to an anchored node (`&name`) instead of repeating it. Composing keeps them as
shared references, so a few lines can describe a tree of billions of nodes that only blows up when something
walks it (validation, storing, printing). `compose_bounded` counts, on the composed graph and in time linear in
its size, how many aliases the document uses and how many nodes it has once they are expanded, and refuses it
past MAX_ALIASES or MAX_EXPANDED_NODES (docs/limits.md). A node that contains itself through an alias is
refused too: it has no finite expansion.
"""
from __future__ import annotations

from typing import Any

import yaml

from claimgraph.graph.errors import InvalidDocument

MAX_ALIASES = 10_000  # alias uses (*name) in one document
MAX_EXPANDED_NODES = 1_000_000  # nodes once every alias is expanded (a 20 MB document of claims has ~400k)
MAX_DEPTH = 100  # nesting of mappings and sequences, after expansion

_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_expansion(root: yaml.Node, path: str, line_offset: int = 0) -> None:
    """Refuse a composed document whose alias use, expanded size or depth is past the limits."""
    size: dict[int, int] = {}  # id(node) -> nodes in its expansion (itself included)
    depth: dict[int, int] = {}
    seen: set[int] = set()  # nodes reached once already: reaching one again is an alias
    on_path: set[int] = set()  # the current node's ancestors: reaching one of them is a cycle
    aliases = 0
    line = lambda n: n.start_mark.line + 1 + line_offset

    def again(node: yaml.Node) -> None:
        nonlocal aliases
        aliases += 1
        if id(node) in on_path:
            raise InvalidDocument("a YAML alias (*name) refers to a node that contains it, so the document has no "
                                  "finite form", path=path, line=line(node))
        if aliases > MAX_ALIASES:
            raise InvalidDocument(f"uses more than {MAX_ALIASES:,} YAML aliases (*name), past the limit "
                                  "(docs/limits.md)", path=path, line=line(node))

    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order over the node graph, each distinct node expanded once
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in kids)
            depth[key] = 1 + max((depth[id(c)] for c in kids), default=0)
            on_path.discard(key)
            if size[key] > MAX_EXPANDED_NODES:
                raise InvalidDocument(
                    f"expands to more than {MAX_EXPANDED_NODES:,} YAML nodes through its aliases (*name), past "
                    "the limit (docs/limits.md); write the repeated parts out, or split the document",
                    path=path, line=line(node))
            if depth[key] > MAX_DEPTH:
                raise InvalidDocument(f"nests deeper than {MAX_DEPTH} levels (docs/limits.md)", path=path,
                                      line=line(node))
        elif key in seen:
            again(node)
        else:
            seen.add(key)
            on_path.add(key)
            stack.append((node, True))
            for child in reversed(_children(node)):
                if id(child) in seen:
                    again(child)
                else:
                    stack.append((child, False))


def data_depth(data: Any) -> int:
    """How deeply lists and dicts nest in loaded data (iterative, so any depth is safe to measure)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, dict):
            x = list(x.values())
        if isinstance(x, list):
            deepest = max(deepest, d)
            stack.extend((c, d + 1) for c in x)
    return deepest


def yaml_error(e: yaml.YAMLError, path: str, what: str = "is not valid YAML", line_offset: int = 0) -> InvalidDocument:
    """An InvalidDocument for a YAML parse error, with its line."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        problem = (e.problem or e.context or "").strip()
        if isinstance(e, yaml.constructor.ConstructorError) and "tag" in problem:
            problem += " (only plain YAML is read: no Python objects or custom tags)"
        return InvalidDocument(f"{what}: {problem}", path=path,
                               line=mark.line + 1 + line_offset if mark else None)
    return InvalidDocument(f"{what}: {e}", path=path)


def compose_bounded(text: str, path: str, *, what: str = "is not valid YAML",
                    line_offset: int = 0) -> tuple[yaml.Node | None, Any]:
    """One safe YAML parse giving the node tree (for line numbers) and the data, within the limits above."""
    loader = _SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
            if root is None:
                return None, None
            check_expansion(root, path, line_offset)
            return root, loader.construct_document(root)
        except yaml.YAMLError as e:
            raise yaml_error(e, path, what, line_offset) from None
        except RecursionError:
            raise InvalidDocument(f"nests deeper than {MAX_DEPTH} levels (docs/limits.md)", path=path) from None
    finally:
        loader.dispose()
