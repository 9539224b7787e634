"""Write the JSON Schemas that the pydantic models give to docs/schema/ (`python scripts/schema_docs.py`).
tests/test_docs.py fails when a committed schema differs from what the models give."""
from __future__ import annotations

import json
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "schema"


def schemas() -> dict[str, dict]:
    from claimgraph.experiments.spec import JobSpec
    from claimgraph.graph import models

    out = {
        "node": models.Node.model_json_schema(),
        "edge": models.Edge.model_json_schema(),
        "stated-similarity": models.StatedSimilarity.model_json_schema(),
        "paper-attrs": models.PaperAttrs.model_json_schema(),
        "claim-attrs": models.ClaimAttrs.model_json_schema(),
        "evidence-attrs": models.EvidenceAttrs.model_json_schema(),
        "job-spec": JobSpec.model_json_schema(),
    }
    try:
        from claimgraph.ingest.structured import schema as document_schema
    except ImportError:
        pass
    else:
        out["document"] = document_schema()
    return out


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    DOCS.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas().items():
        (DOCS / f"{name}.schema.json").write_text(render(schema))
        print(f"wrote docs/schema/{name}.schema.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
