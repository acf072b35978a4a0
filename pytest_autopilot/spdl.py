"""Benchmark SPDL pipelines with pytest-benchmark and say where their time goes.

A data loader is judged by its steady state: how long the consumer waits for each batch once
the pipeline is running. :func:`benchmark_pipeline` makes pytest-benchmark rounds of the
batches the consumer takes from a started pipeline (one batch per round by default), after
warm-up rounds that are not timed. :class:`PipelineStats` plugs SPDL's own instrumentation
into the pipeline (``TaskStatsHook`` for task times, ``StatsQueue`` for queue occupancy and
throughput) and keeps only what they measured during the timed rounds.
:func:`record_pipeline_stats` turns that into metrics and into a feedback note that names the
bottleneck stage, for the user and for the optimizer. Every number comes from those
measurements.

Install with the ``[spdl]`` extra. This module imports ``spdl`` only inside the functions that
build things with it, so importing it costs nothing.

How a bottleneck is found. A stage with concurrency ``c`` whose tasks take ``t`` seconds on
average and which runs ``n`` tasks per batch keeps its ``c`` slots busy ``n * t`` seconds per
batch, i.e. it needs ``n * t / c`` seconds per batch: its *busy time*. (``t`` includes waiting
for a free thread of the executor, because SPDL times the task around the executor call; a
stage starved of threads therefore looks slow, which it is.) In a pipeline every stage moves
at the pace of the slowest, so the stage whose busy time is closest to the step time is the
bottleneck, and the ratio of the two is its utilisation. SPDL's queue statistics confirm it:
the queue after the bottleneck is empty most of the time (the next stage waits for it) while
the queue before it is full.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pytest_autopilot.metrics import Recorder

__all__ = [
    "PipelineExhausted",
    "PipelineStats",
    "StageStats",
    "SteadyState",
    "benchmark_pipeline",
    "describe_bottleneck",
    "record_pipeline_stats",
    "stage_metric_names",
]

DEFAULT_INTERVAL = 0.05
"""Seconds between SPDL's interval reports: short against a benchmark of tens of batches,
long enough that reporting costs nothing measurable."""


class _Benchmark(Protocol):
    def pedantic(
        self,
        target: Callable[..., Any],
        *,
        rounds: int,
        warmup_rounds: int,
        iterations: int,
    ) -> Any: ...


class _Pipeline(Protocol):
    def get_iterator(self, *, timeout: float | None = None) -> Iterator[Any]: ...


@dataclass(frozen=True)
class _Lap:
    """One interval report of a stage: SPDL's statistics for ``[start, end]``."""

    start: float
    end: float
    count: float
    """Successful tasks (task hooks) or items taken from the queue (queues)."""
    value: float
    """Mean task time (task hooks) or occupancy rate (queues)."""


@dataclass(frozen=True)
class StageStats:
    """What SPDL measured for one stage during the steady-state window."""

    name: str
    """The stage's name as SPDL reports it (``fetch``, ``decode``, ``src``, ``sink``, ...)."""
    stage_id: str
    concurrency: int
    tasks: float
    """Tasks completed in the laps of the window (0 for the source and the sink, which have
    no task hooks)."""
    task_time: float | None
    """Mean seconds per task, from ``TaskStatsHook``; ``None`` without task hooks."""
    qps: float | None
    """Items per second taken from the stage's output queue, from ``StatsQueue``."""
    queue_occupancy: float | None
    """Fraction of the window the stage's output queue held an item, from ``StatsQueue``: near
    0, the next stage waited for this one; near 1, this one waited for the next stage."""
    busy_per_batch: float | None = None
    """Seconds of this stage's capacity one batch uses: task time x tasks per batch /
    concurrency. Set by :class:`PipelineStats` when the batch rate is known."""
    tasks_per_batch: float | None = None
    """The stage's task rate over the consumer's batch rate."""


@dataclass
class SteadyState:
    """The timed part of a :func:`benchmark_pipeline` run."""

    start: float
    end: float
    """``time.monotonic()`` at the start of the first and the end of the last timed batch."""
    batches: int
    stages: list[StageStats] = field(default_factory=list)

    @property
    def step_time(self) -> float:
        """Mean seconds per timed batch (pytest-benchmark holds the per-round samples)."""
        return (self.end - self.start) / self.batches if self.batches else math.nan

    def bottleneck(self) -> StageStats | None:
        """The stage with the largest busy time per batch, if any stage has task statistics."""
        timed = [s for s in self.stages if s.busy_per_batch is not None]
        return max(timed, key=lambda s: s.busy_per_batch or 0.0) if timed else None


class PipelineStats:
    """Collects SPDL's per-stage statistics of one pipeline for a time window.

    Use one instance per pipeline: stages are told apart by their ids within a pipeline.

    Pass :meth:`build_options` to ``PipelineBuilder.build``::

        stats = PipelineStats()
        pipeline = builder.build(num_threads=8, **stats.build_options())

    It uses SPDL's own ``TaskStatsHook`` and ``StatsQueue`` with interval reporting, keeping
    each interval report (a "lap") instead of logging it; :meth:`stages` then aggregates the
    laps that fall in a window. Laps are whole: a lap belongs to the window when its midpoint
    does, so a window of ``w`` seconds is measured to about ``interval / w``.
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL) -> None:
        if not interval > 0:
            raise ValueError(f"PipelineStats: interval must be > 0 seconds, got {interval!r}")
        self.interval = interval
        self._lock = threading.Lock()
        self._task_laps: dict[tuple[str, str], list[_Lap]] = {}
        self._queue_laps: dict[tuple[str, str], list[_Lap]] = {}
        self._concurrency: dict[tuple[str, str], int] = {}
        self._used = False

    def build_options(self) -> dict[str, Any]:
        """Keyword arguments for ``PipelineBuilder.build`` / ``build_pipeline``."""
        if self._used:
            raise ValueError(
                "PipelineStats.build_options() was already used for a pipeline; "
                "use one PipelineStats per pipeline"
            )
        self._used = True
        return {"task_hook_factory": self._hook_factory(), "queue_class": self._queue_class()}

    def _add(
        self, table: dict[tuple[str, str], list[_Lap]], key: tuple[str, str], lap: _Lap
    ) -> None:
        with self._lock:
            table.setdefault(key, []).append(lap)

    def _register(self, info: Any) -> tuple[str, str]:
        key = (str(info.stage_id), str(info.stage_name))
        with self._lock:
            self._concurrency[key] = int(info.concurrency or 1)
        return key

    def _hook_factory(self) -> Callable[[Any], list[Any]]:
        from spdl.pipeline import TaskStatsHook

        collector = self

        class _LapTaskStats(TaskStatsHook):
            def __init__(self, info: Any) -> None:
                super().__init__(info, interval=collector.interval)
                self._key = collector._register(info)
                self._last = time.monotonic()

            @asynccontextmanager
            async def stage_hook(self) -> AsyncIterator[None]:
                self._last = time.monotonic()
                async with super().stage_hook():
                    yield

            async def interval_stats_callback(self, stats: Any) -> None:
                now = time.monotonic()
                count = stats.num_tasks - stats.num_failures
                lap = _Lap(self._last, now, float(count), float(stats.ave_time))
                self._last = now
                collector._add(collector._task_laps, self._key, lap)

        return lambda info: [_LapTaskStats(info)]

    def _queue_class(self) -> type[Any]:
        from spdl.pipeline import StatsQueue

        collector = self

        class _LapStatsQueue(StatsQueue):
            def __init__(self, info: Any, *, buffer_size: int = 1) -> None:
                super().__init__(info, buffer_size=buffer_size, interval=collector.interval)
                self._key = collector._register(info)

            async def interval_stats_callback(self, stats: Any) -> None:
                now = time.monotonic()
                lap = _Lap(
                    now - stats.elapsed, now, float(stats.num_items), float(stats.occupancy_rate)
                )
                collector._add(collector._queue_laps, self._key, lap)

        return _LapStatsQueue

    def stages(self, start: float, end: float, batches: int | None = None) -> list[StageStats]:
        """Per-stage statistics of the laps in ``[start, end]``, in pipeline order.

        With ``batches`` (how many batches the consumer took in the window), each stage also
        gets its tasks and busy time per batch.
        """
        with self._lock:
            task_laps = {k: list(v) for k, v in self._task_laps.items()}
            queue_laps = {k: list(v) for k, v in self._queue_laps.items()}
            concurrency = dict(self._concurrency)
        span = end - start
        batch_rate = batches / span if batches and span > 0 else None
        result = []
        for key in sorted(concurrency, key=_stage_order):
            task_window = _in_window(task_laps.get(key, []), start, end)
            tasks, task_time = _weighted(task_window)
            queue_window = _in_window(queue_laps.get(key, []), start, end)
            items, occupancy = _weighted_by_time(queue_window)
            has_tasks = key in task_laps
            per_batch = busy = None
            task_span = _duration(task_window)
            if has_tasks and batch_rate and task_time is not None and task_span > 0:
                # Rates, not counts: whole laps cover the window only up to one interval.
                per_batch = tasks / task_span / batch_rate
                busy = task_time * per_batch / concurrency[key]
            queue_span = _duration(queue_window)
            result.append(
                StageStats(
                    name=key[1],
                    stage_id=key[0],
                    concurrency=concurrency[key],
                    tasks=tasks,
                    task_time=task_time if has_tasks else None,
                    qps=items / queue_span if queue_span > 0 else None,
                    queue_occupancy=occupancy,
                    busy_per_batch=busy,
                    tasks_per_batch=per_batch,
                )
            )
        return result


def _stage_order(key: tuple[str, str]) -> tuple[int, str]:
    stage_id, name = key
    return (int(stage_id) if stage_id.isdigit() else 1 << 30, name)


def _in_window(laps: Sequence[_Lap], start: float, end: float) -> list[_Lap]:
    """Laps whose midpoint is in the window; a window shorter than a lap takes its overlaps."""
    inside = [lap for lap in laps if start <= (lap.start + lap.end) / 2 <= end]
    if inside:
        return inside
    return [lap for lap in laps if lap.end > start and lap.start < end]


def _duration(laps: Sequence[_Lap]) -> float:
    return sum(lap.end - lap.start for lap in laps)


def _weighted(laps: Sequence[_Lap]) -> tuple[float, float | None]:
    """Total count and count-weighted mean value (mean task time over all tasks)."""
    count = sum(lap.count for lap in laps)
    if count <= 0:
        return 0.0, None
    return count, sum(lap.count * lap.value for lap in laps) / count


def _weighted_by_time(laps: Sequence[_Lap]) -> tuple[float, float | None]:
    """Total count and time-weighted mean value (occupancy over the whole window)."""
    duration = _duration(laps)
    count = sum(lap.count for lap in laps)
    if duration <= 0:
        return count, None
    return count, sum((lap.end - lap.start) * lap.value for lap in laps) / duration


class PipelineExhausted(RuntimeError):
    """The pipeline ended before the benchmark had all its rounds."""


def benchmark_pipeline(
    benchmark: _Benchmark,
    pipeline: _Pipeline,
    *,
    rounds: int = 30,
    warmup_rounds: int = 5,
    batches_per_round: int = 1,
    stats: PipelineStats | None = None,
    timeout: float | None = None,
) -> SteadyState:
    """Time a started pipeline's steady state: each pytest-benchmark round takes batches.

    Runs ``benchmark.pedantic(next_batch, rounds=rounds, warmup_rounds=warmup_rounds,
    iterations=batches_per_round)`` over ``pipeline.get_iterator()``. A sample is then the
    consumer's mean wait per batch over one round (pytest-benchmark divides a round's time by
    its iterations), and the warm-up rounds (pipeline start, cold caches, filling the buffers)
    are not among the samples. The pipeline must yield at least ``(rounds + warmup_rounds) *
    batches_per_round`` batches, plus one: give it a repeating source.

    With the default of one batch per round, every sample is one batch. A pipeline whose last
    stages run several batches at once delivers them in bursts, though: a few long waits, then
    batches that are already there. The median of single-batch waits then understates the
    time per batch (it can fall below what the CPU work allows), while the mean over a round of
    a few batches, like a training loop whose sink buffer absorbs the bursts, does not. Use
    ``batches_per_round`` of about the largest number of batches in flight at the end of the
    pipeline to measure such pipelines.

    :param stats: the :class:`PipelineStats` the pipeline was built with; the returned
        :class:`SteadyState` then has its per-stage statistics for the timed rounds.
    :param timeout: seconds to wait for any one batch before failing.
    :raises PipelineExhausted: when the pipeline ends too early.
    """
    _check_rounds(rounds, warmup_rounds, batches_per_round)
    calls: list[tuple[float, float]] = []
    warmup = warmup_rounds * batches_per_round
    timed_batches = rounds * batches_per_round
    next_batch = _timed_next(pipeline.get_iterator(timeout=timeout), calls, warmup, timed_batches)
    benchmark.pedantic(
        next_batch, rounds=rounds, warmup_rounds=warmup_rounds, iterations=batches_per_round
    )
    # With --benchmark-disable pytest-benchmark calls the target only once; with iterations
    # above 1 it makes one more call after the rounds, for the return value.
    timed = calls[warmup : warmup + timed_batches] or calls[:1]
    state = SteadyState(start=timed[0][0], end=timed[-1][1], batches=len(timed))
    if stats is not None:
        # The lap that holds the window's end is reported up to one interval later.
        time.sleep(1.5 * stats.interval)
        state.stages = stats.stages(state.start, state.end, state.batches)
    return state


def _check_rounds(rounds: int, warmup_rounds: int, batches_per_round: int) -> None:
    if rounds < 1 or warmup_rounds < 0 or batches_per_round < 1:
        raise ValueError(
            f"benchmark_pipeline: rounds and batches_per_round must be >= 1 and warmup_rounds "
            f">= 0, got rounds={rounds!r}, warmup_rounds={warmup_rounds!r}, "
            f"batches_per_round={batches_per_round!r}"
        )


def _timed_next(
    iterator: Iterator[Any], calls: list[tuple[float, float]], warmup: int, timed_batches: int
) -> Callable[[], Any]:
    """The benchmark target: the next batch, its wait appended to ``calls`` as (began, got)."""

    def next_batch() -> Any:
        began = time.monotonic()
        try:
            batch = next(iterator)
        except StopIteration:
            raise PipelineExhausted(
                f"the pipeline ended after {len(calls)} batches; benchmark_pipeline needs "
                f"{warmup} warm-up + {timed_batches} timed batches (use a repeating source)"
            ) from None
        calls.append((began, time.monotonic()))
        return batch

    return next_batch


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


def describe_bottleneck(state: SteadyState) -> str:
    """One feedback note: which stage limits the pipeline, by how much, and the evidence."""
    step = state.step_time
    neck = state.bottleneck()
    if neck is None or neck.busy_per_batch is None or neck.task_time is None:
        return (
            f"step time {_ms(step)}; no stage has task statistics "
            "(build the pipeline with PipelineStats().build_options())"
        )
    stages = {s.stage_id: s for s in state.stages}
    order = sorted(stages, key=lambda i: _stage_order((i, "")))
    position = order.index(neck.stage_id)
    upstream = stages[order[position - 1]] if position > 0 else None
    utilisation = neck.busy_per_batch / step if step > 0 else math.nan
    text = (
        f"bottleneck: stage '{neck.name}' (avg task {_ms(neck.task_time)} x "
        f"{neck.tasks_per_batch:.3g} tasks per batch / concurrency {neck.concurrency} = "
        f"{_ms(neck.busy_per_batch)} per batch of a {_ms(step)} step, "
        f"busy {utilisation:.0%} of the time"
    )
    evidence = []
    if neck.queue_occupancy is not None:
        evidence.append(f"its output queue was empty {1 - neck.queue_occupancy:.0%} of the time")
    if upstream is not None and upstream.queue_occupancy is not None:
        evidence.append(f"its input queue was full {upstream.queue_occupancy:.0%}")
    if evidence:
        text += "; " + ", ".join(evidence)
    text += ")"
    others = [
        f"'{s.name}' {_ms(s.busy_per_batch)}"
        for s in sorted(state.stages, key=lambda s: -(s.busy_per_batch or 0.0))
        if s is not neck and s.busy_per_batch is not None
    ]
    if others:
        text += ". Busy time per batch of the other stages: " + ", ".join(others)
    sink = stages[order[-1]] if order else None
    if sink is not None and sink.queue_occupancy is not None and sink.queue_occupancy > 0.9:
        text += (
            f". The output queue held a batch {sink.queue_occupancy:.0%} of the time: the "
            "consumer, not the pipeline, sets the pace"
        )
    return text + "."


_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def stage_metric_names(stages: Sequence[StageStats]) -> Mapping[str, str]:
    """Stage id -> metric name part: the stage name made safe, with its id when repeated."""
    names = {s.stage_id: _NAME_UNSAFE.sub("_", s.name).strip("_") or "stage" for s in stages}
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    return {i: (f"{n}_{i}" if counts[n] > 1 else n) for i, n in names.items()}


def record_pipeline_stats(
    autopilot: Recorder, state: SteadyState, *, prefix: str = "spdl.stage"
) -> str:
    """Record each stage's statistics as metrics and the bottleneck as a feedback note.

    Metrics, per stage ``<name>``: ``<prefix>.<name>.task_time`` (mean seconds per task,
    lower is better), ``<prefix>.<name>.busy_time`` (seconds of stage capacity per batch,
    lower), ``<prefix>.<name>.qps`` (items per second, higher) and
    ``<prefix>.<name>.queue_occupancy`` (fraction of time its output queue held an item,
    higher). A value SPDL did not measure is not recorded. Returns the note.
    """
    names = stage_metric_names(state.stages)
    for stage in state.stages:
        base = f"{prefix}.{names[stage.stage_id]}"
        if stage.task_time is not None:
            autopilot.record(f"{base}.task_time", stage.task_time, goal="min")
        if stage.busy_per_batch is not None:
            autopilot.record(f"{base}.busy_time", stage.busy_per_batch, goal="min")
        if stage.qps is not None:
            autopilot.record(f"{base}.qps", stage.qps, goal="max")
        if stage.queue_occupancy is not None:
            autopilot.record(f"{base}.queue_occupancy", stage.queue_occupancy, goal="max")
    note = describe_bottleneck(state)
    autopilot.feedback(note)
    return note
