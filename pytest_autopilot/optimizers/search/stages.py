"""Per-stage models from SPDL's statistics: how much concurrency each stage needs.

A pipeline stage with concurrency ``c`` whose tasks take ``t`` seconds, ``n`` tasks per
batch, keeps ``busy = t * n / c`` seconds of its capacity per batch
(``spdl.stage.<name>.busy_time``, recorded by :func:`pytest_autopilot.spdl.record_pipeline_stats`).
Its work per batch, ``w = busy * c``, barely depends on ``c`` for a stage that waits (storage,
a GIL-free kernel) and grows with it where tasks contend. To deliver one batch every ``T``
seconds a stage needs ``c >= w / T``. The target ``T`` is what the stages that cannot be
scaled allow: the busiest stage without a concurrency knob, and every knob at its upper
bound. A black-box sampler sees only the step time; this sees which stage needs how much,
so one candidate can set every stage's concurrency at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_autopilot.config import IntDimension
from pytest_autopilot.optimizers.search.space import STAGES, Axis, Move, Observed, median

BUSY_METRIC = re.compile(r"spdl\.stage\.(?P<stage>.+)\.busy_time")
HEADROOM = 1.25
"""Concurrency above the bare need, for the variance of task times."""


@dataclass(frozen=True)
class StageModel:
    stage: str
    axis: int
    """The index of the stage's concurrency dimension."""
    work: float
    """Task-seconds per batch near the concurrency the center uses."""


def concurrency_axis(axes: Sequence[Axis], stage: str) -> int | None:
    """The int dimension whose dotted key names the stage and concurrency."""
    for i, axis in enumerate(axes):
        words = [w for w in re.split(r"[^a-z0-9]+", axis.key.lower()) if w]
        if isinstance(axis.dim, IntDimension) and "concurrency" in words and stage in words:
            return i
    return None


def stage_busy(observed: Observed) -> dict[str, float]:
    """Mean busy time per batch of each stage over the point's evaluations."""
    found: dict[str, list[float]] = {}
    for record in observed.records:
        for name, metric in record.metrics.items():
            match = BUSY_METRIC.fullmatch(name)
            if match and math.isfinite(metric.value) and metric.value > 0:
                found.setdefault(match.group("stage").lower(), []).append(metric.value)
    return {stage: sum(v) / len(v) for stage, v in found.items()}


def stage_models(
    axes: Sequence[Axis], seen: Sequence[Observed], center: Observed
) -> list[StageModel]:
    """One model per stage with a concurrency knob: its work per batch, from the
    measurements at the concurrency nearest the center's."""
    samples: dict[str, list[tuple[float, float]]] = {}
    for observed in seen:
        for stage, busy in stage_busy(observed).items():
            i = concurrency_axis(axes, stage)
            if i is None:
                continue
            c = float(observed.point[i])  # type: ignore[arg-type]
            samples.setdefault(stage, []).append((c, busy * c))
    models = []
    for stage, pairs in sorted(samples.items()):
        i = concurrency_axis(axes, stage)
        assert i is not None
        here = float(center.point[i])  # type: ignore[arg-type]
        nearest = min(abs(math.log(c / here)) for c, _ in pairs)
        work = median([w for c, w in pairs if abs(math.log(c / here)) <= nearest + 1e-9])
        if work:
            models.append(StageModel(stage, i, work))
    return models


def concurrency_move(
    axes: Sequence[Axis], seen: Sequence[Observed], center: Observed
) -> Move | None:
    """The center with every modeled stage's concurrency set to what the target rate needs;
    ``None`` without statistics or when nothing changes."""
    models = stage_models(axes, seen, center)
    if not models:
        return None
    busy = stage_busy(center)
    modeled = {m.stage for m in models}
    fixed = [b for stage, b in busy.items() if stage not in modeled]
    bounds = []
    for m in models:
        dim = axes[m.axis].dim
        assert isinstance(dim, IntDimension)
        bounds.append(m.work / dim.high)
    target = max([*fixed, *bounds])
    point = list(center.point)
    changes = []
    for m in models:
        axis = axes[m.axis]
        dim = axis.dim
        assert isinstance(dim, IntDimension)
        need = min(dim.high, max(dim.low, math.ceil(m.work * HEADROOM / target)))
        if need != point[m.axis]:
            changes.append(f"{m.stage} {m.work * 1000:.3g} ms of tasks per batch")
            point[m.axis] = need
    if not changes:
        return None
    why = (
        f"per-stage model: concurrency for one batch every {target * 1000:.3g} ms ("
        + ", ".join(changes)
        + ")"
    )
    return Move(tuple(point), 0.0, STAGES, why)
