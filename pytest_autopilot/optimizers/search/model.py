"""The model: a Gaussian process on the normalized scale, in pure Python (tens of points)."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

LENGTH_SCALES = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
NOISE_RATIOS = (1e-4, 1e-3, 1e-2, 0.05, 0.2)
FIT_MIN = 4
"""Below this many points the length scales keep their defaults: too little to fit."""


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
    chol: list[list[float]] = field(default_factory=list)
    alpha: list[float] = field(default_factory=list)
    signal: float = 1.0
    nll: float = math.inf

    def __post_init__(self) -> None:
        n = len(self.xs)
        noise = self.noise
        for _ in range(6):
            matrix = [
                [self.kernel(a, b) + (noise if i == j else 0.0) for j, b in enumerate(self.xs)]
                for i, a in enumerate(self.xs)
            ]
            chol = cholesky(matrix)
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

    def kernel(self, a: Sequence[float], b: Sequence[float]) -> float:
        r2 = 0.0
        for x, y, ell in zip(a, b, self.scales, strict=True):
            if x != y:
                d = (x - y) / ell
                r2 += d * d
        r = math.sqrt(5.0 * r2)
        return (1.0 + r + r * r / 3.0) * math.exp(-r)

    def predict(self, x: Sequence[float]) -> tuple[float, float]:
        """Mean and standard deviation of the objective (not of a noisy measurement)."""
        k = [self.kernel(x, b) for b in self.xs]
        mean = sum(a * b for a, b in zip(k, self.alpha, strict=True))
        v = forward(self.chol, k)
        var = self.signal * max(1e-12, 1.0 - sum(t * t for t in v))
        return self.offset + self.scale * mean, self.scale * math.sqrt(var)

    def refit(self, xs: list[list[float]], ys: list[float]) -> Model:
        """The same hyperparameters on other data (``ys`` in objective units)."""
        return Model(
            xs,
            [(y - self.offset) / self.scale for y in ys],
            self.offset,
            self.scale,
            self.scales,
            self.noise,
        )


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

    def build(per: Sequence[float], noise: float) -> Model:
        columns = [0.0] * sum(len(g) for g in groups)
        for group, ell in zip(groups, per, strict=True):
            for c in group:
                columns[c] = ell
        return Model(xs, standard, offset, scale, columns, noise)

    best = build(per_group, noise)
    if len(xs) < FIT_MIN:
        return best
    for _ in range(2):
        for g in range(len(groups)):
            for ell in LENGTH_SCALES:
                trial = [*per_group[:g], ell, *per_group[g + 1 :]]
                model = build(trial, noise)
                if model.nll < best.nll - 1e-9:
                    best, per_group = model, trial
        for ratio in NOISE_RATIOS:
            if ratio >= floor:
                model = build(per_group, ratio)
                if model.nll < best.nll - 1e-9:
                    best, noise = model, ratio
    return best


def cholesky(a: list[list[float]]) -> list[list[float]] | None:
    n = len(a)
    low = [[0.0] * n for _ in range(n)]
    for i in range(n):
        row = low[i]
        for j in range(i + 1):
            other = low[j]
            total = a[i][j] - sum(map(operator.mul, row[:j], other[:j]))
            if i == j:
                if total <= 0.0:
                    return None
                row[i] = math.sqrt(total)
            else:
                row[j] = total / other[j]
    return low


def forward(low: list[list[float]], b: Sequence[float]) -> list[float]:
    out: list[float] = []
    for i, row in enumerate(low):
        out.append((b[i] - sum(map(operator.mul, row[:i], out))) / row[i])
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
