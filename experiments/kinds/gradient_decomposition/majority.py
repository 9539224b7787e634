"""The majority task: random input tokens followed by output tokens that each name a current majority token.

A sequence is `[BOS, x_1 .. x_n_in, y_1 .. y_n_out]` over a vocabulary of `n_vocab` task tokens (ids
0..n_vocab-1) plus BOS (id n_vocab):

- inputs `x_1 .. x_n_in` are independent and uniform over the task tokens;
- output `y_j` is a *current majority* token: a token whose count among all task tokens so far (inputs and
  the outputs before it) is maximal, drawn uniformly among the tied ones. Since `y_1` breaks any tie, every
  later output repeats it (`y_2 = .. = y_n_out = y_1`), which is how `sample` builds them without a loop.

The model reads `tokens[:, :-1]` (T = n_in + n_out positions) and position p predicts `tokens[:, p + 1]`.
Positions 0 .. n_in-1 predict an input (their segment is "input"), positions n_in .. T-1 predict an output.

The probed feature at position p: for each task token c, `is_majority_c` = 1 when c's count among the task
tokens at positions 1..p is maximal (ties count for every tied token). At the *useless positions*
1 .. n_in-1 the next token is a fresh uniform input, independent of everything before it, so the feature
cannot help predict it; it is only useful later (at position n_in and beyond, where the outputs are).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch


class MajorityConfig(BaseModel):
    """Sizes of the majority task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_vocab: int = Field(3, ge=2, description="Task tokens (the paper uses 3)")
    n_in: int = Field(10, ge=2, description="Random input tokens per sequence")
    n_out: int = Field(10, ge=1, description="Output tokens per sequence, each a current majority token")

    @property
    def bos(self) -> int:
        return self.n_vocab

    @property
    def d_vocab(self) -> int:
        """Model vocabulary: task tokens plus BOS."""
        return self.n_vocab + 1

    @property
    def n_ctx(self) -> int:
        """Positions the model reads (the last token is only a target)."""
        return self.n_in + self.n_out

    @property
    def split_at(self) -> int:
        """First position whose target is an output token (start of the output segment)."""
        return self.n_in

    def useless_positions(self) -> list[int]:
        """Positions holding an input whose next token is another random input (BOS excluded: its feature is
        constant)."""
        return list(range(1, self.n_in))


class MajorityBatch(NamedTuple):
    tokens: "torch.Tensor"    # [n, n_ctx + 1] long: BOS, inputs, outputs
    features: "torch.Tensor"  # [n, n_ctx, n_vocab] float 0/1: is_majority_c after the token at each position
    legal: "torch.Tensor"     # [n, n_ctx, n_vocab] bool: tokens that are a correct next token at each position


def sample(cfg: MajorityConfig, n: int, seed: int) -> MajorityBatch:
    """`n` sequences of the task, deterministic for `seed` (vectorised over sequences)."""
    import torch

    g = torch.Generator().manual_seed(int(seed))
    V = cfg.n_vocab
    x = torch.randint(0, V, (n, cfg.n_in), generator=g)                               # [n, n_in]
    in_counts = torch.nn.functional.one_hot(x, V).sum(1)                               # [n, V]
    tied = in_counts == in_counts.max(-1, keepdim=True).values                        # [n, V]
    scores = torch.rand(n, V, generator=g).masked_fill(~tied, -1.0)                    # [n, V]
    y1 = scores.argmax(-1)                                                            # [n] uniform among ties
    y = y1[:, None].expand(n, cfg.n_out)                                              # [n, n_out]
    bos = torch.full((n, 1), cfg.bos, dtype=torch.long)
    tokens = torch.cat([bos, x, y], dim=1)                                            # [n, n_ctx + 1]

    counts = torch.nn.functional.one_hot(tokens[:, 1:], V).cumsum(1)                   # [n, n_ctx, V] after tok p+1
    counts = torch.cat([torch.zeros(n, 1, V, dtype=counts.dtype), counts[:, :-1]], 1)  # [n, n_ctx, V] after tok p
    is_max = counts == counts.max(-1, keepdim=True).values                            # [n, n_ctx, V]
    legal = is_max.clone()
    legal[:, : cfg.n_in] = True                                                       # any token may come next
    return MajorityBatch(tokens=tokens, features=is_max.float(), legal=legal)
