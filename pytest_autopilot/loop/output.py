"""What the loop shows and returns: live lines, the closing summary and the JSON payload.

:class:`LoopOutput` writes ``autopilot:`` lines to pytest's terminal reporter (nothing when
there is none, e.g. ``-p no:terminal``). :func:`payload` is the ``--autopilot-json`` part the
loop hands back to ``plugin.py`` (its shape is in the contract). Numbers are shown with four
significant digits; commit messages and the JSON keep them all.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from typing import Any

import pytest

from pytest_autopilot.config import AutopilotConfig, Objective
from pytest_autopilot.gates import Judgement
from pytest_autopilot.loop.progress import Progress, ReporterSink
from pytest_autopilot.loop.state import RunState, record_to_json
from pytest_autopilot.proposals import CandidateRecord
from pytest_autopilot.report import fmt, gate_lines
from pytest_autopilot.results import SessionResult

PREFIX = "autopilot:"
SUMMARY_WIDTH = 48
PROGRESS_INTERVAL_ENV = "PYTEST_AUTOPILOT_PROGRESS_INTERVAL"
"""Seconds between plain progress lines when the output is not a terminal (30 by default)."""


class SilentSink:
    """Progress with nowhere to go (``-p no:terminal``)."""

    isatty = False

    def status(self, text: str) -> None:
        pass

    def line(self, text: str) -> None:
        pass

    def clear(self) -> None:
        pass


class LoopOutput:
    """The loop's lines in the terminal, each prefixed ``autopilot:``."""

    def __init__(self, pytest_config: pytest.Config, config: AutopilotConfig) -> None:
        assert config.objective is not None
        self.pytest_config = pytest_config
        self.config = config
        self.objective: Objective = config.objective
        self.said = False
        self.progress: Progress | None = None
        """The live status line (:meth:`start_progress`), cleared before each line said."""

    def say(self, line: str, **markup: bool) -> None:
        reporter = self.pytest_config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            if self.progress is not None:
                self.progress.clear()
            if not self.said:
                reporter.write("\n")
                self.said = True
            reporter.write_line(f"{PREFIX} {line}", **markup)
            reporter.flush()

    def start_progress(self, state: RunState) -> Progress:
        """A :class:`Progress` on pytest's terminal reporter (silent when there is none)."""
        reporter = self.pytest_config.pluginmanager.get_plugin("terminalreporter")
        budget = self.config.budget
        self.progress = Progress(
            ReporterSink(reporter) if reporter is not None else SilentSink(),
            rounds=budget.rounds,
            minutes=budget.minutes,
            metric=self.objective.metric,
            interval=progress_interval(),
            elapsed_before=state.elapsed_before,
            rounds_before=state.rounds_done,
        )
        return self.progress

    def announce(self, state: RunState, head: str | None) -> None:
        """The first line of a fresh run: the experiment, where its baseline comes from."""
        baseline, budget = state.baseline, self.config.budget
        if head is None:
            origin = "your files (no commit yet)"
        elif head == baseline.commit:
            origin = f"HEAD {head[:10]}"
        else:
            origin = "HEAD plus your uncommitted changes"
        self.say(
            f"experiment {self.config.experiment}: baseline {str(baseline.commit)[:10]} "
            f"({origin}); objective {self.objective.metric} ({self.objective.goal}); "
            f"optimizer {self.config.optimizer}; budget {budget.rounds} rounds x "
            f"{budget.candidates} candidates"
        )

    def live_line(
        self, record: CandidateRecord, reference: CandidateRecord, *, raced: bool = False
    ) -> None:
        """One line per decided candidate: change, objective before -> after, verdict.

        When sequential paired decisions decided it (``raced``), an accepted candidate's reason
        is shown too: it holds the estimate, its interval and how many measurements it took.
        """
        name = self.objective.metric
        after = record.comparable_value(self.objective)
        line = f"{record.id} {change(record)}"
        if after is not None:
            before = reference.comparable_value(self.objective)
            line += f" {name} {num(before)} -> {num(after)}{percent(before, after)}"
        line += f" {record.verdict}"
        if record.verdict != "accepted" or raced:
            line += f": {shorten(record.reason, 160)}"
        if record.usage.get("requests"):
            line += f" [{usage_text(record.usage)}]"
        self.say(line, green=record.verdict == "accepted")

    def summary(
        self,
        state: RunState,
        stop_reason: str,
        baseline_result: SessionResult | None,
        judgement: Judgement | None = None,
        decisions: str | None = None,
    ) -> None:
        """Why the run stopped, a table of every candidate, and the best commit's gates."""
        name = self.objective.metric
        base = state.baseline.comparable_value(self.objective)
        self.say(
            f"experiment {self.config.experiment} stopped: {stop_reason} "
            f"({state.rounds_done} rounds, {len(state.records)} candidates, "
            f"{state.accepted_count()} accepted)"
        )
        rows = [("id", "verdict", name, "change"), ("r0", "baseline", num(base), "")]
        for record in sorted(state.records, key=position):
            value = record.comparable_value(self.objective)
            shown = num(value) + percent(base, value) if value is not None else "-"
            rows.append((record.id, str(record.verdict), shown, change(record)))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            cells = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
            self.say(f"{cells}  {row[3]}")
        for line in gate_lines(state.gates.get(state.incumbent.id, []), baseline_result):
            self.say(line.removeprefix(PREFIX).strip())
        rule = judgement.summary() if judgement is not None else None
        if rule is not None:
            self.say(f"{state.incumbent.id}: {rule}", red="fail" in rule)
        if decisions:
            self.say(f"decisions: {decisions}")
        usage = usage_total(state.records)
        if usage.get("requests"):
            self.say(f"{self.config.optimizer} usage: {usage_text(usage)}")

    def closing(self, state: RunState, branch: str, interrupted_in: str | None) -> None:
        """Where the result is and how to bring it in (or how to resume)."""
        if interrupted_in is not None:
            self.say(
                f"interrupted: state saved in {interrupted_in}; run the same command to "
                "resume (or add --autopilot-fresh to start over)",
                yellow=True,
            )
        if state.incumbent.id == "r0":
            self.say(f"no candidate beat the baseline; {branch} points at the baseline")
            return
        base = state.baseline.comparable_value(self.objective)
        best = state.incumbent.comparable_value(self.objective)
        self.say(
            f"best: {state.incumbent.id} ({str(state.incumbent.commit)[:10]}) "
            f"{self.objective.metric} {num(base)} -> {num(best)}{percent(base, best)} "
            f"on branch {branch}",
            green=True,
        )
        self.say(f"bring it in with: git merge {branch}   (or rerun with --autopilot-apply)")


def progress_interval() -> float:
    """:data:`PROGRESS_INTERVAL_ENV`, for CI logs that want denser (or sparser) lines."""
    text = os.environ.get(PROGRESS_INTERVAL_ENV, "").strip()
    if not text:
        return 30.0
    try:
        interval = float(text)
    except ValueError:
        interval = math.nan
    if not math.isfinite(interval) or interval <= 0:
        raise pytest.UsageError(
            f"{PROGRESS_INTERVAL_ENV}={text!r}: expected a positive number of seconds"
        )
    return interval


def payload(
    state: RunState,
    config: AutopilotConfig,
    stop_reason: str,
    branch: str,
    judgement: Judgement | None = None,
) -> dict[str, Any]:
    """The loop's part of the ``--autopilot-json`` document: ``passed`` and ``judgement`` are
    the best commit's (its gates, and the contract's rule for its failing tests)."""
    assert config.objective is not None
    rounds: dict[int, list[dict[str, Any]]] = {}
    for record in sorted(state.records, key=position):
        entry = record_to_json(record)
        entry["gates"] = [asdict(s) for s in state.gates.get(record.id, [])]
        rounds.setdefault(record.round, []).append(entry)
    best_gates = state.gates.get(state.incumbent.id, [])
    tests_ok = judgement is None or judgement.tests_ok
    rule = judgement.summary() if judgement is not None else None
    return {
        "experiment": config.experiment,
        "objective": {"metric": config.objective.metric, "goal": config.objective.goal},
        "stop_reason": stop_reason,
        "rounds": [{"round": n, "candidates": c} for n, c in sorted(rounds.items())],
        "baseline": {"commit": state.baseline.commit, "metrics": metrics_json(state.baseline)},
        "best": {
            "id": state.incumbent.id,
            "commit": state.incumbent.commit,
            "branch": branch,
            "metrics": metrics_json(state.incumbent),
            "paired_value": state.incumbent.paired_value,
        },
        "gates": [asdict(s) for s in best_gates],
        "passed": tests_ok and all(s.passed for s in best_gates),
        "usage": usage_total(state.records),
    } | ({"judgement": rule} if rule is not None else {})


def usage_total(records: list[CandidateRecord]) -> dict[str, float]:
    """Tokens, requests and cost of every candidate so far (LLM optimizers report them)."""
    total: dict[str, float] = {}
    for record in records:
        for key, value in record.usage.items():
            if key != "turns":
                total[key] = total.get(key, 0) + value
    if "cost_usd" in total:
        total["cost_usd"] = round(total["cost_usd"], 6)
    return total


def metrics_json(record: CandidateRecord) -> dict[str, Any]:
    return {name: m.to_json() for name, m in sorted(record.metrics.items())}


def change(record: CandidateRecord) -> str:
    """What the candidate changed, in a few words: its parameters, its diff or its rationale."""
    if record.params:
        text = " ".join(f"{k}={v}" for k, v in record.params.items())
    elif record.diff_summary:
        text = record.diff_summary
    else:
        text = (record.rationale.strip().splitlines() or [""])[0]
    return shorten(text or "(no change)", SUMMARY_WIDTH)


def num(value: float | None) -> str:
    """Four significant digits for the terminal; the commit messages and JSON keep them all."""
    if value is None or not math.isfinite(value) or float(value).is_integer():
        return fmt(value)
    return f"{value:.4g}"


def position(record: CandidateRecord) -> tuple[int, int]:
    """Round and candidate number: the order proposals were made in, whatever decided first."""
    return record.round, int(record.id.rpartition("c")[2] or 0)


def usage_text(usage: dict[str, float]) -> str:
    def count(key: str) -> str:
        return f"{int(usage.get(key, 0)):,}"

    return (
        f"{count('requests')} requests, {count('input_tokens')} input + "
        f"{count('cache_read_input_tokens')} cache-read + "
        f"{count('cache_creation_input_tokens')} cache-write, {count('output_tokens')} output "
        f"tokens, {_cost_text(usage)}"
    )


def _cost_text(usage: dict[str, float]) -> str:
    """The cost, or that it is unknown: a model without a price is never shown as free."""
    unpriced = int(usage.get("unpriced_requests", 0))
    if not unpriced:
        return f"${usage.get('cost_usd', 0.0):.4f}"
    known = f"${usage['cost_usd']:.4f} + " if usage.get("cost_usd") else ""
    return (
        f"{known}cost unknown ({unpriced} requests to a model without a price: "
        "set anthropic.prices)"
    )


def percent(before: float | None, after: float | None) -> str:
    if before is None or after is None or before == 0:
        return ""
    return f" ({(after - before) / abs(before) * 100:+.0f}%)"


def shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
