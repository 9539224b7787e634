"""The app in-process (Starlette's TestClient, a real DuckDB file): JSON twins equal the CLI's --json, the Host
check, the CSRF token and the Origin check on posts (nothing written when refused), error pages, safe run files,
security headers, and no torch for graph pages."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from starlette.testclient import TestClient

from claimgraph.graph import Store
from claimgraph.web import Settings, create_app

from .conftest import CLAIM, cli

BASE = "http://127.0.0.1:8000"


@pytest.fixture
def db(seed_store, tmp_path):
    copy = tmp_path / "g.duckdb"
    shutil.copy(seed_store, copy)
    return copy


@pytest.fixture
def client(db):
    app = create_app(Settings(db, port=8000))
    with TestClient(app, base_url=BASE) as c:
        yield c
    app.state.access.close()


def token(client, path="/suggestions") -> str:
    html = client.get(path).text
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def test_json_twins_are_the_cli_json(client, db):
    assert client.get(f"/node/{CLAIM}.json").json() == cli(db, "show", CLAIM)
    assert client.get(f"/node/{CLAIM}?format=json").json() == cli(db, "show", CLAIM)
    assert client.get(f"/node/{CLAIM}.json?k=3&threshold=0.7").json() == cli(db, "show", CLAIM, "-k", "3",
                                                                             "--threshold", "0.7")
    assert client.get("/nodes.json?type=finding").json() == cli(db, "list", "--type", "finding")
    assert client.get(f"/node/{CLAIM}/graph.json?depth=2").json() == cli(db, "neighbors", CLAIM, "--depth", "2")
    assert client.get("/experiments.json").json() == cli(db, "experiment", "list")
    assert client.get("/runs.json").json() == cli(db, "runs")
    web = client.get("/suggestions.json?limit=10000").json()["suggestions"]
    computed = cli(db, "suggest", "--threshold", "0.6")["suggestions"]  # recomputed: the same open pairs
    assert web == computed
    home = client.get("/index.json").json()
    assert home["nodes"] == cli(db, "stats")["nodes"]


def test_every_html_page_links_its_json_twin(client):
    for path in ("/", f"/node/{CLAIM}", f"/node/{CLAIM}/graph", "/search?q=sparse", "/suggestions", "/experiments",
                 "/runs", "/nodes?type=claim"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        twin = re.search(r'id="json-link" href="([^"]+)"', r.text).group(1).replace("&amp;", "&")
        j = client.get(twin)
        assert j.status_code == 200 and j.headers["content-type"] == "application/json", twin


@pytest.mark.parametrize("host", ["evil.example:8000", "evil.example", "127.0.0.1:9999", "localhost.evil:8000", ""])
def test_foreign_host_headers_are_refused(client, host):
    r = client.get("/", headers={"host": host})
    assert r.status_code == 400 and "does not answer for host" in r.text


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "localhost", "[::1]:8000"])
def test_own_host_names_are_served(client, host):
    assert client.get("/index.json", headers={"host": host}).status_code == 200


def _open_pair(client):
    s = client.get("/suggestions.json").json()["suggestions"][0]
    return s["src"], s["dst"]


def test_posts_need_the_token_and_write_nothing_without_it(client, db):
    a, b = _open_pair(client)
    before = client.get(f"/node/{a}.json").json()["neighbors"]
    for form in ({"a": a, "b": b, "edge": "associated_with:ab"},
                 {"a": a, "b": b, "edge": "associated_with:ab", "csrf": "0" * 64}):
        r = client.post("/suggestions/accept", data=form, follow_redirects=False)
        assert r.status_code == 403 and "token" in r.text
    r = client.post("/suggestions/reject.json", data={"a": a, "b": b})
    assert r.status_code == 403 and "token" in r.json()["error"]
    assert client.get(f"/node/{a}.json").json()["neighbors"] == before
    assert (a, b) in {(x["src"], x["dst"]) for x in client.get("/suggestions.json").json()["suggestions"]}


def test_a_token_from_another_browser_is_refused(client, db):
    a, b = _open_pair(client)
    tok = token(client)
    other = TestClient(client.app, base_url=BASE)  # no cookie: a new nonce, so the token does not fit
    r = other.post("/suggestions/accept", data={"a": a, "b": b, "edge": "associated_with:ab", "csrf": tok},
                   follow_redirects=False)
    assert r.status_code == 403


def test_a_post_from_another_origin_is_refused(client):
    a, b = _open_pair(client)
    r = client.post("/suggestions/reject", data={"a": a, "b": b, "csrf": token(client)},
                    headers={"origin": "http://evil.example"}, follow_redirects=False)
    assert r.status_code == 403 and "another site" in r.text


def test_accept_and_reject_with_the_token(client, db):
    a, b = _open_pair(client)
    r = client.post("/suggestions/accept", data={"a": a, "b": b, "edge": "associated_with:ba", "csrf": token(client),
                                                 "next": "https://evil.example/"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/suggestions?msg=")  # never off-site
    with Store(db, read_only=True) as s:
        e = s.get_edge(b, "associated_with", a)
        assert e.provenance.made_by.value == "accepted-suggestion"
        row = s.sql("SELECT state, edge_type FROM suggestions WHERE a = ? AND b = ?", [a, b])
    assert row == [("accepted", "associated_with")]
    c, d = _open_pair(client)
    r = client.post("/suggestions/reject.json", data={"a": c, "b": d, "csrf": token(client)})
    assert r.json() == {"rejected": {"src": c, "dst": d}}
    # an edge type the rules forbid is refused with the store's message, nothing written
    e2 = client.get("/suggestions.json").json()["suggestions"][0]
    r = client.post("/suggestions/accept.json", data={"a": e2["src"], "b": e2["dst"], "edge": "tests:ab",
                                                      "csrf": token(client)})
    assert r.status_code == 400 and "tests edge cannot start" in r.json()["error"]


def test_compute_suggestions_from_the_page(client, db):
    r = client.post("/suggestions/compute.json", data={"threshold": "0.7", "type": "paper", "csrf": token(client)})
    assert r.status_code == 200
    assert r.json() == cli(db, "suggest", "--threshold", "0.7", "--type", "paper")


def test_errors_are_pages_with_the_message(client):
    r = client.get("/node/claim:no-such-thing")
    assert r.status_code == 404 and "no node &#39;claim:no-such-thing&#39;" in r.text
    assert client.get("/node/claim:no-such-thing.json").json()["error"].startswith("no node")
    r = client.get("/nodes.json?type=spaceship")
    assert r.status_code == 400 and "unknown node type 'spaceship'" in r.json()["error"]
    assert client.get("/search.json?q=x&k=0").status_code == 400
    assert client.get("/run/20990101T000000-deadbeef").status_code == 404
    assert client.get(f"/node/{CLAIM}/graph.json?depth=9").status_code == 400


def test_security_headers(client):
    r = client.get(f"/node/{CLAIM}")
    assert "script-src" not in r.headers["content-security-policy"]  # default-src 'none': no script runs at all
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert "SameSite=Strict" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]


def test_run_files_stay_inside_the_run_folder(tmp_path):
    from claimgraph.web.runs import run_file

    run = tmp_path / "run"
    (run / "artifacts").mkdir(parents=True)
    (run / "artifacts" / "plot.png").write_bytes(b"\x89PNG")
    (run / "config.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("no")
    (run / "artifacts" / "link.png").symlink_to(tmp_path / "secret.txt")
    row = {"run_id": "r", "run_dir": str(run)}
    assert run_file(row, "artifacts/plot.png") == (run / "artifacts" / "plot.png").resolve()
    from claimgraph.graph.errors import NotFound

    for bad in ("config.json", "artifacts/../config.json", "../secret.txt", "/etc/passwd", "artifacts/link.png",
                "artifacts/missing.png"):
        with pytest.raises(NotFound):
            run_file(row, bad)


def test_serving_graph_pages_imports_no_torch(db):
    code = f"""
import sys
from starlette.testclient import TestClient
from claimgraph.web import Settings, create_app
c = TestClient(create_app(Settings({str(db)!r}, port=8000)), base_url={BASE!r})
for p in ("/", "/node/{CLAIM}", "/node/{CLAIM}/graph", "/suggestions", "/experiments", "/runs", "/nodes"):
    assert c.get(p).status_code == 200, p
assert "torch" not in sys.modules, "graph pages imported torch"
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_serve_refuses_a_missing_store(tmp_path):
    from typer.testing import CliRunner

    from claimgraph.cli.main import app

    r = CliRunner().invoke(app, ["--db", str(tmp_path / "none.duckdb"), "serve", "--port", "8001"])
    assert r.exit_code == 1 and "no claimgraph store" in r.stderr
    assert not (tmp_path / "none.duckdb").exists()


def test_runs_page_shows_what_the_folders_say_of_runs_the_store_has_in_flight(client, db, tmp_path):
    """The web opens the store read-only, so a run that ended since the last claimgraph command is still
    running in the store: the runs page shows its folder's final status, and for a run split into executor
    tasks how many seeds' tasks have completed. A run the store has ended is shown as recorded."""
    import json

    def folder(name, status, tasks=()):
        d = tmp_path / "runs" / name
        (d / "tasks").mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"spec": {"kind": "sae", "seeds": [0, 1, 2]}}))
        if status:
            (d / "status.json").write_text(json.dumps({"status": status}))
        for seed, st in tasks:
            (d / "tasks" / f"seed-{seed}.status.json").write_text(json.dumps({"status": st}))
        return str(d)

    with Store(db) as s:
        s.put_run(run_id="r-ended", experiment_id="experiment:x", config_hash="h", status="running",
                  run_dir=folder("ended", "completed"))
        s.put_run(run_id="r-tasks", experiment_id="experiment:x", config_hash="h", status="running",
                  run_dir=folder("tasks", None, [(0, "completed"), (1, "running"), (2, "failed")]))
        s.put_run(run_id="r-done", experiment_id="experiment:x", config_hash="h", status="failed",
                  run_dir=folder("done", "completed"))
    rows = {r["run_id"]: r for r in client.get("/runs.json").json()["runs"]}
    assert rows["r-ended"]["status"] == "running" and rows["r-ended"]["folder_status"] == "completed"
    assert rows["r-tasks"]["folder_note"] == "1 of 3 seeds completed, 1 failed, 1 running (tasks' status files)"
    assert "folder_status" not in rows["r-tasks"]
    assert "folder_status" not in rows["r-done"] and "folder_note" not in rows["r-done"]  # the store's word stands
    html = client.get("/runs").text
    assert 'runstatus-completed">completed</span> <span class="meta">ended; the store records it' in html
    assert "1 of 3 seeds completed, 1 failed, 1 running" in html
