"""racing: paired sequential decisions, on seeded simulations of interleaved sessions.

The simulated sessions take their benchmark rounds in turn (incumbent, candidate, ...) under a
shared AR(1) drift (load, CPU frequency), each session with its own offset (run-to-run noise),
independent jitter and occasional outliers (a GC pause, a context switch). No test is timed.
"""

from __future__ import annotations

import math
import random
from statistics import median

import pytest

from pytest_autopilot import racing
from pytest_autopilot.results import Metric


def sessions(
    rng: random.Random,
    factors: list[float],
    rounds: int,
    *,
    jitter: float = 0.03,
    between: float = 0.015,
    drift: float = 0.05,
    ar: float = 0.9,
    outliers: float = 0.05,
) -> list[Metric]:
    offsets = [rng.gauss(0.0, between) for _ in factors]
    samples: list[list[float]] = [[] for _ in factors]
    level = rng.gauss(0.0, drift)
    for _ in range(rounds):
        for i, factor in enumerate(factors):
            level = ar * level + math.sqrt(1.0 - ar * ar) * rng.gauss(0.0, drift)
            x = 0.01 * factor * math.exp(offsets[i] + level + rng.gauss(0.0, jitter))
            if rng.random() < outliers:
                x *= 1.0 + rng.expovariate(1.0)
            samples[i].append(x)
    return [Metric("t", median(s), samples=s) for s in samples]


def race(
    rng: random.Random, racer: racing.Racer, factor: float, rounds: int, **noise: float
) -> racing.Decision:
    """One candidate through the race: side-by-side pairs until it is decided (the run's
    baseline session seeds the round scatter first, as the loop's does)."""
    (baseline,) = sessions(rng, [1.0], rounds, **noise)
    racer.prime(baseline.samples)
    pairs: list[racing.Pair] = []
    while True:
        incumbent, candidate = sessions(rng, [1.0, factor], rounds, **noise)
        observed = racing.pair(incumbent, candidate)
        assert observed is not None
        pairs.append(observed)
        decision = racer.decide(pairs)
        if decision.verdict != "more":
            racer.finished(pairs)
            return decision


def run(factor: float, rounds: int, n: int, seed: int = 1, **noise: float) -> list[racing.Decision]:
    rng = random.Random(seed)
    racer = racing.Racer("min", 0.02, racing.RacePlan(0.05, 40))
    return [race(rng, racer, factor, rounds, **noise) for _ in range(n)]


LOADED = {"drift": 0.15, "between": 0.03, "jitter": 0.08}


@pytest.mark.parametrize("noise", [{}, LOADED], ids=["quiet", "loaded"])
def test_identical_code_is_never_kept_and_costs_little(noise: dict[str, float]) -> None:
    decisions = run(1.0, 5, 300, **noise)
    assert sum(d.verdict == "keep" for d in decisions) == 0
    assert sum(d.measurements for d in decisions) / len(decisions) < 1.5


@pytest.mark.parametrize("rounds", [5, 12])
def test_a_2x_win_is_kept_and_a_clear_loser_dropped_by_their_first_measurement(
    rounds: int,
) -> None:
    """With 5 rounds the run's very first candidate, before any pooled round scatter, has
    only its own 2 df and may take a second measurement; every later one is decided at once."""
    for factor, verdict in ((0.5, "keep"), (2.0, "drop")):
        decisions = run(factor, rounds, 40)
        assert [(d.verdict, d.measurements) for d in decisions[1:]] == [(verdict, 1)] * 39
        assert decisions[0].verdict == verdict


def test_under_heavy_load_a_2x_win_may_take_a_second_measurement_with_5_rounds() -> None:
    decisions = run(0.5, 5, 40, **LOADED)
    assert all(d.verdict == "keep" for d in decisions)
    assert sum(d.measurements == 1 for d in decisions) >= 28
    assert max(d.measurements for d in decisions[1:]) <= 2  # the first has no pooled scatter


def test_a_quarter_faster_is_kept_under_load_and_ten_percent_when_quiet() -> None:
    assert sum(d.verdict == "keep" for d in run(0.75, 12, 60, **LOADED)) >= 50
    assert sum(d.verdict == "keep" for d in run(0.9, 12, 60)) >= 42
    assert sum(d.verdict == "keep" for d in run(0.9, 50, 60)) >= 54


def test_the_pooled_noise_is_what_the_sessions_show() -> None:
    rng = random.Random(3)
    pool = racing.NoisePool()
    for _ in range(200):
        replicates = []
        for _ in range(3):
            a, b = sessions(rng, [1.0, 1.0], 50, between=0.03, drift=0.0, outliers=0.0)
            observed = racing.pair(a, b)
            assert observed is not None
            replicates.append(observed)
        pool.add_replicates(replicates)
    assert pool.between() == pytest.approx(2 * 0.03**2, rel=0.2)
    assert pool.variance(1e-4) == pytest.approx(pool.between() + 1e-4)


def test_lockstep_pairs_cancel_the_drift_their_rounds_share() -> None:
    """Round by round, a drift both sessions see cancels: the paired estimate is tighter than
    the two medians', and an outlier round is trimmed, not averaged in."""
    drift = [1.0, 1.3, 0.8, 1.5, 0.9, 1.2, 1.1, 0.7, 1.4, 1.0]
    incumbent = Metric("t", 1.0, samples=drift)
    candidate = Metric(
        "t", 0.9, samples=[0.9 * x * (1.0 + 0.01 * (-1) ** i) for i, x in enumerate(drift)]
    )
    paired = racing.pair(incumbent, candidate)
    assert paired is not None and paired.rounds == 10 and paired.df == 5
    assert paired.log_ratio == pytest.approx(math.log(0.9), abs=0.005)
    unpaired = racing.pair(incumbent, Metric("t", 0.9, samples=candidate.samples[:-1]))
    assert unpaired is not None and unpaired.rounds == 0
    assert paired.within < unpaired.within / 100
    centre, variance, df = racing.trimmed_location([0.0, 0.01, -0.01, 0.02, 5.0])
    assert centre == pytest.approx(0.01) and variance < 1e-3 and df == 2


def test_an_effect_far_beyond_the_noise_is_decided_even_with_few_samples() -> None:
    incumbent = Metric("t", 1.0, samples=[1.0, 1.01, 0.99, 1.02, 0.98])
    candidate = Metric("t", 0.2, samples=[0.2, 0.21, 0.19, 0.2, 0.2])
    racer = racing.Racer("min", 0.02, racing.RacePlan(0.05, 1000))
    observed = racing.pair(incumbent, candidate)
    assert observed is not None
    decision = racer.decide([observed])
    assert decision.verdict == "keep"
    assert decision.describe().startswith("-80.0% (interval ")
    assert "1 measurement): clearly better by more than 2%" in decision.describe()


def test_goal_max_mirrors_goal_min() -> None:
    low = Metric("q", 100.0, samples=[100.0, 101.0, 99.0, 100.5, 99.5])
    high = Metric("q", 200.0, samples=[200.0, 202.0, 198.0, 201.0, 199.0])
    plan = racing.RacePlan(0.05, 10)
    observed = racing.pair(low, high)
    assert observed is not None
    assert racing.Racer("max", 0.02, plan).decide([observed]).verdict == "keep"
    assert racing.Racer("min", 0.02, plan).decide([observed]).why == "clearly worse"


def test_the_plan_bounds_the_false_keeps_of_a_whole_run() -> None:
    plan = racing.RacePlan(0.05, 40)
    assert plan.alpha_candidate == pytest.approx(0.05 / 40)
    looks = [plan.alpha_look(k) for k in range(1, racing.MAX_MEASUREMENTS + 1)]
    assert sum(looks) == pytest.approx(plan.alpha_candidate)
    assert looks == sorted(looks)
    assert plan.expected_false_keeps() == pytest.approx(0.05)
    assert "expected false keeps <= 0.05 per run" in plan.describe()


def test_pairs_need_positive_values() -> None:
    assert racing.pair(Metric("t", 0.0), Metric("t", 1.0)) is None
    assert racing.pair_metrics(Metric("t", 1.0), Metric("t", 2.0)) is None  # nothing sampled
    assert racing.pair_metrics(None, Metric("t", 2.0, samples=[2.0])) is None
    with pytest.raises(ValueError, match="at least one pair"):
        racing.decide([], "min", 0.02, racing.NoisePool(), racing.RacePlan(0.05, 1))


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [(0.975, 10, 2.2281), (0.975, 1, 12.7062), (0.95, 3, 2.3534), (0.975, 1e6, 1.9600)],
)
def test_t_quantile_matches_the_tables(p: float, df: float, expected: float) -> None:
    assert racing.t_quantile(p, df) == pytest.approx(expected, abs=1e-4)


def test_the_prior_is_soon_outweighed_by_what_the_replicates_show() -> None:
    """The prior stands in for the between part until candidates have been repeated; then
    the run's own lockstep replicates decide it, however far the prior was."""
    rng = random.Random(5)
    pool = racing.NoisePool()
    assert pool.between() == pytest.approx(racing.PRIOR_BETWEEN)
    for _ in range(60):
        pool.add_replicates([racing.Pair(rng.gauss(0.0, 0.01), 0.0) for _ in range(3)])
    assert 0.5 * 0.01**2 < pool.between() < 1.5 * 0.01**2 + racing.PRIOR_BETWEEN * 6 / 126
    assert pool.total_df == racing.PRIOR_DF + 120
    big = racing.NoisePool()
    for _ in range(60):
        big.add_replicates([racing.Pair(rng.gauss(0.0, 0.1), 0.0) for _ in range(3)])
    assert big.between() > 0.5 * 0.1**2


def test_welch_satterthwaite_df_follow_the_term_that_dominates() -> None:
    """A pair's own rounds give few df; when the pooled between part dominates the interval
    gets the pool's df, and when the pair's own scatter dominates, about its own."""
    pool = racing.NoisePool()
    for _ in range(200):
        pool.add_replicates([racing.Pair(0.01, 0.0), racing.Pair(-0.01, 0.0)])
    small = racing.Pair(0.0, 1e-6, df=2.0, rounds=5)
    large = racing.Pair(0.0, 1e-2, df=2.0, rounds=5)
    assert racing.combined([small], pool)[2] > 100
    assert racing.combined([large], pool)[2] == pytest.approx(2.0, abs=0.5)
    assert racing.combined([large, large, large], pool)[2] > 5
