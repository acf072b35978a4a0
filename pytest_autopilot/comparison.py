"""The "metric | baseline | this run | change | gate" table, whenever there is a baseline.

Rows are plain JSON-ready dicts (they go into ``--autopilot-json`` as ``comparison``), so the
terminal, the Markdown report and the HTML report all render the same numbers. The change is
the ratio this run / baseline from :mod:`pytest_autopilot.stats`, with its confidence interval
when both sides have samples; otherwise the plain change, marked as having no noise test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from pytest_autopilot import stats
from pytest_autopilot.config import AutopilotConfig
from pytest_autopilot.experiments import paired_value_of
from pytest_autopilot.proposals import GateStatus
from pytest_autopilot.results import Metric, SessionResult

HEADER = ("metric", "baseline", "this run", "change", "gate")


def comparison_rows(
    config: AutopilotConfig,
    current: SessionResult,
    baseline: SessionResult,
    statuses: Sequence[GateStatus] = (),
) -> list[dict[str, Any]]:
    """One row per metric of either side (by name, or by node id across the two)."""
    rows = []
    seen: set[int] = set()
    for name, metric in sorted(current.metrics.items()):
        base = _counterpart(baseline, metric)
        if base is not None:
            seen.add(id(base))
        rows.append(_row(config, name, metric, base, _gates_of(statuses, current, name, metric)))
    for name, base in sorted(baseline.metrics.items()):
        if id(base) not in seen:
            rows.append(_row(config, name, None, base, _gates_of(statuses, baseline, name, base)))
    return rows


def loop_comparison(config: AutopilotConfig, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The loop's table from its JSON payload: best against baseline, with the best's gates."""
    try:
        best = SessionResult.from_json(payload["best"], source="best")
        base = SessionResult.from_json(payload["baseline"], source="baseline")
        statuses = [GateStatus(**g) for g in payload.get("gates") or []]
    except (KeyError, TypeError, pytest.UsageError):
        return []
    return comparison_rows(config, best, base, statuses)


NOTE_POINTS = 2.0
"""How far apart, in percentage points, the table's change and the paired one may be
before a note says so."""


def paired_note(config: AutopilotConfig, payload: Mapping[str, Any]) -> str | None:
    """The best's change as the loop measured it, side by side with each incumbent, when the
    table's (the baseline measured alone, the best beside another session) differs from it
    by more than :data:`NOTE_POINTS` percentage points."""
    best, base = payload.get("best") or {}, payload.get("baseline") or {}
    paired = paired_value_of(best)
    if config.objective is None or paired is None:
        return None
    name = config.objective.metric
    try:
        measured = float(best["metrics"][name]["value"])
        baseline = float(base["metrics"][name]["value"])
    except (KeyError, TypeError, ValueError):
        return None
    if not baseline or abs(measured - paired) / abs(baseline) <= NOTE_POINTS / 100.0:
        return None
    return (
        f"{name}: the best is {_pct(paired / baseline - 1.0)} against the baseline as measured "
        "side by side with each incumbent (the table compares the baseline measured alone "
        "with the best measured beside another session)"
    )


def _counterpart(session: SessionResult, metric: Metric) -> Metric | None:
    for key in (metric.name, metric.nodeid):
        if key is not None:
            found = session.resolve(key)
            if found is not None:
                return found
    return None


def _gates_of(
    statuses: Sequence[GateStatus], session: SessionResult, name: str, metric: Metric
) -> list[GateStatus]:
    return [
        s
        for s in statuses
        if s.metric in (name, metric.nodeid) or session.resolve(s.metric) is metric
    ]


def _row(
    config: AutopilotConfig,
    name: str,
    metric: Metric | None,
    base: Metric | None,
    gates: Sequence[GateStatus],
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "metric": name,
        "goal": metric.goal if metric is not None else base.goal if base is not None else "min",
        "baseline": None if base is None else base.value,
        "value": None if metric is None else metric.value,
        "change": None,
        "low": None,
        "high": None,
        "method": "",
        "gate": _gate_verdict(gates),
    }
    if metric is None or base is None:
        row["method"] = "not in this run" if metric is None else "not in the baseline"
        return row
    cmp = stats.compare_metrics(
        base,
        metric,
        config.acceptance.confidence,
        seed=config.search.seed,
        run_noise=stats.effective_run_noise(config.acceptance.run_noise),
    )
    row["change"] = _finite(cmp.ratio - 1.0)
    row["noise_test"] = cmp.with_samples
    if cmp.with_samples and cmp.informative:
        row["low"], row["high"] = _finite(cmp.low - 1.0), _finite(cmp.high - 1.0)
        row["confidence"] = cmp.confidence
    row["method"] = cmp.method
    return row


def _gate_verdict(gates: Sequence[GateStatus]) -> str:
    if not gates:
        return ""
    failed = sum(1 for g in gates if not g.passed)
    return "FAIL" if failed else "pass"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def change_text(row: Mapping[str, Any]) -> str:
    """``+3.1% [-1.2%, +7.0%]``; ``+3.1% (no noise test)`` without samples; ``-`` without a side."""
    change = row.get("change")
    if not isinstance(change, (int, float)):
        return "-"
    text = _pct(change)
    low, high = row.get("low"), row.get("high")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        return f"{text} [{_pct(low)}, {_pct(high)}]"
    if row.get("noise_test"):
        return f"{text} [interval unbounded]"
    return f"{text} (no noise test)"


def header(current: str = "this run") -> tuple[str, ...]:
    """:data:`HEADER` with the current side named (``best`` for a loop)."""
    return (HEADER[0], HEADER[1], current, *HEADER[3:])


def table_cells(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """The table as text cells, in :data:`HEADER` order."""
    from pytest_autopilot.report import fmt

    return [
        (
            str(row.get("metric")),
            fmt(row["baseline"]) if isinstance(row.get("baseline"), (int, float)) else "-",
            fmt(row["value"]) if isinstance(row.get("value"), (int, float)) else "-",
            change_text(row),
            str(row.get("gate") or ""),
        )
        for row in rows
    ]


def terminal_lines(
    rows: Sequence[Mapping[str, Any]], prefix: str, title: str, current: str = "this run"
) -> list[str]:
    """The table aligned in columns, for pytest's terminal summary."""
    cells = [header(current), *table_cells(rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = [f"{prefix} {title}"]
    for row in cells:
        text = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append(f"{prefix}   {text.rstrip()}")
    return lines


def _pct(fraction: float) -> str:
    return f"{fraction * 100:+.1f}%"
