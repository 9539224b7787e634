"""Registered criteria: parsing, and verdicts from the mean and t-interval across seeds."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from claimgraph.experiments.spec import Criterion, JobSpec, parse_seeds, t_interval


def test_parse_round_trip():
    c = Criterion.parse("single_token_frac_diff > 0.05 band=0.02 conf=0.9")
    assert (c.metric, c.op, c.threshold, c.band, c.confidence) == ("single_token_frac_diff", ">", 0.05, 0.02, 0.9)
    assert Criterion.parse("loss<=1e-3").threshold == 1e-3
    with pytest.raises(ValueError, match="not of the form"):
        Criterion.parse("loss is low")
    with pytest.raises(ValueError, match="unknown"):
        Criterion.parse("loss < 1 margin=2")


def test_interval_matches_scipy():
    vals = [0.31, 0.27, 0.35, 0.29]
    d = Criterion(metric="m", op=">", threshold=0.1).decide(vals)
    lo, hi = stats.t.interval(0.95, len(vals) - 1, loc=sum(vals) / 4, scale=stats.sem(vals))
    assert d.ci_low == pytest.approx(lo) and d.ci_high == pytest.approx(hi)
    assert d.verdict == "supported" and d.n == 4


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
def test_t_interval_is_scipy_stats_t_bit_for_bit(confidence):
    # t_interval takes the quantile from scipy.special (importing scipy.stats costs each worker 0.45 s): the
    # half-width must be the one scipy.stats.t gives, to the bit, for every replicate count the plans use
    for n in range(2, 41):
        vals = [math.sin(i + n) for i in range(n)]
        iv = t_interval(vals, confidence)
        mean = sum(vals) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
        assert (iv.low, iv.high) == (mean - half, mean + half), n


def test_t_interval_covers_the_seeds_and_skips_missing_values():
    iv = t_interval([0.1, 0.2, 0.3])
    assert iv.n == 3 and iv.mean == pytest.approx(0.2) and iv.low < 0.1 and iv.high > 0.3
    assert iv.sd == pytest.approx(0.1)
    assert t_interval([float("nan"), None, 0.5]) == (1, 0.5, None, 0.5, 0.5)
    assert t_interval([]) == (0, None, None, None, None)


@pytest.mark.parametrize("op, vals, band, verdict", [
    (">", [0.5, 0.6, 0.55], 0.0, "supported"),
    (">", [-0.5, -0.6, -0.55], 0.0, "refuted"),
    (">", [-0.2, 0.3, 0.1], 0.0, "inconclusive"),        # interval straddles the threshold
    (">", [0.04, 0.05, 0.045], 0.1, "inconclusive"),     # inside the band
    ("<", [0.5, 0.6, 0.55], 0.0, "refuted"),
    ("<", [-0.5, -0.6, -0.55], 0.0, "supported"),
    (">=", [0.0, 0.0, 0.0], 0.0, "supported"),
    (">", [0.0, 0.0, 0.0], 0.0, "inconclusive"),
    (">", [0.3], 0.0, "inconclusive"),                   # one seed: no interval, no verdict (issue 13)
    (">", [float("nan")], 0.0, "inconclusive"),
])
def test_verdicts(op, vals, band, verdict):
    assert Criterion(metric="m", op=op, threshold=0.0 if band == 0 else 0.05, band=band).decide(vals).verdict == verdict


def test_no_values_is_inconclusive_with_reason():
    d = Criterion(metric="m", op=">", threshold=0).decide([])
    assert d.verdict == "inconclusive" and d.n == 0 and "no finite values" in d.reason and not d.decisive


def test_spec_refuses_unknown_fields_and_duplicate_seeds():
    crit = Criterion(metric="m", op=">", threshold=0)
    with pytest.raises(ValueError):
        JobSpec(kind="k", criterion=crit, command="rm -rf /")
    with pytest.raises(ValueError, match="distinct"):
        JobSpec(kind="k", criterion=crit, seeds=[1, 1])
    assert not math.isnan(JobSpec(kind="k", criterion=crit).timeout_s)


@pytest.mark.parametrize("text,seeds", [("3", [0, 1, 2]), (4, [0, 1, 2, 3]), ("3-5", [3, 4, 5]), ("7-7", [7]),
                                        ("0,4,9", [0, 4, 9]), ("0-1, 5", [0, 1, 5])])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text,message", [("0", "at least 1"), ("5-3", "not a seed or a range"),
                                          ("a", "not a seed or a range"), ("1,1", "names a seed twice"),
                                          ("-2", "not a seed or a range")])
def test_parse_seeds_refuses(text, message):
    with pytest.raises(ValueError, match=message):
        parse_seeds(text)


def test_fewer_seeds_than_the_rule_needs_is_not_decisive_unless_one_run_decides():
    c = Criterion(metric="m", op=">", threshold=0.0)
    d = c.decide([0.3, None])
    assert d.verdict == "inconclusive" and d.decisive is False and "insufficient seeds" in d.reason and d.n == 1
    assert c.decide([0.3, 0.31]).decisive is True
    three = Criterion(metric="m", op=">", threshold=0.0, min_seeds=3)
    assert three.decide([0.3, 0.31]).decisive is False and "at least 3 seeds" in three.describe()
    one = Criterion.parse("m > 0 min_seeds=1")
    assert one.decide([0.3]).verdict == "supported" and "one run decides" in one.describe()
