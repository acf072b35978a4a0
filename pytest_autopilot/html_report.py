"""``--autopilot-html PATH``: one self-contained page, readable offline and as a CI artifact.

Built from the same JSON payload as ``--autopilot-json`` (plus each candidate's diff, read
from git), with inline CSS and SVG: no script, no font, nothing fetched from the network. A
saved payload renders the same page again (:func:`render_html`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import pytest

from pytest_autopilot.experiments import paired_value_of
from pytest_autopilot.report import fmt, threshold_text

VERDICT_COLORS = {
    "accepted": "#1a7f37",
    "rejected": "#8c959f",
    "duplicate": "#bf8700",
    "violation": "#cf222e",
    "failed": "#cf222e",
    "timeout": "#953800",
    "baseline": "#0969da",
}

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1100px;
color:#1f2328;padding:0 16px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d0d7de;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f6f8fa}td.n{text-align:right;
font-variant-numeric:tabular-nums}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
.badge{display:inline-block;padding:0 6px;border-radius:8px;color:#fff;font-size:12px}
pre.diff{background:#f6f8fa;padding:8px;overflow-x:auto;font-size:12px;line-height:1.35}
pre.diff .add{color:#1a7f37}pre.diff .del{color:#cf222e}pre.diff .hunk{color:#8250df}
ul.tree{list-style:none;padding-left:18px;border-left:1px dotted #afb8c1}
ul.tree.root{border-left:none;padding-left:0}details{margin:6px 0}
summary{cursor:pointer}svg text{font:11px system-ui,sans-serif;fill:#57606a}
"""


def write_html(path: Path, payload: Mapping[str, Any], pytest_config: pytest.Config) -> Path:
    """Render the payload, with diffs from the repository when it describes a loop."""
    diffs = read_diffs(payload, Path(pytest_config.rootpath)) if payload.get("rounds") else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(payload, diffs), encoding="utf-8")
    return path


def read_diffs(payload: Mapping[str, Any], rootdir: Path) -> dict[str, str]:
    """Candidate id -> the diff from its parent commit; empty when git cannot tell."""
    from pytest_autopilot.loop.workspace import GitError, Workspace

    try:
        workspace = Workspace.discover(rootdir, str(payload.get("experiment") or "default"))
    except pytest.UsageError:
        return {}
    diffs = {}
    for cand in candidates(payload):
        commit, parent = cand.get("commit"), cand.get("parent")
        if isinstance(commit, str) and isinstance(parent, str):
            try:
                diffs[str(cand.get("id"))] = workspace.diff_text(parent, commit)
            except GitError:
                continue
    return diffs


def candidates(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        cand
        for rnd in payload.get("rounds") or []
        if isinstance(rnd, Mapping)
        for cand in rnd.get("candidates") or []
        if isinstance(cand, Mapping)
    ]


def render_html(payload: Mapping[str, Any], diffs: Mapping[str, str] | None = None) -> str:
    diffs = diffs or {}
    passed = bool(payload.get("passed"))
    title = "pytest-autopilot: " + ("passed" if passed else "failed")
    experiment = payload.get("experiment")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}"
        + (f" &middot; experiment {escape(str(experiment))}" if experiment else "")
        + "</h1>",
    ]
    for key, label in (("stop_reason", "Stopped"), ("judgement", "Tests"), ("error", "Error")):
        if payload.get(key):
            parts.append(f"<p><b>{label}:</b> {escape(str(payload[key]))}</p>")
    parts += _gates(payload.get("gates") or [])
    parts += _comparison(
        payload.get("comparison") or [], "best" if payload.get("rounds") is not None else None
    )
    if payload.get("rounds") is not None:
        parts += _loop(payload, diffs)
    parts += _metrics("Metrics of this session", payload.get("metrics") or {})
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Cells are HTML already (escaped by the caller); numeric cells carry ``class="n"``."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(rows_cells) + "</tr>" for rows_cells in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _td(text: object, numeric: bool = False, cls: str = "") -> str:
    classes = " ".join(c for c in ("n" if numeric else "", cls) if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{escape(str(text))}</td>"


def _num(value: object) -> str:
    return fmt(float(value)) if isinstance(value, (int, float)) else "-"


def _gates(gates: Sequence[Any]) -> list[str]:
    if not gates:
        return []
    rows = []
    for g in gates:
        if not isinstance(g, Mapping):
            continue
        ok = bool(g.get("passed"))
        rows.append(
            [
                _td(g.get("metric")),
                _td(threshold_text(str(g.get("kind")), float(g.get("threshold") or 0.0))),
                _td("not measured" if g.get("value") is None else _num(g.get("value")), True),
                _td("pass" if ok else "FAIL", cls="pass" if ok else "fail"),
                _td(g.get("reason", "")),
            ]
        )
    return ["<h2>Gates</h2>", _table(["metric", "gate", "value", "verdict", "reason"], rows)]


def _comparison(rows: Sequence[Any], current: str | None) -> list[str]:
    if not rows:
        return []
    from pytest_autopilot.comparison import header, table_cells

    cells = []
    for metric, base, value, change, gate in table_cells(rows):
        cls = "fail" if gate == "FAIL" else "pass" if gate else ""
        cells.append(
            [_td(metric), _td(base, True), _td(value, True), _td(change, True), _td(gate, cls=cls)]
        )
    title = f"{(current or 'this run').capitalize()} against the baseline"
    return [f"<h2>{title}</h2>", _table(header(current or "this run"), cells)]


def _metrics(heading: str, metrics: Mapping[str, Any]) -> list[str]:
    if not metrics:
        return []
    rows = [
        [
            _td(name),
            _td(_num(m.get("value")), True),
            _td(m.get("goal", "")),
            _td(len(m.get("samples") or []) or "", True),
        ]
        for name, m in sorted(metrics.items())
        if isinstance(m, Mapping)
    ]
    return [f"<h2>{escape(heading)}</h2>", _table(["metric", "value", "goal", "samples"], rows)]


def _objective(payload: Mapping[str, Any]) -> tuple[str | None, str]:
    objective = payload.get("objective")
    if isinstance(objective, Mapping) and isinstance(objective.get("metric"), str):
        return objective["metric"], str(objective.get("goal", "min"))
    return None, "min"


def _value(metrics: Any, name: str | None) -> float | None:
    if name is None or not isinstance(metrics, Mapping):
        return None
    entry = metrics.get(name)
    if not isinstance(entry, Mapping):
        entry = next(
            (e for e in metrics.values() if isinstance(e, Mapping) and e.get("nodeid") == name),
            None,
        )
    value = entry.get("value") if isinstance(entry, Mapping) else None
    return float(value) if isinstance(value, (int, float)) else None


def _compared(cand: Mapping[str, Any], metric: str | None) -> float | None:
    """The candidate's objective on the baseline's scale: its ``paired_value`` (measured
    side by side with its incumbent) when it has one, else its own measured value."""
    paired = paired_value_of(cand)
    if metric is not None and paired is not None:
        return paired
    return _value(cand.get("metrics"), metric)


def _loop(payload: Mapping[str, Any], diffs: Mapping[str, str]) -> list[str]:
    metric, goal = _objective(payload)
    parts: list[str] = []
    if metric is not None:
        parts += ["<h2>Convergence</h2>", convergence_svg(payload, metric, goal)]
    parts += ["<h2>Candidate tree</h2>", _tree(payload, metric)]
    parts.append("<h2>Candidates</h2>")
    best = payload.get("best")
    best_id = best.get("id") if isinstance(best, Mapping) else None
    for cand in candidates(payload):
        diff = diffs.get(str(cand.get("id")))
        parts.append(_candidate(cand, metric, diff, opened=cand.get("id") == best_id))
    if isinstance(best, Mapping) and best.get("commit"):
        branch = best.get("branch")
        text = f"Best: {best.get('id', '')} commit {str(best['commit'])[:12]}"
        if branch:
            text += f" on branch {branch} (bring it in with git merge {branch})"
        parts.append(f"<p><b>{escape(text)}</b></p>")
    return parts


def _badge(verdict: str) -> str:
    color = VERDICT_COLORS.get(verdict, "#57606a")
    return f'<span class="badge" style="background:{color}">{escape(verdict)}</span>'


def _candidate(
    cand: Mapping[str, Any], metric: str | None, diff: str | None, *, opened: bool = False
) -> str:
    cid = str(cand.get("id"))
    verdict = str(cand.get("verdict") or "")
    value = _compared(cand, metric)
    head = f"<b>{escape(cid)}</b> {_badge(verdict)}"
    if metric is not None and value is not None:
        head += f" {escape(metric)} = {escape(fmt(value))}"
    body = [
        f"<p><b>Reason:</b> {escape(str(cand.get('reason') or ''))}</p>",
        f"<p><b>Rationale:</b> {escape(str(cand.get('rationale') or ''))}</p>",
        f"<p>commit <code>{escape(str(cand.get('commit') or '-'))}</code>, parent "
        f"<code>{escape(str(cand.get('parent') or '-'))}</code></p>",
    ]
    body += _metrics(f"Metrics of {cid}", cand.get("metrics") or {})[1:]
    body += _gates(cand.get("gates") or [])[1:]
    if diff:
        body.append(f'<pre class="diff">{_diff_html(diff)}</pre>')
    elif cand.get("diff_summary"):
        body.append(f"<p>Changed: {escape(str(cand['diff_summary']))}</p>")
    state = " open" if opened else ""
    return f'<details id="{escape(cid)}"{state}><summary>{head}</summary>{"".join(body)}</details>'


def _diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        cls = ""
        if line.startswith("+") and not line.startswith("+++"):
            cls = "add"
        elif line.startswith("-") and not line.startswith("---"):
            cls = "del"
        elif line.startswith("@@"):
            cls = "hunk"
        text = escape(line)
        lines.append(f'<span class="{cls}">{text}</span>' if cls else text)
    return "\n".join(lines)


def _tree(payload: Mapping[str, Any], metric: str | None) -> str:
    """Nested lists from each candidate's parent commit: the shape of the experiment."""
    baseline = payload.get("baseline") if isinstance(payload.get("baseline"), Mapping) else {}
    assert isinstance(baseline, Mapping)
    by_commit = {str(baseline.get("commit")): "r0"}
    for cand in candidates(payload):
        if cand.get("commit"):
            by_commit[str(cand["commit"])] = str(cand.get("id"))
    children: dict[str, list[Mapping[str, Any]]] = {}
    for cand in candidates(payload):
        parent = by_commit.get(str(cand.get("parent")), "r0")
        children.setdefault(parent, []).append(cand)
    best = payload.get("best") if isinstance(payload.get("best"), Mapping) else {}
    assert isinstance(best, Mapping)
    best_id = str(best.get("id") or "")

    def node(cid: str, verdict: str, value: float | None) -> str:
        label = f'<a href="#{escape(cid)}">{escape(cid)}</a>' if cid != "r0" else "r0 baseline"
        text = f"{label} {_badge(verdict)}"
        if value is not None:
            text += f" {escape(fmt(value))}"
        if cid == best_id:
            text += " <b>&#9733; best</b>"
        kids = children.get(cid, [])
        if kids:
            text += (
                '<ul class="tree">'
                + "".join(
                    node(
                        str(k.get("id")),
                        str(k.get("verdict") or ""),
                        _compared(k, metric),
                    )
                    for k in kids
                )
                + "</ul>"
            )
        return f"<li>{text}</li>"

    root = node("r0", "baseline", _value(baseline.get("metrics"), metric))
    return f'<ul class="tree root">{root}</ul>'


def convergence_svg(payload: Mapping[str, Any], metric: str, goal: str) -> str:
    """Objective of every candidate in evaluation order (its paired value, on the baseline's
    scale, when it has one), and the incumbent as a step line."""
    baseline = payload.get("baseline") if isinstance(payload.get("baseline"), Mapping) else {}
    assert isinstance(baseline, Mapping)
    base = _value(baseline.get("metrics"), metric)
    points: list[tuple[int, float, str, str]] = []
    steps: list[tuple[int, float]] = []
    unmeasured: list[tuple[int, str, str]] = []
    incumbent = base
    if base is not None:
        points.append((0, base, "baseline", "r0"))
        steps.append((0, base))
    for index, cand in enumerate(candidates(payload), start=1):
        value = _compared(cand, metric)
        verdict = str(cand.get("verdict") or "")
        if value is not None and verdict not in ("violation", "failed", "timeout"):
            points.append((index, value, verdict, str(cand.get("id"))))
        else:
            unmeasured.append((index, verdict, str(cand.get("id"))))
        if verdict == "accepted" and value is not None:
            incumbent = value
        if incumbent is not None:
            steps.append((index, incumbent))
    if not points:
        return "<p>No candidate measured the objective.</p>"
    values = [p[1] for p in points]
    log = _is_timing(baseline.get("metrics"), metric) and min(values) > 0
    return _plot(points, steps, unmeasured, log, metric, goal, len(candidates(payload)))


def _is_timing(metrics: Any, name: str) -> bool:
    """Timings (metrics with samples, as benchmarks have) get a log axis."""
    entry = metrics.get(name) if isinstance(metrics, Mapping) else None
    return isinstance(entry, Mapping) and bool(entry.get("samples"))


_LAYOUT = (760, 300, 70, 20, 20, 40)
"""The chart's width, height and left, right, top, bottom margins, in pixels."""


def _plot(
    points: Sequence[tuple[int, float, str, str]],
    steps: Sequence[tuple[int, float]],
    unmeasured: Sequence[tuple[int, str, str]],
    log: bool,
    metric: str,
    goal: str,
    count: int,
) -> str:
    width, height, left, right, top, bottom = _LAYOUT
    scale = (lambda v: math.log10(v)) if log else (lambda v: v)
    ys = [scale(v) for _, v, _, _ in points]
    low, high = min(ys), max(ys)
    if high == low:
        low, high = low - 1.0, high + 1.0
    pad = (high - low) * 0.08
    low, high = low - pad, high + pad
    span_x = max(count, 1)

    def x_of(i: float) -> float:
        return left + (width - left - right) * i / span_x

    def y_of(v: float) -> float:
        return top + (height - top - bottom) * (1 - (scale(v) - low) / (high - low))

    out = _axes(_ticks(low, high, log), y_of, x_of, span_x, log, metric, goal)
    out += _marks(points, steps, unmeasured, x_of, y_of)
    out.append("</svg>")
    legend = " ".join(f"{_badge(v)}" for v in ("baseline", "accepted", "rejected"))
    return "".join(out) + (
        f"<p>Dots: measured candidates ({legend}); crosses on the axis: candidates not "
        "measured (duplicate, violation, failed, timeout); blue line: the incumbent.</p>"
    )


def _axes(
    ticks: Sequence[float],
    y_of: Callable[[float], float],
    x_of: Callable[[float], float],
    span_x: int,
    log: bool,
    metric: str,
    goal: str,
) -> list[str]:
    """The opening ``<svg>``, the plot area, grid lines and the labels of both axes."""
    width, height, left, right, top, bottom = _LAYOUT
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(metric)} per candidate">',
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" fill="#fff" stroke="#d0d7de"/>',
    ]
    for tick in ticks:
        y = y_of(tick)
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eaeef2"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(tick))}</text>'
        )
    for i in range(0, span_x + 1, max(1, span_x // 10)):
        out.append(
            f'<text x="{x_of(i):.1f}" y="{height - bottom + 16}" text-anchor="middle">{i}</text>'
        )
    axis = f"{metric} ({'log scale, ' if log else ''}{'lower' if goal == 'min' else 'higher'} "
    out.append(
        f'<text x="{left}" y="{top - 6}">{escape(axis)}is better)</text>'
        f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">'
        "candidates in evaluation order (0 = baseline)</text>"
    )
    return out


def _marks(
    points: Sequence[tuple[int, float, str, str]],
    steps: Sequence[tuple[int, float]],
    unmeasured: Sequence[tuple[int, str, str]],
    x_of: Callable[[float], float],
    y_of: Callable[[float], float],
) -> list[str]:
    """The incumbent's step line, a dot per measured candidate, a cross per unmeasured one."""
    _, height, _, _, _, bottom = _LAYOUT
    out = []
    if steps:
        path = [f"M{x_of(steps[0][0]):.1f},{y_of(steps[0][1]):.1f}"]
        for i, v in steps[1:]:
            path.append(f"H{x_of(i):.1f}V{y_of(v):.1f}")
        out.append(
            f'<path d="{"".join(path)}" fill="none" stroke="#0969da" stroke-width="2">'
            "<title>incumbent</title></path>"
        )
    for i, v, verdict, cid in points:
        color = VERDICT_COLORS.get(verdict, "#57606a")
        out.append(
            f'<circle cx="{x_of(i):.1f}" cy="{y_of(v):.1f}" r="4.5" fill="{color}">'
            f"<title>{escape(cid)} {escape(verdict)}: {escape(fmt(v))}</title></circle>"
        )
    for i, verdict, cid in unmeasured:
        color = VERDICT_COLORS.get(verdict, "#57606a")
        y = height - bottom - 6
        out.append(
            f'<path d="M{x_of(i) - 4:.1f},{y - 4}l8,8m0,-8l-8,8" stroke="{color}" '
            f'stroke-width="2"><title>{escape(cid)} {escape(verdict)}: not measured</title></path>'
        )
    return out


def _ticks(low: float, high: float, log: bool) -> list[float]:
    """About five round values between ``low`` and ``high`` (in log10 units when ``log``)."""
    if log:
        first, last = math.floor(low), math.ceil(high)
        ticks = [10.0**e * m for e in range(first, last + 1) for m in (1, 2, 5)]
        return [t for t in ticks if low <= math.log10(t) <= high]
    step = 10 ** math.floor(math.log10((high - low) / 5))
    for mult in (1, 2, 5, 10):
        if (high - low) / (step * mult) <= 6:
            step *= mult
            break
    start = math.ceil(low / step) * step
    count = int((high - start) / step) + 1
    return [start + k * step for k in range(count)]
