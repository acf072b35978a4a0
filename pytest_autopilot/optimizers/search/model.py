"""The model: a Gaussian process on the normalized scale, in pure Python (tens of points).

Speed matters because the likelihood fit builds dozens of kernel matrices per round: the
squared distances between the points are computed once per round and per group of columns
(:class:`Distances`), so a kernel matrix for new length scales is a weighted sum of those,
and a prediction works column by column over all training points at once."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

LENGTH_SCALES = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
NOISE_RATIOS = (1e-4, 1e-3, 1e-2, 0.05, 0.2)
SCALE_PRIOR = 1.0
"""Standard deviation of the log-normal prior on each length scale around its default: with
a handful of points the likelihood alone jumps to the grid's ends (every knob irrelevant, or
nothing correlated), and the expected improvement then follows noise."""
FIT_MIN = 4
"""Below this many points the length scales keep their defaults: too little to fit."""


@dataclass
class Distances:
    """Squared distances between the training points, per group of columns (lower triangle:
    ``rows[g][i][j]`` for ``j <= i``), shared by every kernel matrix of a fit."""

    groups: list[list[int]]
    rows: list[list[list[float]]]

    @classmethod
    def of(cls, xs: Sequence[Sequence[float]], groups: Sequence[Sequence[int]]) -> Distances:
        rows = [
            [
                [sum((a[c] - b[c]) ** 2 for c in group) for b in xs[: i + 1]]
                for i, a in enumerate(xs)
            ]
            for group in groups
        ]
        return cls([list(g) for g in groups], rows)

    def extend(self, x: Sequence[float], xs: Sequence[Sequence[float]]) -> Distances:
        """The distances with one more point ``x`` (``xs`` are the current points)."""
        rows = [
            [*rows, [sum((x[c] - b[c]) ** 2 for c in group) for b in [*xs, x]]]
            for group, rows in zip(self.groups, self.rows, strict=True)
        ]
        return Distances(self.groups, rows)


@dataclass
class Model:
    """A Gaussian process with a Matern-5/2 kernel, one length scale per dimension, and the
    signal variance profiled out of the likelihood."""

    xs: list[list[float]]
    ys: list[float]
    """Standardized targets."""
    offset: float
    scale: float
    scales: list[float]
    """Length scale of each column."""
    noise: float
    """Noise variance as a fraction of the signal variance."""
    distances: Distances | None = None
    chol: list[list[float]] = field(default_factory=list)
    alpha: list[float] = field(default_factory=list)
    signal: float = 1.0
    nll: float = math.inf

    def __post_init__(self) -> None:
        n = len(self.xs)
        if self.distances is None:
            groups = [[c] for c in range(len(self.scales))]
            self.distances = Distances.of(self.xs, groups)
        distances = self.distances
        weights = [5.0 / self.scales[g[0]] ** 2 for g in distances.groups]
        rows = []
        for i in range(n):
            r2 = [0.0] * (i + 1)
            for w, group_rows in zip(weights, distances.rows, strict=True):
                r2 = [r + w * d for r, d in zip(r2, group_rows[i], strict=True)]
            rows.append(matern(r2))
        noise = self.noise
        for _ in range(6):
            chol = cholesky(rows, noise)
            if chol is not None:
                break
            noise = max(noise * 10, 1e-8)
        else:
            raise ValueError("kernel matrix is not positive definite")
        self.chol = chol
        self.alpha = backward(chol, forward(chol, self.ys))
        self.signal = max(sum(y * a for y, a in zip(self.ys, self.alpha, strict=True)) / n, 1e-12)
        logdet = sum(math.log(chol[i][i]) for i in range(n))
        self.nll = 0.5 * n * math.log(self.signal) + logdet
        self._columns = [list(column) for column in zip(*self.xs, strict=True)]
        self._weights = [5.0 / ell**2 for ell in self.scales]

    def covariances(self, x: Sequence[float]) -> list[float]:
        """The kernel between ``x`` and every training point."""
        r2 = [0.0] * len(self.xs)
        for value, w, column in zip(x, self._weights, self._columns, strict=True):
            r2 = [r + w * (value - v) * (value - v) for r, v in zip(r2, column, strict=True)]
        return matern(r2)

    def mean(self, x: Sequence[float]) -> float:
        k = self.covariances(x)
        return self.offset + self.scale * float(sum(map(operator.mul, k, self.alpha)))

    def predict(self, x: Sequence[float]) -> tuple[float, float]:
        """Mean and standard deviation of the objective (not of a noisy measurement)."""
        k = self.covariances(x)
        mean = sum(map(operator.mul, k, self.alpha))
        v = forward(self.chol, k)
        var = self.signal * max(1e-12, 1.0 - sum(map(operator.mul, v, v)))
        return self.offset + self.scale * mean, self.scale * math.sqrt(var)

    def refit(self, xs: list[list[float]], ys: list[float]) -> Model:
        """The same hyperparameters on other data (``ys`` in objective units); when ``xs``
        extends the training points by one, the distances are extended, not recomputed."""
        distances = None
        if self.distances is not None and len(xs) == len(self.xs) + 1:
            distances = self.distances.extend(xs[-1], self.xs)
        return Model(
            xs,
            [(y - self.offset) / self.scale for y in ys],
            self.offset,
            self.scale,
            self.scales,
            self.noise,
            distances,
        )


def matern(r2: list[float]) -> list[float]:
    """The Matern-5/2 kernel of squared scaled distances already multiplied by 5."""
    exp, sqrt = math.exp, math.sqrt
    return [(1.0 + r + r * r / 3.0) * exp(-r) for r in map(sqrt, r2)]


def fit_model(
    xs: list[list[float]], ys: list[float], groups: Sequence[Sequence[int]], tol: float
) -> Model:
    """Fit length scales and noise by coordinate search over grids, maximizing the
    likelihood; the noise never goes below half the noise level ``tol``."""
    offset = sum(ys) / len(ys)
    spread = math.sqrt(sum((y - offset) ** 2 for y in ys) / len(ys))
    scale = spread if spread > 1e-12 else 1.0
    standard = [(y - offset) / scale for y in ys]
    floor = min(0.5, max(1e-6, (0.5 * tol / scale) ** 2))
    per_group = [1.0 if len(g) > 1 else 0.4 for g in groups]
    noise = max(floor, NOISE_RATIOS[1])
    distances = Distances.of(xs, groups)

    def build(per: Sequence[float], noise: float) -> Model:
        columns = [0.0] * sum(len(g) for g in groups)
        for group, ell in zip(groups, per, strict=True):
            for c in group:
                columns[c] = ell
        return Model(xs, standard, offset, scale, columns, noise, distances)

    def penalty(per: Sequence[float]) -> float:
        return sum(
            0.5 * (math.log(ell / default) / SCALE_PRIOR) ** 2
            for ell, default in zip(per, per_group_default, strict=True)
        )

    per_group_default = list(per_group)
    best = build(per_group, noise)
    if len(xs) < FIT_MIN:
        return best
    score = best.nll + penalty(per_group)
    for _ in range(2):
        for g in range(len(groups)):
            for ell in LENGTH_SCALES:
                if ell == per_group[g]:
                    continue
                trial = [*per_group[:g], ell, *per_group[g + 1 :]]
                model = build(trial, noise)
                if model.nll + penalty(trial) < score - 1e-9:
                    best, per_group, score = model, trial, model.nll + penalty(trial)
        for ratio in NOISE_RATIOS:
            if ratio >= floor and ratio != noise:
                model = build(per_group, ratio)
                if model.nll + penalty(per_group) < score - 1e-9:
                    best, noise, score = model, ratio, model.nll + penalty(per_group)
    return best


def cholesky(rows: list[list[float]], jitter: float) -> list[list[float]] | None:
    """The Cholesky factor of the symmetric matrix whose lower triangle is ``rows``, plus
    ``jitter`` on the diagonal; ``None`` when it is not positive definite."""
    low: list[list[float]] = []
    for i, a in enumerate(rows):
        row: list[float] = []
        for j in range(i):
            other = low[j]
            row.append((a[j] - sum(map(operator.mul, row, other))) / other[j])
        total = a[i] + jitter - sum(map(operator.mul, row, row))
        if total <= 0.0:
            return None
        row.append(math.sqrt(total))
        low.append(row)
    return low


def forward(low: list[list[float]], b: Sequence[float]) -> list[float]:
    out: list[float] = []
    for i, row in enumerate(low):
        out.append((b[i] - sum(map(operator.mul, row, out))) / row[i])
    return out


def backward(low: list[list[float]], b: Sequence[float]) -> list[float]:
    n = len(low)
    out = [0.0] * n
    for i in range(n - 1, -1, -1):
        total = b[i] - sum(low[k][i] * out[k] for k in range(i + 1, n))
        out[i] = total / low[i][i]
    return out


def expected_improvement(best: float, mean: float, sd: float) -> float:
    if sd < 1e-12:
        return max(0.0, best - mean)
    z = (best - mean) / sd
    cdf = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return (best - mean) * cdf + sd * pdf


def finite_targets(values: Sequence[float | None]) -> list[float]:
    """Failed points count as clearly worse than the worst measured one."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return [0.0 for _ in values]
    worst = max(finite) + max(1.0, max(finite) - min(finite))
    return [v if v is not None and math.isfinite(v) else worst for v in values]


def distance2(a: Sequence[float], b: Sequence[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
