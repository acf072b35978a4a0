"""Gates: conditions on the metrics of a session, absolute or relative to a baseline.

A gate never passes by default. A metric that could not be measured (pytest-benchmark off
under xdist), or that the baseline lacks, fails its gate with a reason that says so; a gate
that cannot mean anything (a metric no test produces, an ambiguous name, a relative gate
without a baseline) is a usage error naming the config file and the gate.

Relative gates compare samples with :mod:`pytest_autopilot.stats` when both sides have them,
so that a difference within the measurement noise is not a regression.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches

import pytest

from pytest_autopilot import stats
from pytest_autopilot.config import AutopilotConfig, GateSpec
from pytest_autopilot.proposals import GateStatus
from pytest_autopilot.results import Metric, SessionResult, ambiguous_names, finite

MAX_LISTED = 40
"""Metric names listed in an error message before the list is cut short."""


def evaluate_gates(
    config: AutopilotConfig, result: SessionResult, baseline: SessionResult | None
) -> list[GateStatus]:
    """Check every gate of the config against ``result`` (and ``baseline`` for relative ones).

    Benchmark metrics named in ``benchmark_statistic`` use that statistic on both sides.

    Raises ``pytest.UsageError`` before evaluating anything when a gate cannot be checked
    at all: a relative gate without a baseline, an ambiguous metric name, or a metric that
    no test produced in a session where every test passed.
    """
    require_baseline(config, baseline)
    if config.benchmark_statistic:
        from pytest_autopilot.benchjson import with_statistics

        result = with_statistics(result, config.benchmark_statistic)
        if baseline is not None:
            baseline = with_statistics(baseline, config.benchmark_statistic)
    ambiguous = ambiguous_names(result.metrics.values())
    for index, gate in enumerate(config.gates):
        if gate.metric in ambiguous:
            ids = ", ".join(sorted(ambiguous[gate.metric]))
            raise pytest.UsageError(
                f"{_file(config)}: gates[{index}].metric: expected a metric name that names "
                f"one test, got {gate.metric!r}, which names several; use a node id: {ids}"
            )
        if result.resolve(gate.metric) is None and _unmeasured(result, gate.metric) is None:
            _check_produced(config, index, gate, result)
    return [_evaluate(config, gate, result, baseline) for gate in config.gates]


def require_baseline(config: AutopilotConfig, baseline: object | None) -> None:
    """Refuse relative gates without ``--autopilot-baseline``; cheap enough to call early."""
    if baseline is not None:
        return
    for index, gate in enumerate(config.gates):
        if gate.relative:
            raise pytest.UsageError(
                f"{_file(config)}: gates[{index}]: {gate.kind} on {gate.metric!r} compares "
                "against a baseline: expected --autopilot-baseline PATH (a metrics file "
                "written by --autopilot-save), got none"
            )


def _check_produced(
    config: AutopilotConfig, index: int, gate: GateSpec, result: SessionResult
) -> None:
    """A gate on a metric nobody produced is a config error, unless a test did not pass.

    A failed, errored or skipped test may be the one that would have recorded it: then the
    gate fails (in :func:`_evaluate`) rather than blaming the config.
    """
    if any(test.outcome != "passed" for test in result.tests.values()):
        return
    names = sorted(result.metrics)
    close = get_close_matches(gate.metric, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    shown = ", ".join(names[:MAX_LISTED]) or "(none)"
    if len(names) > MAX_LISTED:
        shown += f", ... ({len(names) - MAX_LISTED} more)"
    raise pytest.UsageError(
        f"{_file(config)}: gates[{index}].metric: expected a metric that this session's tests "
        f"produce, got {gate.metric!r}{hint}; metrics produced: {shown}"
    )


def _evaluate(
    config: AutopilotConfig, gate: GateSpec, result: SessionResult, baseline: SessionResult | None
) -> GateStatus:
    metric = result.resolve(gate.metric)
    if metric is None:
        why = _unmeasured(result, gate.metric)
        if why is not None:
            reason = f"not measured: {why}"
        else:
            reason = (
                "no test produced this metric; a test that did not pass may be the one "
                "that records it"
            )
        return GateStatus(gate.metric, gate.kind, gate.threshold, None, False, reason)
    if not gate.relative:
        return _absolute(gate, metric)
    assert baseline is not None  # require_baseline ran first
    return _relative(config, gate, metric, baseline)


def _absolute(gate: GateSpec, metric: Metric) -> GateStatus:
    value = metric.value
    if gate.kind == "min":
        passed = value >= gate.threshold
        relation = ">=" if passed else "<"
    else:
        passed = value <= gate.threshold
        relation = "<=" if passed else ">"
    reason = f"{_fmt(value)} {relation} {gate.kind} {_fmt(gate.threshold)}"
    return GateStatus(gate.metric, gate.kind, gate.threshold, value, passed, reason)


def _relative(
    config: AutopilotConfig, gate: GateSpec, metric: Metric, baseline: SessionResult
) -> GateStatus:
    base = _find(baseline, gate.metric, metric)
    if base is None:
        why = _unmeasured(baseline, gate.metric) or _unmeasured(baseline, metric.name)
        reason = (
            f"the baseline did not measure it ({why})"
            if why is not None
            else "missing from the baseline: nothing to compare with (save a new baseline)"
        )
        return GateStatus(gate.metric, gate.kind, gate.threshold, metric.value, False, reason)
    blind = _incomparable(base, "the baseline") or _incomparable(metric, "this session")
    if blind is not None:
        return GateStatus(gate.metric, gate.kind, gate.threshold, metric.value, False, blind)
    run_noise = stats.effective_run_noise(config.acceptance.run_noise)
    cmp = stats.compare_metrics(
        base,
        metric,
        config.acceptance.confidence,
        seed=config.search.seed,
        run_noise=run_noise,
    )
    if math.isnan(cmp.ratio):
        reason = f"cannot compare with the baseline {_fmt(base.value)}: {cmp.method}"
        return GateStatus(gate.metric, gate.kind, gate.threshold, metric.value, False, reason)
    goal = metric.goal
    allowed = _pct(gate.threshold)
    if gate.kind == "max_regression":
        passed = not stats.is_regression(cmp, goal, gate.threshold)
        verdict = _regression_verdict(cmp, passed, allowed, goal, gate.threshold)
    else:
        passed = stats.has_gain(cmp, goal, gate.threshold)
        verdict = _gain_verdict(cmp, passed, allowed, goal, gate.threshold)
    reason = f"{cmp.describe()} vs baseline {_fmt(base.value)}: {verdict}"
    if not cmp.with_samples:
        reason += f" ({cmp.method})"
    return GateStatus(gate.metric, gate.kind, gate.threshold, metric.value, passed, reason)


def _incomparable(metric: Metric, side: str) -> str | None:
    """Why no relative change can be taken of ``metric``: a relative gate then fails."""
    if not finite(metric.value):
        return f"cannot compare: {side} has the value {metric.value}"
    if metric.samples and not all(finite(s) for s in metric.samples):
        return f"cannot compare: {side} has samples that are not finite numbers"
    if metric.samples and not any(metric.samples):
        return f"cannot compare: {side} has only samples of 0"
    return None


def _regression_verdict(
    cmp: stats.Comparison, passed: bool, allowed: str, goal: str, threshold: float
) -> str:
    worse = _change_toward(cmp.ratio, goal, worse=True)
    if not passed:
        real = ", beyond noise" if cmp.with_samples else ""
        return f"regression beyond the {allowed} allowed{real}"
    if worse <= 0:
        return "no regression"
    if worse > threshold:
        return f"worse by more than {allowed}, but within noise"
    return f"within the {allowed} allowed"


def _gain_verdict(
    cmp: stats.Comparison, passed: bool, allowed: str, goal: str, threshold: float
) -> str:
    better = _change_toward(cmp.ratio, goal, worse=False)
    if passed:
        real = ", beyond noise" if cmp.with_samples else ""
        return f"gain of at least the {allowed} required{real}"
    if better >= threshold and cmp.with_samples:
        return f"gain of {allowed} or more estimated, but within noise"
    if better > 0:
        return f"gain below the {allowed} required"
    return f"no gain (at least {allowed} required)"


def _change_toward(ratio: float, goal: str, *, worse: bool) -> float:
    """Relative change in the bad (``worse``) or good direction; negative the other way."""
    if math.isnan(ratio):
        return 0.0
    up = ratio - 1.0
    bad = up if goal == "min" else -up
    return bad if worse else -bad


def _find(session: SessionResult, name: str, current: Metric) -> Metric | None:
    """The baseline's metric for a gate: by the gate's name, else the current metric's names."""
    for key in (name, current.name, current.nodeid):
        if key is not None:
            found = session.resolve(key)
            if found is not None:
                return found
    return None


def _unmeasured(session: SessionResult, name: str) -> str | None:
    """Why ``name`` went unmeasured, matching node ids and their short names both ways."""
    if name in session.unmeasured:
        return session.unmeasured[name]
    for key, why in session.unmeasured.items():
        if key.rsplit("::", 1)[-1] == name or name.rsplit("::", 1)[-1] == key:
            return why
    return None


def _file(config: AutopilotConfig) -> str:
    if config.path is None:
        return "autopilot config"
    return config.relpath() or str(config.path)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


DATASET_METRIC_RE = re.compile(r"(?:(?:train|val|test)\.)?(?:pass_rate|score)")
"""What follows ``<dataset>.`` in a dataset metric's name: ``pass_rate``, ``val.pass_rate``..."""


@dataclass(frozen=True)
class Judgement:
    """Whether a session's test failures fail the run, once gates are in play.

    A failing dataset case is a measurement when a gate names a metric of its dataset: the
    gates then decide. Failures outside datasets, and dataset cases that no gate watches,
    keep pytest's verdict.
    """

    tests_ok: bool
    """No failure that fails the run by itself (the gates still have their say)."""
    measured: Mapping[str, int]
    """Dataset stem -> failing cases judged by gates."""
    unjudged: Mapping[str, int]
    """Dataset stem -> failing cases of a dataset no gate names (they fail the run)."""
    outside: int
    """Failing tests outside datasets (they fail the run)."""
    gates: Mapping[str, tuple[str, ...]]
    """Dataset stem -> the gate conditions that judge it (``words.val.pass_rate >= 0.5``)."""

    def summary(self) -> str | None:
        """Which rule applied, for the terminal and the reports; ``None`` when nothing failed."""
        parts = []
        measured = sum(self.measured.values())
        if measured:
            conditions = [c for ds in sorted(self.measured) for c in self.gates[ds]]
            word = "gate" if len(conditions) == 1 else "gates"
            parts.append(f"{_cases(measured)} failed; judged by {word} {', '.join(conditions)}")
        for dataset, count in sorted(self.unjudged.items()):
            parts.append(
                f"{_cases(count)} of {dataset} failed and no gate names a {dataset} metric: "
                "pytest's outcome stands"
            )
        if self.outside:
            test_word = "test" if self.outside == 1 else "tests"
            parts.append(f"{self.outside} {test_word} outside datasets failed: the run fails")
        return "; ".join(parts) or None


def judge_failures(gates: Sequence[GateSpec], result: SessionResult) -> Judgement:
    """Apply the contract's rule for failing dataset cases under ``--autopilot-gate``/loops.

    The loop calls this for candidates too: a candidate whose only failures are dataset cases
    watched by gates is judged on its gates, like the session that started the loop.
    """
    failing: dict[str, int] = {}
    outside = 0
    for test in result.tests.values():
        if test.outcome not in ("failed", "error"):
            continue
        if test.dataset is None:
            outside += 1
        else:
            failing[test.dataset] = failing.get(test.dataset, 0) + 1
    watched: dict[str, tuple[str, ...]] = {}
    for dataset in failing:
        conditions = tuple(
            _condition(gate) for gate in gates if names_dataset(gate.metric, dataset)
        )
        if conditions:
            watched[dataset] = conditions
    measured = {ds: n for ds, n in failing.items() if ds in watched}
    unjudged = {ds: n for ds, n in failing.items() if ds not in watched}
    return Judgement(
        tests_ok=not outside and not unjudged,
        measured=measured,
        unjudged=unjudged,
        outside=outside,
        gates=watched,
    )


def names_dataset(metric: str, dataset: str) -> bool:
    """Whether ``metric`` is one of the dataset's own metrics (``words.val.pass_rate``)."""
    prefix = dataset + "."
    return metric.startswith(prefix) and bool(DATASET_METRIC_RE.fullmatch(metric[len(prefix) :]))


def _condition(gate: GateSpec) -> str:
    if gate.kind == "min":
        return f"{gate.metric} >= {_fmt(gate.threshold)}"
    if gate.kind == "max":
        return f"{gate.metric} <= {_fmt(gate.threshold)}"
    return f"{gate.metric} {gate.kind} {_pct(gate.threshold)}"


def _cases(count: int) -> str:
    return f"{count} dataset case" + ("" if count == 1 else "s")
