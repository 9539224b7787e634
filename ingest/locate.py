"""Line numbers for locations inside YAML and JSON documents.

A location is a path of keys and list indices, as pydantic reports errors: ("papers", 0, "claims", 1, "title").
`line_of(loc)` gives the line of the deepest part of that path present in the file: the key's line for a
mapping member (so a missing field points at its parent's first key), the item's line for a list element.
"""
from __future__ import annotations

import bisect
import json
import re
from typing import Any

import yaml

Loc = tuple[Any, ...]


class YamlLines:
    """Locations in a composed YAML node tree (marks are 0-based; lines returned are 1-based)."""

    def __init__(self, root: yaml.Node | None):
        self.root = root

    def line_of(self, loc: Loc) -> int | None:
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                        line, node = k.start_mark.line + 1, v
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line

    def duplicate_key(self) -> tuple[str, int] | None:
        """The first mapping key that appears twice in one mapping (YAML would silently keep the last)."""
        stack = [self.root] if self.root is not None else []
        seen_nodes: set[int] = set()
        while stack:
            node = stack.pop()
            if id(node) in seen_nodes:
                continue
            seen_nodes.add(id(node))
            if isinstance(node, yaml.MappingNode):
                keys: set[str] = set()
                for k, v in node.value:
                    if isinstance(k, yaml.ScalarNode):
                        if k.value in keys:
                            return k.value, k.start_mark.line + 1
                        keys.add(k.value)
                    stack.append(v)
            elif isinstance(node, yaml.SequenceNode):
                stack.extend(node.value)
        return None


class JsonLines:
    """Locations in a JSON text: a small scanner that records where each key and list item starts.

    Only called on text that json.loads accepted, so it never has to report syntax errors itself.
    """

    _WS = re.compile(r"[ \t\r\n]*")

    def __init__(self, text: str):
        self.text = text
        self._newlines = [m.start() for m in re.finditer("\n", text)]
        self._decoder = json.JSONDecoder()
        self.lines: dict[Loc, int] = {}
        self.repeated: dict[str, tuple[int, int]] = {}  # first key seen twice in one object -> (first, second line)
        try:
            self._value(self._ws(0), ())
        except (ValueError, IndexError, RecursionError):
            pass  # best effort: a location not found falls back to its parent's line

    def _line(self, i: int) -> int:
        return bisect.bisect_right(self._newlines, i - 1) + 1

    def _ws(self, i: int) -> int:
        m = self._WS.match(self.text, i)
        assert m is not None  # the pattern matches the empty string
        return m.end()

    def _value(self, i: int, path: Loc) -> int:
        c = self.text[i]
        self.lines.setdefault(path, self._line(i))
        if c == "{":
            i = self._ws(i + 1)
            if self.text[i] == "}":
                return i + 1
            while True:
                key_at = i
                key, i = json.decoder.scanstring(self.text, i + 1)  # type: ignore[attr-defined]
                if path + (key,) in self.lines and key not in self.repeated:
                    self.repeated[key] = (self.lines[path + (key,)], self._line(key_at))
                self.lines[path + (key,)] = self._line(key_at)
                i = self._ws(self._ws(i) + 1)  # past ':'
                i = self._ws(self._value(i, path + (key,)))
                if self.text[i] == ",":
                    i = self._ws(i + 1)
                    continue
                return i + 1  # '}'
        if c == "[":
            i = self._ws(i + 1)
            if self.text[i] == "]":
                return i + 1
            k = 0
            while True:
                i = self._ws(self._value(i, path + (k,)))
                k += 1
                if self.text[i] == ",":
                    i = self._ws(i + 1)
                    continue
                return i + 1  # ']'
        _, end = self._decoder.raw_decode(self.text, i)
        return end

    def line_of(self, loc: Loc) -> int | None:
        for n in range(len(loc), -1, -1):
            if tuple(loc[:n]) in self.lines:
                return self.lines[tuple(loc[:n])]
        return None
