"""What a test session measured, as plain data.

One shape serves every place metrics travel: the in-memory store of a plain run, the xdist
``workeroutput``, the ``--autopilot-save`` / ``--autopilot-baseline`` files, the
``--autopilot-json`` report, and the result a child session of the optimization loop hands
back to its controller. Keeping it plain (JSON-ready dicts in and out) is what lets a worker,
a remote machine or last week's CI run all be read the same way.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

Goal = Literal["min", "max"]
Outcome = Literal["passed", "failed", "skipped", "error"]
OUTCOMES: tuple[Outcome, ...] = ("passed", "failed", "skipped", "error")
Split = Literal["train", "val", "test"]

FORMAT_VERSION = 1
"""Version of the on-disk metrics format; a file of another version is refused by name."""


@dataclass
class Metric:
    """A named number with a direction, and the raw samples behind it when it is a timing."""

    name: str
    value: float
    goal: Goal = "min"
    samples: list[float] | None = None
    nodeid: str | None = None
    """The test that produced it, for benchmark metrics (lets the node id name it too)."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"value": self.value, "goal": self.goal}
        if self.samples is not None:
            data["samples"] = list(self.samples)
        if self.nodeid is not None:
            data["nodeid"] = self.nodeid
        return data

    @classmethod
    def from_json(cls, name: str, data: Any, *, source: str) -> Metric:
        """Parse one metric entry; ``source`` names the file for error messages."""
        where = f"{source}: metric {name!r}"
        if not isinstance(data, Mapping):
            raise pytest.UsageError(f"{where}: expected a mapping, got {type(data).__name__}")
        value = data.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise pytest.UsageError(f"{where}: 'value' must be a number, got {value!r}")
        goal = data.get("goal", "min")
        if goal not in ("min", "max"):
            raise pytest.UsageError(f"{where}: 'goal' must be 'min' or 'max', got {goal!r}")
        samples = data.get("samples")
        if samples is not None:
            if not isinstance(samples, list) or not all(
                isinstance(s, (int, float)) and not isinstance(s, bool) for s in samples
            ):
                raise pytest.UsageError(f"{where}: 'samples' must be a list of numbers")
            samples = [float(s) for s in samples]
        nodeid = data.get("nodeid")
        if nodeid is not None and not isinstance(nodeid, str):
            raise pytest.UsageError(f"{where}: 'nodeid' must be a string, got {nodeid!r}")
        return cls(name=name, value=float(value), goal=goal, samples=samples, nodeid=nodeid)


@dataclass
class TestResult:
    """The outcome of one test item, with what the optimizer may learn from it."""

    __test__ = False  # not a pytest test class, despite the name

    nodeid: str
    outcome: Outcome
    message: str | None = None
    """The assertion message (or short error) of a failure."""
    notes: list[str] = field(default_factory=list)
    """``autopilot.feedback(...)`` texts attached by the test."""
    dataset: str | None = None
    """Stem of the dataset file, for dataset cases."""
    split: Split | None = None
    case_id: str | None = None

    @property
    def held_out(self) -> bool:
        """Val and test cases reach the optimizer only as aggregate numbers."""
        return self.split in ("val", "test")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"outcome": self.outcome}
        for key in ("message", "dataset", "split", "case_id"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.notes:
            data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_json(cls, nodeid: str, data: Any, *, source: str = "metrics file") -> TestResult:
        """Parse one test entry; ``source`` names the file for error messages."""
        where = f"{source}: tests[{nodeid!r}]"
        if not isinstance(data, Mapping):
            raise pytest.UsageError(f"{where}: expected a mapping, got {_kind(data)}")
        outcome = data.get("outcome")
        if outcome not in OUTCOMES:
            raise pytest.UsageError(
                f"{where}.outcome: expected one of {', '.join(OUTCOMES)}, got {outcome!r}"
            )
        split = data.get("split")
        if split not in (None, "train", "val", "test"):
            raise pytest.UsageError(f"{where}.split: expected train, val or test, got {split!r}")
        for key in ("message", "dataset", "case_id"):
            if not isinstance(data.get(key), (str, type(None))):
                raise pytest.UsageError(
                    f"{where}.{key}: expected a string, got {_kind(data.get(key))}"
                )
        notes = data.get("notes", [])
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise pytest.UsageError(f"{where}.notes: expected a list of strings")
        return cls(
            nodeid=nodeid,
            outcome=outcome,
            message=data.get("message"),
            notes=list(notes),
            dataset=data.get("dataset"),
            split=split,
            case_id=data.get("case_id"),
        )


@dataclass
class SessionResult:
    """Everything one session measured: metrics, per-test outcomes, and what went unmeasured."""

    metrics: dict[str, Metric] = field(default_factory=dict)
    tests: dict[str, TestResult] = field(default_factory=dict)
    unmeasured: dict[str, str] = field(default_factory=dict)
    """Metric name -> why it has no value (e.g. pytest-benchmark disabled under xdist)."""
    protected_files: list[str] = field(default_factory=list)
    """Rootdir-relative test modules and dataset files the session used: never editable."""

    def resolve(self, name: str) -> Metric | None:
        """Find a metric by its name or by the node id of the test that produced it.

        A short name shared by two tests never reaches here: the store names those metrics
        by node id and :func:`ambiguous_names` reports the clash.
        """
        if name in self.metrics:
            return self.metrics[name]
        for metric in self.metrics.values():
            if metric.nodeid == name:
                return metric
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "metrics": {name: m.to_json() for name, m in sorted(self.metrics.items())},
            "tests": {nodeid: t.to_json() for nodeid, t in self.tests.items()},
            "unmeasured": dict(sorted(self.unmeasured.items())),
            "protected_files": sorted(self.protected_files),
        }

    @classmethod
    def from_json(cls, data: Any, *, source: str) -> SessionResult:
        if not isinstance(data, Mapping) or not isinstance(data.get("metrics"), Mapping):
            raise pytest.UsageError(
                f"{source}: not a pytest-autopilot metrics file "
                "(expected a JSON object with a 'metrics' object, as written by --autopilot-save)"
            )
        version = data.get("format", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise pytest.UsageError(
                f"{source}: metrics format {version!r} is not supported "
                f"(this pytest-autopilot reads format {FORMAT_VERSION}); save the baseline again"
            )
        metrics = {
            name: Metric.from_json(name, entry, source=source)
            for name, entry in data["metrics"].items()
        }
        tests = {
            nodeid: TestResult.from_json(nodeid, entry, source=source)
            for nodeid, entry in _mapping(data, "tests", source).items()
        }
        unmeasured = _mapping(data, "unmeasured", source)
        for name, why in unmeasured.items():
            if not isinstance(why, str):
                raise pytest.UsageError(
                    f"{source}: unmeasured[{name!r}]: expected a string (why it has no "
                    f"value), got {_kind(why)}"
                )
        protected = data.get("protected_files", [])
        if not isinstance(protected, list) or not all(isinstance(p, str) for p in protected):
            raise pytest.UsageError(f"{source}: protected_files: expected a list of paths")
        return cls(
            metrics=metrics, tests=tests, unmeasured=dict(unmeasured), protected_files=protected
        )


def _mapping(data: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise pytest.UsageError(f"{source}: {key}: expected an object, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    """A JSON value's kind, as a message names it: ``a list [1]``."""
    shown = repr(value)
    return f"{type(value).__name__} {shown[:40]}{'...' if len(shown) > 40 else ''}"


def ambiguous_names(metrics: Iterable[Metric]) -> dict[str, list[str]]:
    """Short benchmark names produced by more than one test, with the node ids that share them."""
    by_short: dict[str, list[str]] = {}
    for metric in metrics:
        if metric.nodeid is not None:
            short = metric.nodeid.rsplit("::", 1)[-1]
            by_short.setdefault(short, []).append(metric.nodeid)
    return {short: ids for short, ids in by_short.items() if len(ids) > 1}


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never left in the user's tree
        raise


def read_session_file(path: Path) -> SessionResult:
    """Read a ``--autopilot-save`` (or ``--autopilot-json``) file as a baseline."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise pytest.UsageError(f"baseline file {path} does not exist") from None
    except OSError as exc:
        raise pytest.UsageError(f"baseline file {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise pytest.UsageError(
            f"{path}: not UTF-8 text (byte {exc.start}); "
            "expected a metrics file written by --autopilot-save"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise pytest.UsageError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); "
            "expected a metrics file written by --autopilot-save"
        ) from None
    return SessionResult.from_json(data, source=str(path))


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
