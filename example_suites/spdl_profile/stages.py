"""A three-stage SPDL pipeline like spdl's profiling example, tuned through ``pipeline.yaml``.

Per item: ``load`` waits 10 ms with the GIL released (a storage request), ``prep`` waits 3 ms
with the GIL released, and ``python`` runs a pure-Python loop that holds the GIL throughout.
Items are then batched. The work per item is fixed here (protected); only how the pipeline
runs it (concurrency per stage, executor threads, sink buffer) is a knob.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LOAD_SECONDS = 0.010
PREP_SECONDS = 0.003
PYTHON_ITERATIONS = 12_000
"""Loop steps of the GIL-bound stage (about 1 ms of CPU on a 2020s core)."""
BATCH_SIZE = 16


@dataclass(frozen=True)
class PipelineKnobs:
    """``pipeline.yaml``."""

    num_threads: int
    sink_buffer: int
    load_concurrency: int
    prep_concurrency: int
    python_concurrency: int

    @classmethod
    def load(cls, path: Path) -> PipelineKnobs:
        return cls.from_mapping(yaml.safe_load(path.read_text()), path.name)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "pipeline.yaml") -> PipelineKnobs:
        def get(dotted: str) -> int:
            value: Any = data
            for part in dotted.split("."):
                if not isinstance(value, dict) or part not in value:
                    raise ValueError(f"{source}: {dotted}: missing")
                value = value[part]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{source}: {dotted}: expected an integer >= 1, got {value!r}")
            return value

        return cls(
            num_threads=get("num_threads"),
            sink_buffer=get("sink_buffer"),
            load_concurrency=get("load.concurrency"),
            prep_concurrency=get("prep.concurrency"),
            python_concurrency=get("python.concurrency"),
        )


def load(key: int) -> int:
    time.sleep(LOAD_SECONDS)
    return key


def prep(key: int) -> int:
    time.sleep(PREP_SECONDS)
    return key


def python(key: int) -> int:
    value = key
    for step in range(PYTHON_ITERATIONS):
        value = (value * 31 + step) % 1_000_003
    return value


def expected(key: int) -> int:
    return python(key)


def builder(knobs: PipelineKnobs, source: Iterable[int]) -> Any:
    """The pipeline's ``PipelineBuilder`` (sink included): ``.build(num_threads=...)`` runs it."""
    from spdl.pipeline import PipelineBuilder

    b: PipelineBuilder[Any, Any] = PipelineBuilder()
    b.add_source(source)
    b.pipe(load, concurrency=knobs.load_concurrency, name="load")
    b.pipe(prep, concurrency=knobs.prep_concurrency, name="prep")
    b.pipe(python, concurrency=knobs.python_concurrency, name="python")
    b.aggregate(BATCH_SIZE)
    b.add_sink(knobs.sink_buffer)
    return b
