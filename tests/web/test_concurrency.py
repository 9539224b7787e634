"""The server and the CLI on one store at the same time: CLI writes (separate processes) succeed while the server
answers pages and writes accepted suggestions, and afterwards every write of both is in the file. (Two shells
run the CLI commands, one after another each, as people do: eight CLI processes at once contend with each other
for DuckDB's single writer, which is the CLI's own matter.)"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import httpx

from claimgraph.graph import Store

from .conftest import CLAIM


def test_cli_writes_while_the_server_reads_and_writes(served):
    with Store(served.db, read_only=True) as s:
        papers = [n.id for n in s.list_nodes("paper")]
        have = {(e.src, e.dst) for e in s.edges()}
        n_edges = sum(s.count_edges().values())
    pairs = [(a, b) for a, b in zip(papers, papers[1:]) if (a, b) not in have and (b, a) not in have][:8]
    assert len(pairs) == 8
    stop = threading.Event()
    statuses: list[int] = []
    accepted: list[tuple[str, str]] = []
    errors: list[str] = []

    def browse():
        with httpx.Client(base_url=served.url, timeout=60) as c:
            while not stop.is_set():
                for path in (f"/node/{CLAIM}", "/", "/suggestions.json", f"/node/{CLAIM}/graph"):
                    statuses.append(c.get(path).status_code)

    def accept_some():
        with httpx.Client(base_url=served.url, timeout=60) as c:
            for _ in range(3):
                html = c.get("/suggestions?type=paper").text
                tok = re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)
                got = c.get("/suggestions.json?type=paper").json()
                if "suggestions" not in got:
                    errors.append(str(got))
                    continue
                row = got["suggestions"][0]
                r = c.post("/suggestions/accept.json", data={"a": row["src"], "b": row["dst"],
                                                             "edge": "associated_with:ab", "csrf": tok})
                if r.status_code == 200:
                    accepted.append((row["src"], row["dst"]))
                else:
                    errors.append(r.text)

    readers = [threading.Thread(target=browse) for _ in range(2)]
    writer = threading.Thread(target=accept_some)
    for t in readers:
        t.start()
    time.sleep(0.5)
    writer.start()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    results: list[tuple[int, str, float]] = []

    def cli_stream(mine):  # a person's shell: one command after another, while the server is busy
        for a, b in mine:
            t0 = time.monotonic()
            p = subprocess.run([sys.executable, "-m", "claimgraph.cli.main", "--db", str(served.db), "link", a,
                                "cites", b], capture_output=True, text=True, env=env, timeout=120)
            results.append((p.returncode, p.stderr, time.monotonic() - t0))

    shells = [threading.Thread(target=cli_stream, args=(pairs[i::2],)) for i in range(2)]
    for t in shells:
        t.start()
    for t in shells:
        t.join(300)
    writer.join(120)
    stop.set()
    for t in readers:
        t.join(120)
    assert len(results) == len(pairs) and all(rc == 0 for rc, _, _ in results), [e for rc, e, _ in results if rc]
    assert max(t for _, _, t in results) < 30
    assert not errors and len(accepted) == 3, errors
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert served.proc.poll() is None  # the server is still up
    with Store(served.db) as s:  # read-write: the file is whole and every write of both sides is there
        for a, b in pairs:
            assert s.get_edge(a, "cites", b).provenance.made_by.value == "manual"
        for a, b in accepted:
            assert s.get_edge(a, "associated_with", b).provenance.made_by.value == "accepted-suggestion"
        assert sum(s.count_edges().values()) == n_edges + len(pairs) + len(accepted)
        assert s.sql("PRAGMA database_size")
