"""``--autopilot-html``: one self-contained page built from the loop's payload and git diffs."""

from __future__ import annotations

import re
from typing import Any

import pytest
from ci_project import loop_project

from pytest_autopilot.html_report import render_html


def test_a_real_loop_writes_a_self_contained_report(pytester: pytest.Pytester) -> None:
    loop_project(pytester.path, budget={"rounds": 2, "candidates": 1, "patience": 3})
    out = pytester.path.parent / f"{pytester.path.name}-report.html"
    result = pytester.runpytest("--autopilot", f"--autopilot-html={out}")
    assert result.ret == 1, result.stdout.str()  # two rounds do not reach loss <= 0.6
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|<link|src=|https?://(?!www\.w3\.org/2000/svg)", html)
    assert "<h2>Convergence</h2>" in html and "<svg" in html
    assert "log scale" not in html  # loss is a recorded number, not a timing
    assert html.count("<circle") == 3  # baseline and two accepted candidates
    assert '<a href="#r1c1">r1c1</a>' in html and '<ul class="tree">' in html
    for cid in ("r1c1", "r2c1"):
        assert f'<details id="{cid}"' in html
    assert '<span class="del">-{&quot;x&quot;: 0}</span>' in html
    assert '<span class="add">+{&quot;x&quot;: 1}</span>' in html
    assert "Reason:</b> loss -" in html
    assert "<h2>Gates</h2>" in html and "loss" in html
    assert "<h2>Best against the baseline</h2>" in html


def payload(values: list[float | None], verdicts: list[str]) -> dict[str, Any]:
    def metrics(value: float) -> dict[str, Any]:
        return {"step": {"value": value, "goal": "min", "samples": [value] * 8}}

    cands = [
        {
            "id": f"r{i}c1",
            "commit": f"c{i}",
            "parent": "c0",
            "verdict": verdict,
            "reason": "<because>",
            "metrics": metrics(value) if value is not None else {},
        }
        for i, (value, verdict) in enumerate(zip(values, verdicts, strict=True), start=1)
    ]
    return {
        "experiment": "t",
        "objective": {"metric": "step", "goal": "min"},
        "rounds": [{"round": 1, "candidates": cands}],
        "baseline": {"commit": "c0", "metrics": metrics(0.1)},
        "best": {"id": "r2c1", "commit": "c2", "metrics": metrics(0.001)},
        "gates": [
            {
                "metric": "step",
                "kind": "max",
                "threshold": 0.01,
                "value": 0.001,
                "passed": True,
                "reason": "0.001 <= max 0.01",
            }
        ],
        "passed": True,
    }


def test_timings_get_a_log_axis_and_the_incumbent_steps_down() -> None:
    html = render_html(payload([0.2, 0.001, None], ["rejected", "accepted", "violation"]))
    assert "step (log scale, lower is better)" in html
    (path,) = re.findall(r'<path d="(M[^"]*)" fill="none"', html)
    assert path.count("H") == 3  # one horizontal step per candidate
    ys = [float(y) for y in re.findall(r"V([\d.]+)", path)]
    assert ys[1] > ys[0]  # accepted 0.001 sits lower on screen than the baseline's 0.1
    assert "r3c1 violation: not measured" in html
    assert "&lt;because&gt;" in html and "<because>" not in html
    assert "0.001 &lt;= max 0.01" in html
    assert "<b>&#9733; best</b>" in html


def test_a_candidate_is_shown_and_plotted_at_its_paired_value() -> None:
    """Measured beside its incumbent, a no-op read 0.13 against the baseline's 0.1 measured
    alone; its paired value (0.1) is what the page shows and plots, level with the baseline."""
    data = payload([0.13], ["rejected"])
    data["rounds"][0]["candidates"][0]["paired_value"] = 0.1
    html = render_html(data)
    assert "r1c1</b> " in html and "step = 0.1<" in html and "step = 0.13<" not in html
    heights = re.findall(r'<circle cx="[\d.]+" cy="([\d.]+)"', html)
    assert len(heights) == 2 and heights[0] == heights[1]
