"""Layout of a node's neighbourhood for the server-rendered SVG view: the node in the middle, the nodes one hop
away on a ring ordered by type, those two hops away on an outer ring next to the neighbour they were reached
through. Only numbers and the hops' own fields come out; the template draws (and escapes) them."""
from __future__ import annotations

import math
from typing import Any

from claimgraph.graph.models import NodeType

MAX_RING = 48  # nodes drawn on a ring; the rest are counted, not drawn


def _short(title: str, n: int = 30) -> str:
    return title if len(title) <= n else title[: n - 1].rstrip() + "…"


def layout(hops: list[Any], *, size: int = 760) -> dict[str, Any]:
    """Positions for `queries.neighborhood` hops (depth 0 first): {"width", "height", "nodes", "edges",
    "hidden"}; each node has id, type, title, label, depth, x, y (and a label anchor); each edge its ends, type, direction."""
    type_order = {t: i for i, t in enumerate(NodeType)}
    centre = size / 2
    two = any(h.depth == 2 for h in hops)
    rings = {1: size * (0.25 if two else 0.36), 2: size * 0.43}
    pos: dict[str, tuple[float, float, float]] = {}  # id -> (x, y, angle)
    nodes, edges, hidden = [], [], 0
    start = next(h for h in hops if h.depth == 0)
    pos[start.id] = (centre, centre, 0.0)
    nodes.append({"id": start.id, "type": start.type.value, "title": start.title, "label": _short(start.title, 40),
                  "depth": 0, "x": centre, "y": centre})
    for depth in (1, 2):
        ring = [h for h in hops if h.depth == depth and h.via in pos]
        if depth == 1:
            ring.sort(key=lambda h: (type_order[h.type], h.title.casefold(), h.id))
        else:  # beside the neighbour each was reached through
            ring.sort(key=lambda h: (pos[h.via][2], type_order[h.type], h.title.casefold(), h.id))
        hidden += max(0, len(ring) - MAX_RING)
        ring = ring[:MAX_RING]
        for i, h in enumerate(ring):
            angle = -math.pi / 2 + 2 * math.pi * i / max(1, len(ring))
            if depth == 2:
                angle += math.pi / max(1, len(ring))  # half a slot off, so outer labels sit between inner ones
            x, y = centre + rings[depth] * math.cos(angle), centre + rings[depth] * math.sin(angle)
            pos[h.id] = (x, y, angle)
            nodes.append({"id": h.id, "type": h.type.value, "title": h.title, "label": _short(h.title),
                          "depth": depth, "x": round(x, 1), "y": round(y, 1),
                          "anchor": "start" if math.cos(angle) > 0.2 else "end" if math.cos(angle) < -0.2 else "middle"})
            vx, vy, _ = pos[h.via]
            src, dst = (h.via, h.id) if h.direction == "out" else (h.id, h.via)
            edges.append({"src": src, "dst": dst, "type": h.edge.value if h.edge else "", "x1": round(vx, 1),
                          "y1": round(vy, 1), "x2": round(x, 1), "y2": round(y, 1), "depth": depth})
    return {"width": size, "height": size, "nodes": nodes, "edges": edges, "hidden": hidden,
            "legend": [t.value for t in NodeType if any(n["type"] == t.value for n in nodes)]}
