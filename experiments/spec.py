"""Job specs and pre-registered criteria. Pure pydantic: importing this module never imports torch.

A spec is stored on the experiment node (attrs.spec) when the experiment is added, with the job kind's
defaults filled in, so what will run is fixed, visible and hashed before anything runs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

Op = Literal[">", ">=", "<", "<="]
Verdict = Literal["supported", "refuted", "inconclusive"]


MAX_SEEDS = 1000  # seeds per experiment (docs/limits.md): a run computes each one, and the spec stores the list
MAX_SEED = 2**32 - 1  # numpy seeds take 32 bits


def _too_many(text: str, n: int) -> ValueError:
    return ValueError(f"--seeds {text!r} names {n:,} seeds, over the limit of {MAX_SEEDS:,} per experiment "
                      "(docs/limits.md); split the replication into several experiments")


def check_seeds(seeds: Sequence[int], text: str | None = None) -> None:
    """Refuse more than MAX_SEEDS seeds, or a seed outside 0..2**32-1 (ValueError saying which)."""
    if len(seeds) > MAX_SEEDS:
        raise _too_many(text or f"{len(seeds)} seeds", len(seeds))
    bad = [s for s in seeds if not 0 <= int(s) <= MAX_SEED]
    if bad:
        raise ValueError(f"seed {bad[0]} is outside 0..{MAX_SEED} (seeds are 32-bit)")


def parse_seeds(text: str | int) -> list[int]:
    """Seeds from the command line: "N" is 0..N-1, "A-B" is A..B inclusive, "A,B,C" a list; parts may mix
    ("0-2,7"). A replication on fresh seeds is "3-10". At most MAX_SEEDS seeds, counted before any list is
    built. ValueError names what is wrong."""
    if isinstance(text, int):
        text = str(text)
    text = text.strip()
    if text.isdigit():
        n = int(text)
        if n < 1:
            raise ValueError(f"--seeds {text}: a count of seeds must be at least 1 (or give a range such as 3-10)")
        if n > MAX_SEEDS:
            raise _too_many(text, n)
        return list(range(n))
    count = 0
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        if dash and lo.strip().isdigit() and hi.strip().isdigit():
            count += max(0, int(hi) - int(lo) + 1)
        else:
            count += 1
    if count > MAX_SEEDS:
        raise _too_many(text, count)
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        if part.isdigit():
            seeds.append(int(part))
        elif dash and lo.strip().isdigit() and hi.strip().isdigit() and int(lo) <= int(hi):
            seeds.extend(range(int(lo), int(hi) + 1))
        else:
            raise ValueError(f"--seeds {text!r}: {part!r} is not a seed or a range A-B with A <= B "
                             "(use N for seeds 0..N-1, A-B for a range, A,B,C for a list)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r} names a seed twice")
    check_seeds(seeds, text)
    return seeds


class Interval(NamedTuple):
    """Mean and two-sided t-interval of per-seed values: `sd`, `low`, `high` are the value itself (sd None) for one
    finite value, and all None for none."""

    n: int
    mean: float | None
    sd: float | None
    low: float | None
    high: float | None


def t_interval(values: Sequence[float | None], confidence: float = 0.95) -> Interval:
    """The t-interval at `confidence` over the finite values (None and NaN are left out)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return Interval(0, None, None, None, None)
    mean = sum(vals) / n
    if n == 1:
        return Interval(1, mean, None, mean, mean)
    from scipy.special import stdtrit  # the quantile scipy.stats.t.ppf computes, without importing scipy.stats
    # (0.45 s of every worker's start-up, 12 CPU-s over the main job's 38 runs)

    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * sd / math.sqrt(n)
    return Interval(n, mean, sd, mean - half, mean + half)


def variance_note(sources: Sequence[str], n: int) -> str:
    """The evidence text's sentence on what an interval over `n` replicates covers (`sources`: what varies from
    one replicate to the next); with one replicate, that there is no interval."""
    if n < 2:
        return f"One replicate: no interval (replicates would vary {', '.join(sources)})."
    return f"The interval over {n} replicates covers: {', '.join(sources)}."


class Criterion(BaseModel):
    """A decision rule registered before the run: `metric op threshold`, with an inconclusive band.

    Across seeds the runner takes the mean and a two-sided `confidence` t-interval of `metric`.
    The claim is supported when the whole interval lies beyond `threshold + band` on the `op` side,
    refuted when it lies wholly on the other side of `threshold - band`, and inconclusive otherwise
    (the interval touches the band or straddles the threshold).

    No verdict without an interval: with fewer finite values than `min_seeds` (default 2, the fewest a
    t-interval needs) the decision is "inconclusive", marked not decisive ("insufficient seeds"), so the run
    records its metrics and the claim's status does not move. A kind whose one run is the unit of decision (one
    sweep over many SAEs, say) registers `min_seeds=1`, and its criterion says so ("one run decides").
    """

    model_config = ConfigDict(frozen=True)

    metric: str = Field(description="Name of a per-seed metric the job reports")
    op: Op = Field(description="Direction in which the metric supports the claim")
    threshold: float
    band: float = Field(0.0, ge=0.0, description="Half-width of the inconclusive band around the threshold")
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    min_seeds: int = Field(2, ge=1, description="Fewest seeds with a finite value that decide; fewer give an "
                                               "'insufficient seeds' inconclusive that does not count. 1 only "
                                               "for a kind that decides from one run")

    def describe(self) -> str:
        band = f" ± {self.band:g}" if self.band else ""
        if self.min_seeds == 1:
            return (f"{self.metric} {self.op} {self.threshold:g}{band} (one run decides; over several seeds, "
                    f"their mean and {self.confidence:.0%} CI)")
        more = f", at least {self.min_seeds} seeds" if self.min_seeds > 2 else ""
        return f"{self.metric} {self.op} {self.threshold:g}{band} (mean over seeds, {self.confidence:.0%} CI{more})"

    @classmethod
    def parse(cls, text: str) -> "Criterion":
        """Parse `metric>0.1` / `metric >= 0.1 band=0.02 conf=0.9 min_seeds=3` as typed on the command line."""
        import re

        m = re.fullmatch(r"\s*([A-Za-z_][\w.]*)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)((?:\s+\w+=[-+0-9.eE]+)*)\s*", text)
        if not m:
            raise ValueError(f"criterion {text!r} is not of the form 'metric > threshold [band=X] [conf=Y]'")
        extra = dict(kv.split("=") for kv in m.group(4).split())
        unknown = set(extra) - {"band", "conf", "confidence", "min_seeds"}
        if unknown:
            raise ValueError(f"criterion option(s) {', '.join(sorted(unknown))} unknown; use band=, conf= and "
                             "min_seeds=")
        if "min_seeds" in extra and not extra["min_seeds"].isdigit():
            raise ValueError(f"criterion option min_seeds={extra['min_seeds']} must be a whole number of seeds")
        return cls(metric=m.group(1), op=m.group(2), threshold=float(m.group(3)),
                   band=float(extra.get("band", 0.0)),
                   confidence=float(extra.get("conf", extra.get("confidence", 0.95))),
                   min_seeds=int(extra.get("min_seeds", 2)))

    def decide(self, values: Sequence[float | None]) -> Decision:
        """The verdict for per-seed values of the metric."""
        iv = t_interval(values, self.confidence)
        if iv.mean is None or iv.low is None or iv.high is None:
            return Decision(verdict="inconclusive", mean=None, ci_low=None, ci_high=None, n=0, decisive=False,
                            reason=f"insufficient seeds: no finite values of {self.metric} in any seed (the job "
                                   f"reports it undefined there; see the kind's docs); metrics recorded, no "
                                   "verdict, the claim's status does not move")
        n, mean, sd, lo, hi = iv.n, iv.mean, iv.sd, iv.low, iv.high
        if n < self.min_seeds:
            return Decision(verdict="inconclusive", mean=mean, ci_low=None, ci_high=None, n=n, sd=sd, decisive=False,
                            reason=f"insufficient seeds: {self.metric} = {mean:.4g} from {n} seed{'s' * (n != 1)}, "
                                   f"and the registered rule needs at least {self.min_seeds} for an interval "
                                   f"({self.describe()}); metrics recorded, no verdict, the claim's status "
                                   "does not move")
        up, down = self.threshold + self.band, self.threshold - self.band
        strict = self.op in (">", "<")
        above = (lo > up) if strict else (lo >= up)      # whole interval beyond the upper edge
        below = (hi < down) if strict else (hi <= down)  # whole interval beyond the lower edge
        if self.op in (">", ">="):
            verdict = "supported" if above else "refuted" if below else "inconclusive"
        else:
            verdict = "supported" if below else "refuted" if above else "inconclusive"
        where = f"[{lo:.4g}, {hi:.4g}]" if n > 1 else f"{mean:.4g} (one seed, no interval)"
        reason = f"{self.metric} = {mean:.4g}, {self.confidence:.0%} CI {where} vs {self.describe()}"
        return Decision(verdict=verdict, mean=mean, ci_low=lo, ci_high=hi, n=n, sd=sd, reason=reason)


class Decision(BaseModel):
    verdict: Verdict
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    sd: float | None = None
    reason: str
    decisive: bool = Field(True, description="False for an 'insufficient seeds' decision: listed as evidence, "
                                             "not counted in the claim's status")


class JobSpec(BaseModel):
    """What an experiment runs: a registered job kind with validated parameters, never a shell command."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    params: dict[str, Any] = Field(default_factory=dict, description="The kind's parameters, defaults filled in")
    model: str | None = Field(None, description="Model reference: 'toy:<preset>' or 'hf:<local dir>[@revision]'")
    data: str | None = Field(None, description="Data reference: 'synthetic:<preset>' or 'text:<file>'")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    device: Literal["cpu", "cuda", "auto"] = "auto"
    timeout_s: float | None = Field(1800.0, gt=0, description="Wall-clock limit for the whole run")
    criterion: Criterion

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        check_seeds(v)
        return v
