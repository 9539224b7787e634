"""`claimgraph experiment add --file PLAN`: many experiments in one process and one transaction (issue 16: the main
job registered its experiments one process each). The bundled plan registers against the bundled papers with the
same specs as one `experiment add` per entry; a bad entry names the file, its line and the field, and nothing of
the plan is written; re-registering is a no-op."""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from claimgraph.cli.main import app
from claimgraph.graph import Store

CLAIM = ("claim:learned-features-reflect-the-functionality-of-the-model-and-not-just-the-data-distribution-as-"
         "evidenced-by-interpretable-downstream-effects-not-used-in-dictionary-learning")
BASE64 = "finding:causal-validation-of-base64-feature-function-via-pinned-feature-sampling"


def cli(db, *args, code: int | None = None):
    """The CLI on `db`; with `code`, the exit code it must end with."""
    r = CliRunner().invoke(app, ["--db", str(db), *args])
    assert code is None or r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    return r


@pytest.fixture(scope="module")
def papers(tmp_path_factory, data_dir):
    db = tmp_path_factory.mktemp("plan") / "papers.duckdb"
    cli(db, "ingest", str(data_dir / "papers"), "--no-embed", code=0)
    return db


@pytest.fixture
def db(papers, tmp_path):  # a copy of the ingested papers for each test
    return Path(shutil.copy(papers, tmp_path / "g.duckdb"))


def experiments(db):
    return {e["id"]: e for e in json.loads(cli(db, "--json", "experiment", "list", code=0).stdout)["experiments"]}


def specs(db):
    with Store(db, read_only=True) as s:
        return {i: (s.get_node(i).attrs["spec"], sorted(x.dst for x in s.edges(i, direction="out", type="tests")))
                for i in experiments(db)}


def test_the_bundled_plan_registers_as_one_add_per_entry(db, papers, tmp_path, data_dir):
    from claimgraph.experiments.plan import load_plan

    plan = data_dir / "experiments.yaml"
    out = json.loads(cli(db, "--json", "experiment", "add", "--file", str(plan), code=0).stdout)
    entries = load_plan(plan)
    assert [n["id"] for n in out["experiments"]] == [e.id for e in entries] and len(entries) >= 30
    once = specs(db)
    # again: the same nodes are found, nothing new
    cli(db, "experiment", "add", "--file", str(plan), code=0)
    assert specs(db) == once
    # entries one `experiment add` each (toy and real-model ones), into a fresh copy, give the same specs and edges
    other = tmp_path / "one-by-one.duckdb"
    shutil.copy(papers, other)
    for e in entries[:6] + [x for x in entries if x.model and x.model.startswith("lm:")][:2]:
        args = ["experiment", "add", "--id", e.id, "--kind", e.kind, *[a for c in e.claims for a in ("--claim", c)]]
        args += [a for k, v in e.params.items() for a in ("--param", f"{k}={json.dumps(v)}")]
        for flag, v in (("--criterion", e.criterion), ("--model", e.model), ("--data", e.data),
                        ("--seeds", e.seeds), ("--title", e.title)):
            if v is not None:
                args += [flag, str(v)]
        cli(other, *args, code=0)
        assert specs(other)[e.id] == once[e.id], e.id


def write(tmp_path, text):
    p = tmp_path / "plan.yaml"
    p.write_text(textwrap.dedent(text))
    return p


GOOD = f"""\
experiments:
- id: experiment:lw-base64
  claims: [{BASE64}]
  kind: logit_weights
  params: {{category: base64}}
"""


@pytest.mark.parametrize("second, message", [
    ("  kind: logit_weights\n  params: {category: base64, colour: red}\n",
     "plan.yaml:6: experiments[1] (experiment:two): bad parameter for kind 'logit_weights': param colour"),
    ("  kind: no_such_kind\n", "plan.yaml:6: experiments[1] (experiment:two): "),
    ("  kind: logit_weights\n  criterion: 'accuracy > 0.5'\n", "not reported by kind 'logit_weights'"),
    ("  kind: logit_weights\n  seeds: 5-2\n", "plan.yaml:6: experiments[1] (experiment:two)"),
    ("  kind: logit_weights\n  colour: red\n", "plan.yaml:6 (field experiments[1].colour): Extra inputs are not permitted"),
])
def test_a_bad_entry_names_file_line_and_field_and_writes_nothing(db, tmp_path, second, message):
    p = write(tmp_path, GOOD + f"- id: experiment:two\n  claims: [{CLAIM}]\n" + second)
    r = cli(db, "experiment", "add", "--file", str(p))
    assert r.exit_code == 2 and message in r.stderr, r.stderr
    assert experiments(db) == {}


def test_a_missing_claim_or_repeated_id_writes_nothing(db, tmp_path):
    p = write(tmp_path, GOOD + "- claims: [claim:no-such-claim]\n  kind: sae\n")
    r = cli(db, "experiment", "add", "--file", str(p))
    assert r.exit_code != 0 and "plan.yaml:6: experiments[1]: " in r.stderr and "claim:no-such-claim" in r.stderr
    assert experiments(db) == {}
    p = write(tmp_path, GOOD + GOOD.split("\n", 1)[1])
    r = cli(db, "experiment", "add", "--file", str(p))
    assert r.exit_code == 2 and "plan.yaml:6 (field experiments[1].id): experiment id experiment:lw-base64 appears twice" \
        in r.stderr
    assert experiments(db) == {}


@pytest.mark.parametrize("text, message", [
    ("experiments: {a: 1}\n", "a plan is a mapping with a list under 'experiments'"),
    ("experiment: []\n", "a plan is a mapping with a list under 'experiments'"),
    ("experiments: []\nother: 1\n", "unknown top-level key(s) other"),
    ("experiments:\n- [1, 2]\n", "plan.yaml:2 (field experiments[0]): this entry is not a mapping"),
    ("experiments: [\n", "plan.yaml:2: is not a valid plan (YAML or JSON)"),
    ("x-a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
     + "".join(f"x-{i}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
     + "experiments: []\n", "past the limit"),
])
def test_malformed_plans_are_refused(db, tmp_path, text, message):
    r = cli(db, "experiment", "add", "--file", str(write(tmp_path, text)))
    assert r.exit_code == 2 and message in r.stderr, r.stderr


def test_file_and_single_experiment_options_do_not_mix(db, tmp_path):
    r = cli(db, "experiment", "add", "--file", str(write(tmp_path, GOOD)), "--kind", "sae")
    assert r.exit_code == 2 and "leave out --kind" in r.stderr
    r = cli(db, "experiment", "add", "--kind", "sae")
    assert r.exit_code == 2 and "give --claim and --kind" in r.stderr
    r = cli(db, "experiment", "add", "--file", str(tmp_path / "absent.yaml"))
    assert r.exit_code != 0 and "no such plan file" in r.stderr
