"""The documentation stays true: committed JSON Schemas equal what the models give, and the README's CLI tour
covers every command."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from typer.main import get_command

from claimgraph.cli.main import app

REPO = Path(__file__).resolve().parents[1]


def _schema_docs():
    spec = importlib.util.spec_from_file_location("schema_docs", REPO / "scripts" / "schema_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_schemas_match_the_models():
    mod = _schema_docs()
    for name, schema in mod.schemas().items():
        path = REPO / "docs" / "schema" / f"{name}.schema.json"
        assert path.is_file(), f"{path} missing: run python scripts/schema_docs.py"
        assert path.read_text() == mod.render(schema), f"{path} is stale: run python scripts/schema_docs.py"


def test_readme_tours_every_command():
    readme = (REPO / "README.md").read_text()
    root = get_command(app)
    names = []
    for name, cmd in root.commands.items():
        names += [f"{name} {sub}" for sub in cmd.commands] if hasattr(cmd, "commands") else [name]
    missing = [n for n in names if not re.search(rf"claimgraph (--\S+ )*{re.escape(n)}\b", readme)]
    assert not missing, f"README's CLI tour does not show: {missing}"


def test_readme_setup_commands_exist():
    readme = (REPO / "README.md").read_text()
    for script in ("scripts/main.sh", "scripts/test.sh"):
        assert f"bash {script}" in readme and (REPO / script).is_file()
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()
