"""The real model lm:smollm2-135m on real text (text:mixed): load times, held-out loss, activation extraction and
SAE training throughput, each against a baseline run in the same process; and the hand-written hook adapter
against TransformerLens's TransformerBridge (when transformer-lens is installed).

    python bench/bench_lm.py [--device cpu|cuda] [--threads 2] [--windows 32] [--eval-windows 32] [--quick]

Sections (Markdown tables on stdout):
1. load: cold (a fresh cache: gguf read + dequantize + save) and warm (from the safetensors cache), each in a
   fresh subprocess; seconds for load_model and for the whole process (imports included).
2. held-out loss: mean next-token cross-entropy (nats) on text:mixed eval windows, per source.
3. adapter: our HFHookedModel vs TransformerBridge (booted from the same weights via hf_model=) vs the bare
   transformers forward: the largest |difference| of hook values and logits, and tokens/s capturing
   blocks.L.hook_resid_post (early stop) and computing logits, as ratios to the bare forward.
4. extraction: cached_activations (compute + write an entry) in tokens/s against a bare forward pass to the same
   layer, and reading the entry back.
5. SAE training on those cached activations: the claimgraph trainers (ReLU, TopK) against a plain autoencoder
   step of the same shapes (bench_sae.py's baseline).
Timings interleave the compared functions over rounds and keep each one's best round, so load changes on a
shared machine hit all alike.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_sae import baseline_step, best_rate, trainer_step

from claimgraph.experiments.substrate.acts_cache import cached_activations
from claimgraph.experiments.substrate.load import corpus_for, load_model

REF, DATA = "lm:smollm2-135m", "text:mixed"
_LOAD = ("import time, json; t0 = time.perf_counter(); "
         "from claimgraph.experiments.substrate.load import load_model; t1 = time.perf_counter(); "
         "m = load_model('lm:smollm2-135m', progress=False); t2 = time.perf_counter(); "
         "print(json.dumps({'imports_s': t1 - t0, 'load_s': t2 - t1}))")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_times(fns: dict, device: str, rounds: int = 3) -> dict[str, float]:
    """Seconds of each function's best call, over interleaved rounds after one warm-up call each."""
    best = {k: float("inf") for k in fns}
    with torch.no_grad():
        for f in fns.values():
            f()
        for _ in range(rounds):
            for k, f in fns.items():
                _sync(device)
                t = time.perf_counter()
                f()
                _sync(device)
                best[k] = min(best[k], time.perf_counter() - t)
    return best


def section_load() -> None:
    print("## load (fresh subprocess each)\n\n| cache | load_model s | process s |\n|---|---:|---:|")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "CLAIMGRAPH_CACHE": cache, "HF_HUB_OFFLINE": "1"}
        for label in ("cold (dequantize gguf)", "warm (safetensors cache)"):
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", _LOAD], env=env, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {label} | {r['load_s']:.1f} | {wall:.1f} |")
    print()


def bare_to(model, layer: int, tokens: torch.Tensor):
    """The bare transformers forward through blocks 0..layer (the later blocks removed for the call)."""
    base = model.hf.model
    full = base.layers

    def run():
        base.layers = full[:layer + 1]
        try:
            return base(input_ids=tokens, use_cache=False).last_hidden_state
        finally:
            base.layers = full
    return run


def section_loss(model, corpus, n_windows: int, batch: int) -> None:
    rows = corpus.sample_rows(min(n_windows, corpus.n_windows("eval")), seed=0, split="eval")
    toks = torch.from_numpy(corpus.tokens["eval"][rows]).long()
    docs = corpus.doc_index["eval"][rows][:, 1:]                                       # [n, T-1] target's doc
    sources = list(dict.fromkeys(d["source"] for d in corpus.documents))
    src_of_doc = np.array([sources.index(d["source"]) for d in corpus.documents] + [-1])  # [-1] for separators
    src = torch.from_numpy(src_of_doc[docs])                                         # [n, T-1] target's source
    losses = []
    t = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(toks), batch):
            b = toks[i:i + batch].to(model.device)
            logp = model(b).log_softmax(-1)[:, :-1]                                     # [b, T-1, V]
            losses.append(-logp.gather(-1, b[:, 1:, None])[..., 0].cpu())              # [b, T-1]
    nll = torch.cat(losses)
    secs = time.perf_counter() - t
    print(f"## held-out loss ({len(toks)} eval windows of {corpus.seq_len}, {nll.numel()} predicted tokens, "
          f"{nll.numel() / secs:.0f} tokens/s full forward)\n\n| source | tokens | loss (nats/token) |\n|---|---:|---:|")
    for j, s in enumerate(sources):
        mask = src == j
        if mask.any():
            print(f"| {s} | {int(mask.sum())} | {float(nll[mask].mean()):.3f} |")
    ok = src >= 0
    print(f"| all (targets inside documents) | {int(ok.sum())} | {float(nll[ok].mean()):.3f} |\n")


def section_adapter(model, corpus, device: str, layers: list[int], batch: int, rounds: int) -> None:
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        print("## adapter vs TransformerBridge\n\ntransformer-lens is not installed: section skipped\n")
        return
    from transformers import AutoModelForCausalLM

    hf2 = AutoModelForCausalLM.from_pretrained(str(model.cache_path), dtype=torch.float32).to(device).eval()
    t = time.perf_counter()
    bridge = TransformerBridge.boot_transformers(model.provenance["hub_id"], hf_model=hf2, tokenizer=model.tokenizer,
                                                 device=device)
    boot = time.perf_counter() - t
    toks = corpus.window_slice("train", 0, batch).to(device)
    ntok = toks.numel()
    names = [n for n in model.hook_names() if not n.startswith("blocks.") or int(n.split(".")[1]) in (0, *layers)]
    missing = [n for n in model.hook_names() if n not in bridge.hook_dict]
    with torch.no_grad():
        lh, ch = model.run_with_cache(toks, names)
        lb, cb = bridge.run_with_cache(toks, names_filter=names)
    print(f"## adapter vs TransformerBridge ({batch} x {corpus.seq_len} tokens of text:mixed; bridge boot "
          f"{boot:.2f} s; our {len(model.hook_names())} hook names all in the bridge: {not missing})\n")
    print("| hook (kind, over layers 0, " + ", ".join(map(str, layers)) + ") | max abs diff | max abs value |\n"
          "|---|---:|---:|")
    kinds: dict[str, list[float]] = {}
    for n in names:
        k = n.split(".", 2)[2] if n.startswith("blocks.") else n
        a, b = ch[n], cb[n].reshape(ch[n].shape)
        d = kinds.setdefault(k, [0.0, 0.0])
        d[0], d[1] = max(d[0], float((a - b).abs().max())), max(d[1], float(a.abs().max()))
    kinds["logits"] = [float((lh - lb).abs().max()), float(lh.abs().max())]
    for k, (d, v) in kinds.items():
        print(f"| {k} | {d:.3g} | {v:.3g} |")
    print("\n(ln*.hook_normalized differ by design: ours is the norm's output, weight applied, as in the toy model; "
          "TransformerLens's is x / rms before the weight.)\n")
    print("| what | bare tok/s | ours tok/s | ours / bare | bridge tok/s | bridge / bare |\n|---|---:|---:|---:|---:|---:|")
    for L in layers:
        name = f"blocks.{L}.hook_resid_post"
        r = best_times({"bare": bare_to(model, L, toks), "ours": lambda n=name: model.capture(toks, n),
                        "bridge": lambda n=name, s=L + 1: bridge.run_with_cache(toks, names_filter=[n], stop_at_layer=s)},
                       device, rounds)
        print(f"| capture {name} | {ntok / r['bare']:.0f} | {ntok / r['ours']:.0f} | {r['bare'] / r['ours']:.2f} | "
              f"{ntok / r['bridge']:.0f} | {r['bare'] / r['bridge']:.2f} |")
    r = best_times({"bare": lambda: model.hf(input_ids=toks, use_cache=False).logits, "ours": lambda: model(toks),
                    "bridge": lambda: bridge(toks)}, device, rounds)
    print(f"| logits (full forward) | {ntok / r['bare']:.0f} | {ntok / r['ours']:.0f} | {r['bare'] / r['ours']:.2f} | "
          f"{ntok / r['bridge']:.0f} | {r['bare'] / r['bridge']:.2f} |\n")


def section_extraction(model, corpus, device: str, layers: list[int], n_windows: int, batch: int):
    print(f"## activation extraction ({n_windows} windows x {corpus.seq_len} tokens, batch {batch})\n\n"
          "| hook | bare forward tok/s | extract + cache tok/s | ratio | read cached tok/s |\n|---|---:|---:|---:|---:|")
    out = {}
    for L in layers:
        hook = f"blocks.{L}.hook_resid_post"
        toks = corpus.window_slice("train", 0, n_windows)
        with tempfile.TemporaryDirectory() as cache:
            old = os.environ.get("CLAIMGRAPH_CACHE")
            os.environ["CLAIMGRAPH_CACHE"] = cache
            try:
                t = time.perf_counter()
                with torch.no_grad():
                    for i in range(0, n_windows, batch):
                        bare_to(model, L, toks[i:i + batch].to(device))()
                _sync(device)
                t_bare = time.perf_counter() - t
                t = time.perf_counter()
                acts = cached_activations(model, corpus, hook, stop=n_windows, batch_size=batch)
                t_ext = time.perf_counter() - t
                t = time.perf_counter()
                x = acts.tensor()
                t_read = time.perf_counter() - t
            finally:
                if old is None:
                    os.environ.pop("CLAIMGRAPH_CACHE", None)
                else:
                    os.environ["CLAIMGRAPH_CACHE"] = old
        n = toks.numel()
        print(f"| {hook} | {n / t_bare:.0f} | {n / t_ext:.0f} | {t_bare / t_ext:.2f} | {n / t_read:.0f} |")
        out[L] = x
    print()
    return out


def section_sae(acts: torch.Tensor, device: str, seconds: float, batch: int) -> None:
    d_in = acts.shape[1]
    d_sae = 8 * d_in
    x = acts[torch.randperm(len(acts), generator=torch.Generator().manual_seed(0))[:batch]].to(device).contiguous()
    rates = best_rate([baseline_step(d_in, d_sae, x, device), trainer_step("relu", d_in, d_sae, x, device),
                       trainer_step("topk", d_in, d_sae, x, device)], device, seconds)
    base, relu, topk = (r * batch for r in rates)
    print(f"## SAE training on cached activations (d_in {d_in}, d_sae {d_sae}, batch {batch})\n\n"
          "| trainer | vectors/s | / plain AE step |\n|---|---:|---:|\n"
          f"| plain AE step (baseline) | {base:.0f} | 1.00 |\n| claimgraph ReLU | {relu:.0f} | {relu / base:.2f} |\n"
          f"| claimgraph TopK (k 32) | {topk:.0f} | {topk / base:.2f} |\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--windows", type=int, default=32, help="windows for extraction timing")
    ap.add_argument("--eval-windows", type=int, default=32, help="eval windows for the held-out loss")
    ap.add_argument("--batch", type=int, default=8, help="windows per forward pass")
    ap.add_argument("--layers", default="3,15", help="blocks whose resid_post is captured")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sae-seconds", type=float, default=3.0)
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: load,loss,adapter,extraction,sae")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    layers = [int(x) for x in args.layers.split(",")]
    print(f"# bench_lm: {REF} on {DATA}, device {args.device}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start\n")
    if "load" not in skip:
        section_load()
    model = load_model(REF, device=args.device, progress=False)
    corpus, _ = corpus_for(REF, DATA)
    if "loss" not in skip:
        section_loss(model, corpus, args.eval_windows, args.batch)
    if "adapter" not in skip:
        section_adapter(model, corpus, args.device, layers, args.batch, args.rounds)
    acts = None
    if "extraction" not in skip or "sae" not in skip:
        acts = section_extraction(model, corpus, args.device, layers[:1], args.windows, args.batch)
    if "sae" not in skip and acts:
        section_sae(next(iter(acts.values())), args.device, args.sae_seconds, batch=1024)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
