"""Small text helpers shared by the page parsers: number words, sentences, word overlap, author lists."""
from __future__ import annotations

import re

from claimgraph.graph.text import tokens

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen").split()
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_WORD_VALUES = {w: i for i, w in enumerate(_UNITS)} | {"no": 0, "none": 0, "a single": 1, "single": 1} | _TENS

# A count as a report writes it: digits, or number words up to ninety-nine ("twenty-one", "twenty one").
NUMBER = (r"(?:\d+|(?:" + "|".join(_TENS) + r")(?:[- ](?:" + "|".join(_UNITS[1:10]) + r"))?|"
          + "|".join(sorted(_UNITS + ["no", "none", "a single", "single"], key=len, reverse=True)) + r")")


def parse_number(text: str) -> int | None:
    """`"twenty-one"` -> 21, `"8"` -> 8, `"zero"`/`"no"` -> 0; None if it is not a count."""
    t = text.strip().lower()
    if t.isdigit():
        return int(t)
    if t in _WORD_VALUES:
        return _WORD_VALUES[t]
    parts = re.split(r"[- ]", t)
    if len(parts) == 2 and parts[0] in _TENS and parts[1] in _UNITS[1:10]:
        return _TENS[parts[0]] + _UNITS.index(parts[1])
    return None


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z\"'(\[])")
_ABBREV = re.compile(r"\b(?:e\.g|i\.e|et al|cf|vs|Fig|Sec|Eq|approx)\.$", re.I)


def sentences(text: str) -> list[str]:
    """Split prose into sentences at `. ` + capital, not after common abbreviations (e.g., et al.)."""
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        piece = text[start:m.start()].strip()
        if _ABBREV.search(piece):
            continue
        if piece:
            out.append(piece)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


# Words too common in interpretability prose to say that two sentences are about the same thing.
GENERIC = frozenset(tokens("feature features model models language large paper work result results "
                           "across using use based also show shows new approach study"))


def content_stems(text: str) -> set[str]:
    """Stemmed content words of a text, stop words and GENERIC words dropped."""
    return {t for t in tokens(text) if t not in GENERIC and len(t) >= 3 and not t.isdigit()}


def overlap(a: str, b: str) -> int:
    """How many content stems two texts share."""
    return len(content_stems(a) & content_stems(b))


_NAME_PART = r"(?:[^\W\d_a-z][\w.'\u2019-]*|de|da|di|du|del|der|den|van|von|la|le|bin|al-\w+)"
_NAME = rf"{_NAME_PART}(?: {_NAME_PART}){{0,3}}"  # a personal name: one to four capitalised words
AUTHOR_LIST = re.compile(rf"^{_NAME}(?:, ?{_NAME})*$")
PERSON = re.compile(rf"^{_NAME}$")
ET_AL = re.compile(r",?\s+et al\.?$", re.I)


def parse_author_list(line: str) -> tuple[list[str], bool] | None:
    """`"A, B, C et al."` -> (["A", "B", "C"], True); None when the line does not read as names."""
    text = line.strip()
    et_al = bool(ET_AL.search(text))
    text = ET_AL.sub("", text)
    if not AUTHOR_LIST.match(text):
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        return None
    return names, et_al


def surname(name: str) -> str:
    """Last word of a personal name, generational suffixes skipped (`"Josiah E. Burke Jr."` -> `"Burke"`)."""
    parts = [p for p in name.replace(",", " ").split() if p.rstrip(".").lower() not in {"jr", "sr", "ii", "iii", "iv"}]
    return parts[-1] if parts else name.strip()


_QUOTES = "\"\u201c\u201d"


def clean_title(title: str) -> str:
    """Tidy a scraped paper title: trailing `PDF` dropped, `of" Useless"` quoting repaired, stray lead dashes cut."""
    t = re.sub(r"\s+", " ", title).strip()
    t = re.sub(r"\s*\bPDF$", "", t).strip()
    # A quote glued to the word before it and followed by a space opens a quotation: `of" Useless"` -> `of "Useless"`.
    t = re.sub(rf"(\w)[{_QUOTES}] ([^{_QUOTES}]+?)[{_QUOTES}]", lambda m: f'{m[1]} "{m[2]}"', t)
    t = re.sub(r"^[-\u2013\u2014\s]+", "", t)
    return t.strip()
