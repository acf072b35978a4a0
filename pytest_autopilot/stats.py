"""Noise-aware comparison of two sets of measurements.

Relative gates (``max_regression``, ``min_gain``) and the loop's acceptance policy both ask
the same question: by what factor does the candidate differ from the baseline, and how sure
are we? :func:`compare` answers with a ratio and a confidence interval; the decision helpers
(:func:`is_regression`, :func:`has_gain`, :func:`is_improvement`) turn that into a verdict.

The method is the Hodges-Lehmann shift of the log samples with its distribution-free
(Mann-Whitney / Moses) confidence interval:

- it compares ranks, so an outlier (a GC pause, a context switch) moves the answer by at most
  one rank instead of dragging a mean;
- it assumes no distribution: benchmark timings are skewed and multi-modal, not normal;
- on log samples a shift is a ratio, so "5% slower" means the same for a 1 ms and a 1 s test;
- timings taken one after another drift together (CPU frequency, other processes), which
  makes them worth fewer independent samples than their count. The lag-1 autocorrelation of
  each series' ranks gives an effective sample size, and the interval is widened to it;
- two sessions of identical code differ by more than their samples show (process layout,
  CPU frequency, the load of the moment): about 1-4% between runs even when thousands of
  samples pin each run's median to 0.1%. That run-to-run noise is invisible from inside one
  run, so it enters as a stated floor (``run_noise``, a relative standard deviation per run)
  added to the interval; without it, identical code measured twice is "significantly"
  different most of the time.

Pure Python and deterministic: the same samples always give the same verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from statistics import NormalDist, median, stdev

from pytest_autopilot.results import Goal, Metric

MIN_SAMPLES = 5
"""Fewer (effective) samples per side than this give an unbounded interval, never a verdict."""

MAX_SAMPLES = 2000
"""Longer series are thinned to this many evenly spaced samples (in recorded order)."""

DEFAULT_RUN_NOISE = 0.02
"""Relative standard deviation of a metric's location between two runs of identical code.

Measured on a shared 2-core machine (``benchmarks/gate_noise.py``): 1.3-1.9% for benchmarks
of about a second, 2.7% for 30 rounds of 4 ms, 4% for 60 rounds of 70 us. Used when
``acceptance.run_noise`` is not set and no repeated runs are available to estimate it.
"""


_EXACT_LIMIT = 1000
"""Up to this many sample pairs, the interval uses the exact Mann-Whitney distribution."""


@dataclass(frozen=True)
class Comparison:
    """Candidate versus baseline: ``ratio`` of their locations and its confidence interval.

    ``low == 0`` and ``high == inf`` mean the samples cannot tell anything; ``low == high ==
    ratio`` means plain values were compared (no samples, so no notion of noise).
    """

    ratio: float
    low: float
    high: float
    confidence: float
    n_baseline: int
    n_candidate: int
    method: str

    @property
    def informative(self) -> bool:
        """Whether the interval bounds the ratio at all (an unbounded one has low 0 or -inf)."""
        return math.isfinite(self.low) and self.low != 0.0 and math.isfinite(self.high)

    @property
    def with_samples(self) -> bool:
        """Whether samples were compared (else plain values, with no notion of noise)."""
        return self.n_baseline > 0 and self.n_candidate > 0

    def describe(self) -> str:
        """``+3.1% (95% CI -1.2%..+7.0%)``, or the plain change when no samples were compared."""
        change = _percent(self.ratio)
        if not self.with_samples:
            return change
        level = f"{self.confidence * 100:g}% CI"
        if not self.informative:
            return f"{change} ({level} unbounded: {self.method})"
        return f"{change} ({level} {_percent(self.low)}..{_percent(self.high)})"


def compare(
    baseline: Sequence[float],
    candidate: Sequence[float],
    confidence: float,
    *,
    seed: int = 0,
    run_noise: float = DEFAULT_RUN_NOISE,
) -> Comparison:
    """Compare two sample sets: the ratio candidate/baseline of their locations, with interval.

    Each side is taken to be one run. ``run_noise`` is the relative standard deviation of a
    run's location between runs of identical code; pass ``0`` when the samples themselves
    come from independent runs. ``seed`` is accepted for callers that pass one uniformly:
    the rank method needs no randomness, so equal inputs give equal results.
    """
    del seed
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    if run_noise < 0.0:
        raise ValueError(f"run_noise must be >= 0, got {run_noise!r}")
    base = [float(x) for x in baseline]
    cand = [float(x) for x in candidate]
    unusable = _unusable_samples(base, cand, confidence)
    if unusable is not None:
        return unusable
    n, m = len(base), len(cand)
    base, cand = _thin(base), _thin(cand)
    noise = f" + {run_noise * 100:g}% run-to-run noise" if run_noise else ""
    if min(base) > 0.0 and min(cand) > 0.0:
        return _compare_logs(base, cand, confidence, run_noise, (n, m), noise)
    return _compare_shift(base, cand, confidence, run_noise, (n, m), noise)


def _unusable_samples(base: list[float], cand: list[float], confidence: float) -> Comparison | None:
    """The answer when the samples cannot be compared (too few, non-finite), else None."""
    n, m = len(base), len(cand)
    if n < MIN_SAMPLES or m < MIN_SAMPLES:
        ratio = _ratio(median(base), median(cand)) if n and m else math.nan
        return Comparison(
            ratio,
            0.0,
            math.inf,
            confidence,
            n,
            m,
            f"not enough samples ({n} and {m}; need {MIN_SAMPLES} per side)",
        )
    if not all(map(math.isfinite, base + cand)):
        return Comparison(math.nan, 0.0, math.inf, confidence, n, m, "non-finite samples")
    return None


def _compare_logs(
    base: list[float],
    cand: list[float],
    confidence: float,
    run_noise: float,
    sizes: tuple[int, int],
    noise: str,
) -> Comparison:
    """Positive samples: the shift of their logarithms is the log of the ratio."""
    floor = math.sqrt(2.0) * math.log1p(run_noise)
    shift, low, high, note = _shift_interval(
        [math.log(x) for x in base], [math.log(x) for x in cand], confidence, floor
    )
    return Comparison(
        math.exp(shift),
        math.exp(low),
        math.exp(high),
        confidence,
        *sizes,
        f"Hodges-Lehmann ratio of log samples, Mann-Whitney interval{note}{noise}",
    )


def _compare_shift(
    base: list[float],
    cand: list[float],
    confidence: float,
    run_noise: float,
    sizes: tuple[int, int],
    noise: str,
) -> Comparison:
    """Samples at or below zero: the shift relative to the baseline median."""
    n, m = sizes
    scale = abs(median(base))
    if scale == 0.0:
        return Comparison(
            math.nan, 0.0, math.inf, confidence, n, m, "baseline median is zero: no relative change"
        )
    shift, low, high, note = _shift_interval(
        base, cand, confidence, math.sqrt(2.0) * run_noise * scale
    )
    return Comparison(
        1.0 + shift / scale,
        1.0 + low / scale,
        1.0 + high / scale,
        confidence,
        n,
        m,
        f"Hodges-Lehmann shift relative to the baseline median, Mann-Whitney interval{note}{noise}",
    )


def estimate_run_noise(runs: Sequence[Sequence[float]]) -> float | None:
    """Run-to-run noise from repeated runs of identical code: the relative sd of their medians.

    ``None`` with fewer than two runs. An estimate from a handful of runs is itself noisy;
    callers should not let it go below a floor they trust (e.g. :data:`DEFAULT_RUN_NOISE`).
    """
    medians = [median(run) for run in runs if len(run) > 0]
    if len(medians) < 2 or min(medians) <= 0.0:
        return None
    return math.expm1(stdev(math.log(x) for x in medians))


def effective_run_noise(configured: float | None, runs: Sequence[Sequence[float]] = ()) -> float:
    """The run-to-run noise to use: the configured value, else what repeated runs show.

    Repeated runs of identical code (e.g. the incumbent measured again in a later round)
    give an estimate, which never goes below :data:`DEFAULT_RUN_NOISE`: a few runs can
    agree by luck, and an underestimate is what lets noise pass for progress.
    """
    if configured is not None:
        return configured
    estimate = estimate_run_noise(runs)
    return DEFAULT_RUN_NOISE if estimate is None else max(DEFAULT_RUN_NOISE, estimate)


def compare_values(baseline: float, candidate: float) -> Comparison:
    """Compare two plain values: the ratio is exact, the interval is that single point."""
    ratio = _ratio(baseline, candidate)
    return Comparison(ratio, ratio, ratio, 1.0, 0, 0, "values compared directly (no samples)")


def compare_metrics(
    baseline: Metric,
    candidate: Metric,
    confidence: float,
    *,
    seed: int = 0,
    run_noise: float = DEFAULT_RUN_NOISE,
) -> Comparison:
    """Compare with the samples when both sides have them, else the values directly.

    Samples that are too few for a noise test (fewer than :data:`MIN_SAMPLES` on a side)
    also fall back to the values, and ``method`` says so: callers that must never act on
    noise (the acceptance policy) can check :attr:`Comparison.with_samples`.
    """
    if baseline.samples and candidate.samples:
        n, m = len(baseline.samples), len(candidate.samples)
        if n >= MIN_SAMPLES and m >= MIN_SAMPLES:
            return compare(
                baseline.samples, candidate.samples, confidence, seed=seed, run_noise=run_noise
            )
        ratio = _ratio(baseline.value, candidate.value)
        return Comparison(
            ratio,
            ratio,
            ratio,
            1.0,
            0,
            0,
            f"values compared directly: too few samples for a noise test ({n} and {m}; "
            f"need {MIN_SAMPLES} per side)",
        )
    return compare_values(baseline.value, candidate.value)


def is_regression(cmp: Comparison, goal: Goal, max_regression: float) -> bool:
    """Worse than the baseline beyond ``max_regression``, and not explained by noise.

    Two conditions, both required: the interval excludes "no change" on the bad side (the
    difference is real), and the estimated change exceeds the allowed regression (the
    difference matters). A 10% slowdown against a 5% allowance fails as soon as the samples
    show it is real; noise alone never fails the gate, however large the point estimate.
    """
    if goal == "min":
        return cmp.low > 1.0 and cmp.ratio > 1.0 + max_regression
    return cmp.high < 1.0 and cmp.ratio < 1.0 - max_regression


def has_gain(cmp: Comparison, goal: Goal, min_gain: float) -> bool:
    """Better than the baseline by at least ``min_gain``, and the improvement is real.

    The mirror image of :func:`is_regression`: the interval excludes "no change" on the good
    side and the estimated gain reaches ``min_gain``.
    """
    if goal == "min":
        return cmp.high < 1.0 and cmp.ratio <= 1.0 - min_gain
    return cmp.low > 1.0 and cmp.ratio >= 1.0 + min_gain


def is_improvement(cmp: Comparison, goal: Goal, min_effect: float) -> bool:
    """The acceptance rule: the whole interval lies beyond an improvement of ``min_effect``.

    Stricter than :func:`has_gain` on purpose: a candidate replaces the incumbent only when
    even the least favourable end of the interval is a real gain, which keeps identical code
    measured twice (an A/A comparison) from being accepted as progress.
    """
    if goal == "min":
        return cmp.high < 1.0 - min_effect
    return cmp.low > 1.0 + min_effect


def _shift_interval(
    base: list[float], cand: list[float], confidence: float, floor: float
) -> tuple[float, float, float, str]:
    """Hodges-Lehmann estimate of cand - base and its interval at ``confidence``.

    ``floor`` is the standard deviation of the difference that no sample can show (run-to-run
    noise), in the units of the samples; it is added in quadrature to each side of the rank
    interval. Returns ``(shift, low, high, note)``; an unbounded interval is ``(-inf, inf)``.
    """
    n, m = len(base), len(cand)
    n_eff, m_eff = _effective_size(base), _effective_size(cand)
    xs, ys = sorted(base), sorted(cand)
    pairs = n * m
    if pairs % 2:
        shift = _kth_difference(xs, ys, (pairs + 1) // 2)
    else:
        shift = 0.5 * (
            _kth_difference(xs, ys, pairs // 2) + _kth_difference(xs, ys, pairs // 2 + 1)
        )
    note = ""
    if n_eff < n or m_eff < m:
        note = f" widened for autocorrelation (effective n {n_eff:.0f} and {m_eff:.0f})"
    if n_eff < MIN_SAMPLES or m_eff < MIN_SAMPLES:
        return shift, -math.inf, math.inf, note + ": too few independent samples"
    alpha = 1.0 - confidence
    if n_eff == n and m_eff == m and pairs <= _EXACT_LIMIT:
        k = _exact_rank(n, m, alpha)
    else:
        z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
        spread = math.sqrt((n_eff + m_eff + 1.0) / (12.0 * n_eff * m_eff))
        k = math.floor(pairs * (0.5 - z * spread))
    if k < 1:
        return shift, -math.inf, math.inf, note + ": too few samples for this confidence"
    low = _kth_difference(xs, ys, k)
    high = _kth_difference(xs, ys, pairs + 1 - k)
    margin = NormalDist().inv_cdf(1.0 - alpha / 2.0) * floor
    low = shift - math.hypot(shift - low, margin)
    high = shift + math.hypot(high - shift, margin)
    return shift, low, high, note


def _effective_size(series: list[float]) -> float:
    """How many independent samples a series is worth, from its lag-1 rank autocorrelation.

    For an AR(1)-like series with lag-1 correlation ``r``, the variance of a location
    estimate grows by ``(1 + r) / (1 - r)``. Negative correlation never narrows the
    interval. A sorted series carries no order information (it was sorted before being
    recorded), so it counts in full.
    """
    n = len(series)
    if n < 3 or _monotonic(series):
        return float(n)
    ranks = _ranks(series)
    mean = (n + 1) / 2.0
    centred = [r - mean for r in ranks]
    denom = sum(c * c for c in centred)
    if denom == 0.0:
        return float(n)
    r = sum(a * b for a, b in pairwise(centred)) / denom
    if r <= 0.0:
        return float(n)
    if r >= 1.0:
        return 1.0
    return n * (1.0 - r) / (1.0 + r)


def _monotonic(series: list[float]) -> bool:
    pairs = list(pairwise(series))
    return all(a <= b for a, b in pairs) or all(a >= b for a, b in pairs)


def _ranks(series: list[float]) -> list[float]:
    """Ranks 1..n with ties sharing their average rank."""
    order = sorted(range(len(series)), key=series.__getitem__)
    ranks = [0.0] * len(series)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and series[order[j + 1]] == series[order[i]]:
            j += 1
        for idx in order[i : j + 1]:
            ranks[idx] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _kth_difference(xs: list[float], ys: list[float], k: int) -> float:
    """The k-th smallest (1-based) of all ``y - x``, for sorted ``xs`` and ``ys``."""
    if len(xs) * len(ys) <= 40_000:
        return sorted(y - x for y in ys for x in xs)[k - 1]
    lo = ys[0] - xs[-1]
    hi = ys[-1] - xs[0]
    if _count_at_most(xs, ys, lo) >= k:
        return lo
    # Invariant: fewer than k differences are <= lo, at least k are <= hi.
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if _count_at_most(xs, ys, mid) >= k:
            hi = mid
        else:
            lo = mid
    return hi


def _count_at_most(xs: list[float], ys: list[float], t: float) -> int:
    """How many pairs have ``y - x <= t`` (two pointers over the sorted lists)."""
    count = 0
    n = len(xs)
    i = 0
    for y in ys:
        threshold = y - t
        while i < n and xs[i] < threshold:
            i += 1
        count += n - i
    return count


@lru_cache(maxsize=256)
def _exact_rank(n: int, m: int, alpha: float) -> int:
    """Largest k with P(U < k) <= alpha/2 under the exact null distribution of Mann-Whitney U.

    The counts of U are the coefficients of the Gaussian binomial [n+m choose n]_q, built as
    the product of (1 - q^(m+i)) / (1 - q^i) for i = 1..n.
    """
    coeffs = [0] * (n * m + n + 1)
    coeffs[0] = 1
    degree = 0
    for i in range(1, n + 1):
        shift = m + i
        for j in range(degree + shift, shift - 1, -1):
            coeffs[j] -= coeffs[j - shift]
        degree += shift
        for j in range(i, degree + 1):
            coeffs[j] += coeffs[j - i]
        degree -= i
    total = math.comb(n + m, n)
    limit = alpha / 2.0 * total
    cumulative = 0
    k = 0
    while k <= n * m and cumulative + coeffs[k] <= limit:
        cumulative += coeffs[k]
        k += 1
    return k


def _thin(series: list[float]) -> list[float]:
    """Keep at most :data:`MAX_SAMPLES` samples, evenly spaced in recorded order."""
    if len(series) <= MAX_SAMPLES:
        return series
    step = len(series) / MAX_SAMPLES
    return [series[int(i * step)] for i in range(MAX_SAMPLES)]


def _ratio(baseline: float, candidate: float) -> float:
    """Candidate relative to baseline, as a ratio (1 + relative change for any sign)."""
    if baseline == 0.0:
        return 1.0 if candidate == 0.0 else math.copysign(math.inf, candidate)
    if baseline > 0.0 and candidate >= 0.0:
        return candidate / baseline
    return 1.0 + (candidate - baseline) / abs(baseline)


def _percent(ratio: float) -> str:
    if math.isnan(ratio):
        return "n/a"
    if math.isinf(ratio):
        return "+inf%" if ratio > 0 else "-inf%"
    return f"{(ratio - 1.0) * 100.0:+.1f}%"


PAIRED_SESSION_NOISE = 0.01
"""Standard deviation of the log-ratio of two lockstep sessions of identical code.

Pairing round i of one session with round i of the other cancels what both rounds share
(load, CPU frequency, heat), but not what differs between two processes for their whole
life (memory layout, hash seeds, which core each ran on): about 1-2% between two runs of
identical code, invisible from the rounds of one pair of sessions, since every round of a
session shares it. It is a stated floor, not an estimate: estimating it needs REF run twice,
which doubles the cost of every gate. ``benchmarks/against_gate.py`` prints the spread of
A/A estimates, which is this very quantity, to check it: on a 2-core machine at load 10-17
it was 10-16%, so there the floor must be raised (``acceptance.run_noise``).
"""

MAX_PAIRS = 500
"""Longer paired series are thinned to this many evenly spaced pairs (the Walsh averages
grow with the square of the count)."""

_EXACT_SIGNED_RANK_LIMIT = 60
"""Up to this many pairs, the signed-rank interval uses the exact null distribution."""


def compare_paired(
    baseline: Sequence[float],
    candidate: Sequence[float],
    confidence: float,
    *,
    session_noise: float = PAIRED_SESSION_NOISE,
) -> Comparison:
    """Compare two sessions round by round: ``candidate[i]`` was timed next to ``baseline[i]``.

    The estimate is the Hodges-Lehmann location of the paired log-ratios (the median of their
    Walsh averages) with the Wilcoxon signed-rank interval: distribution-free, and an outlier
    round moves it by one rank. Drift shared by the two rounds of a pair cancels in their
    ratio, however strong, so no autocorrelation widening is needed. ``session_noise`` (see
    :data:`PAIRED_SESSION_NOISE`) is added in quadrature to each side of the interval. When
    the sessions took different numbers of rounds (calibrated benchmarks), the first rounds
    up to the shorter count are paired and ``method`` says so.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    if session_noise < 0.0:
        raise ValueError(f"session_noise must be >= 0, got {session_noise!r}")
    n = min(len(baseline), len(candidate))
    method = f"paired, {n} rounds"
    if len(baseline) != len(candidate):
        method += (
            f" (the first {n}: the baseline took {len(baseline)} rounds and the candidate "
            f"{len(candidate)}; the longer was cut)"
        )
    base = [float(x) for x in baseline[:n]]
    cand = [float(x) for x in candidate[:n]]
    if not all(math.isfinite(x) and x > 0.0 for x in base + cand):
        return Comparison(math.nan, 0.0, math.inf, confidence, n, n, method + ": a sample <= 0")
    diffs = [math.log(c) - math.log(b) for b, c in zip(base, cand, strict=True)]
    if len(diffs) > MAX_PAIRS:
        diffs = [diffs[int(i * len(diffs) / MAX_PAIRS)] for i in range(MAX_PAIRS)]
    walsh = sorted(
        (diffs[i] + diffs[j]) / 2.0 for i in range(len(diffs)) for j in range(i, len(diffs))
    )
    if not walsh:
        return Comparison(math.nan, 0.0, math.inf, confidence, n, n, method + ": no rounds")
    shift = median(walsh)
    k = _signed_rank_k(len(diffs), 1.0 - confidence)
    noise = f" + {session_noise * 100:.3g}% session noise" if session_noise else ""
    method += f", Hodges-Lehmann of the round log-ratios, Wilcoxon signed-rank interval{noise}"
    margin = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0) * math.log1p(session_noise)
    if k >= 1:
        low = shift - math.hypot(shift - walsh[k - 1], margin)
        high = shift + math.hypot(walsh[-k] - shift, margin)
        return Comparison(math.exp(shift), math.exp(low), math.exp(high), confidence, n, n, method)
    if len(diffs) < 2:
        return Comparison(math.exp(shift), 0.0, math.inf, confidence, n, n, method + ": 1 round")
    return _few_pairs(diffs, confidence, margin, method)


def _few_pairs(diffs: list[float], confidence: float, margin: float, method: str) -> Comparison:
    """2-5 pairs, too few for any rank interval at 95%: Student's t on the log-ratios.

    pytest-benchmark gives slow tests 5 rounds; a 5x regression must still fail its gate.
    The t interval assumes roughly normal log-ratios, which an outlier round makes wider,
    not narrower: it errs towards "cannot tell".
    """
    from pytest_autopilot.racing import t_quantile

    n = len(diffs)
    centre = sum(diffs) / n
    half = t_quantile(1.0 - (1.0 - confidence) / 2.0, n - 1) * stdev(diffs) / math.sqrt(n)
    spread = math.hypot(half, margin)
    method = method.replace(
        "Hodges-Lehmann of the round log-ratios, Wilcoxon signed-rank interval",
        "mean of the round log-ratios, Student t interval (too few rounds for ranks)",
    )
    return Comparison(
        math.exp(centre),
        math.exp(centre - spread),
        math.exp(centre + spread),
        confidence,
        n,
        n,
        method,
    )


@lru_cache(maxsize=256)
def _signed_rank_k(n: int, alpha: float) -> int:
    """Largest k with P(W+ < k) <= alpha/2 under the null distribution of Wilcoxon's W+.

    The interval is then the k-th smallest to the k-th largest Walsh average. Exact (subset
    sums of 1..n) up to :data:`_EXACT_SIGNED_RANK_LIMIT` pairs, the normal approximation above.
    """
    if n <= _EXACT_SIGNED_RANK_LIMIT:
        counts = [1] + [0] * (n * (n + 1) // 2)
        top = 0
        for rank in range(1, n + 1):
            top += rank
            for total in range(top, rank - 1, -1):
                counts[total] += counts[total - rank]
        limit = alpha / 2.0 * 2**n
        cumulative = 0
        k = 0
        while cumulative + counts[k] <= limit:
            cumulative += counts[k]
            k += 1
        return k
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    walsh = n * (n + 1) / 2.0
    return math.floor(walsh / 2.0 - z * math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0))
