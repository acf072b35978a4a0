"""The space as the search sees it: dimensions on a normalized scale, points, moves."""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_autopilot.config import ChoiceDimension, Dimension, FloatDimension, IntDimension
from pytest_autopilot.paramfiles import Scalar
from pytest_autopilot.proposals import CandidateRecord, ParameterFile

PATTERN, PAIR, RANDOM, NEIGHBOUR, STAGES = -1, -2, -3, -4, -5
"""``Move.axis`` of moves along several dimensions (``NEIGHBOUR``: local refinement;
``STAGES``: every stage's concurrency from the per-stage model)."""


@dataclass(frozen=True)
class Axis:
    """One dimension of the search: where it lives in which file, and its scale."""

    name: str
    """The key in ``params``: the dotted key, prefixed with ``<path>:`` when several files
    have spaces."""
    path: str
    key: str
    dim: Dimension

    @property
    def numeric(self) -> bool:
        return not isinstance(self.dim, ChoiceDimension)

    def encode(self, value: Scalar) -> float:
        """Position on the normalized scale (may leave [0, 1] for an out-of-range start)."""
        dim = self.dim
        assert not isinstance(dim, ChoiceDimension)
        x = float(value)  # type: ignore[arg-type]
        if dim.log:
            return (math.log(max(x, 1e-300)) - math.log(dim.low)) / (
                math.log(dim.high) - math.log(dim.low)
            )
        return (x - dim.low) / (dim.high - dim.low)

    def decode(self, u: float) -> int | float:
        """The value of the space nearest to a normalized position (clamped to the bounds)."""
        dim = self.dim
        assert not isinstance(dim, ChoiceDimension)
        u = min(1.0, max(0.0, u))
        if dim.log:
            x = math.exp(math.log(dim.low) + u * (math.log(dim.high) - math.log(dim.low)))
        else:
            x = dim.low + u * (dim.high - dim.low)
        if isinstance(dim, IntDimension):
            return min(dim.high, max(dim.low, math.floor(x + 0.5)))
        return min(dim.high, max(dim.low, float(f"{x:.4g}")))

    def normalize(self, value: Any) -> Hashable:
        """A comparable form: ``4`` and ``4.0`` are the same int; ``True`` is not ``1``."""
        if isinstance(self.dim, IntDimension) and is_number(value) and float(value).is_integer():
            return ("n", int(value))
        if isinstance(self.dim, FloatDimension) and is_number(value):
            return ("n", float(f"{float(value):.10g}"))
        return (type(value).__name__, value)

    def plain(self, value: Any) -> Scalar:
        """The value as written to the file and recorded in ``params``."""
        if isinstance(self.dim, IntDimension) and is_number(value) and float(value).is_integer():
            return int(value)
        if isinstance(self.dim, FloatDimension) and is_number(value):
            return float(value)
        return value  # type: ignore[no-any-return]

    def show(self, value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def choice_axes(axes: Sequence[Axis]) -> list[int]:
    """The indices of the choice dimensions: the context a point's counts are measured in."""
    return [i for i, axis in enumerate(axes) if not axis.numeric]


def axes_of(parameters: Sequence[ParameterFile]) -> list[Axis]:
    spaced = [p for p in parameters if p.space]
    prefixed = len(spaced) > 1
    return [
        Axis(f"{p.path}:{key}" if prefixed else key, p.path, key, dim)
        for p in spaced
        for key, dim in p.space.items()
    ]


Point = tuple[Scalar, ...]
Key = tuple[Hashable, ...]


@dataclass
class Observed:
    """One point of the space with what is known about it."""

    point: Point
    values: list[float] = field(default_factory=list)
    """Transformed objective of each evaluation (lower is better; ``inf``: failed)."""
    records: list[CandidateRecord] = field(default_factory=list)

    @property
    def f(self) -> float | None:
        if not self.values:
            return None
        finite = [v for v in self.values if math.isfinite(v)]
        return sum(finite) / len(finite) if finite else math.inf


@dataclass(frozen=True)
class Prior:
    """What a dimension is expected to do at a center where it has not been probed."""

    value: float
    why: str
    direction: int = 0
    """+1 / -1: the side where it improved elsewhere (numeric dimensions); 0: unknown."""
    step: float = 0.0
    """The normalized distance of that improvement."""

    def pair(self) -> tuple[float, str]:
        return self.value, self.why


@dataclass
class Move:
    point: Point
    gain: float
    axis: int
    reason: str


class Encoder:
    """Points as vectors: ``u`` for numeric dimensions, one-hot columns for choices."""

    def __init__(self, axes: Sequence[Axis]) -> None:
        self.axes = axes
        self.groups: list[list[int]] = []
        """The columns of each dimension (one length scale per dimension)."""
        column = 0
        for axis in axes:
            width = len(axis.dim.choices) if isinstance(axis.dim, ChoiceDimension) else 1
            self.groups.append(list(range(column, column + width)))
            column += width

    def encode(self, point: Point) -> list[float]:
        x: list[float] = []
        for axis, value in zip(self.axes, point, strict=True):
            if isinstance(axis.dim, ChoiceDimension):
                norm = axis.normalize(value)
                x.extend(1.0 if axis.normalize(c) == norm else 0.0 for c in axis.dim.choices)
            else:
                x.append(min(1.5, max(-0.5, axis.encode(value))))
        return x


def ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def percent_change(delta: float) -> str:
    if delta < 0:
        return f"expected {percent(delta)} better"
    return "uncertain, worth measuring"


def same_except(a: Key, b: Key, i: int) -> bool:
    return all(x == y for j, (x, y) in enumerate(zip(a, b, strict=True)) if j != i)


def failed_tests(record: CandidateRecord) -> float | None:
    metric = record.metrics.get("tests.failed")
    return None if metric is None else metric.value


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percent(delta: float) -> str:
    return f"{100 * (1 - math.exp(-abs(delta))):.0f}%"


_RECORD_ID = re.compile(r"r(\d+)(?:c(\d+))?")


def record_order(record_id: str) -> int:
    match = _RECORD_ID.fullmatch(record_id)
    if match is None:
        return 1 << 30
    return int(match.group(1)) * 10_000 + int(match.group(2) or 0)


_BOTTLENECK = re.compile(r"bottleneck\W+(?:stage\W+|is\W+)?['\"]?([A-Za-z0-9_.-]+)", re.IGNORECASE)


def hinted_axes(axes: Sequence[Axis], notes: Sequence[str]) -> set[int]:
    """Dimensions whose dotted key mentions a stage that a note calls the bottleneck."""
    names = [m.group(1).lower() for note in notes for m in _BOTTLENECK.finditer(note)]
    hinted: set[int] = set()
    for i, axis in enumerate(axes):
        words = [w for w in re.split(r"[^a-z0-9]+", axis.key.lower()) if w]
        for name in names:
            parts = [w for w in re.split(r"[^a-z0-9]+", name) if len(w) > 2]
            if name in words or name in axis.key.lower() or any(p in words for p in parts):
                hinted.add(i)
    return hinted
