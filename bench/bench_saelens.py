"""claimgraph's SAE trainer against SAELens's (`sae_lens.SAETrainer`) on the same activations, in one process:
training throughput (activation vectors per second, each trainer's whole training call timed) as a ratio, and at
the end FVE, L0, dead fraction and (with a model) CE loss recovered of both, all measured by claimgraph's
`evaluate_sae` / `ce_loss_recovered` on the same held-out activations (SAELens's SAE is saved by SAELens and
read back through claimgraph's SAELens import).

    python bench/bench_saelens.py                        # toy:default at blocks.0.mlp.hook_post, ReLU and TopK
    python bench/bench_saelens.py --quick                # a smoke run (~1 min)
    python bench/bench_saelens.py --acts PATH [--model REF --hook NAME]   # cached activations
    python bench/bench_saelens.py --profile 100          # also: where each trainer's time goes (torch.profiler)

Activation sources (`--acts`):
- `model` (default): activations of `--model` (a claimgraph model reference, default toy:default) at `--hook`
  on `--train-tokens` tokens of its corpus (`--data`), and `--eval-tokens` held-out tokens from another sample.
- a file or folder: `.safetensors` with a 2-D float tensor `acts` [N, d_in] (or its only 2-D tensor) and
  optionally `tokens` [n_seq, T] (the sequences the rows came from, row-major); `.pt` with a tensor or a dict of
  the same keys; `.npy` with the [N, d_in] array; a folder of such files is read as shards in name order. The last
  `--eval-frac` of rows (and of token sequences) is held out. CE loss recovered needs `--model` (and `--hook`)
  and token sequences: the file's `tokens`, else a held-out sample of the model's corpus.

Same for both trainers: architecture (ReLU + L1 sparsity penalty, or TopK + AuxK), d_sae, batch size, learning rate
and its schedule (linear warm-up over steps/20, linear decay over the last 20%), Adam betas, steps, L1 coefficient
and its warm-up (steps/10), k, dead-latent window (steps/8 batches), activation normalisation (a scalar so mean
||x|| is about sqrt(d_in), estimated on the same 4096-row sample and folded into the saved weights), device, torch
threads, and the batches themselves (the same rows in the same order). Each library's own recipe otherwise:
claimgraph's geometric-median b_dec, unit-norm decoder rows with the parallel gradient removed, dead-latent
resampling at 25% and 50% of steps (ReLU, as the feature jobs train), AuxK weight 1/32; SAELens's defaults
(decoder initialised at norm 0.1, b_dec 0, L1 weighted by decoder norms, gradient clipping at 1, TopK ranked on
decoder-norm-scaled pre-activations, AuxK weight 1).

"Equal L0": TopK sets L0 = k in both. For ReLU the L1 coefficient sets L0 differently in each library, so the
benchmark sweeps `--l1` for both and, at each point's L0, reads the other trainer's FVE by linear interpolation in
log L0 between its sweep points (only inside its L0 range).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: spinning threads distort shared cores
os.environ.setdefault("TQDM_DISABLE", "1")  # SAELens's progress bar
os.environ.setdefault("WANDB_MODE", "disabled")

import argparse
import json
import math
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from claimgraph.experiments.sae import SaeConfig, ce_loss_recovered, evaluate_sae, load_sae, train_sae
from claimgraph.experiments.sae.train import batch_indices

INIT_SAMPLE = 4096  # rows both trainers estimate the normalisation (and claimgraph its b_dec) from


# ---------------------------------------------------------------------------------------------- activations

@dataclass
class Source:
    train: torch.Tensor  # [N, d_in] float32
    eval: torch.Tensor  # [M, d_in]
    eval_tokens: torch.Tensor | None  # [n, T] sequences for CE loss recovered
    label: str
    model: Any = None
    hook: str | None = None


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix == ".npy":
        import numpy as np

        return {"acts": torch.from_numpy(np.load(path, mmap_mode="r").copy())}
    if path.suffix in (".pt", ".pth"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        return obj if isinstance(obj, dict) else {"acts": obj}
    raise SystemExit(f"Error: {path}: unknown activation file type {path.suffix!r} (.safetensors, .pt, .npy)")


def _acts_of(tensors: dict[str, torch.Tensor], path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    if "acts" in tensors:
        acts = tensors["acts"]
    else:
        two_d = [t for k, t in tensors.items() if t.ndim == 2 and t.is_floating_point()]
        if len(two_d) != 1:
            raise SystemExit(f"Error: {path}: expected a tensor 'acts' [N, d_in] (found {sorted(tensors)})")
        acts = two_d[0]
    if acts.ndim != 2 or not acts.is_floating_point():
        raise SystemExit(f"Error: {path}: 'acts' must be a 2-D float tensor, got {tuple(acts.shape)} {acts.dtype}")
    return acts.float(), tensors.get("tokens")


def load_activation_file(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(acts [N, d_in] float32, tokens [n, T] or None) from a file or a folder of shards (see the docstring)."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".pt", ".pth", ".npy")) \
        if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise SystemExit(f"Error: {path}: no activation file (.safetensors, .pt, .npy) there")
    parts = [_acts_of(_read_file(p), p) for p in files]
    acts = torch.cat([a for a, _ in parts])
    toks = [t for _, t in parts if t is not None]
    return acts, (torch.cat(toks) if len(toks) == len(parts) else None)


def activation_source(args: argparse.Namespace) -> Source:
    from claimgraph.experiments.substrate.load import activations, check_fit, corpus_for, load_model

    model = corpus = None
    if args.acts == "model" or args.model:
        model = load_model(args.model, device=args.device, progress=True)
        try:
            corpus, data_ref = corpus_for(args.model, args.data)
            check_fit(model, args.model, corpus, data_ref, hook=args.hook)
        except Exception:
            corpus = None
            if args.acts == "model":
                raise
    if args.acts == "model":
        assert corpus is not None
        n_train = math.ceil(args.train_tokens / corpus.seq_len)
        n_eval = math.ceil(args.eval_tokens / corpus.seq_len)
        train = activations(model, corpus.sample(n_train, seed=0), args.hook, out_device="cpu")
        eval_tokens = corpus.sample(n_eval, seed=10_000)
        return Source(train=train, eval=activations(model, eval_tokens, args.hook, out_device="cpu"),
                      eval_tokens=eval_tokens, label=f"{args.model} {args.hook}, {len(train):,} training vectors",
                      model=model, hook=args.hook)
    acts, tokens = load_activation_file(args.acts)
    n_eval = max(1, int(len(acts) * args.eval_frac))
    eval_tokens = None
    if model is not None:
        if tokens is not None:
            eval_tokens = tokens[len(tokens) - max(1, int(len(tokens) * args.eval_frac)):]
        elif corpus is not None:
            eval_tokens = corpus.sample(math.ceil(args.eval_tokens / corpus.seq_len), seed=10_000)
    return Source(train=acts[:-n_eval], eval=acts[-n_eval:], eval_tokens=eval_tokens,
                  label=f"{args.acts}, {len(acts) - n_eval:,} training vectors", model=model, hook=args.hook)


# ---------------------------------------------------------------------------------------------- trainers

@dataclass(frozen=True)
class Setting:
    arch: str  # relu | topk
    d_in: int
    d_sae: int
    batch: int
    lr: float
    steps: int
    l1: float
    k: int
    seed: int = 0

    @property
    def warmup(self) -> int:
        return self.steps // 20

    @property
    def decay_steps(self) -> int:
        return self.steps - int(0.8 * self.steps)

    @property
    def dead_window_batches(self) -> int:
        return max(1, self.steps // 8)


def claimgraph_cfg(s: Setting) -> SaeConfig:
    return SaeConfig(architecture=s.arch, d_in=s.d_in, d_sae=s.d_sae, k=s.k, l1_coefficient=s.l1,
                     l1_warmup_steps=s.steps // 10,
                     resample_steps=(s.steps // 4, s.steps // 2) if s.arch == "relu" else (),
                     dead_window_tokens=s.dead_window_batches * s.batch, steps=s.steps, batch_size=s.batch, lr=s.lr,
                     lr_warmup_steps=s.warmup, lr_decay_start=0.8, init_sample_size=INIT_SAMPLE, seed=s.seed)


def data_order(s: Setting, n: int) -> tuple[torch.Tensor, Any]:
    """What claimgraph's train_sae draws: the init-sample rows, then the batches' row indices (same generator)."""
    gen = torch.Generator().manual_seed(s.seed + 1)
    init = torch.randperm(n, generator=gen)[:INIT_SAMPLE]
    return init, batch_indices(n, s.batch, s.steps, gen)


def run_claimgraph(s: Setting, acts: torch.Tensor, device: str):
    return train_sae(claimgraph_cfg(s), acts, device=device)[0]


def run_saelens(s: Setting, acts: torch.Tensor, device: str):
    """SAELens's SAETrainer on the same rows in the same order, through its data-provider interface (an iterator of
    [batch, d_in] tensors): first the batches its normalisation estimate reads (the same init sample claimgraph
    uses), then the training batches."""
    import sae_lens
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    init, batches = data_order(s, len(acts))
    acts = acts.to(device)
    n_norm = math.ceil(len(init) / s.batch)

    def provider():
        for j in range(n_norm):
            yield acts[init[j * s.batch:(j + 1) * s.batch].to(device)]
        for idx in batches:
            yield acts[idx.to(device)]

    common = dict(d_in=s.d_in, d_sae=s.d_sae, device=device, normalize_activations="expected_average_only_in")
    torch.manual_seed(s.seed)  # SAELens initialises from torch's global generator
    if s.arch == "relu":
        sae = sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(
            l1_coefficient=s.l1, l1_warm_up_steps=s.steps // 10, **common))
    else:
        sae = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(k=s.k, **common))
    cfg = SAETrainerConfig(total_training_samples=s.steps * s.batch, train_batch_size_samples=s.batch, lr=s.lr,
                           lr_end=s.lr, lr_warm_up_steps=s.warmup, lr_decay_steps=s.decay_steps,
                           dead_feature_window=s.dead_window_batches, device=device,
                           n_batches_for_norm_estimate=n_norm, logger=LoggingConfig(log_to_wandb=False))
    return sae_lens.SAETrainer(cfg, sae, provider()).fit()


def as_claimgraph(trained: Any, tmp: Path):
    """SAELens's trained SAE through SAELens's own save and claimgraph's SAELens import."""
    folder = tmp / f"saelens-{time.monotonic_ns()}"
    trained.save_inference_model(str(folder))
    return load_sae(folder, device=str(trained.W_enc.device))


RUNNERS = {"claimgraph": run_claimgraph, "saelens": run_saelens}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------- measuring

@dataclass
class Row:
    arch: str
    knob: str  # "l1=2" or "k=32"
    trainer: str
    seconds: float
    vec_per_s: float
    metrics: dict[str, float] = field(default_factory=dict)


def measure(s: Setting, src: Source, device: str, repeats: int, tmp: Path) -> list[Row]:
    """Both trainers on setting s, alternating (claimgraph, saelens) `repeats` times; best time each; quality of
    the first run (both are deterministic given the seed)."""
    best = {name: math.inf for name in RUNNERS}
    saes: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in RUNNERS.items():
            _sync(device)
            t = time.perf_counter()
            sae = fn(s, src.train, device)
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - t)
            saes.setdefault(name, sae)
    rows = []
    for name, sae in saes.items():
        ours = sae if name == "claimgraph" else as_claimgraph(sae, tmp)
        m = dict(evaluate_sae(ours, src.eval.to(device)).metrics)
        if src.model is not None and src.eval_tokens is not None and src.hook:
            m.update(ce_loss_recovered(src.model, ours, src.eval_tokens, src.hook))
        knob = f"l1={s.l1:g}" if s.arch == "relu" else f"k={s.k}"
        rows.append(Row(s.arch, knob, name, best[name], s.steps * s.batch / best[name], m))
    return rows


def fve_at_l0(points: list[tuple[float, float]], l0: float) -> float:
    """FVE at `l0` by linear interpolation in log L0 between (L0, FVE) points; nan outside their range."""
    pts = sorted((a, b) for a, b in points if a > 0)
    for (a0, f0), (a1, f1) in zip(pts, pts[1:]):
        if a0 <= l0 <= a1:
            w = 0.0 if a1 == a0 else (math.log(l0) - math.log(a0)) / (math.log(a1) - math.log(a0))
            return f0 + w * (f1 - f0)
    return float("nan")


def profile(s: Setting, src: Source, device: str, steps: int) -> None:
    """torch.profiler over each trainer's whole training call for `steps` steps: the ops with most self time, and
    how much of the wall time no op accounts for (Python and framework overhead)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    short = Setting(**{**asdict(s), "steps": steps})
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    for name, fn in RUNNERS.items():
        fn(short, src.train, device)  # warm-up
        with torch_profile(activities=activities) as prof:
            t = time.perf_counter()
            fn(short, src.train, device)
            _sync(device)
            wall = time.perf_counter() - t
        events = prof.key_averages()
        total_self = sum(e.self_cpu_time_total for e in events) / 1e6
        print(f"\n### {name}, {s.arch}, {steps} steps: {wall:.2f} s wall, {total_self:.2f} s in ops "
              f"({wall - total_self:.2f} s outside ops)\n")
        print(events.table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40))


# ---------------------------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--acts", default="model", help="'model' (activations of --model at --hook) or a file/folder")
    ap.add_argument("--model", default=None, help="model reference (default toy:default when --acts model)")
    ap.add_argument("--hook", default="blocks.0.mlp.hook_post")
    ap.add_argument("--data", default=None, help="corpus reference (default: the model's own)")
    ap.add_argument("--train-tokens", type=int, default=131_072)
    ap.add_argument("--eval-tokens", type=int, default=16_384)
    ap.add_argument("--eval-frac", type=float, default=0.1, help="held-out share of a file's rows")
    ap.add_argument("--arch", default="relu,topk")
    ap.add_argument("--expansion", type=int, default=4, help="d_sae = expansion * d_in (unless --d-sae)")
    ap.add_argument("--d-sae", type=int, default=None)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--l1", default="0.25,0.5,1,2,4,8", help="ReLU L1 coefficients swept for both trainers")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per trainer and setting (best counts)")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS", help="also profile each trainer this long")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.train_tokens, args.eval_tokens, args.steps, args.l1, args.expansion = 32_768, 4096, 150, "1,4", 2
    if args.acts == "model" and args.model is None:
        args.model = "toy:default"
    if args.threads:
        torch.set_num_threads(args.threads)
    import sae_lens

    src = activation_source(args)
    d_in = src.train.shape[1]
    d_sae = args.d_sae or args.expansion * d_in
    print(f"activations: {src.label}, d_in {d_in}; held out {len(src.eval):,}")
    print(f"device {args.device}, torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
          f"sae-lens {sae_lens.__version__}, {platform.processor() or platform.machine()}")
    print(f"d_sae {d_sae}, batch {args.batch}, lr {args.lr:g}, steps {args.steps}\n")
    settings = []
    for arch in args.arch.split(","):
        if arch == "relu":
            settings += [Setting("relu", d_in, d_sae, args.batch, args.lr, args.steps, float(v), args.k)
                         for v in args.l1.split(",")]
        elif arch == "topk":
            settings.append(Setting("topk", d_in, d_sae, args.batch, args.lr, args.steps, 0.0, args.k))
        else:
            raise SystemExit(f"Error: --arch {arch!r}: use relu and/or topk")
    rows: list[Row] = []
    ce = src.model is not None and src.eval_tokens is not None
    print("| arch | setting | trainer | train s | vectors/s | claimgraph / SAELens | L0 | FVE | dead frac |"
          + (" CE recovered |" if ce else ""))
    print("|---|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if ce else ""))
    with tempfile.TemporaryDirectory() as tmp:
        for arch in dict.fromkeys(s.arch for s in settings):  # warm-up: first-call costs out of the timings
            first = next(s for s in settings if s.arch == arch)
            for fn in RUNNERS.values():
                fn(Setting(**{**asdict(first), "steps": 20}), src.train, args.device)
        for s in settings:
            pair = measure(s, src, args.device, args.repeats, Path(tmp))
            rows += pair
            ratio = pair[0].vec_per_s / pair[1].vec_per_s
            for r in pair:
                m = r.metrics
                print(f"| {r.arch} | {r.knob} | {r.trainer} | {r.seconds:.1f} | {r.vec_per_s:,.0f} | "
                      f"{f'{ratio:.2f}' if r.trainer == 'claimgraph' else ''} | {m['l0']:.1f} | {m['fve']:.3f} | "
                      f"{m['dead_frac']:.3f} |" + (f" {m['ce_recovered']:.3f} |" if ce else ""), flush=True)
    summary(rows)
    if args.profile:
        for arch in dict.fromkeys(s.arch for s in settings):
            profile(next(s for s in settings if s.arch == arch), src, args.device, args.profile)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": [asdict(r) for r in rows]}, indent=2))


def summary(rows: list[Row]) -> None:
    by = {(r.arch, r.knob, r.trainer): r for r in rows}
    ratios = [by[(a, k, "claimgraph")].vec_per_s / by[(a, k, "saelens")].vec_per_s
              for (a, k, t) in by if t == "claimgraph"]
    print(f"\nthroughput claimgraph / SAELens: geometric mean {math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}) over {len(ratios)} settings")
    curves = {t: [(r.metrics["l0"], r.metrics["fve"]) for r in rows if r.arch == "relu" and r.trainer == t]
              for t in RUNNERS}
    pairs = []  # (trainer, knob, L0, its FVE, the other's FVE at that L0)
    for r in rows:
        if r.arch == "relu":
            other = "saelens" if r.trainer == "claimgraph" else "claimgraph"
            f = fve_at_l0(curves[other], r.metrics["l0"])
            if not math.isnan(f):
                pairs.append((r.trainer, r.knob, r.metrics["l0"], r.metrics["fve"], f))
    if pairs:
        print("\nReLU, FVE at equal L0 (the other trainer's FVE interpolated in log L0 between its sweep points):\n")
        print("| point | L0 | claimgraph FVE | SAELens FVE | claimgraph - SAELens |")
        print("|---|---:|---:|---:|---:|")
        for trainer, knob, l0, own, other in sorted(pairs, key=lambda p: p[2]):
            cg, sl = (own, other) if trainer == "claimgraph" else (other, own)
            print(f"| {trainer} {knob} | {l0:.1f} | {cg:.3f} | {sl:.3f} | {cg - sl:+.3f} |")
    for r in rows:
        if r.arch == "topk" and r.trainer == "claimgraph":
            o = by[(r.arch, r.knob, "saelens")].metrics
            print(f"\nTopK {r.knob}: FVE claimgraph {r.metrics['fve']:.3f}, SAELens {o['fve']:.3f} "
                  f"(L0 {r.metrics['l0']:.1f} / {o['l0']:.1f}; dead {r.metrics['dead_frac']:.3f} / {o['dead_frac']:.3f})")


if __name__ == "__main__":
    main()
