"""Relative gates without ``--autopilot-baseline``: the loop measures its own baseline."""

from __future__ import annotations

import pytest
from test_loop import candidates, payload, project


def test_loop_judges_relative_gates_against_its_own_baseline(pytester: pytest.Pytester) -> None:
    project(
        pytester.path,
        gates=[{"metric": "loss", "max": 0.5}, {"metric": "loss", "max_regression": 0.05}],
    )
    result = pytester.runpytest("--autopilot", "--autopilot-json=out.json")
    assert result.ret == 0, result.stdout.str()
    data = payload(pytester.path / "out.json")
    assert [c["verdict"] for c in candidates(data)] == ["accepted"] * 3
    relative = [g for g in data["gates"] if g["kind"] == "max_regression"]
    assert len(relative) == 1
    assert relative[0]["passed"] is True


def test_gate_run_refuses_a_relative_gate_without_baseline_before_any_test(
    pytester: pytest.Pytester,
) -> None:
    project(pytester.path, gates=[{"metric": "loss", "max_regression": 0.05}])
    result = pytester.runpytest("--autopilot-gate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*gates[[]0[]]: max_regression on 'loss'*--autopilot-baseline*"])
    result.stdout.no_fnmatch_line("*passed*")
