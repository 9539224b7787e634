"""Activations at a hook, computed once per (model, hook, corpus slice) and cached on disk for every experiment
(and SAELens, issue 12) that reads them. Entries at several hooks of one slice can be computed together, from
one forward pass (`cached_activations_many`: the emergence sweep reads a dozen depths of one model); each is
still its own entry.

Layout (one folder per entry; written to a temp folder and renamed, so a reader never sees half an entry):

    cache_dir()/acts/<model_key>/<corpus_key>/<split>_<start>-<stop>/<hook>/
        manifest.json            what the entry is (below)
        tokens.npy               int64 [n_windows, seq_len]: the windows, in slice order
        shard-00000.safetensors  {"acts": float32 [rows, d]}, rows = windows_per_shard * seq_len positions,
        shard-00001.safetensors  position-major: row r is window r // seq_len, position r % seq_len
        ...

manifest.json: `format` ("claimgraph-acts/1"), `model` (ref and provenance: for lm: the gguf sha256 and
quantization; for a weight-shuffled control its seed), `hook`, `corpus` (ref, manifest: documents and tokens
sha256, tokenizer), `split`, `start`, `stop`, `seq_len`, `d`, `dtype`, `n_tokens`, `separator_id`,
`shards` (file, rows, sha256 each), and `build` (seconds, tokens/s, batch size, device).
Any reader can load it with safetensors + json alone; `ActsSlice` is the Python view.

The key hashes what determines the values: the model's provenance (not its reference string alone), the
corpus' tokens sha256, the slice and the hook. Models without a provenance (an in-memory model) are not cached.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from claimgraph.experiments.context import cache_dir, write_json_atomic
from claimgraph.experiments.records import sha256_file
from claimgraph.graph.errors import InvalidInput

from .atomic import build_all_once

FORMAT = "claimgraph-acts/1"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def model_fingerprint(model: Any) -> dict[str, Any] | None:
    """What identifies a model's weights: its provenance (lm:/hf:, shuffled seed) or a toy's cache key and step."""
    prov = getattr(model, "provenance", None)
    if prov:
        keep = {k: prov[k] for k in ("ref", "gguf_sha256", "quantization", "dequantized_to", "transformers", "folder",
                                     "shuffled_seed", "config_sha256") if k in prov}
        return keep
    cache = getattr(model, "cache_path", None)
    if cache is not None and getattr(model, "ref", None):
        return {"ref": model.ref, "cache_key": Path(cache).name, "step": getattr(model, "step", None),
                "shuffled_seed": getattr(model, "shuffled_seed", None)}
    return None


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ActsSlice:
    """A cached entry: its manifest, the windows' tokens, and the activations (all at once or shard by shard)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.manifest: dict[str, Any] = json.loads((self.folder / "manifest.json").read_text())

    def __repr__(self) -> str:
        m = self.manifest
        return (f"ActsSlice({m['model']['ref']} {m['hook']} on {m['corpus']['ref']} {m['split']}[{m['start']}:"
                f"{m['stop']}], {m['n_tokens']} x {m['d']})")

    @property
    def seq_len(self) -> int:
        return int(self.manifest["seq_len"])

    def tokens(self) -> torch.Tensor:
        """LongTensor [n_windows, seq_len]."""
        return torch.from_numpy(np.load(self.folder / "tokens.npy")).long()

    def shards(self) -> Iterator[torch.Tensor]:
        """The activations shard by shard, float32 [rows, d] each, in position-major order."""
        from safetensors.torch import load_file

        for s in self.manifest["shards"]:
            yield load_file(str(self.folder / s["file"]))["acts"].float()

    def tensor(self, *, skip_separators: bool = False) -> torch.Tensor:
        """All activations, float32 [n_windows * seq_len, d]; with skip_separators, only positions whose token
        is not the document separator (position 0 of every window, and document boundaries)."""
        acts = torch.cat(list(self.shards()))
        if skip_separators:
            acts = acts[self.tokens().reshape(-1) != int(self.manifest["separator_id"])]
        return acts

    def verify(self) -> None:
        """Recompute every shard's sha256 against the manifest (raises InvalidInput on a mismatch)."""
        for s in self.manifest["shards"]:
            if sha256_file(self.folder / s["file"]) != s["sha256"]:
                raise InvalidInput(f"{self.folder / s['file']} does not match its manifest sha256; delete the folder")


def entry_folder(model: Any, corpus: Any, hook: str, split: str, start: int, stop: int, dtype: str) -> Path | None:
    fp = model_fingerprint(model)
    if fp is None:
        return None
    corpus_id = {"ref": corpus.ref, "tokens": corpus.manifest["tokens_sha256"]}
    model_dir = f"{str(fp.get('ref', 'model')).replace(':', '_').replace('/', '_')[-40:]}-{_key(fp)}"
    corpus_dir = f"{corpus.name}-{_key(corpus_id)}"
    leaf = hook if dtype == "float32" else f"{hook}.{dtype}"
    return cache_dir() / "acts" / model_dir / corpus_dir / f"{split}_{start}-{stop}" / leaf


def cached_activations(model: Any, corpus: Any, hook: str, *, split: str = "train", start: int = 0,
                       stop: int | None = None, batch_size: int = 16, dtype: str = "float32",
                       windows_per_shard: int = 256, progress: Callable[[int, int], None] | None = None,
                       log: Callable[[str], None] | None = None) -> ActsSlice:
    """Activations of `model` at `hook` on windows [start, stop) of `corpus`'s `split`: from the cache when an
    entry exists, else computed in batches (forward pass stopped at the hook) and cached.

    `progress(done_windows, total_windows)` is called after each batch; `log` gets one line when computing."""
    return cached_activations_many(model, corpus, [hook], split=split, start=start, stop=stop, batch_size=batch_size,
                                   dtype=dtype, windows_per_shard=windows_per_shard, progress=progress, log=log)[hook]


def cached_activations_many(model: Any, corpus: Any, hooks: list[str], *, split: str = "train", start: int = 0,
                            stop: int | None = None, batch_size: int = 16, dtype: str = "float32",
                            windows_per_shard: int = 256, progress: Callable[[int, int], None] | None = None,
                            log: Callable[[str], None] | None = None) -> dict[str, ActsSlice]:
    """`cached_activations` at several hooks: the entries missing from the cache are computed together, from
    one forward pass per batch (stopped at the deepest missing hook), and each is cached as its own entry (the
    same entry a one-hook call makes and finds). {hook: ActsSlice}."""
    if dtype not in DTYPES:
        raise InvalidInput(f"dtype {dtype!r} unknown; use one of {', '.join(DTYPES)}")
    hooks = list(dict.fromkeys(hooks))
    for hook in hooks:
        if hook.endswith("hook_pattern"):
            raise InvalidInput("attention patterns are [B, H, T, T], not per position; they are not cached")
        model._site(hook)  # unknown names fail before any work
    have = corpus.n_windows(split)
    stop = have if stop is None else int(stop)
    if not 0 <= start < stop <= have:
        raise InvalidInput(f"slice [{start}, {stop}) is outside {corpus.ref}'s {have} {split} windows")
    folders = {h: entry_folder(model, corpus, h, split, start, stop, dtype) for h in hooks}
    if any(f is None for f in folders.values()):
        raise InvalidInput("this model has no provenance to key a cache entry on; load it with load_model")
    finals = {h: f for h, f in folders.items() if f is not None}
    build_all_once(list(finals.values()), "manifest.json",
                   lambda tmps: _compute(model, corpus, {h: tmps[finals[h]] for h in hooks if finals[h] in tmps},
                                         split, start, stop, batch_size, dtype, windows_per_shard, progress, log))
    return {h: ActsSlice(f) for h, f in finals.items()}


class _Entry:
    """One hook's entry being written: its temp folder, the shards so far and the rows not yet flushed."""

    def __init__(self, folder: Path, dtype: str):
        self.folder, self.dtype = folder, dtype
        self.shards: list[dict[str, Any]] = []
        self.pending: list[torch.Tensor] = []
        self.d: int | None = None

    def add(self, act: torch.Tensor) -> None:
        self.d = act.shape[1]
        self.pending.append(act)

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.pending:
            return
        block = torch.cat(self.pending).to(DTYPES[self.dtype]).contiguous()                # [rows, d]
        name = f"shard-{len(self.shards):05d}.safetensors"
        save_file({"acts": block}, str(self.folder / name))
        self.shards.append({"file": name, "rows": int(block.shape[0]), "sha256": sha256_file(self.folder / name)})
        self.pending = []


def _compute(model: Any, corpus: Any, tmps: dict[str, Path], split: str, start: int, stop: int, batch_size: int,
             dtype: str, windows_per_shard: int, progress: Callable[[int, int], None] | None,
             log: Callable[[str], None] | None) -> None:
    """Write the entries of every hook in `tmps` (hook -> temp folder) from one pass over the windows."""
    tokens = np.ascontiguousarray(corpus.tokens[split][start:stop])                       # [n, T]
    n, T = tokens.shape
    entries = {}
    for hook, tmp in tmps.items():
        tmp.mkdir(parents=True)
        np.save(tmp / "tokens.npy", tokens)
        entries[hook] = _Entry(tmp, dtype)
    if log is not None:
        where = next(iter(tmps.values())).parent
        log(f"computing {', '.join(tmps)} activations of {getattr(model, 'ref', 'model')} on {corpus.ref} "
            f"{split}[{start}:{stop}] ({n * T} tokens, one forward pass); cached at {where}")
    pending_rows = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, n, batch_size):
            batch = torch.from_numpy(tokens[i:i + batch_size]).long().to(model.device)     # [b, T]
            acts = model.capture_many(batch, list(tmps))                                   # {hook: [b, T, ...]}
            for hook, act in acts.items():
                entries[hook].add(act.reshape(batch.shape[0] * T, -1).float().cpu())       # [b * T, d]
            pending_rows += batch.shape[0]
            if pending_rows >= windows_per_shard:
                for e in entries.values():
                    e.flush()
                pending_rows = 0
            if progress is not None:
                progress(min(i + batch_size, n), n)
    secs = time.perf_counter() - t0
    for hook, e in entries.items():
        e.flush()
        write_json_atomic(e.folder / "manifest.json", {
            "format": FORMAT, "model": model_fingerprint(model), "hook": hook,
            "corpus": {"ref": corpus.ref, "documents_sha256": corpus.manifest["documents_sha256"],
                       "tokens_sha256": corpus.manifest["tokens_sha256"], "tokenizer": corpus.manifest["tokenizer"]},
            "split": split, "start": start, "stop": stop, "seq_len": T, "d": e.d, "dtype": dtype, "n_tokens": n * T,
            "separator_id": corpus.manifest["separator_id"], "shards": e.shards, "layout": "position-major rows",
            "build": {"seconds": round(secs, 3), "tokens_per_s": round(n * T / max(secs, 1e-9), 1),
                      "batch_size": batch_size, "device": str(model.device), "torch_threads": torch.get_num_threads(),
                      "hooks_in_pass": list(tmps)}})


def _main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Compute (or find) cached activations and print the entry's folder")
    ap.add_argument("--model", default="lm:smollm2-135m")
    ap.add_argument("--data", default="text:mixed")
    ap.add_argument("--hook", required=True)
    ap.add_argument("--split", default="train")
    ap.add_argument("--windows", type=int, default=None, help="slice [0, N) (default: the whole split)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    from .load import corpus_for, load_model

    model = load_model(args.model, device=args.device)
    corpus, _ = corpus_for(args.model, args.data)
    acts = cached_activations(model, corpus, args.hook, split=args.split, stop=args.windows,
                              batch_size=args.batch_size, log=lambda m: print(m, file=sys.stderr))
    print(acts.folder)
    print(json.dumps(acts.manifest["build"]))


if __name__ == "__main__":
    _main()
