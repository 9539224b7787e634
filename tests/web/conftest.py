"""Fixtures for the web UI: a store of the seed documents (real encoder), `claimgraph serve` started as its own
process on a free loopback port, and a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven
by Selenium; installed by scripts/browser.sh when missing and we are root with apt-get)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from claimgraph.cli.main import app

REPO = Path(__file__).resolve().parents[2]
CLAIM = ("claim:learned-features-reflect-the-functionality-of-the-model-and-not-just-the-data-distribution-as-"
         "evidenced-by-interpretable-downstream-effects-not-used-in-dictionary-learning")
SUMMARY_TITLE = "The Birth of Knowledge: Emergent Features across Time, Space, and Scale in Large Language Models"
SCRIPT_TITLE = "<script>window.pwned = 1; document.title = 'pwned'</script> Features <b>are</b> & stay text"
SCRIPT_ID = "claim:a-title-with-markup"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,1400"]


def cli(db: Path, *args: str) -> dict:
    """A CLI command with --json, in this process (the server is another process); its parsed stdout."""
    r = CliRunner().invoke(app, ["--db", str(db), "--json", *args])
    assert r.exit_code == 0, (args, r.stdout, r.stderr)
    return json.loads(r.stdout)


@pytest.fixture(scope="session")
def seed_store(tmp_path_factory, seeds_dir) -> Path:
    """The four seed documents ingested with embeddings, a claim whose title is markup, and open suggestions.
    Tests copy it before writing."""
    from claimgraph.graph import Node, Store

    db = tmp_path_factory.mktemp("web-seeds") / "seeds.duckdb"
    seeds = sorted(seeds_dir.glob("*.txt"))
    cli(db, "ingest", *[str(p) for p in seeds if not p.name.startswith("002_")])
    cli(db, "ingest", str(next(p for p in seeds if p.name.startswith("002_"))), "--title", SUMMARY_TITLE)
    with Store(db) as s:
        s.add_node(Node(id=SCRIPT_ID, type="claim", title=SCRIPT_TITLE,
                        text="<img src=x onerror=\"window.pwned = 2\"> a description with markup"))
        s.link(SCRIPT_ID, "associated_with", CLAIM)
    cli(db, "embed")
    found = cli(db, "suggest", "--threshold", "0.6")["suggestions"]
    assert len(found) >= 4, "the seed store should have a few open suggestions"
    return db


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`claimgraph --db DB serve --port PORT` in its own process, as a user starts it."""

    def __init__(self, db: Path):
        self.db = db
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(db.parent / f"serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "claimgraph.cli.main", "--db", str(db), "serve",
                                      "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1"})
        self._wait()

    def _wait(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/index.json", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"serve did not answer in {timeout:g}s: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def served(seed_store, tmp_path):
    """A copy of the seed store and a server on it."""
    db = tmp_path / "g.duckdb"
    shutil.copy(seed_store, db)
    srv = Server(db)
    yield srv
    srv.stop()


def _ensure_browser() -> None:
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("Debian's chromium and chromium-driver are not installed, and apt-get cannot install them here "
                    "(needs root and apt-get): run `bash scripts/browser.sh` as root")
    r = subprocess.run(["bash", str(REPO / "scripts" / "browser.sh")], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"installing chromium with apt-get failed:\n{r.stdout}\n{r.stderr}")


@pytest.fixture(scope="session")
def browser():
    """A real headless Chromium (fresh profile), one per test session."""
    _ensure_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="claimgraph-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(f)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
