"""Training throughput of the SAE trainers (activation vectors per second) at a few sizes, as a ratio against a
baseline measured in the same process: one Adam step of a plain linear autoencoder of the same shapes
(x @ W_enc -> ReLU -> @ W_dec, MSE, dense decode), i.e. the same matmuls without our trainer's extras (decoder-norm
constraint, schedules, dead-latent tracking, L1/TopK/AuxK). A ratio near 1 means the extras cost little.

    python bench/bench_sae.py [--device cpu|cuda] [--batch 1024] [--seconds 1.5] [--threads 1] [--quick]
"""
from __future__ import annotations

import argparse
import time

import torch

from claimgraph.experiments.sae import SaeConfig, make_trainer


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_rate(step_fns: list, device: str, seconds: float, rounds: int = 3) -> list[float]:
    """Steps per second of each `step_fn(i)`, measured in interleaved rounds (so load changes on a shared
    machine hit all alike) after two warm-up calls each; the best round counts."""
    for fn in step_fns:
        for i in range(2):
            fn(i)
    _sync(device)
    best = [0.0] * len(step_fns)
    budget = seconds / rounds
    for _ in range(rounds):
        for j, fn in enumerate(step_fns):
            n, t0 = 0, time.perf_counter()
            while n < 2 or time.perf_counter() - t0 < budget:
                fn(n + 2)
                n += 1
            _sync(device)
            best[j] = max(best[j], n / (time.perf_counter() - t0))
    return best


def baseline_step(d_in: int, d_sae: int, x: torch.Tensor, device: str):
    W_enc = torch.nn.Parameter(torch.randn(d_in, d_sae, device=device) / d_in ** 0.5)  # [d_in, d_sae]
    W_dec = torch.nn.Parameter(torch.randn(d_sae, d_in, device=device) / d_sae ** 0.5)  # [d_sae, d_in]
    opt = torch.optim.Adam([W_enc, W_dec], lr=1e-3)

    def step(_: int) -> None:
        opt.zero_grad(set_to_none=True)
        loss = ((x @ W_enc).relu() @ W_dec - x).pow(2).sum(-1).mean()  # [B, d_in] -> scalar
        loss.backward()
        opt.step()
    return step


def trainer_step(arch: str, d_in: int, d_sae: int, x: torch.Tensor, device: str):
    cfg = SaeConfig(architecture=arch, d_in=d_in, d_sae=d_sae, k=32, l1_coefficient=5.0, l1_warmup_steps=0,
                    resample_steps=(), steps=10**9, batch_size=x.shape[0], lr=1e-3, lr_warmup_steps=50,
                    dead_window_tokens=x.shape[0] * 4, init_sample_size=x.shape[0])
    trainer = make_trainer(cfg, x, device=device)
    return lambda i: trainer.update(i, x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=1.5, help="timing budget per step function and size")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="d_in 64/128 and expansion 4/8 only")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    d_ins = [64, 128] if args.quick else [64, 128, 512]
    expansions = [4, 8] if args.quick else [4, 8, 16]
    print(f"device {args.device}, batch {args.batch}, torch threads {torch.get_num_threads()}\n")
    print("| d_in | expansion | d_sae | baseline vec/s | relu vec/s | relu / base | topk vec/s | topk / base |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for d_in in d_ins:
        for e in expansions:
            d_sae = d_in * e
            g = torch.Generator().manual_seed(0)
            x = torch.randn(args.batch, d_in, generator=g).to(args.device)  # [B, d_in]
            base, relu, topk = best_rate([baseline_step(d_in, d_sae, x, args.device),
                                          trainer_step("relu", d_in, d_sae, x, args.device),
                                          trainer_step("topk", d_in, d_sae, x, args.device)],
                                         args.device, args.seconds)
            b = args.batch
            print(f"| {d_in} | {e} | {d_sae} | {base * b:,.0f} | {relu * b:,.0f} | {relu / base:.2f} | "
                  f"{topk * b:,.0f} | {topk / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
