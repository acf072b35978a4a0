"""Per-stage models from SPDL's statistics: how much concurrency each stage needs.

A pipeline stage with concurrency ``c`` whose tasks take ``t`` seconds, ``n`` tasks per
batch, keeps ``busy = t * n / c`` seconds of its capacity per batch
(``spdl.stage.<name>.busy_time``, recorded by :func:`pytest_autopilot.spdl.record_pipeline_stats`).
How ``busy`` falls as ``c`` grows is the stage's scaling, ``busy ~ c ** -s``: ``s = 1`` for a
stage that waits (storage, a GIL-free kernel with cores to spare), ``s = 0`` for one that
holds the GIL, where more tasks only take turns. It is fitted per stage from the
concurrencies measured so far; with one, the stage is assumed to scale, and the next
measurement says whether it did. To deliver one batch every ``T`` seconds a scaling stage
needs ``busy(c) <= T``. The target ``T`` is what the stages that cannot be scaled allow: the
busiest stage without a concurrency knob or that does not scale, and every scaling stage at
its upper bound. A black-box sampler sees only the step time; this sees which stage needs how
much, so one candidate sets every stage's concurrency at once.

Concurrency is only raised here: a stage that needs less than it has is left alone (lowering
is the model's and the local moves' business, as it trades throughput for contention). Tasks
of synchronous stages each hold one of the executor's threads, so a thread-count knob
(``num_threads``, ``threads``, ``workers``, not naming a stage) below the tasks the stages may
run at once is raised to that sum: with fewer threads, tasks queue for a thread, and the
queueing shows up as task time that no concurrency can remove. SPDL's executor starts threads
only as tasks need them, so a thread count above the need costs nothing. Alone (no stage
changes), the thread count is raised only when it is short by more than the headroom.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_autopilot.config import IntDimension
from pytest_autopilot.optimizers.search.space import (
    STAGES,
    Axis,
    Move,
    Observed,
    choice_axes,
    median,
)

BUSY_METRIC = re.compile(r"spdl\.stage\.(?P<stage>.+)\.busy_time")
HEADROOM = 1.25
"""Concurrency above the bare need, for the variance of task times."""
SCALING_FLOOR = 0.3
"""A stage whose busy time falls slower than ``c ** -SCALING_FLOOR`` does not scale: more
concurrency is not raised there, and its busy time bounds the target."""
THREAD_WORDS = frozenset({"threads", "thread", "workers"})


@dataclass(frozen=True)
class StageModel:
    stage: str
    axis: int
    """The index of the stage's concurrency dimension."""
    here: float
    """The center's concurrency."""
    busy: float
    """Busy seconds per batch at the center's concurrency."""
    scaling: float
    """``s`` in ``busy ~ c ** -s``: 1 scales perfectly, 0 not at all."""
    fitted: bool
    """Whether ``scaling`` comes from two or more concurrencies (else it is assumed)."""

    def busy_at(self, c: float) -> float:
        return self.busy * float((self.here / c) ** self.scaling)

    def scales(self) -> bool:
        return self.scaling >= SCALING_FLOOR

    def need(self, target: float) -> float:
        """The concurrency whose busy time, with headroom, fits one batch every ``target``."""
        return self.here * float((self.busy * HEADROOM / target) ** (1 / self.scaling))


def concurrency_axis(axes: Sequence[Axis], stage: str) -> int | None:
    """The int dimension whose dotted key names the stage and concurrency."""
    for i, axis in enumerate(axes):
        words = key_words(axis)
        if isinstance(axis.dim, IntDimension) and "concurrency" in words and stage in words:
            return i
    return None


def thread_axis(axes: Sequence[Axis], stages: Sequence[str]) -> int | None:
    """The int dimension that sizes the executor: a thread or worker count naming no stage."""
    for i, axis in enumerate(axes):
        words = key_words(axis)
        if (
            isinstance(axis.dim, IntDimension)
            and words & THREAD_WORDS
            and not words & set(stages)
            and "concurrency" not in words
        ):
            return i
    return None


def capacity_knob(axis: Axis) -> bool:
    """Whether the dimension is a stage's concurrency or the executor's thread count."""
    words = key_words(axis)
    return isinstance(axis.dim, IntDimension) and bool(
        "concurrency" in words or words & THREAD_WORDS
    )


def key_words(axis: Axis) -> set[str]:
    return {w for w in re.split(r"[^a-z0-9]+", axis.key.lower()) if w}


def as_number(value: object) -> float:
    assert isinstance(value, (int, float))
    return float(value)


def stage_busy(observed: Observed) -> dict[str, float]:
    """Mean busy time per batch of each stage over the point's evaluations."""
    found: dict[str, list[float]] = {}
    for record in observed.records:
        for name, metric in record.metrics.items():
            match = BUSY_METRIC.fullmatch(name)
            if match and math.isfinite(metric.value) and metric.value > 0:
                found.setdefault(match.group("stage").lower(), []).append(metric.value)
    return {stage: sum(v) / len(v) for stage, v in found.items()}


def fitted_scaling(samples: Sequence[tuple[float, float]]) -> float | None:
    """``s`` of ``busy ~ c ** -s`` by least squares on the log scale over the median busy
    time at each concurrency (clipped to [0, 1]); ``None`` with one concurrency."""
    by_c: dict[float, list[float]] = {}
    for c, busy in samples:
        by_c.setdefault(c, []).append(busy)
    if len(by_c) < 2:
        return None
    xs = [math.log(c) for c in by_c]
    ys = [math.log(median(v) or 1.0) for v in by_c.values()]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return min(1.0, max(0.0, -slope))


def stage_models(
    axes: Sequence[Axis], seen: Sequence[Observed], center: Observed
) -> list[StageModel]:
    """One model per stage with a concurrency knob: its busy time at the center's
    concurrency (the center's own measurement when it has one) and its scaling, fitted from
    the points with the center's choices (an executor kind or per-batch work changes how a
    stage scales: decoding scales in processes and not in threads)."""
    choices = choice_axes(axes)
    samples: dict[str, list[tuple[float, float]]] = {}
    for observed in seen:
        if any(observed.point[i] != center.point[i] for i in choices):
            continue
        for stage, seconds in stage_busy(observed).items():
            i = concurrency_axis(axes, stage)
            if i is None:
                continue
            samples.setdefault(stage, []).append((as_number(observed.point[i]), seconds))
    own = stage_busy(center)
    models = []
    for stage, pairs in sorted(samples.items()):
        i = concurrency_axis(axes, stage)
        assert i is not None
        here = as_number(center.point[i])
        busy = own.get(stage)
        if busy is None:
            nearest = min(abs(math.log(c / here)) for c, _ in pairs)
            near = [b * c / here for c, b in pairs if abs(math.log(c / here)) <= nearest + 1e-9]
            busy = median(near)
        if not busy:
            continue
        scaling = fitted_scaling(pairs)
        models.append(
            StageModel(
                stage, i, here, busy, 1.0 if scaling is None else scaling, scaling is not None
            )
        )
    return models


def concurrency_move(
    axes: Sequence[Axis], seen: Sequence[Observed], center: Observed
) -> Move | None:
    """The center with every scaling stage's concurrency raised to what the target rate
    needs, and the thread count raised to the tasks they may run at once; ``None`` without
    statistics or when nothing changes."""
    models = stage_models(axes, seen, center)
    if not models:
        return None
    busy = stage_busy(center)
    modeled = {m.stage for m in models}
    floors = [b for stage, b in busy.items() if stage not in modeled]
    floors += [m.busy for m in models if not m.scales()]
    bounds = []
    for m in models:
        dim = axes[m.axis].dim
        assert isinstance(dim, IntDimension)
        if m.scales():
            bounds.append(m.busy_at(dim.high))
    target = max([*floors, *bounds])
    point = list(center.point)
    changes = []
    for m in models:
        dim = axes[m.axis].dim
        assert isinstance(dim, IntDimension)
        if not m.scales():
            continue
        need = min(dim.high, max(dim.low, math.ceil(m.need(target) - 1e-9)))
        if need > as_number(point[m.axis]):
            how = f"scales as c^-{m.scaling:.2g}" if m.fitted else "assumed to scale"
            changes.append(f"{m.stage} busy {m.busy * 1000:.3g} ms per batch at {m.here:g}, {how}")
            point[m.axis] = need
    threads = thread_axis(axes, sorted(busy))
    if threads is not None:
        dim = axes[threads].dim
        assert isinstance(dim, IntDimension)
        tasks = round(sum(as_number(point[m.axis]) for m in models)) + len(busy) - len(models)
        if tasks > as_number(point[threads]) * (1 if changes else HEADROOM):
            wanted = min(dim.high, tasks)
            if wanted > as_number(point[threads]):
                changes.append(f"{axes[threads].name} for {tasks} tasks at once")
                point[threads] = wanted
    if not changes:
        return None
    why = (
        f"per-stage model: concurrency for one batch every {target * 1000:.3g} ms ("
        + "; ".join(changes)
        + ")"
    )
    return Move(tuple(point), 0.0, STAGES, why)
