"""What a sentence of an abstract does, and what a methodology paragraph names.

Abstracts follow a familiar arc: background, the aim of the work, how it was done, what was found, and what
that implies. `sentence_roles` tags each sentence with one of those roles from its grammar rather than from
one list of verbs:

- implication: the results' consequences ("These results suggest ...", "This implies ...", "... has
  implications for ...");
- result: a reporting clause with a subject and a that-clause or an object ("we find that", "our analysis
  reveals a ...", "results indicate ..."), not a wh-complement ("we examine *whether* ...", which states an
  aim); or an outcome stated with a quantity or a comparison ("... improves accuracy by 4%", "outperforms");
- aim: the work as subject ("This paper studies", "In this work, we ask", "We investigate");
- method: the means ("Using sparse autoencoders, we ...", "We train ...", "... let us locate ...");
- background: everything before the aim or method is introduced.

A sentence that matches none of these after the aim or method has been stated reads as a result by its
position (abstracts report after they describe); it is returned with `by_position=True`, so that the caller
can say it guessed.
"""
from __future__ import annotations

import re

from pydantic import BaseModel

ROLES = ("background", "aim", "method", "result", "implication")

_SUBJECT = (r"(?:we|our (?:\w+ ){0,2}?(?:results?|analys[ie]s|experiments?|findings?|study|evaluation|probes?|"
            r"interventions?|measurements?)|(?:the |these |further |additional |a |an )?(?:\w+[- ])?"
            r"(?:results?|analys[ie]s|experiments?|findings?|evaluations?|ablations?|probing|evidence|data)|"
            r"(?:this|it|they))")
_REPORT = (r"(?:find|found|finds|show|shows|showed|shown|observe|observes|observed|reveal|reveals|revealed|"
           r"demonstrate|demonstrates|demonstrated|indicate|indicates|indicated|confirm|confirms|confirmed|"
           r"establish|establishes|established|uncover|uncovers|uncovered|identify|identifies|identified|"
           r"discover|discovers|discovered|verify|verifies|verified|report|reports|reported|see|saw|"
           r"point to|points to|(?:provide|provides|present|presents|offer|offers|give|gives)\s+(?:\w+,?\s+){0,3}evidence)")
REPORTING = re.compile(rf"\b{_SUBJECT}\s+(?:\w+ly\s+)?(?:also\s+|further\s+|consistently\s+|clearly\s+)?{_REPORT}\b"
                       rf"(?P<after>\s+\w+)?", re.I)
WH = re.compile(r"^\s+(?:whether|how|when|where|which|what|why|if)\b", re.I)
IMPLICATION = re.compile(
    r"^(?:(?:taken together|overall|together|collectively|in sum|in conclusion),?\s+)?"
    r"(?:(?:these|our|the|such|this) (?:\w+ )?(?:results?|findings?|observations?|insights?|work|evidence)|this|these|it)"
    r"\s+(?:(?:could|may|might|would)\s+)?(?:suggests?|impl(?:y|ies)|highlights?|motivates?|opens?|paves?|calls? for|"
    r"points? (?:to|toward)|has implications|have implications|offers?|provides? (?:a|new) (?:path|foundation|basis)|"
    r"informs?|underscores?|raises?)\b"
    r"|\bimplications? (?:for|of)\b", re.I)
AIM = re.compile(
    r"^(?:in this (?:paper|work|study|article|note|report),?\s+|here,?\s+)(?:we|the authors)\b"
    r"|^(?:this|the present|the current|our) (?:paper|work|study|article|research|report|note)\s+(?:\w+ly\s+)?"
    r"(?:studies|investigates|examines|explores|asks|addresses|analy[sz]es|considers|presents|introduces|proposes|"
    r"develops|seeks|aims|focuses|characteri[sz]es|provides|offers|reports|describes|tackles)\b"
    r"|^we (?:\w+ly\s+|first\s+|then\s+|also\s+|next\s+|further\s+)?(?:study|investigate|examine|explore|ask|address|consider|propose|introduce|present|develop|"
    r"seek|aim|set out|focus|characteri[sz]e|tackle|revisit)\b"
    r"|\b(?:aims? to|seeks? to|sets? out to|our (?:goal|aim) is)\b", re.I)
METHOD = re.compile(
    r"^(?:using|via|by|through|leveraging|applying|employing|with|based on|combining|training|analy[sz]ing|"
    r"building on|drawing on|adopting|utili[sz]ing|given|starting from)\b[^.;:]*?,\s*(?:we|the authors|they|our|"
    r"the (?:method|approach|procedure|technique)|it)\b"
    r"|^to (?:test|evaluate|assess|measure|probe|examine|check|verify|isolate|locate|study)\b"
    r"|\bwe (?:\w+ly\s+|first\s+|then\s+|also\s+|next\s+|further\s+)?(?:train|fit|apply|use|employ|construct|build|collect|design|measure|compute|probe|ablate|"
    r"patch|compare|evaluate|analy[sz]e|perform|conduct|run|track|decompose|extract|leverage|adopt|utili[sz]e|"
    r"combine|instrument|simulate|sample|record|reverse[- ]engineer|dissect|intervene|edit)\b"
    r"|\b(?:lets?|allows?|enables?|helps?) us\b"
    r"|\b(?:is|are|was|were) (?:trained|fit|fitted|applied|used|employed|constructed|measured|computed|probed|"
    r"ablated|patched|evaluated|collected)\s+(?:on|to|with|over|across|for|using)\b", re.I)
OUTCOME = re.compile(
    r"\b\d+(?:\.\d+)?\s*(?:%|percent|x\b|×|times\b|points?\b|fold\b)"
    r"|\b(?:outperform|outperforms|outperformed|improves?|improved|reduces?|reduced|increases?|increased|"
    r"decreases?|decreased|exceeds?|exceeded|surpass(?:es|ed)?|matches|matched|recovers?|recovered|"
    r"accounts? for|explains?|explained|achieves?|achieved|emerges?|emerged|arises?|arose|persists?|"
    r"generali[sz]es?|transfers?|correlates?|predicts?|fails?|failed|succeeds?|succeeded|maintains?|maintained|"
    r"preserves?|preserved|retains?|retained|halves|doubles)\b", re.I)
EVALUATIVE = re.compile(r"^(?:notably|surprisingly|interestingly|strikingly|remarkably|crucially|importantly|"
                        r"moreover|furthermore|in particular|additionally|finally|further|unexpectedly|"
                        r"consistent with|contrary to)\b", re.I)


class Tagged(BaseModel):
    """A sentence and the role it plays; `by_position` when nothing but its place said so."""

    text: str
    role: str
    by_position: bool = False


def _reports(s: str) -> bool:
    for m in REPORTING.finditer(s):
        if not (m["after"] and WH.match(m["after"])):
            return True
    return False


def sentence_roles(sentences: list[str]) -> list[Tagged]:
    """The role of each sentence of an abstract (see the module docstring)."""
    out: list[Tagged] = []
    introduced = False  # the aim or method has been stated
    for s in sentences:
        if IMPLICATION.search(s):
            role, guessed = "implication", False
        elif _reports(s):
            role, guessed = "result", False
        elif AIM.search(s):
            role, guessed = "aim", False
        elif METHOD.search(s):
            role, guessed = "method", False
        elif introduced and (OUTCOME.search(s) or EVALUATIVE.match(s)):
            role, guessed = "result", False
        elif introduced:
            role, guessed = "result", True
        else:
            role, guessed = "background", False
        introduced = introduced or role in ("aim", "method", "result")
        out.append(Tagged(text=s, role=role, by_position=guessed))
    return out


# -- methodology: the main clause, and named techniques -------------------------------------------------------
_WORK = (r"(?:research|study|paper|work|authors?|approach|method|methodology|analysis|framework|investigation|"
         r"researchers|team|experiments?|project|pipeline|procedure|system)")
SUBJECT = re.compile(rf"^(?:(?:in this (?:paper|work|study),?\s+)?(?:we|they|researchers|the authors)|"
                     rf"(?:the|this|our|their|these)\s+(?:(?:present|current|proposed|authors'?)\s+)?{_WORK})\s+", re.I)
# Where the main clause of a methodology sentence ends: a participle or relative clause, a semicolon, a dash.
CLAUSE_END = re.compile(r"(?:,\s|;|\s[—–]\s|:\s|\s\((?:e\.g|i\.e)\b)", re.I)
_IRREGULAR = {"does": "doing", "goes": "going", "has": "having", "is": "being", "are": "being", "uses": "using",
              "sees": "seeing", "do": "doing", "have": "having"}


def gerund(verb: str) -> str | None:
    """`employs` -> `employing`, `trains` -> `training`, `fits` -> `fitting`; None for a past tense or non-verb."""
    w = verb.lower()
    if "-" in w:  # reverse-engineers -> reverse-engineering
        head, _, last = w.rpartition("-")
        g = gerund(last)
        return f"{head}-{g}" if g else None
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if not re.fullmatch(r"[a-z]+", w) or w.endswith(("ed", "ly", "ing")) or len(w) < 2:
        return None
    if w.endswith("ies"):
        base = w[:-3] + "y"
    elif w.endswith(("sses", "shes", "ches", "xes", "zzes")):
        base = w[:-2]
    elif w.endswith("s") and not w.endswith("ss"):
        base = w[:-1]
    else:
        base = w  # a plural subject: "the authors train"
    if base.endswith("ie"):
        return base[:-2] + "ying"
    if base.endswith("e") and not base.endswith(("ee", "ye", "oe")):
        return base[:-1] + "ing"
    vowels = "aeiou"
    if (len(base) <= 4 and len(base) >= 3 and base[-1] not in vowels + "wxy" and base[-2] in vowels
            and base[-3] not in vowels and (len(base) == 3 or base[-4] not in vowels)):
        return base + base[-1] + "ing"
    return base + "ing"


def main_clause(sentence: str, max_words: int = 20) -> str:
    """A methodology sentence's main clause as a method name: subject dropped, verb as a gerund where it can be
    ("The authors train small ReLU networks on ..., and vary ..." -> "Training small ReLU networks on ...")."""
    s = sentence.strip().rstrip(".")
    clause = s
    for m in CLAUSE_END.finditer(s):  # the first clause boundary after the clause has five words
        if len(s[:m.start()].split()) >= 5:
            clause = s[:m.start()]
            break
    sub = SUBJECT.match(clause)
    if sub:
        rest = clause[sub.end():]
        words = rest.split(" ", 2)
        adverb = ""
        if len(words) > 1 and words[0].lower().endswith("ly"):
            adverb, words = words[0] + " ", words[1:]
            words = " ".join(words).split(" ", 1)
        g = gerund(words[0]) if words else None
        if g:
            clause = (adverb + g + " " + " ".join(words[1:])).strip()
    words = clause.split()
    name = " ".join(words[:max_words]) + ("..." if len(words) > max_words else "")
    return name[0].upper() + name[1:] if name else name


TECHNIQUE_CUE = re.compile(
    r"\b(?:employs?|employing|uses?|using|utili[sz](?:es?|ing)|appl(?:y|ies|ying)|leverag(?:es?|ing)|adopts?|"
    r"adopting|relies on|relying on|builds on|building on|based on|by means of|a (?:technique|method|procedure|"
    r"approach) (?:called|named|known as)|introduces?|introducing|proposes?|proposing)\s+"
    r"(?P<m>.+?)(?=\s+(?:for|to|in order|on|with|in|across|that|which|as|via|from|at|over|between|within|under|"
    r"where|while|and then|whose)\b|[,.;:()]|\s[—–]\s|$)", re.I)
_NOT_TECHNIQUE = re.compile(r"^(?:it|them|this|these|that|those|its|their|his|her|several|many|multiple|various|both|"
                            r"all|each|such)\b", re.I)
# What a technique is not: the objects a method works on (its last word names the thing).
_OBJECT_HEAD = re.compile(r"\b(?:data|datasets?|corpus|corpora|models?|networks?|transformers?|llms?|inputs?|"
                          r"examples?|experiments?|tasks?|checkpoints?|layers?|activations?|prompts?|tokens?|"
                          r"samples?|benchmarks?|weights?|parameters?|texts?|sentences?|languages?|gpt-?\d*|"
                          r"pythia(?:-[\w.]+)?|llama(?:-[\w.]+)?)$", re.I)


def techniques(text: str) -> list[str]:
    """Named techniques of a methodology: what follows 'employs', 'uses', 'applies', 'a method called' ..."""
    out: list[str] = []
    for m in TECHNIQUE_CUE.finditer(text):
        for name in re.split(r",\s*(?:and\s+)?|\s+and\s+", m["m"]):
            name = re.sub(r"^(?:a|an|the|two|three|several|novel|new|simple|standard)\s+", "", name.strip(), flags=re.I)
            name = re.sub(r"^(?:a|an|the)\s+", "", name, flags=re.I)
            if (name and len(name.split()) <= 6 and re.search(r"[^\W\d_]", name)
                    and not _NOT_TECHNIQUE.match(name) and not _OBJECT_HEAD.search(name)
                    and name.lower() not in (x.lower() for x in out)):
                out.append(name[0].upper() + name[1:])
    return out
