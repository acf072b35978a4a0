"""What a session tells its user: terminal verdict lines, the JSON result, the Markdown report.

Everything here renders from plain data (a :class:`~pytest_autopilot.results.SessionResult`,
gate statuses, the loop's JSON payload), so the same report can be produced again later from
a saved ``--autopilot-json`` file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_autopilot.proposals import GateStatus
from pytest_autopilot.results import FORMAT_VERSION, SessionResult, write_json

if TYPE_CHECKING:
    from pytest_autopilot.gates import Judgement

PREFIX = "autopilot:"
RELATIVE_KINDS = ("max_regression", "min_gain")


def fmt(value: float | None) -> str:
    """A number as people read it: integers plainly, the rest with 6 significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def threshold_text(kind: str, threshold: float) -> str:
    if kind in RELATIVE_KINDS:
        return f"{kind} {threshold * 100:g}%"
    return f"{kind} {fmt(threshold)}"


def gate_lines(statuses: Sequence[GateStatus], baseline: SessionResult | None = None) -> list[str]:
    """One line per gate (metric, value, threshold, baseline, verdict), then a summary line.

    The gate's reason is added where the numbers alone do not explain the verdict: a metric
    that was not measured, or the statistics behind a relative gate.
    """
    lines = []
    for status in statuses:
        verdict = "PASS" if status.passed else "FAIL"
        value = "not measured" if status.value is None else fmt(status.value)
        condition = threshold_text(status.kind, status.threshold)
        if status.kind in RELATIVE_KINDS:
            base = baseline.resolve(status.metric) if baseline is not None else None
            condition += f", baseline {fmt(base.value) if base is not None else 'n/a'}"
        line = f"{PREFIX} {verdict} {status.metric} = {value} ({condition})"
        if status.reason and (status.value is None or status.kind in RELATIVE_KINDS):
            line += f": {status.reason}"
        lines.append(line)
    if statuses:
        failed = sum(1 for s in statuses if not s.passed)
        if failed:
            lines.append(f"{PREFIX} {failed} of {len(statuses)} gates failed")
        else:
            lines.append(f"{PREFIX} all {len(statuses)} gates passed")
    return lines


def gate_to_json(status: GateStatus) -> dict[str, Any]:
    return asdict(status)


def build_payload(
    result: SessionResult,
    statuses: Sequence[GateStatus],
    loop_payload: Mapping[str, Any] | None = None,
    *,
    judgement: Judgement | None = None,
) -> dict[str, Any]:
    """The ``--autopilot-json`` document.

    ``passed`` is true when every checked gate passed and no test failed, except dataset cases
    that gates judge (``judgement``): what a CI step should report. A loop's payload
    (``rounds``, ``baseline``, ``best``, and its own final ``gates`` and ``passed``) is merged
    over it.
    """
    session = result.to_json()
    if judgement is not None:
        tests_ok = judgement.tests_ok
    else:
        tests_ok = not any(t.outcome in ("failed", "error") for t in result.tests.values())
    payload: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "metrics": session["metrics"],
        "gates": [gate_to_json(s) for s in statuses],
        "passed": tests_ok and all(s.passed for s in statuses),
        "unmeasured": session["unmeasured"],
        "tests": session["tests"],
        "protected_files": session["protected_files"],
    }
    summary = judgement.summary() if judgement is not None else None
    if summary is not None:
        payload["judgement"] = summary
    if loop_payload:
        payload.update(loop_payload)
    return payload


def save_payload(result: SessionResult) -> dict[str, Any]:
    """The ``--autopilot-save`` document, read back by ``--autopilot-baseline``."""
    return {"format": FORMAT_VERSION, **result.to_json()}


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ").strip()


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
    return lines


def _metric_value(metrics: Any, name: str | None) -> float | None:
    if name is None or not isinstance(metrics, Mapping):
        return None
    entry = metrics.get(name)
    if isinstance(entry, Mapping) and isinstance(entry.get("value"), (int, float)):
        return float(entry["value"])
    for entry in metrics.values():
        if isinstance(entry, Mapping) and entry.get("nodeid") == name:
            value = entry.get("value")
            return float(value) if isinstance(value, (int, float)) else None
    return None


def _objective(payload: Mapping[str, Any]) -> tuple[str | None, str]:
    objective = payload.get("objective")
    if isinstance(objective, Mapping) and isinstance(objective.get("metric"), str):
        return objective["metric"], str(objective.get("goal", "min"))
    gates = payload.get("gates") or []
    if gates and isinstance(gates[0], Mapping):
        metric = str(gates[0].get("metric"))
        goal = "max" if gates[0].get("kind") in ("min", "min_gain") else "min"
        return metric, goal
    return None, "min"


def render_markdown(payload: Mapping[str, Any]) -> str:
    """The Markdown report: gates, metrics and, for a loop, rounds, chart, tree and best."""
    passed = payload.get("passed")
    verdict = "passed" if passed else "failed"
    lines = ["## pytest-autopilot", "", f"**Result: {verdict}**", ""]
    if payload.get("error"):
        lines += [f"**Error:** {_cell(payload['error'])}", ""]
    if payload.get("judgement"):
        lines += [f"Tests: {_cell(payload['judgement'])}", ""]

    gates = payload.get("gates") or []
    if gates:
        lines += ["### Gates", ""]
        lines += _table(
            ["metric", "gate", "value", "verdict", "reason"],
            [
                (
                    g.get("metric"),
                    threshold_text(str(g.get("kind")), float(g.get("threshold", 0.0))),
                    "not measured" if g.get("value") is None else fmt(g["value"]),
                    "pass" if g.get("passed") else "**FAIL**",
                    g.get("reason", ""),
                )
                for g in gates
            ],
        )
        lines.append("")

    comparison = payload.get("comparison") or []
    if comparison:
        from pytest_autopilot.comparison import header, table_cells

        current = "best" if payload.get("rounds") is not None else "this run"
        lines += [f"### Comparison: {current} against the baseline", ""]
        lines += _table(header(current), table_cells(comparison))
        lines += ["", f"Change: {current} / baseline - 1, with its confidence interval.", ""]

    metrics = payload.get("metrics") or {}
    heading = "Metrics of round 0 (this session)" if payload.get("rounds") else "Metrics"
    lines += [f"### {heading}", ""]
    lines += _table(
        ["metric", "value", "goal", "samples"],
        [
            (name, fmt(m.get("value")), m.get("goal", ""), len(m.get("samples") or []) or "")
            for name, m in sorted(metrics.items())
        ],
    )
    lines.append("")
    unmeasured = payload.get("unmeasured") or {}
    if unmeasured:
        lines += ["### Not measured", ""]
        lines += _table(["metric", "why"], sorted(unmeasured.items()))
        lines.append("")

    if payload.get("rounds") is not None:
        lines += _loop_sections(payload)
    return "\n".join(lines).rstrip() + "\n"


def _loop_sections(payload: Mapping[str, Any]) -> list[str]:
    metric, goal = _objective(payload)
    rounds = [r for r in payload.get("rounds") or [] if isinstance(r, Mapping)]
    baseline = payload.get("baseline") or {}
    base_value = _metric_value(baseline.get("metrics"), metric)
    lines = _rounds_table(rounds, metric)
    if metric is not None and base_value is not None:
        lines += _objective_chart(rounds, metric, goal, base_value)
    lines += _tree(payload, rounds, metric)
    lines += _best_section(payload.get("best") or {}, metric, base_value)
    return lines


def _rounds_table(rounds: Sequence[Mapping[str, Any]], metric: str | None) -> list[str]:
    """One row per candidate of every round."""
    rows = []
    for rnd in rounds:
        for cand in rnd.get("candidates") or []:
            rows.append(
                (
                    rnd.get("round"),
                    cand.get("id"),
                    str(cand.get("parent") or "")[:10],
                    str(cand.get("commit") or "")[:10],
                    fmt(_metric_value(cand.get("metrics"), metric)),
                    cand.get("verdict", ""),
                    cand.get("reason", ""),
                )
            )
    objective_header = metric or "objective"
    lines = ["### Rounds", ""]
    lines += _table(
        ["round", "candidate", "parent", "commit", objective_header, "verdict", "reason"], rows
    )
    lines.append("")
    return lines


def _objective_chart(
    rounds: Sequence[Mapping[str, Any]], metric: str, goal: str, base_value: float
) -> list[str]:
    """A mermaid chart: the best candidate of each round (bars) and the incumbent (line)."""
    better = min if goal == "min" else max
    incumbent = base_value
    xs, line_values, bar_values = ["0"], [incumbent], [incumbent]
    for rnd in rounds:
        measured = [
            v
            for c in rnd.get("candidates") or []
            if (v := _metric_value(c.get("metrics"), metric)) is not None
            and c.get("verdict") not in ("failed", "timeout", "violation")
        ]
        for cand in rnd.get("candidates") or []:
            value = _metric_value(cand.get("metrics"), metric)
            if cand.get("verdict") == "accepted" and value is not None:
                incumbent = value
        xs.append(str(rnd.get("round")))
        line_values.append(incumbent)
        bar_values.append(better(measured) if measured else incumbent)
    direction = "lower" if goal == "min" else "higher"
    return [
        "### Objective per round",
        "",
        "```mermaid",
        "xychart-beta",
        f'    title "{metric} per round ({direction} is better)"',
        f'    x-axis "round" [{", ".join(xs)}]',
        f'    y-axis "{metric}"',
        f"    bar [{', '.join(f'{v:.6g}' for v in bar_values)}]",
        f"    line [{', '.join(f'{v:.6g}' for v in line_values)}]",
        "```",
        "",
        "Bars: best candidate of the round; line: the incumbent after the round.",
        "",
    ]


def _best_section(
    best: Mapping[str, Any], metric: str | None, base_value: float | None
) -> list[str]:
    """The best commit, its branch and how to merge it (nothing when the loop kept none)."""
    if not best:
        return []
    branch = best.get("branch")
    best_value = _metric_value(best.get("metrics"), metric)
    text = f"**Best:** commit `{str(best.get('commit') or '')[:12]}`"
    if branch:
        text += f" on branch `{branch}`"
    if metric is not None:
        text += f", {metric} = {fmt(best_value)} (baseline {fmt(base_value)})"
    lines = ["### Best", "", text, ""]
    if branch:
        lines += [f"Bring it onto your branch with `git merge {branch}`.", ""]
    return lines


def _tree(
    payload: Mapping[str, Any], rounds: Sequence[Mapping[str, Any]], metric: str | None
) -> list[str]:
    baseline = payload.get("baseline") or {}
    names: dict[str, str] = {}
    if baseline.get("commit"):
        names[str(baseline["commit"])] = "r0"
    base_value = _metric_value(baseline.get("metrics"), metric)
    base_label = "r0 baseline" + (f"<br/>{fmt(base_value)}" if base_value is not None else "")
    nodes = [f'    r0["{base_label}"]']
    edges = []
    for rnd in rounds:
        for cand in rnd.get("candidates") or []:
            cid = str(cand.get("id"))
            if cand.get("commit"):
                names[str(cand["commit"])] = cid
    for rnd in rounds:
        for cand in rnd.get("candidates") or []:
            cid = str(cand.get("id"))
            value = _metric_value(cand.get("metrics"), metric)
            label = f"{cid} {cand.get('verdict', '')}"
            if value is not None:
                label += f"<br/>{fmt(value)}"
            nodes.append(f'    {cid}["{label}"]')
            parent = names.get(str(cand.get("parent")), "r0")
            edges.append(f"    {parent} --> {cid}")
    if not edges:
        return []
    return ["### Candidate tree", "", "```mermaid", "flowchart TD", *nodes, *edges, "```", ""]


def write_outputs(
    payload: Mapping[str, Any],
    result: SessionResult,
    *,
    json_path: Path | None,
    save_path: Path | None,
    report_path: Path | None,
) -> list[Path]:
    """Write the files the user asked for; the Markdown also goes to $GITHUB_STEP_SUMMARY."""
    written = []
    if json_path is not None:
        write_json(json_path, payload)
        written.append(json_path)
    if save_path is not None:
        write_json(save_path, save_payload(result))
        written.append(save_path)
    if report_path is not None:
        markdown = render_markdown(payload)
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(markdown, encoding="utf-8")
        written.append(report_path)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as handle:
                handle.write(markdown + "\n")
    return written
