"""A synthetic corpus with planted, known structure, for training toy transformers here.

Every sequence starts with `<bos>` and is a run of *segments*, each one of:

1. A sentence from a small stochastic grammar: `NP VERB NP [PREP NP | PAIR NP | and NP]* .`
   - noun phrases: `the [adjective] [color] animal|plural`, `every [adjective] [color] animal` (never a plural),
     `<number_word> <plural>` and person names `First [I] Last` (I: an upper-case initial, a base64 token
     used outside any base64 span);
   - after a preposition a noun phrase may be a year: four digits `#1 #9 d d` or `#2 #0 d d`;
   - words within a category are drawn with Zipf weights (first in the list = most frequent), names,
     initials, base64 chars and Arabic letters uniformly.
2. A base64 span: `b64:` then 8-30 chars from the 64-char alphabet `A-Z a-z 0-9 + /`, closed by `=`.
3. An Arabic span: `<ar>` then 2-5 words of 2-6 Arabic letters separated by ` `, closed by `</ar>`.

Planted regularities (the ground truth a researcher can test against):
- token categories (`Vocab.categories`): special, marker, punct, function, adjective, color, animal, plural,
  number_word, verb, first_name, last_name, digit, base64, arabic; every token belongs to exactly one;
- deterministic bigrams: `such -> as`, `rather -> than`, `according -> to`, `due -> to`, `because -> of`,
  `instead -> of`; `#1 -> #9` and `#2 -> #0` at the start of a year; `b64:` -> a base64 char; `<ar>` -> an
  Arabic letter; strong category bigrams: number_word -> plural (always), `every` -> never a plural,
  subject noun -> verb;
- long-range dependencies: a sentence opened with `(` must be closed with `)` before its `.` (6-16 tokens
  later); a person name recurs (probability `p_name_repeat`) with the same initial and surname as its last
  use, and a new name never takes the last name's first name (induction: the surname is predictable only by
  copying it from earlier in the sequence); a base64 / Arabic span is closed by its own marker.

`SyntheticCorpus.span_labels(tokens)` recovers position-level ground truth from tokens alone.
Generation is vectorised over sequences (one loop over positions of a finite-state grammar with registers)
and deterministic for (config, seed).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from enum import IntEnum
from functools import cached_property

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from claimgraph.graph.errors import InvalidInput

# ---------------------------------------------------------------------------------------------- vocabulary

_FUNCTION = ["the", "every", "and",
             "in", "on", "with", "near", "under", "behind", "from", "by", "at", "for", "beside", "over",
             "such", "rather", "according", "due", "because", "instead",
             "as", "than", "to", "of"]
_PREPS = ["in", "on", "with", "near", "under", "behind", "from", "by", "at", "for", "beside", "over"]
PAIRS: list[tuple[str, str]] = [("such", "as"), ("rather", "than"), ("according", "to"), ("due", "to"),
                                ("because", "of"), ("instead", "of")]
_ADJECTIVES = ["big", "small", "old", "young", "happy", "sad", "quick", "slow", "tall", "short", "loud", "quiet",
               "brave", "calm", "wild", "tiny", "huge", "gentle", "clever", "lazy"]
_COLORS = ["red", "blue", "green", "yellow", "black", "white", "brown", "gray", "orange", "purple", "pink",
           "silver"]
_ANIMALS = ["cat", "dog", "bird", "horse", "cow", "pig", "goat", "duck", "mouse", "rabbit", "fox", "wolf",
            "bear", "lion", "tiger", "zebra", "frog", "snake", "owl", "eagle", "bee", "ant", "whale", "shark",
            "crab", "seal", "mole", "bat", "hen", "crow", "camel", "goose"]
_IRREGULAR = {"mouse": "mice", "wolf": "wolves", "fox": "foxes", "goose": "geese"}
_PLURALS = [_IRREGULAR.get(a, a + "s") for a in _ANIMALS]
_NUMBER_WORDS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
_VERBS = ["saw", "chased", "liked", "found", "followed", "fed", "watched", "met", "helped", "heard", "called",
          "knew", "loved", "pushed", "caught", "greeted", "visited", "avoided", "bit", "carried"]
_FIRST = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack", "Karen", "Liam",
          "Maria", "Noah", "Olivia", "Peter", "Quinn", "Rosa", "Sam", "Tina", "Uma", "Victor", "Wendy", "Yusuf"]
_LAST = ["Smith", "Jones", "Taylor", "Walker", "Wright", "Hughes", "Evans", "Turner", "Parker", "Hill", "Moore",
         "Clark", "Lewis", "Baker", "Hall", "Adams", "Nelson", "Carter", "Mitchell", "Roberts", "Campbell",
         "Stewart", "Morris", "Rogers"]
_DIGITS = [f"#{d}" for d in range(10)]  # '#' keeps them apart from the base64 chars '0'-'9'
_BASE64 = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [chr(c) for c in range(ord("a"), ord("z") + 1)] \
    + [str(d) for d in range(10)] + ["+", "/"]
_ARABIC = list("ابتثجحخدذرزسشصضطظعغفقكلمنهوي")


class Vocab:
    """Token ids <-> readable strings, and the planted category of every token."""

    def __init__(self, categories: dict[str, list[str]]):
        self.tokens: list[str] = [t for words in categories.values() for t in words]
        dup = sorted({t for t in self.tokens if self.tokens.count(t) > 1})
        assert not dup, f"token strings must be unique, repeated: {dup}"
        self.index: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        self.categories: dict[str, list[int]] = {c: [self.index[t] for t in words] for c, words in categories.items()}
        self._category_of = [""] * len(self.tokens)
        for c, ids in self.categories.items():
            for i in ids:
                self._category_of[i] = c

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def d_vocab(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        """The id of a token string."""
        if token not in self.index:
            raise InvalidInput(f"token {token!r} is not in the synthetic vocabulary; see Vocab.tokens")
        return self.index[token]

    def encode(self, tokens: Iterable[str]) -> torch.Tensor:
        """LongTensor of ids for token strings."""
        return torch.tensor([self.id(t) for t in tokens], dtype=torch.long)

    def decode(self, ids: "Sequence[int] | torch.Tensor") -> list[str]:
        """Readable strings for a 1-D run of ids."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return [self.tokens[int(i)] for i in ids]

    def category_mask(self, name: str) -> torch.Tensor:
        """BoolTensor[d_vocab], True for the tokens of category `name`."""
        if name not in self.categories:
            raise InvalidInput(f"unknown token category {name!r}; known: {', '.join(self.categories)}")
        mask = torch.zeros(len(self.tokens), dtype=torch.bool)
        mask[self.categories[name]] = True
        return mask

    def category_of(self, id: int) -> str:
        """The planted category of one token id."""
        return self._category_of[int(id)]

    @cached_property
    def category_ids(self) -> torch.Tensor:
        """LongTensor[d_vocab]: index into `list(categories)` for each token."""
        names = list(self.categories)
        return torch.tensor([names.index(c) for c in self._category_of], dtype=torch.long)


def build_vocab(max_words_per_category: int = 32) -> Vocab:
    """The synthetic vocabulary; word categories are cut to `max_words_per_category` entries."""
    k = max_words_per_category
    animals = _ANIMALS[:k]
    return Vocab({
        "special": ["<bos>"],
        "marker": ["b64:", "=", "<ar>", "</ar>"],
        "punct": [".", "(", ")", " "],
        "function": _FUNCTION,
        "adjective": _ADJECTIVES[:k],
        "color": _COLORS[:k],
        "animal": animals,
        "plural": [_IRREGULAR.get(a, a + "s") for a in animals],
        "number_word": _NUMBER_WORDS[:k],
        "verb": _VERBS[:k],
        "first_name": _FIRST[:k],
        "last_name": _LAST[:k],
        "digit": _DIGITS,
        "base64": _BASE64,
        "arabic": _ARABIC,
    })


# ---------------------------------------------------------------------------------------------- config

class CorpusConfig(BaseModel):
    """What the generator plants and how often. Probabilities are per segment / noun phrase."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq_len: int = Field(64, ge=8, description="tokens per sequence, <bos> included")
    max_words_per_category: int = Field(32, ge=4, description="vocabulary layout: cap on each word list")
    zipf: float = Field(1.0, ge=0.0, description="Zipf exponent for words within a category (0 = uniform)")
    p_b64: float = Field(0.08, ge=0, le=0.5, description="a segment is a base64 span")
    p_arabic: float = Field(0.08, ge=0, le=0.5, description="a segment is an Arabic span")
    p_paren: float = Field(0.2, ge=0, le=1, description="a sentence is wrapped in ( ... )")
    p_name_repeat: float = Field(0.75, ge=0, le=1, description="a name NP repeats the last name used")
    p_initial: float = Field(0.3, ge=0, le=1, description="a new name gets an upper-case initial")
    b64_len: tuple[int, int] = Field((8, 30), description="base64 chars per span (inclusive range)")
    arabic_words: tuple[int, int] = Field((2, 5), description="words per Arabic span (inclusive range)")
    arabic_word_len: tuple[int, int] = Field((2, 6), description="letters per Arabic word (inclusive range)")

    @model_validator(mode="after")
    def _ranges(self) -> "CorpusConfig":
        for name in ("b64_len", "arabic_words", "arabic_word_len"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be (lo, hi) with 1 <= lo <= hi, got {(lo, hi)}")
        if self.p_b64 + self.p_arabic >= 1:
            raise ValueError("p_b64 + p_arabic must be below 1 so sentences occur")
        return self


CORPUS_PRESETS: dict[str, CorpusConfig] = {
    "default": CorpusConfig(),
    "tiny": CorpusConfig(seq_len=32),
}


# ---------------------------------------------------------------------------------------------- generator

class Slot(IntEnum):
    """Grammar states; each emits one token."""
    BOS = 0
    THE = 1
    A = 2
    ADJ = 3
    COLOR = 4
    NOUN = 5
    PLURAL = 6
    NUM = 7
    FIRST = 8
    INITIAL = 9
    LAST = 10
    VERB = 11
    PREP = 12
    PAIR1 = 13
    PAIR2 = 14
    AND = 15
    YEAR = 16
    PERIOD = 17
    OPEN = 18
    CLOSE = 19
    B64_OPEN = 20
    B64_CHAR = 21
    B64_CLOSE = 22
    AR_OPEN = 23
    AR_LETTER = 24
    AR_SPACE = 25
    AR_CLOSE = 26


# noun-phrase openers and their weights; a sentence's object NP ends it with these probabilities
_NP_START = ([Slot.THE, Slot.A, Slot.NUM, Slot.FIRST], [0.35, 0.2, 0.15, 0.3])
_AFTER_OBJECT = ([Slot.PERIOD, Slot.PREP, Slot.PAIR1, Slot.AND], [0.55, 0.2, 0.15, 0.1])


def _pick(u: torch.Tensor, options: Sequence[int], probs: Sequence[float]) -> torch.Tensor:
    """options[i] for each uniform in u [m], with categorical weights probs."""
    cdf = torch.tensor(probs, dtype=torch.float64).cumsum(0)
    cdf = cdf / cdf[-1]
    idx = torch.searchsorted(cdf, u.double().contiguous(), right=True).clamp_(max=len(options) - 1)  # [m]
    return torch.tensor(list(options), dtype=torch.long)[idx]


def _randint(u: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Uniform integers in [lo, hi] from uniforms u."""
    return lo + (u * (hi - lo + 1)).long().clamp_(max=hi - lo)


class _Emitter:
    """Per-slot categorical distributions over token ids (padded to the largest category)."""

    def __init__(self, vocab: Vocab, zipf: float):
        self.vocab = vocab
        v, c = vocab.id, vocab.categories
        uniform, zipfian = 0.0, zipf
        table: dict[Slot, tuple[list[int], float]] = {
            Slot.BOS: ([v("<bos>")], 0), Slot.THE: ([v("the")], 0), Slot.A: ([v("every")], 0),
            Slot.ADJ: (c["adjective"], zipfian), Slot.COLOR: (c["color"], zipfian),
            Slot.NOUN: (c["animal"], zipfian), Slot.PLURAL: (c["plural"], zipfian),
            Slot.NUM: (c["number_word"], zipfian), Slot.FIRST: (c["first_name"], uniform),
            Slot.INITIAL: (c["base64"][:26], uniform), Slot.LAST: (c["last_name"], uniform),
            Slot.VERB: (c["verb"], zipfian), Slot.PREP: ([v(p) for p in _PREPS], zipfian),
            Slot.PAIR1: ([v(a) for a, _ in PAIRS], uniform), Slot.PAIR2: ([v(b) for _, b in PAIRS], uniform),
            Slot.AND: ([v("and")], 0), Slot.YEAR: (c["digit"], uniform),
            Slot.PERIOD: ([v(".")], 0), Slot.OPEN: ([v("(")], 0), Slot.CLOSE: ([v(")")], 0),
            Slot.B64_OPEN: ([v("b64:")], 0), Slot.B64_CHAR: (c["base64"], uniform),
            Slot.B64_CLOSE: ([v("=")], 0), Slot.AR_OPEN: ([v("<ar>")], 0),
            Slot.AR_LETTER: (c["arabic"], uniform), Slot.AR_SPACE: ([v(" ")], 0),
            Slot.AR_CLOSE: ([v("</ar>")], 0),
        }
        assert set(table) == set(Slot), "every slot needs an emission"
        width = max(len(ids) for ids, _ in table.values())
        self.ids = torch.zeros(len(Slot), width, dtype=torch.long)       # [S, K]
        self.cdf = torch.ones(len(Slot), width, dtype=torch.float64)     # [S, K]
        for slot, (ids, a) in table.items():
            w = torch.tensor([1.0 / (r + 1) ** a for r in range(len(ids))], dtype=torch.float64)
            self.ids[slot, : len(ids)] = torch.tensor(ids)
            self.cdf[slot, : len(ids)] = w.cumsum(0) / w.sum()

    def __call__(self, slot: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """A token for each row's slot [n] from uniforms u [n]."""
        cdf = self.cdf[slot]                                                          # [n, K]
        k = torch.searchsorted(cdf, u.double()[:, None], right=True).squeeze(1)        # [n]
        k = torch.minimum(k, (cdf < 1.0).sum(1))  # guard round-off at the top of the cdf
        return self.ids[slot, k]                                                      # [n]


def generate(cfg: CorpusConfig, vocab: Vocab, n: int, generator: torch.Generator) -> torch.Tensor:
    """LongTensor[n, seq_len] from the grammar in the module docstring."""
    emit = _Emitter(vocab, cfg.zipf)
    v = vocab.id
    pair_second = {v(a): v(b) for a, b in PAIRS}
    pair_lookup = torch.full((len(vocab),), -1, dtype=torch.long)
    for a, b in pair_second.items():
        pair_lookup[a] = b
    d1, d2, d9, d0 = v("#1"), v("#2"), v("#9"), v("#0")
    n_letters = len(vocab.categories["base64"][:26])
    initials = torch.tensor(vocab.categories["base64"][:26])
    last_names = torch.tensor(vocab.categories["last_name"])
    first_names = torch.tensor(vocab.categories["first_name"])
    first_index = torch.zeros(len(vocab), dtype=torch.long)
    first_index[first_names] = torch.arange(len(first_names))

    T = cfg.seq_len
    tokens = torch.empty(n, T, dtype=torch.long)
    slot = torch.full((n,), int(Slot.BOS), dtype=torch.long)
    tokens[:, 0] = v("<bos>")
    # registers carried along each sequence
    phase = torch.zeros(n, dtype=torch.long)          # 0: subject NP, 1: after the verb
    sg_only = torch.zeros(n, dtype=torch.bool)        # NP opened with "every": the noun must be singular
    paren = torch.zeros(n, dtype=torch.bool)          # a "(" is open
    count = torch.zeros(n, dtype=torch.long)          # tokens left in the current run (b64, year, Arabic word)
    ar_words = torch.zeros(n, dtype=torch.long)       # Arabic words left after the current one
    name = torch.full((n, 3), -1, dtype=torch.long)   # last name used: first, initial (-1 none), surname
    repeat = torch.zeros(n, dtype=torch.bool)         # the current name NP repeats `name`

    for t in range(1, T):
        u = torch.rand(8, n, generator=generator)      # [8, n] independent uniforms for this position
        prev = slot
        nxt = torch.full((n,), -1, dtype=torch.long)

        def rule(mask: torch.Tensor, options: Sequence[int], probs: Sequence[float], k: int = 0) -> None:
            if bool(mask.any()):
                nxt[mask] = _pick(u[k][mask], options, probs)  # noqa: B023 - called within this iteration

        def np_start(mask: torch.Tensor) -> None:
            rule(mask, *_NP_START)

        # -- segment boundaries: a base64 span, an Arabic span, or a sentence (maybe in brackets)
        boundary = (prev == Slot.BOS) | (prev == Slot.PERIOD) | (prev == Slot.B64_CLOSE) | (prev == Slot.AR_CLOSE)
        p_sent = 1.0 - cfg.p_b64 - cfg.p_arabic
        rule(boundary, [Slot.B64_OPEN, Slot.AR_OPEN, Slot.OPEN, -2],
             [cfg.p_b64, cfg.p_arabic, p_sent * cfg.p_paren, p_sent * (1 - cfg.p_paren)])
        sentence = (nxt == -2) | (prev == Slot.OPEN)
        phase[sentence] = 0
        np_start(sentence)
        paren[nxt == Slot.OPEN] = True
        # -- noun phrases
        rule(prev == Slot.THE, [Slot.ADJ, Slot.COLOR, Slot.NOUN, Slot.PLURAL], [0.2, 0.2, 0.3, 0.3])
        rule(prev == Slot.A, [Slot.ADJ, Slot.COLOR, Slot.NOUN], [0.3, 0.2, 0.5])
        sg_only[prev == Slot.THE] = False
        sg_only[prev == Slot.A] = True
        rule(prev == Slot.ADJ, [Slot.COLOR, -3], [0.25, 0.75])
        to_noun = (prev == Slot.COLOR) | ((prev == Slot.ADJ) & (nxt == -3))
        rule(to_noun & sg_only, [Slot.NOUN], [1.0])
        rule(to_noun & ~sg_only, [Slot.NOUN, Slot.PLURAL], [0.5, 0.5], k=1)
        rule(prev == Slot.NUM, [Slot.PLURAL], [1.0])
        rule(prev == Slot.FIRST, [Slot.INITIAL], [1.0])
        nxt[(prev == Slot.FIRST) & (name[:, 1] < 0)] = Slot.LAST
        rule(prev == Slot.INITIAL, [Slot.LAST], [1.0])
        rule((prev == Slot.YEAR) & (count > 0), [Slot.YEAR], [1.0])
        # -- after a noun phrase: the verb, or (object) the end, a PP, a pair connective, "and"
        np_end = (prev == Slot.NOUN) | (prev == Slot.PLURAL) | (prev == Slot.LAST) | ((prev == Slot.YEAR) & (count == 0))
        rule(np_end & (phase == 0), [Slot.VERB], [1.0])
        rule(np_end & (phase == 1), *_AFTER_OBJECT)
        phase[np_end] = 1
        ends = nxt == Slot.PERIOD
        nxt[ends & paren & (prev != Slot.CLOSE)] = Slot.CLOSE
        rule(prev == Slot.CLOSE, [Slot.PERIOD], [1.0])
        paren[prev == Slot.CLOSE] = False
        np_start((prev == Slot.VERB) | (prev == Slot.PAIR2) | (prev == Slot.AND))
        rule(prev == Slot.PREP, [Slot.THE, Slot.FIRST, Slot.YEAR], [0.5, 0.25, 0.25])
        rule(prev == Slot.PAIR1, [Slot.PAIR2], [1.0])
        # -- spans
        rule(prev == Slot.B64_OPEN, [Slot.B64_CHAR], [1.0])
        rule((prev == Slot.B64_CHAR) & (count > 0), [Slot.B64_CHAR], [1.0])
        rule((prev == Slot.B64_CHAR) & (count == 0), [Slot.B64_CLOSE], [1.0])
        rule((prev == Slot.AR_OPEN) | (prev == Slot.AR_SPACE), [Slot.AR_LETTER], [1.0])
        in_word = (prev == Slot.AR_LETTER) & (count > 0)
        rule(in_word, [Slot.AR_LETTER], [1.0])
        rule((prev == Slot.AR_LETTER) & (count == 0) & (ar_words > 0), [Slot.AR_SPACE], [1.0])
        rule((prev == Slot.AR_LETTER) & (count == 0) & (ar_words == 0), [Slot.AR_CLOSE], [1.0])
        assert bool((nxt >= 0).all()), f"grammar left a state without a successor at t={t}: {prev[nxt < 0][:5]}"
        slot = nxt

        # -- counters for runs that start or continue here
        count = torch.where((slot == Slot.YEAR) & (prev != Slot.YEAR), 3, count - 1)
        count = torch.where(slot == Slot.B64_CHAR, torch.where(prev == Slot.B64_OPEN,
                            _randint(u[2], *cfg.b64_len) - 1, count), count)
        new_word = (slot == Slot.AR_LETTER) & (prev != Slot.AR_LETTER)
        count = torch.where(new_word, _randint(u[3], *cfg.arabic_word_len) - 1, count)
        ar_words = torch.where(slot == Slot.AR_OPEN, _randint(u[4], *cfg.arabic_words) - 1, ar_words)
        ar_words = torch.where(slot == Slot.AR_SPACE, ar_words - 1, ar_words)
        count = count.clamp_(min=0)

        # -- emission
        tok = emit(slot, u[5])                                                       # [n]
        # names: repeat the last one, or draw a fresh (first, initial?, surname) and remember it
        is_first = slot == Slot.FIRST
        repeat = torch.where(is_first, (name[:, 0] >= 0) & (u[6] < cfg.p_name_repeat), repeat)
        fresh = is_first & ~repeat
        if bool(fresh.any()):
            m = int(fresh.sum())
            r = torch.rand(4, m, generator=generator)                                # [4, m]
            has_init = r[1] < cfg.p_initial
            # a fresh first name differs from the one remembered, so a recurring first name always means
            # a repeat of the whole name (the surname is then predictable by copying)
            k = len(first_names)
            old = first_index[name[fresh, 0].clamp(min=0)]                           # [m]
            new = torch.where(name[fresh, 0] >= 0, (old + 1 + _randint(r[3], 0, k - 2)) % k,
                              _randint(r[3], 0, k - 1))
            name[fresh, 0] = first_names[new]
            name[fresh, 1] = torch.where(has_init, initials[_randint(r[0], 0, n_letters - 1)], -1)
            name[fresh, 2] = last_names[_randint(r[2], 0, len(last_names) - 1)]
        tok = torch.where(is_first, name[:, 0], tok)
        tok = torch.where(slot == Slot.INITIAL, name[:, 1], tok)
        tok = torch.where(slot == Slot.LAST, name[:, 2], tok)
        tok = torch.where(slot == Slot.PAIR2, pair_lookup[tokens[:, t - 1]], tok)
        # years: "#1 #9 d d" or "#2 #0 d d"
        year_start = (slot == Slot.YEAR) & (prev != Slot.YEAR)
        tok = torch.where(year_start, torch.where(u[7] < 0.6, d1, d2), tok)
        year_second = (slot == Slot.YEAR) & (count == 2)
        tok = torch.where(year_second, torch.where(tokens[:, t - 1] == d1, d9, d0), tok)
        tokens[:, t] = tok
    assert bool((tokens >= 0).all()), "generator emitted an invalid id"
    return tokens


# ---------------------------------------------------------------------------------------------- corpus

def _inside(tokens: torch.Tensor, open_id: int, close_id: int) -> torch.Tensor:
    """BoolTensor[n, T]: position lies strictly between an opening and its closing marker."""
    depth = (tokens == open_id).long().cumsum(1) - (tokens == close_id).long().cumsum(1)   # [n, T]
    return (depth > 0) & (tokens != open_id)


class _SampleMemo:
    """The samples this process has drawn, by (config, n, seed), up to `limit` bytes (least recently used out
    first). Generating is a Python loop over positions (70 ms, plus 30 ms per 1,000 sequences here), and a run
    may draw one sample many times: an emergence seed trains 24 SAEs on the same training tokens, and every toy
    model it trains reads the same held-out set and entropy references (in the main job's profile, the SAEs'
    sampling went from 9.2 to 2.7 CPU-s). Entries are kept as copies and handed out as copies, so a caller
    writing to its tensor changes neither."""

    def __init__(self, limit: int):
        from collections import OrderedDict
        from threading import Lock

        self.limit, self.bytes = limit, 0
        self._items: OrderedDict[tuple[str, int, int], torch.Tensor] = OrderedDict()
        self._lock = Lock()

    def get(self, key: tuple[str, int, int]) -> torch.Tensor | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
        return hit.clone()

    def put(self, key: tuple[str, int, int], tokens: torch.Tensor) -> None:
        size = tokens.numel() * tokens.element_size()
        if size > self.limit:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = tokens.clone()
            self.bytes += size
            while self.bytes > self.limit:
                _, old = self._items.popitem(last=False)
                self.bytes -= old.numel() * old.element_size()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0


_SAMPLES = _SampleMemo(512 * 2**20)


class SyntheticCorpus:
    """Samples token sequences with planted structure (see the module docstring) and labels it."""

    def __init__(self, config: CorpusConfig | None = None, name: str | None = None):
        self.config = config or CorpusConfig()
        self.name = name
        self.vocab = build_vocab(self.config.max_words_per_category)

    def __repr__(self) -> str:
        return f"SyntheticCorpus({self.name or 'custom'}, seq_len={self.config.seq_len}, d_vocab={len(self.vocab)})"

    @property
    def seq_len(self) -> int:
        return self.config.seq_len

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """LongTensor[n, seq_len], the same for the same (config, n, seed). A fresh tensor each call (the caller
        may write to it); samples already drawn in this process come from a memo (`_SampleMemo`)."""
        if n < 0:
            raise InvalidInput(f"n must be >= 0, got {n}")
        seed = int(seed) & 0x7FFF_FFFF_FFFF_FFFF
        key = (self.config.model_dump_json(), int(n), seed)
        hit = _SAMPLES.get(key)
        if hit is not None:
            return hit
        tokens = generate(self.config, self.vocab, int(n), torch.Generator().manual_seed(seed))
        _SAMPLES.put(key, tokens)
        return tokens

    def span_labels(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Position-level ground truth, each BoolTensor[n, seq_len]:
        - `base64_span`, `arabic_span`, `paren_span`: strictly inside `b64: ... =`, `<ar> ... </ar>`, `( ... )`;
        - `induction`: the token completes a name bigram (first name -> initial/surname, initial -> surname)
          that already occurred earlier in the sequence, so it is predictable only by copying;
        - `cat:<name>`: the token belongs to category <name>, for every category.
        """
        if tokens.ndim == 1:
            tokens = tokens[None]
        tokens = tokens.long().cpu()
        v = self.vocab.id
        out = {
            "base64_span": _inside(tokens, v("b64:"), v("=")),
            "arabic_span": _inside(tokens, v("<ar>"), v("</ar>")),
            "paren_span": _inside(tokens, v("("), v(")")),
            "induction": self._induction(tokens),
        }
        cat = self.vocab.category_ids[tokens]                                       # [n, T]
        for i, name in enumerate(self.vocab.categories):
            out[f"cat:{name}"] = cat == i
        return out

    def _induction(self, tokens: torch.Tensor) -> torch.Tensor:
        n, T = tokens.shape
        V = len(self.vocab)
        cats = self.vocab.categories
        name_prev = self.vocab.category_mask("first_name") | torch.isin(torch.arange(V), torch.tensor(cats["base64"][:26]))
        name_next = self.vocab.category_mask("last_name") | torch.isin(torch.arange(V), torch.tensor(cats["base64"][:26]))
        big = tokens[:, :-1] * V + tokens[:, 1:]                                    # [n, T-1] bigram ids
        earlier = torch.ones(T - 1, T - 1, dtype=torch.bool).tril(-1)              # [T-1, T-1] s < t
        seen = ((big[:, :, None] == big[:, None, :]) & earlier).any(-1)            # [n, T-1]
        ok = name_prev[tokens[:, :-1]] & name_next[tokens[:, 1:]]
        # initial -> initial never happens; first -> surname and initial -> surname / first -> initial do
        lab = torch.zeros(n, T, dtype=torch.bool)
        lab[:, 1:] = seen & ok & ~(self.vocab.category_mask("base64")[tokens[:, :-1]] &
                                   self.vocab.category_mask("base64")[tokens[:, 1:]])
        return lab

    def unigram_entropy(self, n: int = 2000, seed: int = 12345) -> float:
        """Entropy (nats) of the token distribution at predicted positions (1..T-1) in a sample: the loss
        of the best context-free predictor. A model well below it has learned context."""
        toks = self.sample(n, seed)[:, 1:].reshape(-1)
        p = torch.bincount(toks, minlength=len(self.vocab)).double()
        p = p[p > 0] / p.sum()
        return float(-(p * p.log()).sum())

    def bigram_entropy(self, n: int = 2000, seed: int = 12345) -> float:
        """Conditional entropy (nats) of a token given the previous one in a sample: the loss of the best
        bigram predictor (estimated on the sample itself, so slightly optimistic)."""
        toks = self.sample(n, seed)
        V = len(self.vocab)
        joint = torch.bincount((toks[:, :-1] * V + toks[:, 1:]).reshape(-1), minlength=V * V).double().view(V, V)
        total = joint.sum()
        row = joint.sum(1, keepdim=True)
        nz = joint > 0
        return float(-(joint[nz] / total * (joint / row.clamp(min=1))[nz].log()).sum())


def get_corpus(data_ref: str) -> SyntheticCorpus:
    """The corpus for `synthetic:<preset>` (presets: see CORPUS_PRESETS)."""
    kind, _, preset = data_ref.partition(":")
    if kind != "synthetic" or not preset:
        raise InvalidInput(f"data reference {data_ref!r} is not a synthetic corpus; use 'synthetic:<preset>' "
                           f"with a preset among {', '.join(CORPUS_PRESETS)}")
    if preset not in CORPUS_PRESETS:
        raise InvalidInput(f"unknown synthetic corpus preset {preset!r}; known: {', '.join(CORPUS_PRESETS)}")
    return SyntheticCorpus(CORPUS_PRESETS[preset], name=preset)


def log_uniform(d_vocab: int) -> float:
    """Loss of a uniform predictor, for reference."""
    return math.log(d_vocab)
