"""Where the main job's time went: every run under a store's run folders, with when it started and ended.

    python bench/main_timeline.py out/claimgraph.duckdb.d/runs [--json]

Reads each run folder's status.json (start and end times) and config.json (experiment, kind, model), prints the
runs in the order they started with their offsets from the first start, then one line per model group (the
groups `run --all` schedules), then the time both worker slots were busy. Needs nothing but the run folders, so
it also reads a finished job's folders copied from another machine.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def read_runs(root: Path) -> list[dict]:
    runs = []
    for status in sorted(root.glob("*/*/status.json")):
        folder = status.parent
        try:
            state = json.loads(status.read_text())
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError) as e:
            print(f"skipping {folder}: {e}", file=sys.stderr)
            continue
        start, end = _time(state.get("started_at")), _time(state.get("ended_at"))
        if start is None or end is None:
            continue
        result = folder / "result.json"
        reused = bool(json.loads(result.read_text()).get("reused_from")) if result.exists() else False
        spec = config["spec"]
        runs.append({"experiment": config["experiment_id"], "kind": spec["kind"],
                     "model": spec.get("model") or "(kind's own)",
                     "seeds": len(spec.get("seeds") or []), "status": state["status"], "reused": reused,
                     "start": start, "end": end})
    return runs


def busy_both(runs: list[dict]) -> float:
    """Seconds during which at least two runs were computing at once."""
    events = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs], key=lambda e: (e[0], e[1]))
    busy, active, last = 0.0, 0, None
    for t, step in events:
        if active >= 2 and last is not None:
            busy += (t - last).total_seconds()
        active += step
        last = t
    return busy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, help="the store's runs folder (<store>.d/runs)")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the tables")
    a = ap.parse_args()
    runs = read_runs(a.runs)
    if not runs:
        sys.exit(f"no finished runs under {a.runs}")
    t0 = min(r["start"] for r in runs)
    for r in runs:
        r["from_s"] = round((r["start"] - t0).total_seconds(), 1)
        r["to_s"] = round((r["end"] - t0).total_seconds(), 1)
        r["wall_s"] = round(r["to_s"] - r["from_s"], 1)
    runs.sort(key=lambda r: r["from_s"])
    groups: dict[str, dict] = {}
    for r in runs:
        g = groups.setdefault(r["model"], {"model": r["model"], "runs": 0, "from_s": r["from_s"], "to_s": r["to_s"],
                                           "wall_s": 0.0})
        g["runs"] += 1
        g["from_s"], g["to_s"] = min(g["from_s"], r["from_s"]), max(g["to_s"], r["to_s"])
        g["wall_s"] = round(g["wall_s"] + r["wall_s"], 1)
    span = max(r["to_s"] for r in runs)
    both = round(busy_both(runs), 1)
    if a.json:
        rows = [{k: v for k, v in r.items() if k not in ("start", "end")} for r in runs]
        print(json.dumps({"span_s": span, "two_busy_s": both, "groups": list(groups.values()), "runs": rows},
                         indent=2))
        return
    print(f"{'from s':>8} {'to s':>8} {'wall s':>8}  {'kind':<18} {'model':<18} experiment")
    for r in runs:
        note = "" if r["status"] == "completed" else f"  [{r['status']}]"
        note += "  (reused)" if r["reused"] else ""
        print(f"{r['from_s']:8.1f} {r['to_s']:8.1f} {r['wall_s']:8.1f}  {r['kind']:<18} {r['model']:<18} "
              f"{r['experiment']}{note}")
    print(f"\n{'group (model)':<22} {'runs':>4} {'from s':>8} {'to s':>8} {'sum of walls s':>15}")
    for g in sorted(groups.values(), key=lambda g: g["from_s"]):
        print(f"{g['model']:<22} {g['runs']:4d} {g['from_s']:8.1f} {g['to_s']:8.1f} {g['wall_s']:15.1f}")
    print(f"\nfirst start to last end: {span:.1f} s; two runs computing at once for {both:.1f} s "
          f"({both / span:.0%})")


if __name__ == "__main__":
    main()
