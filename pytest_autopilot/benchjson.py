"""pytest-benchmark's own JSON files as baselines, and the statistic a benchmark metric uses.

A team that already keeps ``--benchmark-json`` output, or autosaves under ``.benchmarks/``,
can gate on it directly. Saved with ``--benchmark-save-data``, the file holds every round's
timing, so relative gates run their noise test as with an ``--autopilot-save`` file; without
it only summary statistics remain, and the comparison is of plain values (the caller is told,
so that it can say so).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pytest

from pytest_autopilot.metrics import short_name
from pytest_autopilot.results import Metric, SessionResult

Statistic = Literal["median", "min", "mean"]
STATISTICS: tuple[Statistic, ...] = ("median", "min", "mean")
DEFAULT_STATISTIC: Statistic = "median"


@dataclass(frozen=True)
class BenchmarkBaseline:
    result: SessionResult
    without_samples: list[str]
    """Metrics read from summary statistics only: no noise test is possible for them."""


def is_benchmark_file(data: Any) -> bool:
    """pytest-benchmark's shape: a ``benchmarks`` list beside ``machine_info``."""
    return (
        isinstance(data, Mapping)
        and isinstance(data.get("benchmarks"), list)
        and "metrics" not in data
        and ("machine_info" in data or "version" in data)
    )


def read_benchmark_file(
    data: Mapping[str, Any], source: str, chosen: Mapping[str, str]
) -> BenchmarkBaseline:
    """Metrics of a pytest-benchmark JSON document, one per benchmark, named as ours are."""
    metrics: dict[str, Metric] = {}
    without: list[str] = []
    for index, entry in enumerate(data["benchmarks"]):
        where = f"{source}: benchmarks[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("stats"), Mapping):
            raise pytest.UsageError(f"{where}: expected a benchmark with a 'stats' mapping")
        nodeid = entry.get("fullname")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise pytest.UsageError(f"{where}.name: expected the test's name, got {name!r}")
        if isinstance(nodeid, str) and nodeid:
            name = short_name(nodeid)
        else:
            nodeid = None
        statistic = chosen.get(name) or (chosen.get(nodeid) if nodeid else None)
        metric = _metric(entry["stats"], name, nodeid, statistic or DEFAULT_STATISTIC, where)
        if metric.samples is None:
            without.append(name)
        if name in metrics:
            first = metrics.pop(name)
            metrics[first.nodeid or name] = first
            metrics[nodeid or name] = metric
        else:
            metrics[name] = metric
    return BenchmarkBaseline(SessionResult(metrics=metrics), without)


def _metric(
    stats: Mapping[str, Any], name: str, nodeid: str | None, statistic: str, where: str
) -> Metric:
    data = stats.get("data")
    if isinstance(data, list) and data and all(_number(x) for x in data):
        samples = [float(x) for x in data]
        return Metric(name, compute(statistic, samples), "min", samples, nodeid)
    value = stats.get(statistic)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise pytest.UsageError(
            f"{where}.stats.{statistic}: expected a number (the statistic this metric uses), "
            f"got {value!r}"
        )
    return Metric(name, float(value), "min", None, nodeid)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compute(statistic: str, samples: list[float]) -> float:
    if statistic == "min":
        return min(samples)
    if statistic == "mean":
        return statistics.fmean(samples)
    return statistics.median(samples)


def with_statistics(result: SessionResult, chosen: Mapping[str, str]) -> SessionResult:
    """``result`` with each chosen metric's value recomputed from its samples.

    Benchmark metrics are medians by default; a config may pick ``min`` or ``mean`` per
    metric, and both sides of a comparison must use the same one.
    """
    if not chosen:
        return result
    metrics = dict(result.metrics)
    for key, metric in result.metrics.items():
        statistic = chosen.get(key) or (chosen.get(metric.nodeid) if metric.nodeid else None)
        if statistic is not None and metric.samples:
            metrics[key] = replace(metric, value=compute(statistic, metric.samples))
    return replace(result, metrics=metrics)


def without_samples_note(path: str, names: list[str]) -> str:
    shown = ", ".join(names[:5]) + (f", ... ({len(names) - 5} more)" if len(names) > 5 else "")
    return (
        f"{path} is a pytest-benchmark file without raw data ({shown}): relative gates compare "
        "its summary statistics, no noise test is possible (save it with "
        "--benchmark-save-data to get one)"
    )


def read_baseline(
    path: Path, chosen: Mapping[str, str], display: str | None = None
) -> tuple[SessionResult, list[str]]:
    """``--autopilot-baseline PATH``: our metrics file or pytest-benchmark's, and notes to show.

    A directory (such as ``.benchmarks/``) means its newest pytest-benchmark autosave.
    ``display`` is the path as the user wrote it, for the notes.
    """
    shown = display or str(path)
    from pytest_autopilot.results import read_session_file

    if path.is_dir():
        saved = sorted(path.rglob("*.json"), key=lambda p: (p.name, str(p)))
        if not saved:
            raise pytest.UsageError(
                f"baseline directory {path} holds no pytest-benchmark autosave (*.json); "
                "expected a file written by --autopilot-save or --benchmark-json, or a "
                ".benchmarks/ directory with an autosave"
            )
        shown = f"{shown.rstrip('/')}/{saved[-1].relative_to(path).as_posix()}"
        path = saved[-1]
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = None  # read_session_file reports what is wrong with it
    if not is_benchmark_file(data):
        return with_statistics(read_session_file(path), chosen), []
    baseline = read_benchmark_file(data, str(path), chosen)
    count = len(baseline.result.metrics)
    notes = [f"baseline {shown}: pytest-benchmark file, {count} benchmarks"]
    if baseline.without_samples:
        notes.append(without_samples_note(shown, baseline.without_samples))
    return baseline.result, notes
