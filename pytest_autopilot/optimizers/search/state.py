"""What is known: every point of the history with its measured objective, on one scale."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from pytest_autopilot.optimizers.search.space import (
    Key,
    Observed,
    Point,
    axes_of,
    failed_tests,
    hinted_axes,
    median,
    record_order,
)
from pytest_autopilot.paramfiles import Scalar, file_format, read_values
from pytest_autopilot.proposals import CandidateRecord, OptimizerContext

if TYPE_CHECKING:
    from pytest_autopilot.config import Objective

MAX_FILE_READS = 64
"""Candidates without ``params`` whose parameter files are read back from their commits."""


class Observations:
    """The history as points of the space, computed from the context alone (nothing is kept
    between rounds, so a resumed run sees exactly what an uninterrupted one would)."""

    def __init__(self, context: OptimizerContext) -> None:
        self.context = context
        self.axes = axes_of(context.parameters)
        self.files = {p.path: p for p in context.parameters}
        self.hinted = hinted_axes(self.axes, [item.text for item in context.feedback])
        self.seen: dict[Key, Observed] = {}
        self.tol = 0.0
        self.log_scale = False

    # -- reading the state -------------------------------------------------------------

    def current(self) -> Point:
        """The point the incumbent's parameter files hold."""
        values: list[Scalar] = []
        cache: dict[str, dict[str, Scalar]] = {}
        for axis in self.axes:
            if axis.path not in cache:
                keys = [a.key for a in self.axes if a.path == axis.path]
                file = self.files[axis.path]
                cache[axis.path] = read_values(file.text, keys, file_format(file.path), file.path)
            values.append(axis.plain(cache[axis.path][axis.key]))
        return tuple(values)

    def key(self, point: Point) -> Key:
        return tuple(axis.normalize(v) for axis, v in zip(self.axes, point, strict=True))

    def observe(self, history: Sequence[CandidateRecord]) -> None:
        """Fill ``seen`` (and the scale and noise level) from the incumbent, the baseline and
        ``history``."""
        context = self.context
        objective = context.objective
        self.seen = {}
        raw: list[tuple[Key, CandidateRecord, float | None]] = []
        self.incumbent_point = self.current()
        points: list[tuple[Point, CandidateRecord]] = [(self.incumbent_point, context.incumbent)]
        if context.baseline.id != context.incumbent.id:
            if context.baseline.commit == context.incumbent.commit:
                points.append((self.incumbent_point, context.baseline))
            elif context.baseline.params is not None:
                point = self._point_of(context.baseline.params)
                if point is not None:
                    points.append((point, context.baseline))
        known = {context.incumbent.id, context.baseline.id}
        unknown = [
            r for r in history if r.params is None and r.commit and r.metrics and r.id not in known
        ][-MAX_FILE_READS:]
        if context.baseline.id != context.incumbent.id and context.baseline.params is None:
            unknown.insert(0, context.baseline)
        recovered = self._points_from_files(unknown) if unknown else {}
        if context.baseline.id in recovered:
            points.append((recovered.pop(context.baseline.id), context.baseline))
        for record in history:
            if record.id in known:
                continue
            point = recovered.get(record.id)
            if record.params is not None:
                point = self._point_of(record.params)
            if point is not None:
                points.append((point, record))
        reference_failed = failed_tests(context.baseline)
        for point, record in points:
            key = self.key(point)
            raw.append((key, record, self._raw_value(record, objective, reference_failed)))
            self.seen.setdefault(key, Observed(point)).records.append(record)
        positives = [v for _, _, v in raw if v is not None and math.isfinite(v)]
        self.log_scale = bool(positives) and all(v > 0 for v in positives)
        scale = median([abs(v) for v in positives]) or 1.0
        sign = 1.0 if objective.goal == "min" else -1.0
        for key, _, value in raw:
            if value is None:
                continue
            if not math.isfinite(value):
                self.seen[key].values.append(math.inf)
            elif self.log_scale:
                self.seen[key].values.append(sign * math.log(value))
            else:
                self.seen[key].values.append(sign * value / scale)
        self.tol = self._tolerance()

    def _points_from_files(self, records: Sequence[CandidateRecord]) -> dict[str, Point]:
        """Points of candidates that did not record ``params`` (the baseline, or candidates
        of another optimizer), read from their commits; what cannot be read stays unknown."""
        paths = list(dict.fromkeys(axis.path for axis in self.axes))
        texts = self.context.read_files([(str(r.commit), p) for r in records for p in paths])
        points: dict[str, Point] = {}
        for record in records:
            files = {p: texts.get((str(record.commit), p)) for p in paths}
            try:
                values = {
                    path: read_values(
                        text, [a.key for a in self.axes if a.path == path], file_format(path), path
                    )
                    for path, text in files.items()
                    if text is not None
                }
            except pytest.UsageError:
                continue
            if len(values) == len(paths):
                points[record.id] = tuple(
                    axis.plain(values[axis.path][axis.key]) for axis in self.axes
                )
        return points

    def _point_of(self, params: Mapping[str, Any]) -> Point | None:
        if not all(axis.name in params for axis in self.axes):
            return None
        return tuple(axis.plain(params[axis.name]) for axis in self.axes)

    @staticmethod
    def _raw_value(
        record: CandidateRecord, objective: Objective, reference_failed: float | None
    ) -> float | None:
        """The objective as measured; ``inf`` for a candidate that failed or broke tests;
        ``None`` when nothing was learned (not evaluated, refused as a duplicate)."""
        if record.verdict in ("failed", "timeout"):
            return math.inf
        if record.verdict in ("violation", "duplicate"):
            return None
        if not record.metrics:
            return None
        failed = failed_tests(record)
        if failed is not None and reference_failed is not None and failed > reference_failed:
            return math.inf
        value = record.comparable_value(objective)
        if value is None or not math.isfinite(value):
            return math.inf
        return value

    def _tolerance(self) -> float:
        """Differences below this (on the transformed scale) are treated as noise."""
        from pytest_autopilot.stats import DEFAULT_RUN_NOISE

        acceptance = self.context.config.acceptance
        noise = max(acceptance.min_effect, acceptance.run_noise or DEFAULT_RUN_NOISE)
        metric = self.context.incumbent.metrics.get(self.context.objective.metric)
        if metric is not None and metric.samples and len(metric.samples) >= 3 and metric.value:
            samples = sorted(metric.samples)
            mid = median(samples) or 0.0
            mad = median([abs(s - mid) for s in samples]) or 0.0
            if mid:
                noise = max(noise, 2 * 1.253 * 1.4826 * mad / abs(mid) / math.sqrt(len(samples)))
        return math.log1p(noise) if self.log_scale else noise

    def margin(self, fraction: float, reference: float) -> float:
        """``fraction`` worse than ``reference``, as a difference on the transformed scale."""
        return math.log1p(fraction) if self.log_scale else fraction * abs(reference)

    # -- choosing ----------------------------------------------------------------------

    def order(self, observed: Observed) -> int:
        """Earlier evaluated first among equals."""
        ids = [r.id for r in observed.records]
        return min((record_order(i) for i in ids), default=0)

    # -- moves from one center ---------------------------------------------------------

    def with_value(self, point: Point, i: int, value: Scalar) -> Point:
        return (*point[:i], self.axes[i].plain(value), *point[i + 1 :])
