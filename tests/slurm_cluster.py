"""A real single-node Slurm cluster for tests: Debian's slurm-wlm and munge, installed with apt-get when missing
(CI runs as root on a fresh machine), with munged, slurmctld and slurmd started on this machine from a config
written into a temporary folder (own ports, own munge socket, nothing in /etc changed) and stopped afterwards.

`python tests/slurm_cluster.py start FOLDER` / `stop FOLDER` do the same from a shell; tests use
`SlurmCluster` through the `slurm` fixture (tests/experiments/test_executors.py).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_installed() -> str | None:
    """None when slurmctld, slurmd and munged are there (installing them with apt-get as root if needed), else why
    they cannot be."""
    if all(shutil.which(b) or Path(f"/usr/sbin/{b}").exists() for b in ("slurmctld", "slurmd", "munged", "sbatch")):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "Slurm is not installed and apt-get as root is not available to install slurm-wlm and munge"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *PACKAGES]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {r.stderr.strip()[-400:]}"
    return None


class SlurmCluster:
    """munged + slurmctld + slurmd on this host, configured in `root`. `env` holds SLURM_CONF for clients."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}
        self.procs: list[subprocess.Popen] = []

    def _write_config(self) -> None:
        r = self.root
        for d in ("state", "spool", "munge", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        cpus = os.cpu_count() or 1
        mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
        self.munge_socket = r / "munge" / "munge.socket"
        self.conf.write_text("\n".join([
            "ClusterName=claimgraph-test",
            f"SlurmctldHost={self.host}",
            "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={self.munge_socket}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SwitchType=switch/none",
            "MpiDefault=none", "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "SchedulerType=sched/backfill", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "ReturnToService=2", "MinJobAge=3600", "KillWait=5", "OverTimeLimit=0", "InactiveLimit=0",
            "SlurmctldTimeout=30", "SlurmdTimeout=30", "MessageTimeout=20", "SchedulerParameters=sched_interval=2",
            f"NodeName={self.host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
            ""]))

    def start(self, timeout: float = 60.0) -> None:
        self._write_config()
        r = self.root
        munged = shutil.which("munged") or "/usr/sbin/munged"
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["mungekey", "--create", f"--keyfile={r / 'munge' / 'munge.key'}"], check=True)
            key = r / "munge" / "munge.key"
        subprocess.run([munged, "--force", f"--socket={self.munge_socket}", f"--key-file={key}",
                        f"--pid-file={r / 'munge' / 'munged.pid'}", f"--log-file={r / 'log' / 'munged.log'}",
                        f"--seed-file={r / 'munge' / 'munge.seed'}"], check=True)
        env = dict(os.environ, **self.env)
        for daemon in ("slurmctld", "slurmd"):
            exe = shutil.which(daemon) or f"/usr/sbin/{daemon}"
            self.procs.append(subprocess.Popen([exe, "-D", "-f", str(self.conf)] + (["-c"] if daemon == "slurmctld"
                                                                                     else []),
                                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                               start_new_session=True))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated"):
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.5)
        logs = "\n".join(f"{p.name}: {p.read_text()[-1500:]}" for p in sorted((r / "log").glob("*.log")))
        self.stop()
        raise RuntimeError(f"the test Slurm cluster did not come up:\n{logs}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()
        pid_file = self.root / "munge" / "munged.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


if __name__ == "__main__":  # python tests/slurm_cluster.py start|stop FOLDER (stop: by the pid files)
    action, folder = sys.argv[1], Path(sys.argv[2])
    if action == "start":
        why = ensure_installed()
        if why:
            sys.exit(why)
        c = SlurmCluster(folder)
        c.start()
        print(f"export SLURM_CONF={c.conf}")
