"""Decomposition overhead: a tracked training step of the gradient_decomposition job against a plain step.

    python bench/bench_dynamics.py [--sizes 32x64 64x128] [--steps 30] [--threads 1] [--device cpu] [--out F]

For each size (d_model x batch size, majority task with 10 inputs and 10 outputs, 2 layers, decomposition and
probes at layer 1, 9 useless positions), on the same model and batches:

- plain:        forward, loss.backward(), Adam step (what normal training costs);
- cut:          the same gradient taken through h_k as an explicit cut (what the untracked twin run uses);
- tracked/set:  risk gradient + decomposition for all useless positions as one group + Adam + bookkeeping
                (3 backward passes of the blocks below the layer, 1 myopic pass of the blocks above);
- tracked/pos:  the same with one group per position, the job's default (27 backward passes of the blocks
                below the layer, 1 myopic pass above).

Median wall time per step over --steps steps after 3 warm-up steps; prints a markdown table with the ratio of
each to the plain step, and writes it with the machine description to --out if given.
"""
from __future__ import annotations

import os

# Before torch loads: spinning OpenMP threads slow everything down when the cores are shared.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from claimgraph.experiments.kinds.gradient_decomposition.decomposition import decompose, full_gradient
from claimgraph.experiments.kinds.gradient_decomposition.influence import AdamInfluence, ProbeRisk, flat_params
from claimgraph.experiments.kinds.gradient_decomposition.majority import MajorityConfig, sample
from claimgraph.experiments.kinds.gradient_decomposition.transformer import Transformer, TransformerConfig, token_losses

LAYER = 1
RISK_SEQUENCES = 128


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _set_grads(model: Transformer, flat: torch.Tensor) -> None:
    offset = 0
    for p in model.parameters():
        p.grad = flat[offset: offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def bench_size(d_model: int, batch: int, steps: int, device: str) -> dict[str, float]:
    task = MajorityConfig()
    cfg = TransformerConfig(d_vocab=task.d_vocab, n_ctx=task.n_ctx, d_model=d_model, n_heads=2, d_mlp=4 * d_model)
    positions = task.useless_positions()
    data = sample(task, (steps + 3) * batch, seed=0).tokens.to(device)
    probe_tokens = sample(task, RISK_SEQUENCES, seed=1).tokens[:, :-1].to(device)
    torch.manual_seed(0)
    base = Transformer(cfg).to(device)
    W = torch.randn(len(positions), d_model, task.n_vocab, device=device)

    def batches():
        for t in range(steps + 3):
            chunk = data[t * batch: (t + 1) * batch]
            yield chunk[:, :-1], chunk[:, 1:]

    def plain(model, opt, tok, tgt, state):
        opt.zero_grad(set_to_none=True)
        token_losses(model(tok), tgt).mean().backward()
        opt.step()

    def cut(model, opt, tok, tgt, state):
        opt.zero_grad(set_to_none=True)
        _set_grads(model, full_gradient(model, tok, tgt, LAYER)[1])
        opt.step()

    def tracked(groups):
        def step(model, opt, tok, tgt, state):
            if "tracker" not in state:
                state["tracker"] = AdamInfluence(opt, len(groups))
                state["risk"] = ProbeRisk(W, probe_tokens, base, LAYER, positions, groups)
            _, grad_R = state["risk"].gradients(model)
            parts = decompose(model, tok, tgt, LAYER, groups)
            before = flat_params(model)
            opt.zero_grad(set_to_none=True)
            _set_grads(model, parts.full)
            opt.step()
            state["tracker"].after_step(parts, grad_R, flat_params(model) - before)
        return step

    variants = {"plain": plain, "cut": cut, "tracked/set": tracked([positions]),
                "tracked/pos": tracked([[i] for i in positions])}
    out = {}
    for name, fn in variants.items():
        model = Transformer(cfg).to(device)
        model.load_state_dict(base.state_dict())
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        state: dict = {}
        times = []
        for t, (tok, tgt) in enumerate(batches()):
            _sync(device)
            t0 = time.perf_counter()
            fn(model, opt, tok, tgt, state)
            _sync(device)
            if t >= 3:
                times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["32x64", "64x128"], help="d_model x batch size")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the job uses 1)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows = ["| d_model x batch | plain ms | cut ms (x) | tracked/set ms (x) | tracked/pos ms (x) |",
            "|---|---|---|---|---|"]
    for size in args.sizes:
        d, b = (int(x) for x in size.lower().split("x"))
        r = bench_size(d, b, args.steps, args.device)
        p = r["plain"]
        cells = [f"{r[k] * 1e3:.1f} ({r[k] / p:.2f}x)" for k in ("cut", "tracked/set", "tracked/pos")]
        rows.append(f"| {d} x {b} | {p * 1e3:.1f} | " + " | ".join(cells) + " |")
        print(rows[-1] if len(rows) > 3 else "\n".join(rows), flush=True)
    machine = (f"{platform.platform()}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
               f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda")
                                         else f", {args.threads} thread(s), {os.cpu_count()} cores visible")
               + f", load average {os.getloadavg()[0]:.1f}")
    text = ("## gradient_decomposition: tracked step vs plain step\n\n" + machine + "\n\n" + "\n".join(rows)
            + "\n\nMedian per step; (x) = ratio to the plain step. Per tracked step beyond the plain pass: one "
            "myopic forward+backward of the blocks at and above the layer, 2 backward passes of the blocks below "
            "it per position group, and on the risk batch one forward and one backward per group.\n")
    print()
    print(machine)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
