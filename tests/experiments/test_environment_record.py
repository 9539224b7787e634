"""environment.json records what a run's numbers depend on beyond the code: the CPU (model and flags) and the
torch settings (threads, determinism), read from this machine."""
from __future__ import annotations

import platform

import torch

from claimgraph.experiments.records import environment


def test_environment_records_cpu_and_torch_settings():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        env = environment("cpu", "sae")
    finally:
        torch.set_num_threads(old)
    cpu = env["cpu"]
    assert cpu["machine"] == platform.machine() and cpu["model"]
    if platform.system() == "Linux":   # /proc/cpuinfo names the instruction sets
        assert isinstance(cpu["flags"], list) and len(cpu["flags"]) > 5
    t = env["torch_settings"]
    assert t["num_threads"] == 1 and t["num_interop_threads"] >= 1
    assert t["deterministic_algorithms"] is torch.are_deterministic_algorithms_enabled()
    assert {"cudnn_deterministic", "cudnn_benchmark"} <= set(t) and "OMP_NUM_THREADS" in t["env"]
