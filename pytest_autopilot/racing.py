"""Sequential, paired decisions for the loop: keep real wins, never keep noise, measure little.

One *measurement* of a candidate is a pair of sessions run side by side: the candidate's and a
fresh one of the incumbent, whose benchmark rounds take turns on one CPU
(:mod:`pytest_autopilot.lockstep`), so round ``i`` of both is adjacent in time and shares its
load, CPU speed and heat. When both sessions have as many samples, the measurement is the
round-by-round log-ratio ``d_i = log(c_i / inc_i)``: its location is Yuen's 20% trimmed mean
of the ``d_i`` and its *within* variance comes from their own (winsorized) spread, with
``h - 1`` df (``h`` kept rounds). The shared drift cancels in each ``d_i``; an outlier round
is trimmed. Sessions with different counts fall back to each side's median and its MAD-based
variance.

The variance of a measurement is ``within + between``:

- *within*: what the rounds show, moderated as in limma's moderated t by the run's pooled round
  scatter (both are averaged by their df, the pooled part worth at most
  :data:`ROUND_PRIOR_DF`; the df add up), so five rounds (2 df alone) still give a usable
  interval;
- *between*: how much two sessions of identical code differ beyond what their rounds show
  (memory placement, the host's other work), invisible from inside a session. It is
  **estimated from the run's own repeated measurements** (:class:`NoisePool`): a candidate's
  repeated pairs, lockstep like the pairs judged, with a weak prior (:data:`PRIOR_BETWEEN`,
  worth :data:`PRIOR_DF` observations) until the run has some.

A candidate's ``k`` measurements are averaged; the variance of the mean is
``sum(within_j) / k^2 + between / k`` and its df come from Welch-Satterthwaite over those
terms (each within with its own df, the between with the pool's): a long benchmark with a
small between part gets a tight interval at once, a short one keeps the few df of the term that
dominates. The interval uses Student's t with those df: few observations give wide intervals,
never falsely narrow ones. ``benchmarks/racing_simulation.py`` checks it on seeded simulations
and, with ``--pairs``, on real pairs of sessions of identical code measured by the loop.

The decision is a race (:func:`decide`), run after each measurement:

- **keep** when the lower confidence bound of the gain exceeds ``min_effect``;
- **drop** when even an optimistic (95%) upper bound of the gain stays below what the keep
  bound could still be at the last allowed measurement, with the df that look would have
  (futility): a clear loser or a no-op is decided by its first measurement, and a real win is
  dropped this way at most about 5% of the time;
- otherwise measure again, up to :data:`MAX_MEASUREMENTS`; still undecided then: drop, as
  "cannot tell".

Error control under this early stopping: the false-keep probability of one candidate is
bounded by splitting its budget ``alpha_candidate`` over its possible looks, look ``k``
getting ``k`` parts of ``1 + 2 + ... + MAX_MEASUREMENTS`` (:meth:`RacePlan.alpha_look`;
Bonferroni alpha spending: whatever the dependence between looks, the chance that *any* look
crosses the keep bound is at most the sum of the per-look levels). A win decided at the
first look clears its bound by far; the close calls that need more looks get more of it.
Stopping for futility only removes chances to keep, so it never raises that bound. Over a
whole run the budget
``1 - confidence`` is split evenly over the candidates the run's budget allows
(``rounds * candidates``), so the probability that a run of no-ops keeps anything is at most
``1 - confidence`` (the expected number of false keeps, :meth:`RacePlan.expected_false_keeps`,
bounds it). These bounds are only as good as each look's interval: the within part carries
its own df into Welch-Satterthwaite, the pooled round scatter that moderates it counts for a
fixed :data:`ROUND_PRIOR_DF`, not for everything the run has pooled, and the between part is
learnt only from pairs run like the ones judged. An effect far beyond every noise the run has
seen crosses the keep bound at the first measurement, however few samples the sessions have.

Pure Python and deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import median

from pytest_autopilot.results import Goal, Metric

MAX_MEASUREMENTS = 3
"""Paired measurements a candidate gets at most (its first one included). Five keep more
close wins on 5-round benchmarks (real pairs replayed: 10% wins 27% -> 68% quiet, 25% wins
93% -> 100% beside a busy process; the real loop: 10% wins 5/16 -> 9/16) but make no-ops
cost more under load (simulated: 1.31 -> 1.72 measurements each, over the 1.5 that
``test_identical_code_is_never_kept_and_costs_little`` allows)."""

FUTILITY = 0.05
"""One-sided level of the drop bound: a real win is dropped early at most about this often."""

PRIOR_BETWEEN = 2 * 0.015**2
"""Prior between-session variance of a paired log-ratio: 1.5% run-to-run noise per session."""

PRIOR_DF = 6.0
"""How many observations the prior is worth; the run's own data outweighs it quickly."""

ROUND_PRIOR_DF = 8.0
"""The df the run's pooled round scatter lends a pair's own (:meth:`NoisePool.moderated`)."""


@dataclass(frozen=True)
class Pair:
    """One paired measurement: ``log(candidate / incumbent)``, the variance of that estimate
    that the sessions' own samples show (``within``), and its degrees of freedom."""

    log_ratio: float
    within: float
    df: float = math.inf
    rounds: int = 0
    """How many round-by-round log-ratios it rests on (0: compared by medians, unpaired)."""


TRIM = 0.2
"""Share of the paired log-ratios trimmed from each end (Yuen's trimmed mean)."""


def trimmed_location(values: Sequence[float]) -> tuple[float, float, float]:
    """Yuen's trimmed mean of ``values``, the variance of that estimate, and its df.

    ``k = floor(TRIM * n)`` values are cut from each end; the variance comes from the
    winsorized values (the cut ones replaced by the nearest kept one),
    ``(n - 1) * s_w^2 / (h * (h - 1))`` with ``h = n - 2k`` kept values and ``h - 1`` df: an
    outlier neither moves the centre nor inflates the spread, and the df stay honest.
    """
    ordered = sorted(values)
    n = len(ordered)
    k = int(TRIM * n)
    h = n - 2 * k
    kept = ordered[k : n - k]
    centre = sum(kept) / h
    if h < 2:
        return centre, 0.0, math.inf
    winsorized = [ordered[k]] * k + kept + [ordered[n - k - 1]] * k
    mean_w = sum(winsorized) / n
    s2 = sum((x - mean_w) ** 2 for x in winsorized) / (n - 1)
    return centre, (n - 1) * s2 / (h * (h - 1)), h - 1.0


def log_location(samples: Sequence[float]) -> tuple[float, float]:
    """``log`` of the median of positive samples and the variance of that estimate.

    The variance is the large-sample one of a median (``pi/2 * sd^2 / n``), with the sd from
    the median absolute deviation of the log samples: robust to the odd outlier.
    """
    logs = [math.log(x) for x in samples]
    centre = median(logs)
    if len(logs) < 2:
        return centre, 0.0
    sd = 1.4826 * median(abs(x - centre) for x in logs)
    return centre, math.pi / 2.0 * sd * sd / len(logs)


def pair_metrics(incumbent: Metric | None, candidate: Metric | None) -> Pair | None:
    """:func:`pair` when both sides measured the metric and at least one has samples."""
    if incumbent is None or candidate is None:
        return None
    if not incumbent.samples and not candidate.samples:
        return None
    return pair(incumbent, candidate)


def pair(incumbent: Metric, candidate: Metric) -> Pair | None:
    """The paired log-ratio of two sessions' metric; ``None`` when it has no meaning.

    Sessions with as many samples each (the same benchmark rounds, taken in turn by
    :mod:`pytest_autopilot.lockstep`) are compared round by round: ``d_i = log(c_i / inc_i)``,
    whose drift the two rounds share cancels; their trimmed mean is the estimate, their own
    spread its within variance (:func:`trimmed_location`). Otherwise each side's median and
    its variance (:func:`log_location`), with the smaller side's ``n - 1`` df; a metric
    without samples counts as exact. Non-positive values have no log-ratio.
    """
    sides = []
    for metric in (incumbent, candidate):
        values = metric.samples or [metric.value]
        if not values or not all(math.isfinite(v) and v > 0.0 for v in values):
            return None
        sides.append(values)
    inc_values, cand_values = sides
    if len(inc_values) == len(cand_values) >= 3:
        d = [math.log(c) - math.log(i) for i, c in zip(inc_values, cand_values, strict=True)]
        return Pair(*trimmed_location(d), rounds=len(d))
    (inc, inc_var), (cand, cand_var) = log_location(inc_values), log_location(cand_values)
    sampled = [len(v) for v in sides if len(v) > 1]
    df = min(sampled) - 1.0 if sampled else math.inf
    return Pair(cand - inc, inc_var + cand_var, df)


@dataclass
class NoisePool:
    """The *between* part of a paired log-ratio's variance, pooled over the whole run.

    A pair's variance is its within part (what its sessions' samples show) plus a between
    part no session can see from inside: two processes of identical code, their rounds
    alternating on one CPU, still differ for their whole life (memory placement, the host's
    other work), by about 2% typically and by 10-20% now and then on a busy virtual machine
    (``benchmarks/lockstep_noise.py``). Only sessions of identical code side by side show it:
    a candidate's repeated pairs, whose spread around their own mean, less ``(k - 1) / k`` of
    their within parts (:meth:`moderated`), is an estimate with ``k - 1`` df. A weak prior
    (:data:`PRIOR_BETWEEN`, worth :data:`PRIOR_DF` observations) stands in until the run has
    repeated some candidates, and is soon outweighed.

    The incumbent's sessions of two rounds are *not* used: they ran minutes apart, and on a
    virtual machine the speed of the moment changes by tens of percent over seconds (a CPU
    waking from idle runs at half speed for tens of milliseconds), which a lockstep pair
    cancels and such a pair would add.
    """

    replicate_excess: float = 0.0
    """Replicates' squares less their within parts: lockstep pairs, the between term itself."""
    replicate_df: float = 0.0
    round_squares: float = 0.0
    """Per-round variance of paired log-ratios (``within * rounds``) times its df, summed."""
    round_df: float = 0.0

    def add_rounds(self, pairs: Sequence[Pair]) -> None:
        """How much the rounds of paired sessions scatter, pooled over decided candidates."""
        for p in pairs:
            if p.rounds and math.isfinite(p.df):
                self.round_squares += p.within * p.rounds * p.df
                self.round_df += p.df

    def moderated(self, observed: Pair) -> tuple[float, float]:
        """``observed``'s within variance and df, moderated by the run's pooled round scatter.

        As in limma's moderated t (Smyth 2004): the pair's own estimate (``df`` from its
        rounds) and the run's pooled one (worth what the run has pooled, at most
        :data:`ROUND_PRIOR_DF`) are averaged by their df, and the result has their summed
        df. Five rounds alone give 2 df; with the run's earlier pairs a usable interval.
        """
        if not observed.rounds or not math.isfinite(observed.df) or self.round_df <= 0.0:
            return observed.within, observed.df
        prior_df = min(self.round_df, ROUND_PRIOR_DF)
        prior = self.round_squares / self.round_df / observed.rounds
        df = observed.df + prior_df
        return (observed.df * observed.within + prior_df * prior) / df, df

    def add_replicates(self, pairs: Sequence[Pair]) -> None:
        """Repeated pairs of one candidate: their spread around their mean, ``k - 1`` df."""
        k = len(pairs)
        if k < 2:
            return
        mean = sum(p.log_ratio for p in pairs) / k
        spread = sum((p.log_ratio - mean) ** 2 for p in pairs)
        self.replicate_excess += spread - (k - 1) / k * sum(self.moderated(p)[0] for p in pairs)
        self.replicate_df += k - 1.0

    def between(self) -> float:
        """The pooled between variance of one pair: the prior and the replicates by their
        df, never below zero."""
        pooled = (PRIOR_DF * PRIOR_BETWEEN + self.replicate_excess) / (PRIOR_DF + self.replicate_df)
        return max(pooled, 0.0)

    def variance(self, within: float) -> float:
        """The variance of one pair whose sessions show ``within``."""
        return within + self.between()

    @property
    def total_df(self) -> float:
        """Degrees of freedom of :meth:`between`: the prior's and the replicates'."""
        return PRIOR_DF + self.replicate_df

    @property
    def df(self) -> float:
        """Every repeated measurement the pool holds."""
        return self.replicate_df

    def describe(self) -> str:
        noise = math.sqrt(self.between() / 2.0) * 100.0
        return (
            f"noise {noise:.1f}% per session beyond what its samples show "
            f"(pooled from {self.df:g} repeated measurements)"
        )


def combined(pairs: Sequence[Pair], pool: NoisePool) -> tuple[float, float, float]:
    """Mean log-ratio of ``pairs``, its variance, and Welch-Satterthwaite degrees of freedom.

    ``Var = sum(within_j) / k^2 + between / k``: each pair's own within variance with its own
    df, the pooled between variance with the pool's. The df of the sum follow
    Welch-Satterthwaite, ``Var^2 / sum(term^2 / df)``: a long benchmark whose between part is
    small gets the many df of its rounds, a short one (5 rounds) or a run that has seen little
    the few df of whichever term dominates, so its interval stays wide.
    """
    k = len(pairs)
    mean = sum(p.log_ratio for p in pairs) / k
    terms = [(w / (k * k), df) for w, df in map(pool.moderated, pairs)]
    terms.append((pool.between() / k, pool.total_df))
    variance = sum(v for v, _ in terms)
    spread = sum(v * v / df for v, df in terms if v > 0.0 and math.isfinite(df))
    df = variance * variance / spread if spread > 0.0 else math.inf
    return mean, variance, round(max(1.0, min(df, 1e6)), 1)


@dataclass(frozen=True)
class RacePlan:
    """The run's error budget: ``run_alpha`` over ``design_size`` candidates."""

    run_alpha: float
    design_size: int
    max_measurements: int = MAX_MEASUREMENTS

    @property
    def alpha_candidate(self) -> float:
        return self.run_alpha / max(1, self.design_size)

    def alpha_look(self, k: int) -> float:
        """The share of ``alpha_candidate`` spent at look ``k`` (1-based): ``k`` parts of
        ``1 + 2 + ... + max_measurements``. A win big enough to be decided at the first look
        clears any bound by far; the close calls that take more looks get the larger shares.
        The shares add up to ``alpha_candidate``, so the Bonferroni bound holds as before."""
        m = self.max_measurements
        return self.alpha_candidate * min(k, m) / (m * (m + 1) / 2)

    def expected_false_keeps(self) -> float:
        """Upper bound on the expected false keeps of a run of no-ops (and on P(any))."""
        return self.alpha_candidate * max(1, self.design_size)

    def describe(self) -> str:
        return (
            f"at most {self.design_size} candidates, each kept by mistake with probability "
            f"<= {self.alpha_candidate:.2g}: expected false keeps <= "
            f"{self.expected_false_keeps():.2g} per run"
        )


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` says after the measurements so far."""

    verdict: str
    """``keep``, ``drop`` or ``more``."""
    ratio: float
    low: float
    high: float
    measurements: int
    why: str

    def describe(self) -> str:
        """``-23.1% (interval -30.2%..-15.3%, 1 measurement): clearly better than 2%``."""
        n = f"{self.measurements} measurement{'s' if self.measurements != 1 else ''}"
        return (
            f"{_percent(self.ratio)} (interval {_percent(self.low)}..{_percent(self.high)}, "
            f"{n}): {self.why}"
        )


def decide(
    pairs: Sequence[Pair], goal: Goal, min_effect: float, pool: NoisePool, plan: RacePlan
) -> Decision:
    """Keep, drop, or measure again, from a candidate's paired measurements so far."""
    k = len(pairs)
    if k == 0:
        raise ValueError("decide() needs at least one pair")
    mean, variance, df = combined(pairs, pool)
    se = math.sqrt(variance)
    t_keep = t_quantile(1.0 - plan.alpha_look(k), df)
    t_drop = t_quantile(1.0 - FUTILITY, df)
    gain = -mean if goal == "min" else mean
    need = -math.log1p(-min_effect) if goal == "min" else math.log1p(min_effect)
    last = plan.max_measurements
    t_last = t_quantile(1.0 - plan.alpha_look(last), round(df * last / k, 1))
    reachable = need + t_last * se * math.sqrt(k / plan.max_measurements)
    low, high = math.exp(mean - t_keep * se), math.exp(mean + t_keep * se)
    need_text = f"{min_effect * 100:g}%"
    if gain - t_keep * se > need:
        verdict, why = "keep", f"clearly better by more than {need_text}"
    elif gain + t_drop * se < reachable:
        worse = gain + t_drop * se < 0.0
        what = "clearly worse" if worse else f"cannot be shown better by {need_text}"
        verdict, why = "drop", f"{what} (at this noise)" if not worse else what
    elif k >= plan.max_measurements:
        verdict, why = "drop", f"cannot tell after {k} measurements"
    else:
        verdict, why = "more", "undecided: measuring again"
    return Decision(verdict, math.exp(mean), low, high, k, why)


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``p`` in (0.5, 1))."""
    if not 0.5 <= p < 1.0:
        raise ValueError(f"p must be in [0.5, 1), got {p!r}")
    lo, hi = 0.0, 1.0
    while _t_upper(hi, df) > 1.0 - p:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _t_upper(mid, df) > 1.0 - p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _t_upper(t: float, df: float) -> float:
    """P(T > t) for t >= 0: half the regularized incomplete beta I_x(df/2, 1/2)."""
    x = df / (df + t * t)
    return 0.5 * _betainc(df / 2.0, 0.5, x)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by its continued fraction (Lentz's method)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * result / a


def _percent(ratio: float) -> str:
    return f"{(ratio - 1.0) * 100.0:+.1f}%"


class Racer:
    """The run's race: its plan and its pooled noise."""

    def __init__(self, goal: Goal, min_effect: float, plan: RacePlan) -> None:
        self.goal: Goal = goal
        self.min_effect = min_effect
        self.plan = plan
        self.pool = NoisePool()
        self.decided = 0
        """How many candidates the race decided (none when the objective has no samples)."""

    def prime(self, samples: Sequence[float]) -> None:
        """Seed the pooled round scatter from one session's own samples (the baseline's),
        once, so that the run's first pairs are not left with their own 2 df.

        In a lockstep pair both sides share their drift, so the variance of ``d_i`` is at
        most that of ``log c_i`` plus that of ``log inc_i``: twice one session's (winsorized)
        scatter of its log samples, with its ``n - 1`` df, errs on the wide side.
        """
        if self.pool.round_df > 0.0 or len(samples) < 3:
            return
        if not all(math.isfinite(x) and x > 0.0 for x in samples):
            return
        logs = sorted(math.log(x) for x in samples)
        n, k = len(logs), int(TRIM * len(logs))
        winsorized = [logs[k]] * k + logs[k : n - k] + [logs[n - k - 1]] * k
        mean = sum(winsorized) / n
        variance = sum((x - mean) ** 2 for x in winsorized) / (n - 1)
        self.pool.round_squares += 2.0 * variance * (n - 1)
        self.pool.round_df += n - 1.0

    def decide(self, pairs: Sequence[Pair]) -> Decision:
        return decide(pairs, self.goal, self.min_effect, self.pool, self.plan)

    def finished(self, pairs: Sequence[Pair]) -> None:
        """A candidate is decided: its repeated pairs join the pooled noise."""
        self.decided += 1
        self.pool.add_replicates(pairs)
        self.pool.add_rounds(pairs)

    def describe(self) -> str:
        return f"{self.plan.describe()}; {self.pool.describe()}"
