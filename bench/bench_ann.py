"""Approximate-nearest-neighbour libraries for suggest at scale: build time, all-nodes k-NN time, recall.

    python bench/bench_ann.py --nodes 200000

On vectors generated as in bench_scale.py (real encoder vectors of a pool of benchmark sentences, each node
a noisy copy of one), each library builds an index over every vector and then queries every vector for its
k nearest neighbours (k = best-per-node + 1 for the node itself + slack), with 2 threads. Recall is what
suggest needs: the share of the exact best `per_node` neighbours with cosine >= threshold of a random
sample of nodes (brute force) that the k-NN lists hold. The same run times the exact blocked products
over the same matrix (the all-pairs route suggest takes below the ANN size) as the baseline.

Candidates: hnswlib, usearch (f32 and i8 storage), faiss (HNSW, inner product). Extras: pip install -e '.[bench]';
a library that is not installed is skipped.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import exact_candidates, noisy_copies, pool_sentences, pool_vectors

THREADS = 2


def exact_lists(X: np.ndarray, sample: np.ndarray, threshold: float, per_node: int) -> dict[int, list[int]]:
    return {p: cand[:per_node] for p, cand in exact_candidates(X, sample, threshold).items()}


def recall(knn: np.ndarray, want: dict[int, list[int]]) -> float:
    hit = total = 0
    for p, good in want.items():
        row = set(knn[p].tolist())
        hit += sum(q in row for q in good)
        total += len(good)
    return hit / max(total, 1)


def run_hnswlib(X, k, M, ef_add, ef):
    import hnswlib

    t = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=X.shape[1])
    index.init_index(max_elements=len(X), M=M, ef_construction=ef_add)
    index.set_num_threads(THREADS)
    index.add_items(X, np.arange(len(X)))
    build = time.perf_counter() - t
    index.set_ef(max(ef, k))
    t = time.perf_counter()
    labels, _ = index.knn_query(X, k=k, num_threads=THREADS)
    return build, time.perf_counter() - t, labels


def run_usearch(X, k, M, ef_add, ef, dtype):
    from usearch.index import Index

    t = time.perf_counter()
    index = Index(ndim=X.shape[1], metric="ip", dtype=dtype, connectivity=M, expansion_add=ef_add,
                  expansion_search=max(ef, k))
    index.add(np.arange(len(X)), X, threads=THREADS)
    build = time.perf_counter() - t
    t = time.perf_counter()
    found = index.search(X, k, threads=THREADS)
    return build, time.perf_counter() - t, found.keys


def run_faiss(X, k, M, ef_add, ef):
    import faiss

    faiss.omp_set_num_threads(THREADS)
    t = time.perf_counter()
    index = faiss.IndexHNSWFlat(X.shape[1], M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_add
    index.add(X)
    build = time.perf_counter() - t
    index.hnsw.efSearch = max(ef, k)
    t = time.perf_counter()
    _, labels = index.search(X, k)
    return build, time.perf_counter() - t, labels


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=200_000)
    ap.add_argument("--pool", type=int, default=20_000)
    ap.add_argument("--threshold", type=float, default=0.65)
    ap.add_argument("--per-node", type=int, default=10)
    ap.add_argument("--k", type=int, default=24, help="neighbours asked per node (the node itself is one)")
    ap.add_argument("--sample", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=None, help="run only these candidates (names as printed)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "claimgraph-bench-scale")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    pool = pool_sentences(args.pool, args.seed)
    pool_vec = pool_vectors(pool, args.workdir / f"pool_{len(pool)}_{args.seed}.npy")
    rng = np.random.default_rng(args.seed)
    X = noisy_copies(pool_vec, rng.integers(len(pool), size=args.nodes), rng)
    sample = np.random.default_rng(args.seed + 1).choice(args.nodes, size=args.sample, replace=False)
    want = exact_lists(X, sample, args.threshold, args.per_node)
    print(f"{args.nodes} vectors, {sum(map(len, want.values()))} exact best pairs in the sample; load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    M, ef_add, ef = 16, 128, 64
    candidates = {
        "hnswlib": lambda: run_hnswlib(X, args.k, M, ef_add, ef),
        "usearch-f32": lambda: run_usearch(X, args.k, M, ef_add, ef, "f32"),
        "usearch-i8": lambda: run_usearch(X, args.k, M, ef_add, ef, "i8"),
        "faiss-hnsw": lambda: run_faiss(X, args.k, M, ef_add, ef),
    }
    print("| library | build s | k-NN of every node s | total s | recall |\n|---|---|---|---|---|")
    for name, fn in candidates.items():
        if args.only and name not in args.only:
            continue
        try:
            build, query, labels = fn()
        except ImportError as e:
            print(f"| {name} | not installed ({e}) | | | |")
            continue
        print(f"| {name} | {build:.1f} | {query:.1f} | {build + query:.1f} | {recall(labels, want):.4f} |", flush=True)
    from claimgraph.graph.similarity import similar_pairs

    t = time.perf_counter()
    similar_pairs(X, args.threshold, progress=False)
    print(f"| exact blocked products (similar_pairs) | | | {time.perf_counter() - t:.1f} | 1 |")
    print(f"load at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
