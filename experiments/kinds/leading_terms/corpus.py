"""Token sequences for the leading-terms analysis: a small built-in topic-bigram language, and an adapter that
reads the substrate's synthetic corpus when it is installed.

The built-in language (`builtin:<preset>`) has known, readable structure in all three basis mappings:
- word categories with a fixed category-level grammar (`det -> adj | noun`, `adj -> noun`, `noun -> verb | .`,
  `verb -> det`, `. -> det`): the bigram mapping B;
- tokens of one category follow the same predecessors, so they are interchangeable: Sigma = B^T B;
- each sequence has a topic z; content words (adj, noun, verb) are named `<cat><topic>_<k>` and are drawn from
  the sequence's own topic with probability `topic_bias`, so a topic's words earlier in the context raise the
  same topic's words later: the context mapping Phi.
Sampling is one batched draw per position over all sequences (positions are sequential by nature).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from claimgraph.graph.errors import InvalidInput

if TYPE_CHECKING:
    import torch

# category -> {next category: probability}; every row sums to 1.
GRAMMAR: dict[str, dict[str, float]] = {
    "det": {"adj": 0.4, "noun": 0.6},
    "adj": {"noun": 1.0},
    "noun": {"verb": 0.7, ".": 0.3},
    "verb": {"det": 1.0},
    ".": {"det": 1.0},
}
CONTENT = ("adj", "noun", "verb")  # categories whose words belong to a topic


class TopicBigramConfig(BaseModel):
    """Size of the built-in language."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_topics: int = Field(3, ge=1, description="Topics; each sequence draws one")
    words_per_topic: int = Field(3, ge=1, description="Words of each content category per topic")
    n_det: int = Field(3, ge=1, description="Determiners (topic-free)")
    topic_bias: float = Field(0.85, ge=0.0, le=1.0, description="Probability a content word is from the sequence's topic")


PRESETS: dict[str, TopicBigramConfig] = {
    "tiny": TopicBigramConfig(n_topics=2, words_per_topic=2, n_det=2),      # 16 tokens
    "default": TopicBigramConfig(),                                         # 31 tokens
}


class TopicBigramCorpus:
    """The built-in language; `vocab` lists token strings, `sample(n, length, seed)` draws sequences."""

    def __init__(self, config: TopicBigramConfig):
        import torch

        self.config = config
        c = config
        self.vocab: list[str] = [f"det_{k}" for k in range(c.n_det)]
        self.category: list[str] = ["det"] * c.n_det
        self.topic: list[int] = [-1] * c.n_det
        for cat in CONTENT:
            for z in range(c.n_topics):
                for k in range(c.words_per_topic):
                    self.vocab.append(f"{cat}{z}_{k}")
                    self.category.append(cat)
                    self.topic.append(z)
        self.vocab.append(".")
        self.category.append(".")
        self.topic.append(-1)
        V = len(self.vocab)
        cat_of = self.category
        topic_of = torch.tensor(self.topic)                                     # [V]
        # P(token j | category, topic z): topic words get topic_bias, the rest share 1 - topic_bias.
        within = torch.zeros(c.n_topics, V, dtype=torch.float64)                # [Z, V]
        for j in range(V):
            members = [i for i in range(V) if cat_of[i] == cat_of[j]]
            if cat_of[j] not in CONTENT:
                within[:, j] = 1.0 / len(members)
                continue
            n_own = c.words_per_topic
            n_other = len(members) - n_own
            for z in range(c.n_topics):
                if n_other == 0:
                    within[z, j] = 1.0 / n_own
                elif int(topic_of[j]) == z:
                    within[z, j] = c.topic_bias / n_own
                else:
                    within[z, j] = (1.0 - c.topic_bias) / n_other
        cat_step = torch.tensor([[GRAMMAR[cat_of[i]].get(cat_of[j], 0.0) for j in range(V)] for i in range(V)],
                                dtype=torch.float64)                            # [V, V] P(cat(j) | cat(i))
        self.transition = cat_step[None] * within[:, None, :]                   # [Z, V, V] P_z(j | i)
        rows = self.transition.sum(-1)
        assert torch.allclose(rows, torch.ones_like(rows)), f"transition rows must sum to 1, got {rows}"

    def sample(self, n: int, length: int, seed: int) -> "torch.Tensor":
        """LongTensor [n, length]: sequences starting at a determiner, deterministic for `seed`."""
        import torch

        g = torch.Generator().manual_seed(int(seed))
        z = torch.randint(self.config.n_topics, (n,), generator=g)              # [n]
        out = torch.empty(n, length, dtype=torch.long)
        out[:, 0] = torch.randint(self.config.n_det, (n,), generator=g)        # determiners are ids 0..n_det-1
        for t in range(1, length):
            probs = self.transition[z, out[:, t - 1]]                           # [n, V]
            out[:, t] = torch.multinomial(probs, 1, generator=g).squeeze(1)
        return out


@dataclass
class Sequences:
    """Token ids [n, length] and the readable string of every id."""

    tokens: "torch.Tensor"
    vocab: list[str]
    source: str


def load_sequences(data_ref: str | None, n: int, length: int, seed: int) -> Sequences:
    """`n` sequences of `length` tokens from `builtin:<preset>` or the substrate's `synthetic:<preset>`."""
    ref = data_ref or "builtin:default"
    scheme, _, preset = ref.partition(":")
    if scheme == "builtin":
        if preset not in PRESETS:
            raise InvalidInput(f"unknown built-in corpus {ref!r}; use one of "
                               + ", ".join(f"builtin:{p}" for p in PRESETS))
        builtin = TopicBigramCorpus(PRESETS[preset])
        return Sequences(builtin.sample(n, length, seed), list(builtin.vocab), ref)
    if scheme == "synthetic":
        try:
            from claimgraph.experiments.substrate.corpus import get_corpus
        except ImportError as e:
            raise InvalidInput(f"data {ref!r} needs the substrate's synthetic corpus, which is not installed "
                               f"here ({e}); use data 'builtin:default' instead") from None
        corpus = get_corpus(ref)
        tokens = corpus.sample(n, seed)                                         # [n, corpus seq_len]
        if tokens.shape[1] < length:
            raise InvalidInput(f"{ref!r} has sequences of {tokens.shape[1]} tokens, fewer than the {length} asked "
                               f"for; lower seq_len to at most {tokens.shape[1] - 1}")
        return Sequences(tokens[:, :length].long(), list(corpus.vocab.tokens), ref)
    raise InvalidInput(f"data reference {ref!r} is not understood by leading_terms; use 'builtin:<preset>' "
                       f"({', '.join(PRESETS)}) or 'synthetic:<preset>'")
