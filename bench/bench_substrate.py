"""Substrate benchmark: corpus generation, activation extraction, hook overhead, training threads.

    python bench/bench_substrate.py [--n 20000] [--repeats 3]

Rows (median of --repeats, on randomly initialised models of the `default` preset's shape, nothing cached):
- corpus: tokens/s of `SyntheticCorpus.sample` for n sequences (one vectorised pass over positions);
- activations at blocks.0.mlp.hook_post: `activations()` (stops the forward pass once the hook fired) vs a full
  `run_with_cache` of that one name, same batches;
- hook overhead: a forward pass with every hook attached read-only vs a plain forward pass;
- training step: one AdamW step with 1 thread vs torch's default thread count (contention on shared cores).
All rows but the last run on one thread. Prints a markdown table of times and ratios.
"""
from __future__ import annotations

import os

# Before torch loads: OpenMP threads that spin while waiting distort every timing on shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import platform
import statistics
import time

import torch

from claimgraph.experiments.substrate import ToyTransformer, activations, get_corpus
from claimgraph.experiments.substrate.load import TOY_PRESETS
from claimgraph.experiments.substrate.train import lm_loss


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="sequences for the corpus row")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    corpus = get_corpus("synthetic:default")
    torch.manual_seed(0)
    model = ToyTransformer(TOY_PRESETS["default"].model, corpus.vocab).eval()
    tokens = corpus.sample(512, seed=1)                                            # [512, 64]
    rows = []

    t = timed(lambda: corpus.sample(args.n, seed=0), args.repeats)
    rows.append(("corpus sample", f"{args.n * corpus.seq_len / t:,.0f} tokens/s", "", ""))

    name = "blocks.0.mlp.hook_post"

    def full() -> None:
        for i in range(0, len(tokens), 128):
            model.run_with_cache(tokens[i:i + 128], [name])

    with torch.no_grad():
        t_act = timed(lambda: activations(model, tokens, name, batch_size=128), args.repeats)
        t_full = timed(full, args.repeats)
        rows.append(("activations (early stop) vs run_with_cache", f"{t_act * 1e3:.0f} ms", f"{t_full * 1e3:.0f} ms",
                     f"{t_full / t_act:.2f}x"))
        hooks = [(n, lambda a, n: None) for n in model.hook_names()]
        t_plain = timed(lambda: model(tokens), args.repeats)
        t_hooked = timed(lambda: model.run_with_hooks(tokens, hooks), args.repeats)
        rows.append(("forward, all hooks attached vs none", f"{t_hooked * 1e3:.0f} ms", f"{t_plain * 1e3:.0f} ms",
                     f"{t_hooked / t_plain:.2f}x"))

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = tokens[:32]

    def step() -> None:
        loss = lm_loss(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_one = timed(step, args.repeats)
    torch.set_num_threads(default_threads)
    t_many = timed(step, args.repeats)
    rows.append((f"train step, 1 thread vs {default_threads}", f"{t_one * 1e3:.0f} ms", f"{t_many * 1e3:.0f} ms",
                 f"{t_many / t_one:.2f}x"))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, load average {os.getloadavg()[0]:.1f}\n")
    print("| what | time / rate | baseline | baseline / this |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
