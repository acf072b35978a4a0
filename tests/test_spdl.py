"""pytest_autopilot.spdl on real SPDL pipelines run by real pytest-benchmark sessions.

The stages sleep instead of computing, so that their costs have a floor that does not depend
on how busy the machine is: a stage that sleeps 5 ms per item, 8 items per batch, with
concurrency 1 needs at least 40 ms of every batch whatever else runs. A loaded machine only
makes things slower, so the tests check lower bounds from the sleeps and relations that the
design guarantees (a stage with one slot cannot be busy longer than the step it sets), never
how fast anything is: speed belongs in benchmarks/.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("spdl.pipeline")

from pytest_autopilot.spdl import (
    StageStats,
    SteadyState,
    describe_bottleneck,
    stage_metric_names,
)

PIPELINE_TEST = """
import time

from spdl.pipeline import PipelineBuilder

from pytest_autopilot.spdl import PipelineStats, benchmark_pipeline, record_pipeline_stats

ROUNDS = {rounds}


def sleeper(seconds):
    def stage(item):
        time.sleep(seconds)
        return item

    return stage


# Near-zero work on the event loop: no thread to wake, whatever the machine's load.
async def hand_on(item):
    return item


def test_step_time(benchmark, autopilot):
    stats = PipelineStats(interval=0.02)
    builder = PipelineBuilder().add_source(iter(range(10**6)))
    builder.pipe(sleeper({slow}), concurrency={slow_concurrency}, name="slow")
    builder.pipe({fast_stage}, concurrency=1, name="fast")
    builder.aggregate(8).add_sink(2)
    pipeline = builder.build(num_threads=16, **stats.build_options())
    with pipeline.auto_stop():
        state = benchmark_pipeline(
            benchmark,
            pipeline,
            rounds=ROUNDS,
            warmup_rounds=2,
            batches_per_round={per_round},
            stats=stats,
            timeout=30,
        )
    assert state.batches == {batches}
    record_pipeline_stats(autopilot, state)
"""


def run_pipeline_session(
    pytester: pytest.Pytester,
    *,
    slow: float,
    fast: float | None,
    slow_concurrency: int = 1,
    rounds: int = 10,
    per_round: int = 1,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    batches = 1 if "--benchmark-disable" in extra else rounds * per_round
    pytester.makepyfile(
        test_pipeline=PIPELINE_TEST.format(
            rounds=rounds,
            slow=slow,
            fast_stage="hand_on" if fast is None else f"sleeper({fast})",
            slow_concurrency=slow_concurrency,
            per_round=per_round,
            batches=batches,
        )
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--autopilot-json", "out.json", *extra)
    result.assert_outcomes(passed=1)
    data: dict[str, Any] = json.loads((pytester.path / "out.json").read_text())
    return data


def note_of(data: dict[str, Any]) -> str:
    notes: list[str] = data["tests"]["test_pipeline.py::test_step_time"]["notes"]
    assert len(notes) == 1
    return notes[0]


def mean_step_of(note: str) -> float:
    """The consumer's mean seconds per timed batch, as the note reports it (3 digits)."""
    step = re.search(r" per batch of a ([\d.e+]+) ms step", note)
    assert step is not None, note
    return float(step[1]) / 1e3


def test_stage_statistics_and_bottleneck_of_a_real_pipeline(pytester: pytest.Pytester) -> None:
    # 'slow' sleeps 10 ms per item on one slot; 'fast' hands items on in the event loop.
    data = run_pipeline_session(pytester, slow=0.01, fast=None)
    metrics = data["metrics"]
    assert len(metrics["test_step_time"]["samples"]) == 10, (
        "one sample per timed batch, warm-up batches dropped"
    )
    note = note_of(data)
    step = mean_step_of(note)
    assert step >= 0.7 * 8 * 0.01, "8 sleeps of 10 ms in a row per batch, less what was buffered"

    slow_task = metrics["spdl.stage.slow.task_time"]["value"]
    fast_task = metrics["spdl.stage.fast.task_time"]["value"]
    assert slow_task >= 0.01, "a task lasts at least its sleep"
    assert slow_task <= step / 4, "8 tasks on one slot per batch: a task is about step / 8"
    assert 0 <= fast_task < slow_task / 10
    # The one slot of 'slow' works through each batch: its busy time is about the step, and
    # never much more (one slot cannot be busy longer than the time it has).
    slow_busy = metrics["spdl.stage.slow.busy_time"]["value"]
    assert slow_task * 6 <= slow_busy, "about 8 tasks per batch"
    assert slow_busy >= 0.5 * step  # the one slot works most of each step (no upper bound: warm-up)
    assert metrics["spdl.stage.fast.busy_time"]["value"] < slow_busy / 10
    # 'fast' takes each item as soon as 'slow' puts it: that queue is mostly empty.
    assert metrics["spdl.stage.slow.queue_occupancy"]["value"] < 0.5
    assert metrics["spdl.stage.slow.queue_occupancy"]["goal"] == "max"
    assert metrics["spdl.stage.slow.qps"]["value"] > 0

    assert note.startswith("bottleneck: stage 'slow' ")
    assert "concurrency 1" in note and "output queue was empty" in note


def test_concurrency_moves_the_bottleneck(pytester: pytest.Pytester) -> None:
    # 8 x 4 ms over 8 slots is 4 ms per batch; 8 x 2 ms on one slot is 16 ms (and 'slow'
    # would be the bottleneck if its concurrency were ignored). A loaded machine adds about
    # as much to every task, which only widens the gap.
    data = run_pipeline_session(pytester, slow=0.004, fast=0.002, slow_concurrency=8)
    metrics = data["metrics"]
    assert (
        metrics["spdl.stage.slow.busy_time"]["value"]
        < metrics["spdl.stage.fast.busy_time"]["value"]
    )
    assert note_of(data).startswith("bottleneck: stage 'fast' ")


def test_rounds_of_several_batches_give_the_mean_time_per_batch(
    pytester: pytest.Pytester,
) -> None:
    # 8 x 2 ms per batch on one slot: at least 16 ms per batch, whatever the round length.
    data = run_pipeline_session(pytester, slow=0.002, fast=None, rounds=4, per_round=3)
    samples = data["metrics"]["test_step_time"]["samples"]
    assert len(samples) == 4, "one sample per round"
    note = note_of(data)
    # A sample is a round's time over its 3 batches, not the round's time: the samples add
    # up to the consumer's timed window (which also holds the short gaps between rounds).
    step = mean_step_of(note)
    assert 0.5 * step <= sum(samples) / len(samples) <= 1.05 * step, (samples, step)
    assert step >= 0.7 * 8 * 0.002, "8 sleeps of 2 ms in a row per batch, less what was buffered"
    per_batch = re.search(r"x ([\d.]+) tasks per batch", note)
    assert per_batch is not None and 6 <= float(per_batch[1]) <= 10, "8 items per batch"


def test_benchmark_disabled_still_reports_one_batch(pytester: pytest.Pytester) -> None:
    data = run_pipeline_session(
        pytester, slow=0.003, fast=0.0005, rounds=5, extra=("--benchmark-disable",)
    )
    assert "test_step_time" not in data["metrics"]
    assert "spdl.stage.slow.task_time" in data["metrics"]
    assert "bottleneck: stage" in note_of(data)


def test_a_pipeline_that_ends_too_early_is_a_clear_failure(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from spdl.pipeline import PipelineBuilder

        from pytest_autopilot.spdl import benchmark_pipeline


        def test_step_time(benchmark):
            pipeline = PipelineBuilder().add_source(range(3)).add_sink(2).build(num_threads=1)
            with pipeline.auto_stop():
                benchmark_pipeline(benchmark, pipeline, rounds=5, warmup_rounds=1)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*PipelineExhausted: the pipeline ended after 3 batches*1 warm-up + 5 timed*"]
    )


def stage(name: str, stage_id: str, busy: float | None, occupancy: float) -> StageStats:
    return StageStats(
        name=name,
        stage_id=stage_id,
        concurrency=2,
        tasks=64.0,
        task_time=None if busy is None else busy * 2 / 32,
        qps=100.0,
        queue_occupancy=occupancy,
        busy_per_batch=busy,
        tasks_per_batch=None if busy is None else 32.0,
    )


def test_note_without_task_statistics_says_how_to_get_them() -> None:
    state = SteadyState(start=0.0, end=1.0, batches=10, stages=[stage("src", "0", None, 1.0)])
    assert describe_bottleneck(state) == (
        "step time 100 ms; no stage has task statistics "
        "(build the pipeline with PipelineStats().build_options())"
    )


def test_note_blames_the_consumer_when_the_output_queue_stays_full() -> None:
    stages = [stage("src", "0", None, 1.0), stage("decode", "1", 0.05, 0.97)]
    stages.append(stage("sink", "2", None, 0.95))
    note = describe_bottleneck(SteadyState(start=0.0, end=1.0, batches=10, stages=stages))
    assert note.startswith("bottleneck: stage 'decode' ")
    assert "busy 50% of the time" in note and "input queue was full 100%" in note
    assert note.endswith("the consumer, not the pipeline, sets the pace.")


def test_metric_names_are_safe_and_unique() -> None:
    stages = [
        stage("aggregate(op=collate(32), drop_last=False)", "4", None, 0.0),
        stage("decode", "2", None, 0.0),
        stage("decode", "3", None, 0.0),
    ]
    assert stage_metric_names(stages) == {
        "4": "aggregate_op_collate_32_drop_last_False",
        "2": "decode_2",
        "3": "decode_3",
    }


def test_importing_the_module_does_not_import_spdl() -> None:
    code = "import sys, pytest_autopilot.spdl; print('spdl' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("interval", [0, -1.0])
def test_interval_must_be_positive(interval: float) -> None:
    from pytest_autopilot.spdl import PipelineStats

    with pytest.raises(ValueError, match="interval must be > 0 seconds"):
        PipelineStats(interval=interval)


def test_one_stats_object_per_pipeline() -> None:
    from spdl.pipeline import PipelineBuilder

    from pytest_autopilot.spdl import PipelineStats

    stats = PipelineStats()

    def build() -> Any:
        builder: PipelineBuilder[Any, Any] = PipelineBuilder()
        builder.add_source(range(3)).pipe(abs, name="abs").add_sink(1)
        return builder.build(num_threads=1, **stats.build_options())

    pipeline = build()
    with pipeline.auto_stop():
        assert sorted(pipeline) == [0, 1, 2]
    with pytest.raises(ValueError, match="already used for a pipeline; use one PipelineStats"):
        build()
