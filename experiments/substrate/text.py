"""Real-text corpora (`text:<recipe>` data refs) from text that installs offline with the project and that nobody
on this project wrote, with character-level labels mapped to tokens through the tokenizer's offsets.

Sources (each document keeps its provenance: package, version, path, sha256 of its text):
- `prose:pydoc`      English prose: the Python language reference topics in the standard library's pydoc_data
                     (one document per topic);
- `prose:docstrings` English prose: module docstrings of standard-library modules not used as code documents;
- `code:stdlib`      Python source: top-level standard-library modules (2-40k characters each), in name order;
- `base64:certifi`   PEM certificates of certifi's cacert.pem, one document per certificate with its `#` header;
- `base64:mime`      base64 of real binary files: matplotlib's PNG icons as MIME parts (stdlib `email`);
- `arabic:faker`     Faker's Arabic-locale provider sources (Python with Arabic string literals);
- `arabic:pycountry` pycountry's Arabic ISO catalogs (.mo), written out as gettext .po entries, 40 a document.
Documents of a source are taken in a fixed order up to the recipe's character budget; every
`eval_every`-th document of each source is held out (the split is by document).

Labels come from the characters of a document (`char_labels`), before tokenization:
- `base64`: runs of >= 20 characters of the base64 alphabet (with `=` padding) holding an upper-case and a
  lower-case letter and a digit or `+`/`/`, and the whitespace between consecutive runs (a PEM body is one span);
- `arabic`: Arabic-script characters and whatever lies between two of them on one line without a Latin letter
  or digit (the spaces and punctuation of an Arabic phrase);
- `code`: Python source outside comments and string literals (Python documents), and doctest lines (`>>>`,
  `...` prompts) in prose documents;
- `prose`: prose documents outside doctest lines, and the comments and docstrings of Python documents;
- `string`: inside a Python string literal (docstrings included);
- `comment`: inside a Python comment.
A token carries a label when at least half of its characters (tokenizer offsets) carry it.

Token windows: each split is one stream `doc, <sep>, doc, <sep>, ...` (sep = `<|endoftext|>` where the
tokenizer has it, else its eos token), cut into chunks of `seq_len - 1` tokens, each prefixed by the
separator, so every window starts like a fresh document; the separator carries no label. The windows of a
split are stored in an order fixed by `shuffle_seed`, so a slice `[0, n)` (what the activation cache keys
on) is a sample across the sources, and `sample(n, seed)` draws n distinct windows.

`token_alone_f1`: for each label, the best predictor that sees only the current token id (majority label of
the id on the train split; unseen ids negative), scored by F1 on the eval split. A "context feature" is worth
testing only where this is well below 1: the token does not give the label away. `open_positives` is the
share of the label's eval positives whose token id carries the label less than 90% of the time on the train
split (or never occurs there): the positions where the token does not give the label away, so only context
can tell.

Building is deterministic (documents in a fixed order, no randomness) and cached under
`cache_dir()/text/`: the documents per (recipe, source versions) and the token arrays per tokenizer, each with
a manifest holding the sha256 of what was built. `python -m claimgraph.experiments.substrate.text text:mixed`
builds a corpus with lm:smollm2-135m's tokenizer and prints its stats table.
"""
from __future__ import annotations

import ast
import gettext
import hashlib
import importlib.util
import io
import json
import platform
import re
import sys
import tokenize
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from claimgraph.experiments.context import cache_dir, write_json_atomic
from claimgraph.graph.errors import InvalidInput, NotFound

from .atomic import build_once

TEXT_VERSION = 3  # bump when sources, labelling or windowing change what a cached corpus means
LABELS = ("base64", "arabic", "code", "prose", "string", "comment")
SPLITS = ("train", "eval")


# ---------------------------------------------------------------------------------------------- recipes

class TextRecipe(BaseModel):
    """A named real-text corpus: how many characters of each source, window length, held-out share."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: dict[str, int] = Field(description="source name -> character budget")
    seq_len: int = Field(128, ge=8, description="tokens per window, the separator included")
    eval_every: int = Field(5, ge=2, description="every n-th document of each source is held out")
    shuffle_seed: int = Field(0, description="windows are stored in an order fixed by this seed, so that a "
                                             "slice [0, n) of a split is a sample across its sources")


TEXT_RECIPES: dict[str, TextRecipe] = {
    # the corpus the real-model experiments read: ~1.1M characters, ~0.4M tokens with SmolLM2's tokenizer
    "mixed": TextRecipe(sources={"prose:pydoc": 250_000, "prose:docstrings": 80_000, "code:stdlib": 250_000,
                                 "base64:certifi": 120_000, "base64:mime": 40_000, "arabic:faker": 160_000,
                                 "arabic:pycountry": 90_000}),
    # for tests: every source, a few documents each
    "small": TextRecipe(sources={"prose:pydoc": 12_000, "prose:docstrings": 6_000, "code:stdlib": 12_000,
                                 "base64:certifi": 8_000, "base64:mime": 6_000, "arabic:faker": 10_000,
                                 "arabic:pycountry": 8_000}, seq_len=64, eval_every=3),
}


# ---------------------------------------------------------------------------------------------- documents

@dataclass(frozen=True)
class Document:
    """One document and where its text came from."""

    id: str          # source/path[#part]
    source: str      # e.g. code:stdlib
    kind: str        # prose | python | pem | mime | po (how its labels are read)
    package: str
    version: str
    path: str        # inside the package
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "kind": self.kind, "package": self.package,
                "version": self.version, "path": self.path, "sha256": self.sha256, "chars": len(self.text)}


def _pkg_dir(module: str, package: str) -> Path:
    """A package's folder, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise NotFound(f"the text source needs the package {package}, which is not installed: pip install {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _stdlib() -> Path:
    import sysconfig

    return Path(sysconfig.get_paths()["stdlib"])


_PY = ("python", platform.python_version())


def _stdlib_modules() -> list[Path]:
    """Top-level stdlib modules of 2-40k characters, in name order (code documents take them first)."""
    out = []
    for p in sorted(_stdlib().glob("*.py")):
        size = p.stat().st_size
        if 2_000 <= size <= 40_000 and not p.name.startswith("_"):
            out.append(p)
    return out


def _src_pydoc() -> Iterator[Document]:
    from pydoc_data import topics  # data only: a dict of topic -> text

    for key in sorted(topics.topics):
        yield Document(f"prose:pydoc/{key}", "prose:pydoc", "prose", *_PY, f"pydoc_data/topics.py#{key}",
                       topics.topics[key])


def _code_paths(budget: int) -> list[Path]:
    """The modules `code:stdlib` takes with `budget` characters (so docstrings can avoid them)."""
    taken, used = [], 0
    for p in _stdlib_modules():
        if used >= budget:
            break
        taken.append(p)
        used += len(p.read_text(encoding="utf-8"))
    return taken


def _src_code(budget: int) -> Iterator[Document]:
    for p in _code_paths(budget):
        yield Document(f"code:stdlib/{p.name}", "code:stdlib", "python", *_PY, p.name, p.read_text(encoding="utf-8"))


def _src_docstrings(code_budget: int) -> Iterator[Document]:
    used = {p.name for p in _code_paths(code_budget)}
    for p in _stdlib_modules():
        if p.name in used:
            continue
        try:
            doc = ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")), clean=True)
        except SyntaxError:
            continue
        if doc and len(doc) >= 300:
            yield Document(f"prose:docstrings/{p.name}", "prose:docstrings", "prose", *_PY, f"{p.name}#docstring", doc)


def _src_certifi() -> Iterator[Document]:
    root = _pkg_dir("certifi", "certifi")
    text = (root / "cacert.pem").read_text(encoding="utf-8")
    ver = _version("certifi")
    blocks = [b.strip("\n") for b in re.split(r"(?<=-----END CERTIFICATE-----)\n", text) if b.strip()]
    for i, block in enumerate(blocks):
        yield Document(f"base64:certifi/cacert.pem#{i}", "base64:certifi", "pem", "certifi", ver, "cacert.pem",
                       block + "\n")


def _src_mime() -> Iterator[Document]:
    from email.mime.image import MIMEImage

    root = _pkg_dir("matplotlib", "matplotlib")
    ver = _version("matplotlib")
    for p in sorted((root / "mpl-data" / "images").glob("*.png")):
        msg = MIMEImage(p.read_bytes(), _subtype="png")
        msg.add_header("Content-Disposition", "attachment", filename=p.name)
        rel = p.relative_to(root).as_posix()
        yield Document(f"base64:mime/{rel}", "base64:mime", "mime", "matplotlib", ver, rel, msg.as_string())


def _src_faker() -> Iterator[Document]:
    root = _pkg_dir("faker", "faker")
    ver = _version("faker")
    for p in sorted(root.glob("providers/*/ar_*/__init__.py")):
        rel = p.relative_to(root).as_posix()
        yield Document(f"arabic:faker/{rel}", "arabic:faker", "python", "faker", ver, rel,
                       p.read_text(encoding="utf-8"))


def _po_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _src_pycountry() -> Iterator[Document]:
    root = _pkg_dir("pycountry", "pycountry")
    ver = _version("pycountry")
    for p in sorted((root / "locales" / "ar" / "LC_MESSAGES").glob("*.mo")):
        with open(p, "rb") as fh:
            catalog = gettext.GNUTranslations(fh)._catalog  # type: ignore[attr-defined]
        pairs = sorted((k, v) for k, v in catalog.items() if isinstance(k, str) and k)
        rel = p.relative_to(root).as_posix()
        for j in range(0, len(pairs), 40):
            body = "".join(f"msgid {_po_quote(k)}\nmsgstr {_po_quote(v)}\n\n" for k, v in pairs[j:j + 40])
            yield Document(f"arabic:pycountry/{rel}#{j // 40}", "arabic:pycountry", "po", "pycountry", ver, rel,
                           f"# {p.stem} (Arabic)\n\n" + body)


SOURCES: dict[str, Callable[[dict[str, int]], Iterator[Document]]] = {
    "prose:pydoc": lambda b: _src_pydoc(),
    "prose:docstrings": lambda b: _src_docstrings(b.get("code:stdlib", 0)),
    "code:stdlib": lambda b: _src_code(b["code:stdlib"]),
    "base64:certifi": lambda b: _src_certifi(),
    "base64:mime": lambda b: _src_mime(),
    "arabic:faker": lambda b: _src_faker(),
    "arabic:pycountry": lambda b: _src_pycountry(),
}


def build_documents(recipe: TextRecipe) -> list[Document]:
    """The recipe's documents, in source order, each source up to its character budget (at least one document)."""
    unknown = set(recipe.sources) - set(SOURCES)
    if unknown:
        raise InvalidInput(f"unknown text source(s) {', '.join(sorted(unknown))}; known: {', '.join(SOURCES)}")
    docs: list[Document] = []
    for name in SOURCES:  # fixed order, whatever order the recipe lists them in
        if name not in recipe.sources:
            continue
        budget, used, n = recipe.sources[name], 0, 0
        for d in SOURCES[name](recipe.sources):
            if n and used + len(d.text) > budget:
                break
            docs.append(d)
            used += len(d.text)
            n += 1
        if n == 0:
            raise NotFound(f"text source {name} yielded no document; is its package installed?")
    return docs


# ---------------------------------------------------------------------------------------------- char labels

_B64_RUN = re.compile(r"[A-Za-z0-9+/]{20,}={0,2}")
_AR = "\u0600-\u06FF\u0750-\u077F\u08A0-\u08FF\uFB50-\uFDFF\uFE70-\uFEFF"
_AR_SPAN = re.compile(f"[{_AR}]+(?:[^A-Za-z0-9\\n{_AR}]*[{_AR}]+)*")
_DOCTEST = re.compile(r"^[ \t]*(?:>>>|\.\.\.)(?: .*)?$", re.MULTILINE)


def _mark(mask: np.ndarray, spans: Iterator[tuple[int, int]]) -> None:
    for s, e in spans:
        mask[s:e] = True


def _base64_spans(text: str) -> Iterator[tuple[int, int]]:
    runs = [m.span() for m in _B64_RUN.finditer(text)
            if re.search(r"[A-Z]", m.group()) and re.search(r"[a-z]", m.group()) and re.search(r"[0-9+/]", m.group())]
    i = 0
    while i < len(runs):  # join runs separated only by whitespace (the lines of one base64 body)
        s, e = runs[i]
        while i + 1 < len(runs) and text[e:runs[i + 1][0]].isspace():
            i += 1
            e = runs[i][1]
        yield s, e
        i += 1


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for m in re.finditer("\n", text):
        starts.append(m.end())
    return starts


def _python_spans(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(string, comment, docstring) character masks of Python source, from the tokenize module."""
    n = len(text)
    string, comment, doc = (np.zeros(n, bool) for _ in range(3))
    starts = _line_starts(text)

    def off(pos: tuple[int, int]) -> int:
        return starts[pos[0] - 1] + pos[1]

    try:
        toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return string, comment, doc  # not tokenizable as a whole: no string/comment marks (documented limit)
    prev_significant = tokenize.NEWLINE
    for t in toks:
        s, e = off(t.start), off(t.end)
        if t.type == tokenize.STRING:
            string[s:e] = True
            if prev_significant in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                doc[s:e] = True  # a string standing as a statement: docstring or bare string
        elif t.type == tokenize.COMMENT:
            comment[s:e] = True
        if t.type not in (tokenize.NL, tokenize.COMMENT):
            prev_significant = t.type
    return string, comment, doc


def char_labels(doc: Document) -> dict[str, np.ndarray]:
    """Bool masks over the document's characters, one per label in LABELS."""
    text, n = doc.text, len(doc.text)
    out = {name: np.zeros(n, bool) for name in LABELS}
    _mark(out["base64"], _base64_spans(text))
    _mark(out["arabic"], (m.span() for m in _AR_SPAN.finditer(text)))
    if doc.kind == "python":
        string, comment, docstr = _python_spans(text)
        out["string"], out["comment"] = string, comment
        out["prose"] = comment | docstr
        out["code"] = ~(string | comment)
    elif doc.kind == "prose":
        doctest = np.zeros(n, bool)
        _mark(doctest, (m.span() for m in _DOCTEST.finditer(text)))
        out["code"] = doctest
        out["prose"] = ~doctest
    return out


# ---------------------------------------------------------------------------------------------- token categories

# Which tokens of the tokenizer a category's feature should make the model predict (logit weights, ablation,
# pinned sampling on text: corpora), read from each token's decoded string alone, never from the corpus:
# - `base64`: a non-empty string made only of the base64 alphabet (A-Z a-z 0-9 + / and = padding), no space;
#   inside a base64 body every next token is one of these. Many word pieces ("ing", "The") also qualify, so the
#   set is large (its base rate is reported); the jobs compare against nulls, not against chance;
# - `arabic`: a string holding an Arabic-script character and no Latin letter or digit.
TOKEN_CATEGORIES = ("base64", "arabic")
_B64_TOKEN = re.compile(r"[A-Za-z0-9+/=]+")
_AR_CHAR = re.compile(f"[{_AR}]")
_LATIN = re.compile(r"[A-Za-z0-9]")


def token_strings(tokenizer: Any) -> list[str]:
    """The decoded string of every token id 0..len(tokenizer)-1 (byte-level pieces decoded to text); decoded
    once per tokenizer object (tens of thousands of decode calls) and kept on it."""
    strings = getattr(tokenizer, "_claimgraph_token_strings", None)
    if strings is None or len(strings) != len(tokenizer):
        strings = [tokenizer.decode([i]) for i in range(len(tokenizer))]
        try:
            tokenizer._claimgraph_token_strings = strings
        except AttributeError:  # a tokenizer that takes no attributes decodes again next time
            pass
    return strings


def category_token_mask(tokenizer: Any, category: str, d_vocab: int | None = None) -> np.ndarray:
    """bool [d_vocab]: the tokens of `category` (TOKEN_CATEGORIES) by the rule above; ids beyond the tokenizer
    (padding rows of the embedding) are outside every category."""
    if category not in TOKEN_CATEGORIES:
        raise InvalidInput(f"no token set for category {category!r} on real text; known: {', '.join(TOKEN_CATEGORIES)}")
    strings = token_strings(tokenizer)
    n = len(strings) if d_vocab is None else d_vocab
    out = np.zeros(n, bool)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, s in enumerate(strings[:n]):
        if i in special or not s:
            continue
        if category == "base64":
            out[i] = _B64_TOKEN.fullmatch(s) is not None
        else:
            out[i] = _AR_CHAR.search(s) is not None and _LATIN.search(s) is None
    return out


# ---------------------------------------------------------------------------------------------- tokenized corpus

def _sha(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the tokenizer's full definition (vocabulary, merges, normalisation), first 16 hex digits."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def separator_id(tokenizer: Any) -> int:
    """`<|endoftext|>` where the vocabulary has it (GPT-2, Pythia, SmolLM2 document separator), else eos."""
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return int(vocab["<|endoftext|>"])
    if tokenizer.eos_token_id is None:
        raise InvalidInput("the tokenizer has neither <|endoftext|> nor an eos token to separate documents")
    return int(tokenizer.eos_token_id)


def _token_labels(doc: Document, tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
    """(token ids [n], labels [n, L]) of one document: a token has a label when >= half its characters do."""
    enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    offs = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)                # [n, 2]
    masks = char_labels(doc)
    lab = np.zeros((len(ids), len(LABELS)), bool)
    width = np.maximum(offs[:, 1] - offs[:, 0], 0)
    for j, name in enumerate(LABELS):
        cum = np.concatenate([[0], np.cumsum(masks[name], dtype=np.int64)])                  # [chars + 1]
        count = cum[offs[:, 1]] - cum[offs[:, 0]]
        lab[:, j] = (width > 0) & (2 * count >= width)
    return ids, lab


class TextCorpus:
    """Windows of a tokenized real-text corpus with per-token labels, split by document.

    Per split: `tokens[split]` LongTensor-able int64 [N, T]; `labels[split]` bool [N, T, L] (order LABELS);
    `doc_index[split]` int32 [N, T] (index into `documents`, -1 at separators). Same interface the jobs use
    for the synthetic corpus where it makes sense: `seq_len`, `name`, `sample(n, seed, split)`,
    `span_labels(tokens)` (for windows of this corpus)."""

    vocab = None  # no synthetic vocabulary: the model's tokenizer is the vocabulary (check_fit skips its check)

    def __init__(self, name: str, recipe: TextRecipe, folder: Path, manifest: dict[str, Any]):
        self.name, self.recipe, self.folder, self.manifest = name, recipe, folder, manifest
        self.documents: list[dict[str, Any]] = [json.loads(line) for line in
                                                (folder / "documents.jsonl").read_text().splitlines()]
        self.tokens: dict[str, np.ndarray] = {}
        self.labels: dict[str, np.ndarray] = {}
        self.doc_index: dict[str, np.ndarray] = {}
        for split in SPLITS:
            with np.load(folder / f"{split}.npz") as z:
                self.tokens[split], self.labels[split], self.doc_index[split] = z["tokens"], z["labels"], z["doc"]
        self._lookup: dict[int, dict[bytes, tuple[str, int]]] = {}

    def __repr__(self) -> str:
        n = {s: int(self.tokens[s].size) for s in SPLITS}
        return f"TextCorpus(text:{self.name}, seq_len={self.seq_len}, train {n['train']} / eval {n['eval']} tokens)"

    @property
    def ref(self) -> str:
        return f"text:{self.name}"

    @property
    def seq_len(self) -> int:
        return self.recipe.seq_len

    @property
    def tokenizer_id(self) -> str:
        return self.manifest["tokenizer"]

    def n_windows(self, split: str = "train") -> int:
        return len(self.tokens[_split(split)])

    def window_slice(self, split: str = "train", start: int = 0, stop: int | None = None) -> Any:
        """LongTensor[stop - start, seq_len]: windows [start, stop) of `split` in stored (shuffled) order."""
        import torch

        return torch.from_numpy(self.tokens[_split(split)][start:stop]).long()

    def sample(self, n: int, seed: int, split: str = "train") -> Any:
        """LongTensor[n, seq_len]: n distinct windows of `split`, in an order fixed by `seed`."""
        import torch

        rows = self.sample_rows(n, seed, split)
        return torch.from_numpy(self.tokens[_split(split)][rows]).long()

    def sample_rows(self, n: int, seed: int, split: str = "train") -> np.ndarray:
        split = _split(split)
        have = len(self.tokens[split])
        if n < 0 or n > have:
            raise InvalidInput(f"text:{self.name} has {have} {split} windows of {self.seq_len} tokens; asked for {n}")
        return np.random.default_rng(int(seed) & 0x7FFF_FFFF_FFFF_FFFF).permutation(have)[:n]

    def window_labels(self, split: str, rows: np.ndarray | None = None) -> dict[str, Any]:
        """name -> BoolTensor[N, T] for windows `rows` of `split` (all when None)."""
        import torch

        lab = self.labels[_split(split)]
        lab = lab if rows is None else lab[rows]
        return {name: torch.from_numpy(lab[..., j].copy()) for j, name in enumerate(LABELS)}

    def span_labels(self, tokens: Any) -> dict[str, Any]:
        """Labels of windows (or window prefixes) of this corpus, found by their tokens: name -> BoolTensor[n, t].
        Labels come from the documents' characters, so tokens that are not from this corpus are refused."""
        import torch

        arr = np.asarray(tokens.cpu() if hasattr(tokens, "cpu") else tokens, dtype=np.int64)
        arr = arr[None] if arr.ndim == 1 else arr
        t = arr.shape[1]
        table = self._lookup.get(t)
        if table is None:
            table = {}
            for split in SPLITS:
                for i, row in enumerate(self.tokens[split][:, :t]):
                    table.setdefault(row.tobytes(), (split, i))
            self._lookup[t] = table
        out = np.zeros((len(arr), t, len(LABELS)), bool)
        for k, row in enumerate(arr):
            hit = table.get(row.tobytes())
            if hit is None:
                raise InvalidInput(f"row {k} of the tokens is not a window of text:{self.name}; labels come from "
                                   "the documents' characters, so only this corpus' windows can be labelled")
            out[k] = self.labels[hit[0]][hit[1], :t]
        return {name: torch.from_numpy(out[..., j].copy()) for j, name in enumerate(LABELS)}

    def stats(self) -> dict[str, Any]:
        return json.loads((self.folder / "stats.json").read_text())


def is_text(corpus: Any) -> TypeGuard[TextCorpus]:
    """A real-text corpus (a TextCorpus, or anything with its interface) rather than the synthetic one."""
    return getattr(corpus, "vocab", None) is None and hasattr(corpus, "window_slice")


def record_corpus(folder: Path, corpus: Any) -> None:
    """Copy a text corpus' manifest, document list (package, version, path, sha256 of each) and stats table into
    `folder`/corpus/ (a run's artifacts), once; nothing for the synthetic corpus (its recipe is the ref)."""
    import shutil

    dest = Path(folder) / "corpus"
    if not is_text(corpus) or (dest / "documents.jsonl").is_file():
        return
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", "documents.jsonl", "stats.json", "stats.md"):
        shutil.copyfile(corpus.folder / name, dest / name)


def _split(split: str) -> str:
    if split not in SPLITS:
        raise InvalidInput(f"split {split!r} unknown; use one of {', '.join(SPLITS)}")
    return split


def _windows(docs: list[tuple[int, np.ndarray, np.ndarray]], sep: int, T: int) -> tuple[np.ndarray, ...]:
    """Cut `doc, sep, doc, sep, ...` into windows of T tokens, each starting with sep; drops the last partial."""
    if not docs:
        return np.zeros((0, T), np.int64), np.zeros((0, T, len(LABELS)), bool), np.zeros((0, T), np.int32)
    ids = np.concatenate([np.append(d[1], sep) for d in docs])
    lab = np.concatenate([np.vstack([d[2], np.zeros((1, len(LABELS)), bool)]) for d in docs])
    di = np.concatenate([np.append(np.full(len(d[1]), d[0], np.int32), -1) for d in docs])
    n = len(ids) // (T - 1)
    ids, lab, di = ids[:n * (T - 1)].reshape(n, T - 1), lab[:n * (T - 1)].reshape(n, T - 1, -1), di[:n * (T - 1)].reshape(n, T - 1)
    return (np.concatenate([np.full((n, 1), sep, np.int64), ids], 1),
            np.concatenate([np.zeros((n, 1, len(LABELS)), bool), lab], 1),
            np.concatenate([np.full((n, 1), -1, np.int32), di], 1))


def token_alone_f1(train_tok: np.ndarray, train_lab: np.ndarray, eval_tok: np.ndarray, eval_lab: np.ndarray,
                   d_vocab: int) -> dict[str, dict[str, float]]:
    """Per label: precision, recall, F1 on eval of 'label = majority label of this token id on train'."""
    out = {}
    for j, name in enumerate(LABELS):
        pos = np.bincount(train_tok, weights=train_lab[:, j], minlength=d_vocab)
        cnt = np.bincount(train_tok, minlength=d_vocab)
        rule = (cnt > 0) & (2 * pos > cnt)                                                # [V]
        rate = pos / np.maximum(cnt, 1)                                                  # [V] train share
        open_ = (cnt == 0) | (rate < 0.9)                                                # [V] token leaves it open
        pred, true = rule[eval_tok], eval_lab[:, j]
        tp = float((pred & true).sum())
        p = tp / max(float(pred.sum()), 1.0)
        r = tp / max(float(true.sum()), 1.0)
        out[name] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r > 0 else 0.0,
                     "eval_positives": int(true.sum()),
                     "open_positives": float(open_[eval_tok][true].mean()) if true.any() else 0.0}
    return out


def _stats(docs: list[Document], split_of: list[str], tokens: dict[str, np.ndarray], labels: dict[str, np.ndarray],
           dix: dict[str, np.ndarray], d_vocab: int) -> dict[str, Any]:
    rows = []
    alltok = np.concatenate([tokens[s].reshape(-1) for s in SPLITS])
    alllab = np.concatenate([labels[s].reshape(-1, len(LABELS)) for s in SPLITS])
    alldoc = np.concatenate([dix[s].reshape(-1) for s in SPLITS])
    src_of = np.array([d.source for d in docs] + ["(separator)"])
    for src in [*dict.fromkeys(d.source for d in docs), "(separator)"]:
        sel = src_of[alldoc] == src
        n = int(sel.sum())
        idx = [i for i, d in enumerate(docs) if d.source == src]
        rows.append({"source": src, "docs_train": sum(split_of[i] == "train" for i in idx),
                     "docs_eval": sum(split_of[i] == "eval" for i in idx), "tokens": n,
                     "chars": sum(len(docs[i].text) for i in idx),
                     **{f"share_{lab}": float(alllab[sel, j].mean()) if n else 0.0 for j, lab in enumerate(LABELS)}})
    f1 = token_alone_f1(tokens["train"].reshape(-1), labels["train"].reshape(-1, len(LABELS)),
                        tokens["eval"].reshape(-1), labels["eval"].reshape(-1, len(LABELS)), d_vocab)
    return {"sources": rows, "total_tokens": int(alltok.size),
            "tokens": {s: int(tokens[s].size) for s in SPLITS}, "windows": {s: int(len(tokens[s])) for s in SPLITS},
            "labels": {lab: {"share": float(alllab[:, j].mean()), **f1[lab]} for j, lab in enumerate(LABELS)}}


def stats_markdown(stats: dict[str, Any], title: str = "") -> str:
    """The stats as two Markdown tables: tokens and label shares per source; token-alone F1 per label."""
    lines = [title] if title else []
    lines += ["| source | docs (train / eval) | tokens | " + " | ".join(LABELS) + " |",
              "|---|---:|---:|" + "---:|" * len(LABELS)]
    for r in stats["sources"]:
        if r["source"] == "(separator)":
            continue
        lines.append(f"| {r['source']} | {r['docs_train']} / {r['docs_eval']} | {r['tokens']:,} | "
                     + " | ".join(f"{r['share_' + lab]:.2f}" for lab in LABELS) + " |")
    lines.append(f"| all (incl. separators) | | {stats['total_tokens']:,} | "
                 + " | ".join(f"{stats['labels'][lab]['share']:.2f}" for lab in LABELS) + " |")
    lines += ["", "| label | share of tokens | token-alone F1 (eval) | precision | recall | positives the token leaves open (< 90%) |",
              "|---|---:|---:|---:|---:|---:|"]
    for lab in LABELS:
        s = stats["labels"][lab]
        lines.append(f"| {lab} | {s['share']:.3f} | {s['f1']:.3f} | {s['precision']:.3f} | {s['recall']:.3f} | "
                     f"{s['open_positives']:.3f} |")
    return "\n".join(lines) + "\n"


def recipe_of(ref: str) -> tuple[str, TextRecipe]:
    kind, _, name = ref.partition(":")
    if kind != "text" or not name:
        raise InvalidInput(f"data reference {ref!r} is not a text corpus; use 'text:<recipe>' ({', '.join(TEXT_RECIPES)})")
    if name not in TEXT_RECIPES:
        raise InvalidInput(f"unknown text corpus {name!r}; known: {', '.join(TEXT_RECIPES)}")
    return name, TEXT_RECIPES[name]


def build_text_corpus(ref: str, tokenizer: Any, *, progress: bool = False) -> TextCorpus:
    """The tokenized corpus for `text:<recipe>` and `tokenizer`, built on first use and cached."""
    name, recipe = recipe_of(ref)
    docs = build_documents(recipe)
    doc_sha = hashlib.sha256("\n".join(json.dumps(d.record(), sort_keys=True) for d in docs).encode()).hexdigest()
    tok_id = tokenizer_fingerprint(tokenizer)
    key = hashlib.sha256(json.dumps({"recipe": recipe.model_dump(mode="json"), "docs": doc_sha, "tok": tok_id,
                                     "version": TEXT_VERSION}, sort_keys=True).encode()).hexdigest()[:16]
    final = cache_dir() / "text" / f"{name}-{key}"

    def build(tmp: Path) -> None:
        if progress:
            print(f"building text:{name} ({len(docs)} documents) with tokenizer {tok_id}; cached at {final}",
                  file=sys.stderr, flush=True)
        _write_corpus(tmp, name, recipe, docs, doc_sha, tokenizer, tok_id)

    build_once(final, "manifest.json", build)
    return TextCorpus(name, recipe, final, json.loads((final / "manifest.json").read_text()))


def _write_corpus(folder: Path, name: str, recipe: TextRecipe, docs: list[Document], doc_sha: str, tokenizer: Any,
                  tok_id: str) -> None:
    folder.mkdir(parents=True)
    per_source: dict[str, int] = {}
    split_of = []
    for d in docs:
        i = per_source.get(d.source, 0)
        per_source[d.source] = i + 1
        split_of.append("eval" if i % recipe.eval_every == recipe.eval_every - 1 else "train")
    encoded = [_token_labels(d, tokenizer) for d in docs]
    sep = separator_id(tokenizer)
    tokens, labels, dix = {}, {}, {}
    for split in SPLITS:
        chosen = [(i, *encoded[i]) for i in range(len(docs)) if split_of[i] == split]
        t, lab, di = _windows(chosen, sep, recipe.seq_len)
        order = np.random.default_rng(recipe.shuffle_seed).permutation(len(t))  # any prefix is a mixed sample
        tokens[split], labels[split], dix[split] = t[order], lab[order], di[order]
        np.savez(folder / f"{split}.npz", tokens=tokens[split], labels=labels[split], doc=dix[split])
    (folder / "documents.jsonl").write_text("".join(json.dumps({**d.record(), "split": s}, sort_keys=True) + "\n"
                                                    for d, s in zip(docs, split_of)))
    stats = _stats(docs, split_of, tokens, labels, dix, len(tokenizer))
    write_json_atomic(folder / "stats.json", stats)
    (folder / "stats.md").write_text(stats_markdown(stats, f"text:{name}, tokenizer {tok_id}, seq_len {recipe.seq_len}\n"))
    write_json_atomic(folder / "manifest.json", {
        "ref": f"text:{name}", "recipe": recipe.model_dump(mode="json"), "text_version": TEXT_VERSION,
        "documents": len(docs), "documents_sha256": doc_sha, "tokenizer": tok_id, "separator_id": sep,
        "labels": list(LABELS), "windows": {s: int(len(tokens[s])) for s in SPLITS},
        "tokens_sha256": _sha(tokens["train"], tokens["eval"], labels["train"], labels["eval"]),
        "packages": sorted({f"{d.package}=={d.version}" for d in docs})})


def _main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Build a text: corpus and print its stats table")
    ap.add_argument("ref", nargs="?", default="text:mixed")
    ap.add_argument("--model", default="lm:smollm2-135m", help="whose tokenizer (lm:<name> or hf:/dir)")
    args = ap.parse_args()
    from .load import tokenizer_for

    corpus = build_text_corpus(args.ref, tokenizer_for(args.model), progress=True)
    print((corpus.folder / "stats.md").read_text())
    print(f"documents sha256 {corpus.manifest['documents_sha256']}\ntokens sha256 {corpus.manifest['tokens_sha256']}")


if __name__ == "__main__":
    _main()
