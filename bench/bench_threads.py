"""Torch threads when processes share the cores: the same fixed work (forward passes of a stack of
transformer-MLP-sized matmuls, d_model 576 and d_mlp 1536 as in SmolLM2-135M, 16 x 64 tokens a batch) done by
P processes at once, each with T threads, as `claimgraph run --jobs P` does. Reported as ratios against the
baseline measured in the same run: P processes with cores/P threads each (what `run --jobs` now gives each
child) against P processes with all the cores each (torch's default, what it did before).

    python bench/bench_threads.py [--procs 2] [--rounds 3] [--work 40] [--out FILE]

Each configuration is run `--rounds` times, interleaved, and the median counts: wall time until the last
process ends, and CPU seconds over all of them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from claimgraph.graph.ann import threads as cores

WORKER = r"""
import sys, time, torch
threads, work = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
g = torch.Generator().manual_seed(0)
layers = [(torch.randn(576, 1536, generator=g) / 24, torch.randn(1536, 576, generator=g) / 40) for _ in range(6)]
x0 = torch.randn(16 * 64, 576, generator=g)
c0 = time.process_time()
with torch.no_grad():
    for _ in range(work):
        x = x0
        for w_in, w_out in layers:
            x = x + torch.nn.functional.silu(x @ w_in) @ w_out
print(time.process_time() - c0)
"""


def together(procs: int, threads: int, work: int) -> tuple[float, float]:
    """(wall s until the last ends, CPU s summed) of `procs` workers started at once."""
    t0 = time.perf_counter()
    ps = [subprocess.Popen([sys.executable, "-c", WORKER, str(threads), str(work)], stdout=subprocess.PIPE, text=True)
          for _ in range(procs)]
    cpu = sum(float(p.communicate()[0]) for p in ps)
    return time.perf_counter() - t0, cpu


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=2, help="processes at once (run --jobs)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=int, default=40, help="forward passes per process")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here too")
    a = ap.parse_args(argv)
    n = cores()
    configs = {"baseline": n, "cores/P": max(1, n // a.procs)}
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in configs}
    for r in range(a.rounds):
        for name, threads in configs.items():
            runs[name].append(together(a.procs, threads, a.work))
            wall, cpu = runs[name][-1]
            print(f"round {r + 1}: {a.procs} processes x {threads} threads: {wall:.2f} s wall, {cpu:.2f} CPU-s",
                  file=sys.stderr)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
    (bw, bc), (tw, tc) = med["baseline"], med["cores/P"]
    load = os.getloadavg()
    table = "\n".join([
        f"`bench/bench_threads.py`, {n} cores, {a.procs} processes at once, {a.work} passes each, median of "
        f"{a.rounds} (load at the end {load[0]:.1f}):",
        "",
        "| threads per process | wall, s | CPU, s | wall / baseline | CPU / baseline |",
        "|---|---|---|---|---|",
        f"| {n} (torch's default; baseline) | {bw:.2f} | {bc:.2f} | 1.00 | 1.00 |",
        f"| {configs['cores/P']} (cores/P, `run --jobs {a.procs}`) | {tw:.2f} | {tc:.2f} | {tw / bw:.2f} | "
        f"{tc / bc:.2f} |",
    ])
    print(table)
    if a.out:
        a.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
