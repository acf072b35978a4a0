"""stats: the comparison behind relative gates and acceptance, on seeded synthetic timings."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from statistics import median

import pytest

from pytest_autopilot import stats
from pytest_autopilot.results import Metric


def timings(
    seed: int,
    n: int = 30,
    *,
    scale: float = 1.0,
    sigma: float = 0.05,
    ar: float = 0.0,
    outliers: float = 0.05,
) -> list[float]:
    """Benchmark-like samples: log-normal noise, optional AR(1) drift, rare slow outliers."""
    rng = random.Random(seed)
    out = []
    drift = 0.0
    for _ in range(n):
        drift = ar * drift + math.sqrt(1 - ar * ar) * rng.gauss(0, 1)
        value = 0.01 * scale * math.exp(sigma * drift)
        if rng.random() < outliers:
            value *= 1 + 3 * rng.random()
        out.append(value)
    return out


def pairwise_hodges_lehmann(base: list[float], cand: list[float]) -> float:
    """Brute force: exp of the median of all pairwise log differences."""
    diffs = sorted(math.log(y) - math.log(x) for y in cand for x in base)
    return math.exp(median(diffs))


def test_exact_interval_ranks_match_published_critical_values() -> None:
    # Two-sided 5% critical values of Mann-Whitney U: 2 (5, 5), 23 (10, 10), 127 (20, 20).
    assert stats._exact_rank(5, 5, 0.05) == 3
    assert stats._exact_rank(10, 10, 0.05) == 24
    assert stats._exact_rank(20, 20, 0.05) == 128
    assert stats._exact_rank(8, 12, 0.01) == 16  # U critical value 15 at 1%


@pytest.mark.parametrize(("n", "m", "alpha"), [(6, 7, 0.05), (5, 8, 0.1), (7, 7, 0.01)])
def test_exact_interval_rank_matches_enumeration(n: int, m: int, alpha: float) -> None:
    """The U distribution counted over every arrangement of n + m ranks."""
    counts = Counter()
    for chosen in itertools.combinations(range(n + m), n):
        others = set(range(n + m)) - set(chosen)
        counts[sum(1 for x in chosen for y in others if x > y)] += 1
    total = math.comb(n + m, n)
    k = 0
    while sum(counts[u] for u in range(k + 1)) <= alpha / 2 * total:
        k += 1
    assert stats._exact_rank(n, m, alpha) == k


@pytest.mark.parametrize("n", [7, 30, 250])
def test_ratio_is_the_hodges_lehmann_estimate(n: int) -> None:
    base, cand = sorted(timings(1, n)), sorted(timings(2, n + 3, scale=1.2))
    cmp = stats.compare(base, cand, 0.95, run_noise=0.0)
    assert cmp.ratio == pytest.approx(pairwise_hodges_lehmann(base, cand), rel=1e-9)
    assert cmp.low < cmp.ratio < cmp.high
    assert (cmp.n_baseline, cmp.n_candidate) == (n, n + 3)


def test_interval_covers_the_true_ratio_at_the_nominal_rate() -> None:
    """A/A draws of one distribution: the 95% interval excludes 1 in about 5% of cases."""
    draws = 400
    misses = 0
    for seed in range(draws):
        cmp = stats.compare(timings(2 * seed), timings(2 * seed + 1), 0.95, run_noise=0.0)
        misses += not cmp.low <= 1.0 <= cmp.high
    assert misses / draws <= 0.07


def test_acceptance_rule_keeps_aa_false_acceptance_under_one_percent() -> None:
    draws = 400
    accepted = 0
    for seed in range(draws):
        cmp = stats.compare(timings(2 * seed), timings(2 * seed + 1), 0.95)
        accepted += stats.is_improvement(cmp, "min", 0.02)
        accepted += stats.is_improvement(cmp, "max", 0.02)
    assert accepted / (2 * draws) <= 0.01


def test_real_ten_percent_regression_with_30_samples_is_caught() -> None:
    caught = gained = 0
    for seed in range(100):
        base = timings(2 * seed)
        slow = timings(2 * seed + 1, scale=1.1)
        cmp = stats.compare(base, slow, 0.95)
        caught += stats.is_regression(cmp, "min", 0.05)
        gained += stats.has_gain(stats.compare(slow, base, 0.95), "min", 0.05)
    assert caught >= 95
    assert gained >= 95


def test_noise_is_not_a_regression() -> None:
    flagged = 0
    for seed in range(200):
        cmp = stats.compare(timings(2 * seed, sigma=0.1), timings(2 * seed + 1, sigma=0.1), 0.95)
        flagged += stats.is_regression(cmp, "min", 0.05)
    assert flagged <= 2


def test_outliers_barely_move_the_estimate() -> None:
    base, cand = timings(3, outliers=0), timings(4, scale=1.1, outliers=0)
    clean = stats.compare(base, cand, 0.95)
    spiked = stats.compare(base, [*cand[:-3], 100.0, 50.0, 80.0], 0.95)
    assert spiked.ratio == pytest.approx(clean.ratio, rel=0.02)
    assert stats.is_regression(spiked, "min", 0.05) == stats.is_regression(clean, "min", 0.05)


def test_few_samples_never_give_confidence() -> None:
    cmp = stats.compare([1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0, 2.0], 0.95)
    assert not cmp.informative
    assert (cmp.low, cmp.high) == (0.0, math.inf)
    assert cmp.ratio == 2.0
    assert "not enough samples (4 and 5; need 5 per side)" in cmp.describe()
    assert not stats.is_regression(cmp, "min", 0.05)
    assert not stats.is_improvement(cmp, "max", 0.0)
    assert not stats.has_gain(cmp, "max", 0.0)


def test_confidence_too_high_for_the_samples_is_unbounded() -> None:
    cmp = stats.compare([1.0] * 5, [2.0] * 5, 0.999, run_noise=0.0)
    assert not cmp.informative
    assert "too few samples for this confidence" in cmp.method


def test_autocorrelated_samples_widen_the_interval() -> None:
    """Drifting timings are worth fewer samples than their count; shuffled, they are not."""
    base, cand = timings(5, 60, ar=0.8, outliers=0), timings(6, 60, ar=0.8, outliers=0)
    drifting = stats.compare(base, cand, 0.95, run_noise=0.0)
    rng = random.Random(0)
    rng.shuffle(base)
    rng.shuffle(cand)
    shuffled = stats.compare(base, cand, 0.95, run_noise=0.0)
    assert drifting.ratio == pytest.approx(shuffled.ratio)
    width = math.log(drifting.high / drifting.low)
    assert width > 1.5 * math.log(shuffled.high / shuffled.low)
    assert "widened for autocorrelation" in drifting.method


def test_drift_correction_lowers_aa_false_alarms() -> None:
    def alarms(shuffle: bool) -> int:
        count = 0
        for seed in range(150):
            base, cand = timings(2 * seed, ar=0.7), timings(2 * seed + 1, ar=0.7)
            if shuffle:
                random.Random(seed).shuffle(base)
                random.Random(seed).shuffle(cand)
            cmp = stats.compare(base, cand, 0.95, run_noise=0.0)
            count += not cmp.low <= 1.0 <= cmp.high
        return count

    assert alarms(shuffle=False) < 0.75 * alarms(shuffle=True)


def test_sorted_samples_count_in_full() -> None:
    base, cand = timings(7), timings(8)
    as_recorded = stats.compare(sorted(base), sorted(cand), 0.95, run_noise=0.0)
    assert "widened" not in as_recorded.method
    assert stats._effective_size(sorted(base)) == len(base)


def test_run_noise_widens_the_interval_and_is_reported() -> None:
    base, cand = timings(9, 2000, sigma=0.01), timings(10, 2000, sigma=0.01)
    tight = stats.compare(base, cand, 0.95, run_noise=0.0)
    floored = stats.compare(base, cand, 0.95, run_noise=0.02)
    assert floored.ratio == tight.ratio
    # 1.96 * sqrt(2) * log(1.02) = 5.5% on each side, whatever the sample count.
    assert math.log(floored.high / floored.ratio) == pytest.approx(0.055, abs=0.002)
    assert "+ 2% run-to-run noise" in floored.method
    assert "run-to-run" not in tight.method


def test_scale_invariance_and_symmetry() -> None:
    base, cand = timings(11), timings(12, scale=1.05)
    cmp = stats.compare(base, cand, 0.9)
    scaled = stats.compare([x * 1000 for x in base], [x * 1000 for x in cand], 0.9)
    assert scaled.ratio == pytest.approx(cmp.ratio)
    assert scaled.low == pytest.approx(cmp.low)
    reverse = stats.compare(cand, base, 0.9)
    assert reverse.ratio == pytest.approx(1 / cmp.ratio)
    assert reverse.low == pytest.approx(1 / cmp.high)


def test_deterministic_whatever_the_seed() -> None:
    base, cand = timings(13), timings(14)
    assert stats.compare(base, cand, 0.95, seed=1) == stats.compare(base, cand, 0.95, seed=2)


def test_long_series_are_thinned_and_stay_accurate() -> None:
    base, cand = timings(15, 20_000, sigma=0.02), timings(16, 12_000, sigma=0.02, scale=1.03)
    cmp = stats.compare(base, cand, 0.95, run_noise=0.0)
    assert (cmp.n_baseline, cmp.n_candidate) == (20_000, 12_000)
    assert cmp.ratio == pytest.approx(1.03, abs=0.005)
    assert cmp.low > 1.0


def test_scores_with_zero_and_negative_values_compare_by_shift() -> None:
    rng = random.Random(17)
    base = [rng.gauss(0.5, 0.3) for _ in range(40)]
    cand = [x + 0.2 for x in (rng.gauss(0.5, 0.3) for _ in range(40))]
    cmp = stats.compare(base, cand, 0.95, run_noise=0.0)
    assert min(base) < 0
    assert cmp.ratio == pytest.approx(1 + 0.2 / abs(median(base)), rel=0.5)
    assert "relative to the baseline median" in cmp.method
    assert stats.has_gain(cmp, "max", 0.1)
    zero = stats.compare([0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 2.0, 1.0, 0.0], 0.95)
    assert not zero.informative


def test_goal_max_directions() -> None:
    base, faster = timings(18), timings(19, scale=0.8)
    throughput = stats.compare([1 / x for x in base], [1 / x for x in faster], 0.95)
    assert throughput.ratio > 1.15
    assert stats.is_improvement(throughput, "max", 0.02)
    assert stats.has_gain(throughput, "max", 0.1)
    assert not stats.is_regression(throughput, "max", 0.05)
    drop = stats.compare([1 / x for x in faster], [1 / x for x in base], 0.95)
    assert stats.is_regression(drop, "max", 0.05)


def test_compare_metrics_uses_samples_or_values() -> None:
    base = Metric("t", 0.010, samples=timings(20))
    cand = Metric("t", 0.012, samples=timings(21, scale=1.2))
    with_samples = stats.compare_metrics(base, cand, 0.95)
    assert with_samples.with_samples
    assert with_samples.ratio == pytest.approx(1.2, abs=0.05)
    plain = stats.compare_metrics(Metric("p", 0.8, "max"), Metric("p", 0.9, "max"), 0.95)
    assert not plain.with_samples
    assert (plain.ratio, plain.low, plain.high) == pytest.approx((1.125, 1.125, 1.125))
    assert plain.describe() == "+12.5%"
    few = stats.compare_metrics(
        Metric("t", 1.0, samples=[1.0, 1.1]), Metric("t", 1.2, samples=[1.2, 1.3]), 0.95
    )
    assert few.ratio == pytest.approx(1.2)
    assert "too few samples for a noise test (2 and 2" in few.method


def test_compare_values_edge_cases() -> None:
    assert stats.compare_values(0.0, 0.0).ratio == 1.0
    assert stats.compare_values(0.0, 1.0).ratio == math.inf
    assert stats.compare_values(-2.0, -1.0).ratio == pytest.approx(1.5)
    assert stats.is_regression(stats.compare_values(1.0, 1.2), "min", 0.1)
    assert not stats.is_regression(stats.compare_values(1.0, 1.05), "min", 0.1)


def test_run_noise_estimate_from_repeated_runs() -> None:
    runs = [timings(30 + i, 200, scale=s, sigma=0.01) for i, s in enumerate([1.0, 1.04, 0.97])]
    estimate = stats.estimate_run_noise(runs)
    assert estimate is not None
    assert 0.02 < estimate < 0.05
    assert stats.estimate_run_noise(runs[:1]) is None
    assert stats.effective_run_noise(0.0, runs) == 0.0
    assert stats.effective_run_noise(None, runs) == estimate
    assert stats.effective_run_noise(None, [runs[0], runs[0]]) == stats.DEFAULT_RUN_NOISE
    assert stats.effective_run_noise(None) == stats.DEFAULT_RUN_NOISE


def test_describe() -> None:
    cmp = stats.Comparison(1.031, 0.988, 1.07, 0.95, 30, 30, "m")
    assert cmp.describe() == "+3.1% (95% CI -1.2%..+7.0%)"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="confidence"):
        stats.compare([1.0] * 5, [1.0] * 5, 1.0)
    with pytest.raises(ValueError, match="run_noise"):
        stats.compare([1.0] * 5, [1.0] * 5, 0.9, run_noise=-1)
