"""Gate verdict lines, the JSON result, the Markdown report, and the files the flags write."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_autopilot.proposals import GateStatus
from pytest_autopilot.report import build_payload, gate_lines, render_markdown
from pytest_autopilot.results import Metric, SessionResult, TestResult


def session(**values: float) -> SessionResult:
    return SessionResult(metrics={n: Metric(n, v) for n, v in values.items()})


def test_gate_lines_name_metric_value_threshold_baseline_and_verdict() -> None:
    statuses = [
        GateStatus("test_step_time", "max", 0.012, 0.0123, False, "0.0123 > 0.012"),
        GateStatus("test_step_time", "max_regression", 0.05, 0.0121, True, "within noise"),
        GateStatus("test_io", "max", 1.0, None, False, "not measured: disabled under xdist"),
    ]
    lines = gate_lines(statuses, baseline=session(test_step_time=0.012))
    assert lines == [
        "autopilot: FAIL test_step_time = 0.0123 (max 0.012)",
        "autopilot: PASS test_step_time = 0.0121 (max_regression 5%, baseline 0.012): within noise",
        "autopilot: FAIL test_io = not measured (max 1): not measured: disabled under xdist",
        "autopilot: 2 of 3 gates failed",
    ]
    assert gate_lines([GateStatus("m", "min", 1, 2, True, "")]) == [
        "autopilot: PASS m = 2 (min 1)",
        "autopilot: all 1 gates passed",
    ]


def test_payload_passes_only_with_passing_gates_and_tests() -> None:
    result = session(loss=0.5)
    result.tests["t.py::test_a"] = TestResult("t.py::test_a", "passed")
    ok = GateStatus("loss", "max", 1.0, 0.5, True, "")
    bad = GateStatus("loss", "max", 0.1, 0.5, False, "too high")
    payload = build_payload(result, [ok])
    assert payload["format"] == 1
    assert payload["passed"] is True
    assert payload["metrics"] == {"loss": {"value": 0.5, "goal": "min"}}
    assert payload["gates"][0] == {
        "metric": "loss",
        "kind": "max",
        "threshold": 1.0,
        "value": 0.5,
        "passed": True,
        "reason": "",
    }
    assert payload["tests"] == {"t.py::test_a": {"outcome": "passed"}}
    assert build_payload(result, [ok, bad])["passed"] is False
    result.tests["t.py::test_b"] = TestResult("t.py::test_b", "error", "boom")
    assert build_payload(result, [ok])["passed"] is False
    merged = build_payload(result, [bad], {"passed": True, "rounds": [], "gates": []})
    assert merged["passed"] is True
    assert merged["rounds"] == []


def loop_payload() -> dict[str, Any]:
    def metrics(v: float) -> dict[str, Any]:
        return {"test_step_time": {"value": v, "goal": "min"}}

    return {
        "objective": {"metric": "test_step_time", "goal": "min"},
        "rounds": [
            {
                "round": 1,
                "candidates": [
                    {
                        "id": "r1c1",
                        "commit": "c1",
                        "parent": "b0",
                        "verdict": "accepted",
                        "reason": "10% faster",
                        "metrics": metrics(0.9),
                    },
                    {
                        "id": "r1c2",
                        "commit": "c2",
                        "parent": "b0",
                        "verdict": "rejected",
                        "reason": "no gain",
                        "metrics": metrics(1.1),
                    },
                ],
            },
            {
                "round": 2,
                "candidates": [
                    {
                        "id": "r2c1",
                        "commit": "c3",
                        "parent": "c1",
                        "verdict": "failed",
                        "reason": "test_x failed",
                        "metrics": {},
                    },
                ],
            },
        ],
        "baseline": {"commit": "b0", "metrics": metrics(1.0)},
        "best": {"commit": "c1", "branch": "autopilot/fast", "metrics": metrics(0.9)},
    }


def test_markdown_report_of_a_loop() -> None:
    payload = build_payload(
        session(test_step_time=1.0),
        [GateStatus("test_step_time", "max", 0.95, 0.9, True, "")],
        loop_payload(),
    )
    md = render_markdown(payload)
    assert "**Result: passed**" in md
    assert "| test_step_time | max 0.95 | 0.9 | pass |  |" in md
    assert "| 1 | r1c1 | b0 | c1 | 0.9 | accepted | 10% faster |" in md
    assert "| 2 | r2c1 | c1 | c3 | n/a | failed | test_x failed |" in md
    assert 'x-axis "round" [0, 1, 2]' in md
    assert "    line [1, 0.9, 0.9]" in md
    assert "    bar [1, 0.9, 0.9]" in md
    assert "xychart-beta" in md
    assert "### Metrics of round 0 (this session)" in md
    assert '    r0["r0 baseline<br/>1"]' in md
    assert "    r0 --> r1c1" in md
    assert "    r0 --> r1c2" in md
    assert "    r1c1 --> r2c1" in md
    assert "on branch `autopilot/fast`, test_step_time = 0.9 (baseline 1)" in md
    assert "`git merge autopilot/fast`" in md


def test_markdown_report_without_a_loop_has_no_loop_sections() -> None:
    result = session(loss=0.5)
    result.unmeasured["test_t"] = "pytest-benchmark is disabled under pytest-xdist (-n 2)"
    md = render_markdown(build_payload(result, []))
    assert "| loss | 0.5 | min |  |" in md
    assert "| test_t | pytest-benchmark is disabled under pytest-xdist (-n 2) |" in md
    assert "Rounds" not in md
    assert "mermaid" not in md


SUITE = """
def test_quality(autopilot):
    autopilot.record("accuracy", 0.8, goal="max", samples=[0.8, 0.79, 0.81, 0.8, 0.8])

def test_other():
    pass
"""


def write_config(pytester: pytest.Pytester, gates: str) -> None:
    pytester.makefile(".yaml", autopilot=f"gates:\n{gates}")


def test_gate_pass_and_fail_set_the_exit_status(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    write_config(
        pytester, "  - {metric: accuracy, min: 0.75}\n  - {metric: tests.failed, max: 0}\n"
    )
    result = pytester.runpytest("--autopilot-gate")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "autopilot: PASS accuracy = 0.8 (min 0.75)*",
            "autopilot: PASS tests.failed = 0 (max 0)*",
            "autopilot: all 2 gates passed",
        ]
    )
    write_config(pytester, "  - {metric: accuracy, min: 0.9}\n")
    result = pytester.runpytest("--autopilot-gate", "--autopilot-json", "r.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["autopilot: FAIL accuracy = 0.8 (min 0.9)*", "*1 of 1 gates*"])
    data = json.loads((pytester.path / "r.json").read_text())
    assert data["passed"] is False
    assert data["gates"][0]["metric"] == "accuracy"
    assert data["gates"][0]["passed"] is False
    assert data["metrics"]["accuracy"]["value"] == 0.8


def test_failing_tests_keep_their_exit_status_and_gates_are_still_shown(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(SUITE + "\ndef test_broken():\n    assert 0\n")
    write_config(pytester, "  - {metric: tests.failed, max: 0}\n")
    result = pytester.runpytest("--autopilot-gate")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["autopilot: FAIL tests.failed = 1 (max 0)*"])


def test_gate_on_unknown_metric_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    write_config(pytester, "  - {metric: no_such_metric, max: 1}\n")
    result = pytester.runpytest("--autopilot-gate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["autopilot: ERROR: *no_such_metric*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_relative_gate_against_a_saved_baseline(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    assert pytester.runpytest("--autopilot-save", "base.json").ret == 0
    base = json.loads((pytester.path / "base.json").read_text())
    assert base["format"] == 1
    assert base["metrics"]["accuracy"]["samples"] == [0.8, 0.79, 0.81, 0.8, 0.8]
    write_config(pytester, "  - {metric: accuracy, min_gain: 0.0}\n")
    pytester.makepyfile(SUITE.replace("0.8", "0.5"))
    result = pytester.runpytest("--autopilot-gate", "--autopilot-baseline", "base.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["autopilot: FAIL accuracy = 0.5 (min_gain 0%, baseline 0.8)*"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "baseline file */missing.json does not exist"),
        ("{not json", "*missing.json:1: not valid JSON*"),
        ('{"format": 7, "metrics": {}}', "*missing.json: metrics format 7 is not supported*"),
        ('{"values": {}}', "*missing.json: not a pytest-autopilot metrics file*"),
    ],
    ids=["missing", "invalid", "format", "shape"],
)
def test_bad_baseline_fails_before_the_session(
    pytester: pytest.Pytester, content: str | None, message: str
) -> None:
    pytester.makepyfile(SUITE)
    write_config(pytester, "  - {metric: accuracy, max_regression: 0.05}\n")
    if content is not None:
        (pytester.path / "missing.json").write_text(content)
    result = pytester.runpytest("--autopilot-gate", "--autopilot-baseline", "missing.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "passed" not in result.stdout.str()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--autopilot-rounds", "0"], "*--autopilot-rounds: expected a positive integer, got '0'"),
        (["--autopilot-candidates", "x"], "*--autopilot-candidates: expected a positive integer*"),
        (["--autopilot-experiment", "a b"], "*--autopilot-experiment: expected a name of *"),
        (["--autopilot-optimizer", "-x"], "*expected one argument*"),
        (["--autopilot-json", ""], "*--autopilot-json: expected a file path*"),
        (["--autopilot-rounds", "3"], "ERROR: --autopilot-rounds works only with --autopilot"),
        (["--autopilot-apply"], "ERROR: --autopilot-apply works only with --autopilot"),
        (["--autopilot-baseline", "b.json"], "ERROR: --autopilot-baseline works only with *"),
    ],
)
def test_bad_flags_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_markdown_report_and_github_step_summary(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(SUITE)
    write_config(pytester, "  - {metric: accuracy, min: 0.5}\n")
    summary = pytester.path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = pytester.runpytest(
        "--autopilot-gate", "--autopilot-report", "out/report.md", "--autopilot-save", "m.json"
    )
    assert result.ret == 0
    report = (pytester.path / "out" / "report.md").read_text()
    assert "| accuracy | min 0.5 | 0.8 | pass | 0.8 >= min 0.5 |" in report
    assert "| accuracy | 0.8 | max | 5 |" in report
    assert summary.read_text() == "earlier step\n" + report + "\n"
    result.stdout.fnmatch_lines(["autopilot: wrote m.json", "autopilot: wrote out/report.md"])


def test_loop_flag_wires_prepare_and_run_loop(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in controller: this checks the plugin's wiring, not the loop."""
    calls: list[str] = []

    @dataclass
    class Outcome:
        exit_status: int
        payload: dict[str, Any]

    def prepare_loop(pytest_config: pytest.Config, autopilot_config: Any) -> None:
        calls.append(f"prepare {autopilot_config.experiment} {autopilot_config.budget.rounds}")

    def run_loop(pytest_config: pytest.Config, autopilot_config: Any, result: Any) -> Outcome:
        calls.append(f"run {sorted(result.metrics)}")
        return Outcome(
            2, {"rounds": [], "baseline": {"commit": "b0", "metrics": {}}, "passed": False}
        )

    controller = types.ModuleType("pytest_autopilot.loop.controller")
    controller.prepare_loop = prepare_loop  # type: ignore[attr-defined]
    controller.run_loop = run_loop  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pytest_autopilot.loop.controller", controller)
    pytester.makepyfile(SUITE)
    write_config(pytester, "  - {metric: accuracy, min: 0.5}\n")
    result = pytester.runpytest(
        "--autopilot",
        "--autopilot-experiment",
        "exp1",
        "--autopilot-rounds",
        "3",
        "--autopilot-json",
        "loop.json",
    )
    assert result.ret == 2
    assert calls == [
        "prepare exp1 3",
        "run ['accuracy', 'tests.failed', 'tests.passed', 'tests.total']",
    ]
    data = json.loads(Path(pytester.path / "loop.json").read_text())
    assert data["rounds"] == []
    assert data["baseline"]["commit"] == "b0"
    assert data["passed"] is False
    assert data["gates"][0]["metric"] == "accuracy"

    calls.clear()
    pytester.makepyfile(test_broken="def test_(:\n")
    result = pytester.runpytest("--autopilot")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert calls == ["prepare default 20"]
    result.stdout.fnmatch_lines(
        ["autopilot: ERROR: the session ended with exit status 2*: no optimization loop"]
    )


def test_gates_are_not_checked_after_a_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE, test_broken="import no_such_module_here\n")
    write_config(pytester, "  - {metric: accuracy, min: 0.5}\n")
    result = pytester.runpytest("--autopilot-gate")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["autopilot: ERROR: the session ended with exit status 2*checked"])
    result = pytester.runpytest("--autopilot-gate", "--continue-on-collection-errors")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["autopilot: PASS accuracy = 0.8 (min 0.5)"])


def test_gate_without_gates_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--autopilot-gate")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["autopilot: no gates to check (add `gates:` to autopilot.yaml)"])
