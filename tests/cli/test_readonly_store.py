"""Issue 19 item 2: a store on a read-only file or mount works for every command that does not write, and a
writing command says why it cannot, without a traceback.

The read-only place is real: a read-only bind mount when the tests run as root with mount rights (CI's
container), the file and its folder made unwritable otherwise; the test skips where neither is possible."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from claimgraph.cli.main import app

CLAIM_PREFIX = "claim:learned-features-reflect"


def cli(db, *args):
    return CliRunner().invoke(app, ["--db", str(db), *args])


@pytest.fixture(scope="module")
def readonly_store(tmp_path_factory, data_dir):
    src = tmp_path_factory.mktemp("rw")
    db = src / "papers.duckdb"
    r = cli(db, "ingest", str(data_dir / "papers"))
    assert r.exit_code == 0, r.stderr
    mnt = tmp_path_factory.mktemp("ro")
    mounted = False
    if os.geteuid() == 0:
        ok = subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True).returncode == 0
        if ok and subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], capture_output=True).returncode == 0:
            mounted = True
        elif ok:
            subprocess.run(["umount", str(mnt)], capture_output=True)
        if not mounted:
            pytest.skip("running as root without the right to mount: a read-only file cannot be made here")
        path = mnt / db.name
    else:
        shutil.copy(db, mnt / db.name)
        path = mnt / db.name
        path.chmod(0o444)
        mnt.chmod(0o555)
    yield path
    if mounted:
        subprocess.run(["umount", str(mnt)], capture_output=True)
    else:
        mnt.chmod(0o755)


def test_the_place_is_really_read_only(readonly_store):
    assert not os.access(readonly_store, os.W_OK)
    with pytest.raises(OSError):
        (readonly_store.parent / "probe").write_text("x")


@pytest.mark.parametrize("args", [
    ["list"], ["list", "--type", "claim", "--csv"], ["show", CLAIM_PREFIX], ["search", "pinned feature sampling"],
    ["neighbors", CLAIM_PREFIX, "--depth", "2"], ["path", CLAIM_PREFIX, "method:pinned-feature-sampling"],
    ["stats"], ["evidence", CLAIM_PREFIX], ["runs"], ["experiment", "list"],
])
def test_reading_commands_work(readonly_store, args):
    r = cli(readonly_store, "--json", *args) if "--csv" not in args else cli(readonly_store, *args)
    assert r.exit_code == 0, r.stderr
    if "--csv" not in args:
        json.loads(r.stdout)


def test_export_to_a_writable_place_works(readonly_store, tmp_path):
    r = cli(readonly_store, "--json", "export", "--format", "graphml", "-o", str(tmp_path / "g.graphml"))
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "g.graphml").stat().st_size > 0


@pytest.mark.parametrize("args", [
    ["link", "method:pinned-feature-sampling", "associated_with", "method:logit-weight-analysis"],
    ["unlink", "finding:causal-validation-of-base64", "supports", CLAIM_PREFIX],
    ["reject", "method:pinned-feature-sampling", "method:logit-weight-analysis"],
    ["init"],
])
def test_writing_commands_say_the_store_is_read_only(readonly_store, args):
    r = cli(readonly_store, *args)
    assert r.exit_code == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith("Error: ") and "read-only" in r.stderr and "Traceback" not in r.stderr
