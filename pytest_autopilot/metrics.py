"""Recording what a session measured, in every session the plugin is installed in.

The process that runs a test keeps its raw per-test data (benchmark samples, what the
``autopilot`` fixture recorded, dataset membership); the process that sees the final reports
keeps the outcomes. In a serial run both are the same process. Under pytest-xdist the workers
ship their raw data to the controller through ``workeroutput`` and the controller, which sees
every report, aggregates with the very same :func:`aggregate` as a serial run. That is why
``-n 2`` gives the same non-timing metrics as a serial run, exactly.

Counting: ``tests.passed`` counts passed tests (and non-strict xpasses); ``tests.failed``
counts failures and errors (setup, teardown, and a test module that fails to import, which
counts as one test); ``tests.total`` counts every test that ran, skipped and xfailed ones
included. A dataset's pass rates count passed cases over cases that
passed, failed or errored: skipped cases are left out of both.

The per-test hot path is one cheap report hook; everything else happens at collection, for
the few tests that use the fixture or pytest-benchmark, and once at the end of the session.
This module is imported by every pytest run, so it defines no dataclass and imports the
result types only when a result is built.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_autopilot.results import Goal, Metric, Outcome, SessionResult, TestResult

MAX_MESSAGE = 2000
"""Longest failure message kept per test: enough for an assertion, not a whole traceback."""

NO_EXTRAS: Mapping[str, Any] = {}

CaseInfo = tuple[str, str, str]
"""(dataset, split, case id) of a dataset case."""


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {number!r}")
    return number


class Recorder:
    """The ``autopilot`` fixture: numbers and notes a test hands to pytest-autopilot."""

    def __init__(self, nodeid: str, extras: dict[str, Any], case: CaseInfo | None) -> None:
        self._nodeid = nodeid
        self._extras = extras
        self._case = case

    def record(
        self,
        name: str,
        value: float,
        goal: Goal = "min",
        samples: Iterable[float] | None = None,
    ) -> None:
        """Record metric ``name`` with ``value``; ``goal`` says whether lower or higher wins.

        ``samples`` are the raw measurements behind a timing, used by noise-aware gates.
        """
        if not isinstance(name, str) or not name.strip():
            raise TypeError(f"autopilot.record(): name must be a non-empty string, got {name!r}")
        where = f"autopilot.record({name!r})"
        if name.startswith("tests."):
            raise ValueError(f"{where}: names starting with 'tests.' are reserved for the session")
        number = _number(value, f"{where}: value")
        if goal not in ("min", "max"):
            raise ValueError(f"{where}: goal must be 'min' or 'max', got {goal!r}")
        entry: dict[str, Any] = {"value": number, "goal": goal}
        if samples is not None:
            if isinstance(samples, (str, bytes)) or not isinstance(samples, Iterable):
                raise TypeError(f"{where}: samples must be a sequence of numbers, got {samples!r}")
            values = [_number(s, f"{where}: each sample") for s in samples]
            if not values:
                raise ValueError(f"{where}: samples must not be empty (pass None instead)")
            entry["samples"] = values
        records = self._extras.setdefault("records", {})
        if name in records:
            raise ValueError(f"{where}: this test already recorded {name!r}")
        records[name] = entry

    def score(self, x: float) -> None:
        """Add ``x`` to ``<dataset>.<split>.score``, the mean score of the case's split."""
        if self._case is None:
            raise RuntimeError(
                f"autopilot.score() works only in a dataset test (@pytest.mark.dataset), and "
                f"{self._nodeid} is not one; use autopilot.record(name, value, goal=...) instead"
            )
        self._extras.setdefault("scores", []).append(_number(x, "autopilot.score(): x"))

    def feedback(self, text: str) -> None:
        """Attach a note to this test for the optimizer (held-out cases never reach it)."""
        if not isinstance(text, str) or not text.strip():
            raise TypeError(f"autopilot.feedback(): text must be a non-empty string, got {text!r}")
        self._extras.setdefault("notes", []).append(text)


class SessionRecorder:
    """All raw data of one process's session; :meth:`result` turns it into a SessionResult.

    It is registered as a plugin for its single per-test hook, ``pytest_runtest_logreport``.
    """

    def __init__(self, rootdir: Path, xdist_workers: int | None = None) -> None:
        self.rootdir = rootdir
        self.xdist_workers = xdist_workers
        """Number of xdist workers when this process is one of them."""
        self.reports: list[pytest.TestReport | pytest.CollectReport] = []
        self.extras: dict[str, dict[str, Any]] = {}
        self.cases: dict[str, CaseInfo] = {}
        self.bench: dict[str, dict[str, Any]] = {}
        self.benchmark_items: set[str] = set()
        self.protected: set[str] = set()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """The one per-test hook of every run: keep only reports that decide an outcome."""
        if report.when == "call" or report.outcome != "passed":
            self.reports.append(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A module that fails to import (or skips itself) counts as one errored (skipped) test,
        as pytest's summary counts it, so that a gate never passes on what was not run."""
        if report.outcome != "passed":
            self.reports.append(report)

    def collected(self, items: Sequence[pytest.Item], datasets_used: Iterable[str]) -> None:
        """Note test modules, dataset cases and benchmark tests of the collection."""
        paths: set[Path] = set()
        for item in items:
            paths.add(item.path)
            if "benchmark" in getattr(item, "fixturenames", ()):
                self.benchmark_items.add(item.nodeid)
        self.protected.update(datasets_used)
        root = self.rootdir.resolve()
        for path in paths:
            try:
                self.protected.add(path.resolve().relative_to(root).as_posix())
            except ValueError:
                continue
        if datasets_used:
            from pytest_autopilot.datasets import Case

            for item in items:
                callspec = getattr(item, "callspec", None)
                case = callspec.params.get("case") if callspec is not None else None
                if isinstance(case, Case):
                    self.cases[item.nodeid] = (case.dataset, case.split, case.case_id)

    def fixture(self, nodeid: str) -> Recorder:
        return Recorder(nodeid, self.extras.setdefault(nodeid, {}), self.cases.get(nodeid))

    def benchmark_done(self, item: pytest.Item) -> None:
        """Read the per-round timings pytest-benchmark measured for ``item`` (never re-time)."""
        funcargs = getattr(item, "funcargs", None) or {}
        fixture = funcargs.get("benchmark")
        if fixture is None:
            return
        metadata = getattr(fixture, "stats", None)
        data = getattr(getattr(metadata, "stats", None), "data", None)
        if data:
            self.bench[item.nodeid] = {"samples": [float(x) for x in data]}
        elif getattr(fixture, "disabled", False):
            if self.xdist_workers is not None:
                reason = (
                    f"pytest-benchmark is disabled under pytest-xdist (-n {self.xdist_workers}); "
                    "run without -n to measure it"
                )
            else:
                reason = "pytest-benchmark is disabled (--benchmark-disable); run without it"
            self.bench[item.nodeid] = {"reason": reason}
        else:
            self.bench[item.nodeid] = {"reason": "the test never called its benchmark fixture"}

    def worker_output(self) -> dict[str, Any]:
        """What an xdist worker sends its controller: plain data only."""
        return {
            "extras": self.extras,
            "cases": {nodeid: list(info) for nodeid, info in self.cases.items()},
            "bench": self.bench,
            "protected": sorted(self.protected),
        }

    def merge_worker_output(self, data: Mapping[str, Any]) -> None:
        for nodeid, extras in data.get("extras", {}).items():
            self.extras[nodeid] = extras
        for nodeid, info in data.get("cases", {}).items():
            self.cases[nodeid] = (info[0], info[1], info[2])
        self.bench.update(data.get("bench", {}))
        self.protected.update(data.get("protected", ()))

    def result(self) -> SessionResult:
        return aggregate(
            outcomes_from_reports(self.reports), self.extras, self.cases, self.bench, self.protected
        )


def failure_message(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The short message of a failure: the crash line pytest shows, not the traceback."""
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        message = str(crash.message)
    elif isinstance(longrepr, tuple):
        message = str(longrepr[-1])
    else:
        message = str(longrepr)
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return message


def outcomes_from_reports(
    reports: Iterable[pytest.TestReport | pytest.CollectReport],
) -> dict[str, TestResult]:
    """One result per test from its reports: a setup, teardown or collection failure is an
    error."""
    from pytest_autopilot.results import TestResult

    results: dict[str, TestResult] = {}
    for report in reports:
        outcome: Outcome
        if report.when == "call":
            if report.outcome not in ("passed", "failed", "skipped"):
                continue
            outcome = report.outcome
        elif report.failed:
            previous = results.get(report.nodeid)
            if previous is not None and previous.outcome == "failed":
                continue
            outcome = "error"
        elif report.skipped:
            outcome = "skipped"
        else:
            continue
        message = failure_message(report) if outcome in ("failed", "error") else None
        results[report.nodeid] = TestResult(report.nodeid, outcome, message)
    return results


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def short_name(nodeid: str) -> str:
    """``tests/test_x.py::TestY::test_z[small]`` -> ``test_z[small]``."""
    return nodeid.rsplit("::", 1)[-1]


def aggregate(
    tests: Mapping[str, TestResult],
    extras: Mapping[str, Mapping[str, Any]],
    cases: Mapping[str, CaseInfo],
    bench: Mapping[str, Mapping[str, Any]],
    protected: Iterable[str],
) -> SessionResult:
    """Compute every metric from per-test data, in node id order so the result never depends
    on which process ran which test or in which order."""
    from pytest_autopilot.results import Metric, SessionResult

    result = SessionResult(protected_files=sorted(set(protected)))
    metrics = result.metrics
    unmeasured = result.unmeasured

    ordered = sorted(tests)
    outcomes = [tests[nodeid].outcome for nodeid in ordered]
    passed = sum(1 for o in outcomes if o == "passed")
    failed = sum(1 for o in outcomes if o in ("failed", "error"))
    metrics["tests.passed"] = Metric("tests.passed", float(passed), "max")
    metrics["tests.failed"] = Metric("tests.failed", float(failed), "min")
    metrics["tests.total"] = Metric("tests.total", float(len(outcomes)), "max")

    counts: dict[str, list[int]] = {}
    scores: dict[str, list[float]] = {}
    for nodeid in ordered:
        test = tests[nodeid]
        extra = extras.get(nodeid, NO_EXTRAS)
        if "notes" in extra:
            test.notes = list(extra["notes"])
        info = cases.get(nodeid)
        if info is None:
            continue
        dataset, split, case_id = info
        test.dataset, test.case_id = dataset, case_id
        test.split = split  # type: ignore[assignment]
        for key in (dataset, f"{dataset}.{split}"):
            count = counts.setdefault(key, [0, 0])
            if test.outcome != "skipped":
                count[0] += test.outcome == "passed"
                count[1] += 1
        if "scores" in extra:
            scores.setdefault(f"{dataset}.{split}.score", []).extend(extra["scores"])
    for key, (n_passed, n_counted) in sorted(counts.items()):
        name = f"{key}.pass_rate"
        if n_counted:
            metrics[name] = Metric(name, n_passed / n_counted, "max")
        else:
            unmeasured[name] = "every case was skipped"
    for name, values in sorted(scores.items()):
        metrics[name] = Metric(name, math.fsum(values) / len(values), "max", list(values))

    _benchmark_metrics(tests, bench, metrics, unmeasured)
    _recorded_metrics(tests, extras, metrics, unmeasured)
    result.tests = {nodeid: tests[nodeid] for nodeid in ordered}
    return result


def _benchmark_metrics(
    tests: Mapping[str, TestResult],
    bench: Mapping[str, Mapping[str, Any]],
    metrics: dict[str, Metric],
    unmeasured: dict[str, str],
) -> None:
    from pytest_autopilot.results import Metric

    ran = sorted(nodeid for nodeid in bench if nodeid in tests)
    shorts: dict[str, list[str]] = {}
    for nodeid in ran:
        shorts.setdefault(short_name(nodeid), []).append(nodeid)
    for short, nodeids in sorted(shorts.items()):
        for nodeid in nodeids:
            name = short if len(nodeids) == 1 else nodeid
            test = tests[nodeid]
            samples = bench[nodeid].get("samples")
            if samples and test.outcome == "passed":
                metrics[name] = Metric(name, _median(samples), "min", list(samples), nodeid)
            elif "reason" in bench[nodeid]:
                unmeasured[name] = str(bench[nodeid]["reason"])
            elif test.outcome == "skipped":
                unmeasured[name] = "the benchmark test was skipped"
            else:
                unmeasured[name] = f"the benchmark test {test.outcome}: {test.message}"


def _recorded_metrics(
    tests: Mapping[str, TestResult],
    extras: Mapping[str, Mapping[str, Any]],
    metrics: dict[str, Metric],
    unmeasured: dict[str, str],
) -> None:
    from pytest_autopilot.results import Metric

    by_name: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for nodeid in sorted(extras):
        if nodeid in tests:
            for name, entry in extras[nodeid].get("records", {}).items():
                by_name.setdefault(name, []).append((nodeid, entry))
    for name, entries in sorted(by_name.items()):
        if len(entries) > 1 or name in metrics or name in unmeasured:
            producers = [nodeid for nodeid, _ in entries]
            metrics.pop(name, None)
            unmeasured[name] = (
                f"metric {name!r} is produced more than once (recorded by "
                f"{', '.join(producers)}, or also a benchmark or dataset metric); "
                "give each autopilot.record() a distinct name"
            )
            continue
        _, entry = entries[0]
        samples = entry.get("samples")
        metrics[name] = Metric(
            name, float(entry["value"]), entry["goal"], None if samples is None else list(samples)
        )


def junit_properties(result: SessionResult) -> list[tuple[str, str]]:
    """Metrics as JUnit XML test-suite properties, ``autopilot.<metric>`` -> value."""
    props = [
        (f"autopilot.{name}", str(int(m.value)) if m.value.is_integer() else repr(m.value))
        for name, m in sorted(result.metrics.items())
    ]
    props.extend(
        (f"autopilot.{name}", f"unmeasured: {reason}")
        for name, reason in sorted(result.unmeasured.items())
    )
    return props
