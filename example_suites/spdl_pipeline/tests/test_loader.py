"""The loader must deliver every sample once per epoch, exactly as specified, and fast.

``test_step_time`` is the objective: pytest-benchmark times the pipeline's steady state in
rounds of a few batches (a sample is the mean time per batch over a round, which a pipeline
that delivers batches in bursts cannot bias). It also measures the CPU work of one batch,
stage by stage, to give a lower bound for the step time on this machine (that work spread
over every core, with the storage latency fully hidden), and records how far the loader is
from it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import loader
import numpy as np
import synthetic

from pytest_autopilot.spdl import PipelineStats, benchmark_pipeline, record_pipeline_stats

TIMEOUT = 120.0
"""Seconds to wait for one batch before calling the loader stuck."""


def test_every_sample_once_per_epoch(open_loader: Any, spec: synthetic.Spec) -> None:
    pipeline = open_loader(epochs=1)
    keys: list[int] = []
    sizes: list[int] = []
    for batch in pipeline.get_iterator(timeout=TIMEOUT):
        assert batch.images.dtype == np.float32
        assert batch.images.shape == (len(batch.keys), *spec.output_shape)
        sizes.append(len(batch.keys))
        keys.extend(int(k) for k in batch.keys)
    full, rest = divmod(spec.num_samples, spec.batch_size)
    expected_sizes = [spec.batch_size] * full + ([rest] if rest else [])
    assert sizes == expected_sizes, f"batch sizes {sizes}, expected {expected_sizes}"
    missing = sorted(set(range(spec.num_samples)) - set(keys))
    counts = np.bincount(np.array(keys, dtype=np.int64), minlength=spec.num_samples)
    duplicated = np.flatnonzero(counts > 1).tolist()
    assert not missing and not duplicated, (
        f"epoch of {len(keys)} samples: missing {missing[:10]}, duplicated {duplicated[:10]}"
    )


def test_values_match_reference(open_loader: Any, spec: synthetic.Spec) -> None:
    pipeline = open_loader(epochs=1)
    batch = next(iter(pipeline.get_iterator(timeout=TIMEOUT)))
    for key, image in zip(batch.keys, batch.images, strict=True):
        np.testing.assert_allclose(
            image, synthetic.expected(spec, int(key)), rtol=0, atol=1e-4, err_msg=f"key {key}"
        )


def cpu_per_batch(spec: synthetic.Spec, data_dir: Path) -> dict[str, float]:
    """CPU seconds each stage spends on one batch, run serially (best of 3 repetitions).

    Thread CPU time, not wall time: it is the work itself, unaffected by other processes and
    by the storage latency (which is waiting, not work).
    """
    storage = loader.Storage(data_dir, 0.0)
    shape = loader.Shape(spec.height, spec.width, spec.channels, spec.crop)
    keys = list(range(min(spec.batch_size, spec.num_samples)))
    scale = spec.batch_size / len(keys)
    best: dict[str, float] = {}
    for _ in range(3):
        t0 = time.thread_time()
        fetched = [storage.get(k) for k in keys]
        t1 = time.thread_time()
        decoded = [loader.decode(item, shape) for item in fetched]
        t2 = time.thread_time()
        transformed = [loader.transform(item, shape) for item in decoded]
        t3 = time.thread_time()
        loader.collate(transformed)
        t4 = time.thread_time()
        for name, cost in (
            ("fetch", (t1 - t0) * scale),
            ("decode", (t2 - t1) * scale),
            ("transform", (t3 - t2) * scale),
            ("collate", t4 - t3),
        ):
            best[name] = min(best.get(name, cost), cost)
    return best


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def test_step_time(
    benchmark: Any,
    autopilot: Any,
    open_loader: Any,
    spec: synthetic.Spec,
    data_dir: Path,
    rounds: tuple[int, int, int],
    suite_report: dict[str, Any],
) -> None:
    timed, warmup, per_round = rounds
    costs = cpu_per_batch(spec, data_dir)
    stats = PipelineStats()
    pipeline = open_loader(epochs=None, **stats.build_options())
    state = benchmark_pipeline(
        benchmark,
        pipeline,
        rounds=timed,
        warmup_rounds=warmup,
        batches_per_round=per_round,
        stats=stats,
        timeout=TIMEOUT,
    )
    step = benchmark.stats.stats.median if benchmark.stats is not None else state.step_time

    cpu = sum(costs.values())
    cores = usable_cores()
    lower = cpu / cores
    autopilot.record("loader.lower_bound", lower, goal="min")
    autopilot.record("loader.bound_ratio", step / lower, goal="min")
    for name, cost in costs.items():
        autopilot.record(f"loader.cpu.{name}", cost, goal="min")
    note = record_pipeline_stats(autopilot, state)
    autopilot.feedback(
        f"lower bound {lower * 1e3:.1f} ms per batch: "
        + " + ".join(f"{name} {cost * 1e3:.1f}" for name, cost in costs.items())
        + f" ms of CPU per batch over {cores} cores; the step time is {step / lower:.2f}x that"
    )
    suite_report.update(
        step_time=step,
        rounds=timed,
        batches_per_round=per_round,
        batch_size=spec.batch_size,
        lower_bound=lower,
        cpu_per_batch=cpu,
        cores=cores,
        ratio=step / lower,
        note=note,
    )
