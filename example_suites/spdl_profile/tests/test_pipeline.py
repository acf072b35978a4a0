"""Every item arrives once, with its value; ``test_step_time`` is the objective.

``AUTOPILOT_PROFILE_ROUNDS`` (30), ``AUTOPILOT_PROFILE_WARMUP`` (3) and
``AUTOPILOT_PROFILE_BATCHES`` (2, batches per round) size the step-time benchmark: many short
rounds, so that the loop's acceptance test has enough independent samples under load.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import stages

from pytest_autopilot.spdl import PipelineStats, benchmark_pipeline, record_pipeline_stats

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0


def knobs() -> stages.PipelineKnobs:
    return stages.PipelineKnobs.load(ROOT / "pipeline.yaml")


def test_every_item_once() -> None:
    config = knobs()
    pipeline = stages.builder(config, range(40)).build(num_threads=config.num_threads)
    with pipeline.auto_stop():
        batches = list(pipeline.get_iterator(timeout=TIMEOUT))
    assert [len(b) for b in batches] == [16, 16, 8]
    assert sorted(v for b in batches for v in b) == sorted(stages.expected(k) for k in range(40))


def test_step_time(benchmark: Any, autopilot: Any) -> None:
    config = knobs()
    stats = PipelineStats()
    pipeline = stages.builder(config, itertools.count()).build(
        num_threads=config.num_threads, **stats.build_options()
    )
    with pipeline.auto_stop():
        state = benchmark_pipeline(
            benchmark,
            pipeline,
            rounds=int(os.environ.get("AUTOPILOT_PROFILE_ROUNDS", "30")),
            warmup_rounds=int(os.environ.get("AUTOPILOT_PROFILE_WARMUP", "3")),
            batches_per_round=int(os.environ.get("AUTOPILOT_PROFILE_BATCHES", "2")),
            stats=stats,
            timeout=TIMEOUT,
        )
    record_pipeline_stats(autopilot, state)
