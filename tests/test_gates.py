"""Gates: absolute and noise-aware relative verdicts, and every way a gate can be unusable."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from pytest_autopilot.config import Acceptance, AutopilotConfig, GateSpec
from pytest_autopilot.gates import evaluate_gates, require_baseline
from pytest_autopilot.results import Metric, SessionResult, TestResult


def samples(seed: int, scale: float = 1.0, n: int = 30, sigma: float = 0.05) -> list[float]:
    rng = random.Random(seed)
    return [0.01 * scale * math.exp(rng.gauss(0, sigma)) for _ in range(n)]


def timing(name: str, seed: int, scale: float = 1.0, nodeid: str | None = None) -> Metric:
    values = samples(seed, scale)
    return Metric(name, sorted(values)[len(values) // 2], "min", values, nodeid)


def session(*metrics: Metric, unmeasured: dict[str, str] | None = None) -> SessionResult:
    result = SessionResult(metrics={m.name: m for m in metrics}, unmeasured=unmeasured or {})
    result.tests["t.py::test_ok"] = TestResult("t.py::test_ok", "passed")
    return result


def config(tmp_path: Path, *gates: GateSpec, run_noise: float | None = None) -> AutopilotConfig:
    return AutopilotConfig(
        path=tmp_path / "autopilot.yaml",
        rootdir=tmp_path,
        gates=gates,
        acceptance=Acceptance(run_noise=run_noise),
    )


def test_absolute_gates(tmp_path: Path) -> None:
    result = session(Metric("loss", 0.3), Metric("acc", 0.9, "max"))
    statuses = evaluate_gates(
        config(
            tmp_path,
            GateSpec("loss", "max", 0.5),
            GateSpec("loss", "max", 0.2),
            GateSpec("acc", "min", 0.9),
            GateSpec("acc", "min", 0.95),
        ),
        result,
        None,
    )
    assert [(s.passed, s.reason) for s in statuses] == [
        (True, "0.3 <= max 0.5"),
        (False, "0.3 > max 0.2"),
        (True, "0.9 >= min 0.9"),
        (False, "0.9 < min 0.95"),
    ]
    assert statuses[0].value == 0.3
    assert (statuses[0].metric, statuses[0].kind, statuses[0].threshold) == ("loss", "max", 0.5)


def test_unmeasured_metric_fails_with_the_reason(tmp_path: Path) -> None:
    result = session(unmeasured={"tests/b.py::test_io": "pytest-benchmark is disabled under xdist"})
    for name in ("tests/b.py::test_io", "test_io"):
        (status,) = evaluate_gates(config(tmp_path, GateSpec(name, "max", 1.0)), result, None)
        assert not status.passed
        assert status.value is None
        assert status.reason == "not measured: pytest-benchmark is disabled under xdist"


def test_metric_no_test_produced_is_a_usage_error(tmp_path: Path) -> None:
    result = session(Metric("test_step_time", 0.01), Metric("tests.total", 3))
    gates = config(
        tmp_path, GateSpec("test_step_time", "max", 1.0), GateSpec("test_step_tim", "max", 1)
    )
    with pytest.raises(pytest.UsageError) as info:
        evaluate_gates(gates, result, None)
    message = str(info.value)
    assert message.startswith("autopilot.yaml: gates[1].metric: expected a metric")
    assert "got 'test_step_tim' (did you mean 'test_step_time'?)" in message
    assert "metrics produced: test_step_time, tests.total" in message


def test_missing_metric_after_a_failed_test_fails_the_gate(tmp_path: Path) -> None:
    result = session(Metric("tests.failed", 1))
    result.tests["t.py::test_loss"] = TestResult("t.py::test_loss", "failed", "boom")
    (status,) = evaluate_gates(config(tmp_path, GateSpec("loss", "max", 1.0)), result, None)
    assert not status.passed
    assert "no test produced this metric" in status.reason


def test_ambiguous_short_name_is_a_usage_error(tmp_path: Path) -> None:
    result = session(
        timing("a.py::test_step", 1, nodeid="a.py::test_step"),
        timing("b.py::test_step", 2, nodeid="b.py::test_step"),
    )
    with pytest.raises(pytest.UsageError) as info:
        evaluate_gates(config(tmp_path, GateSpec("test_step", "max", 1.0)), result, None)
    message = str(info.value)
    assert message.startswith("autopilot.yaml: gates[0].metric:")
    assert "a.py::test_step, b.py::test_step" in message
    (status,) = evaluate_gates(
        config(tmp_path, GateSpec("b.py::test_step", "max", 1)), result, None
    )
    assert status.passed


def test_relative_gate_needs_a_baseline(tmp_path: Path) -> None:
    gates = config(tmp_path, GateSpec("t", "max", 1.0), GateSpec("t", "max_regression", 0.05))
    with pytest.raises(pytest.UsageError) as info:
        evaluate_gates(gates, session(timing("t", 1)), None)
    assert str(info.value).startswith("autopilot.yaml: gates[1]: max_regression on 't'")
    assert "expected --autopilot-baseline PATH" in str(info.value)
    require_baseline(config(tmp_path, GateSpec("t", "max", 1.0)), None)
    require_baseline(gates, Path("baseline.json"))


def test_metric_missing_from_the_baseline_fails(tmp_path: Path) -> None:
    gates = config(tmp_path, GateSpec("t", "max_regression", 0.05), GateSpec("u", "min_gain", 0.1))
    baseline = session(unmeasured={"u": "benchmarks were skipped"})
    statuses = evaluate_gates(gates, session(timing("t", 1), timing("u", 2)), baseline)
    assert [s.passed for s in statuses] == [False, False]
    assert statuses[0].reason.startswith("missing from the baseline")
    assert statuses[1].reason == "the baseline did not measure it (benchmarks were skipped)"


def test_real_regression_fails_and_noise_passes(tmp_path: Path) -> None:
    gates = config(tmp_path, GateSpec("t", "max_regression", 0.05))
    baseline = session(timing("t", 1))
    (slow,) = evaluate_gates(gates, session(timing("t", 2, scale=1.12)), baseline)
    assert not slow.passed
    assert "(95% CI +" in slow.reason
    assert slow.reason.endswith("regression beyond the 5% allowed, beyond noise")
    assert f"vs baseline {baseline.metrics['t'].value:.4g}" in slow.reason
    (same,) = evaluate_gates(gates, session(timing("t", 3)), baseline)
    assert same.passed
    assert "95% CI -" in same.reason


def test_large_but_noisy_difference_is_within_noise(tmp_path: Path) -> None:
    gates = config(tmp_path, GateSpec("t", "max_regression", 0.05), run_noise=0.0)
    noisy_base = Metric("t", 1.0, samples=[1.0, 0.6, 1.5, 0.8, 1.2, 0.7])
    noisy_new = Metric("t", 1.07, samples=[1.07, 0.65, 1.6, 0.86, 1.3, 0.75])
    (status,) = evaluate_gates(gates, session(noisy_new), session(noisy_base))
    assert status.passed
    assert status.reason.endswith("worse by more than 5%, but within noise")


def test_without_samples_values_are_compared_directly(tmp_path: Path) -> None:
    gates = config(tmp_path, GateSpec("acc", "max_regression", 0.05))
    baseline = session(Metric("acc", 0.90, "max"))
    (drop,) = evaluate_gates(gates, session(Metric("acc", 0.80, "max")), baseline)
    assert not drop.passed
    assert drop.reason == (
        "-11.1% vs baseline 0.9: regression beyond the 5% allowed "
        "(values compared directly (no samples))"
    )
    (small,) = evaluate_gates(gates, session(Metric("acc", 0.88, "max")), baseline)
    assert small.passed
    assert "within the 5% allowed" in small.reason


def test_min_gain(tmp_path: Path) -> None:
    gates = config(tmp_path, GateSpec("t", "min_gain", 0.1))
    baseline = session(timing("t", 1))
    (faster,) = evaluate_gates(gates, session(timing("t", 2, scale=0.8)), baseline)
    assert faster.passed
    assert "gain of at least the 10% required, beyond noise" in faster.reason
    (same,) = evaluate_gates(gates, session(timing("t", 3)), baseline)
    assert not same.passed
    (slower,) = evaluate_gates(gates, session(timing("t", 4, scale=1.2)), baseline)
    assert not slower.passed
    assert "no gain" in slower.reason


def test_baseline_found_by_node_id(tmp_path: Path) -> None:
    gates = config(tmp_path, GateSpec("test_step", "max_regression", 0.05))
    current = session(timing("test_step", 2, scale=1.3, nodeid="t.py::test_step"))
    baseline = session(timing("t.py::test_step", 1, nodeid="t.py::test_step"))
    (status,) = evaluate_gates(gates, current, baseline)
    assert not status.passed


# -- end to end, through pytest ----------------------------------------------------------------

TIMED = """
import math, random

def test_step_time(autopilot):
    rng = random.Random({seed})
    samples = [0.01 * {scale} * math.exp(rng.gauss(0, 0.05)) for _ in range(40)]
    autopilot.record("step_time", sorted(samples)[20], samples=samples)
"""


def write_suite(pytester: pytest.Pytester, seed: int, scale: float) -> None:
    pytester.makepyfile(test_timed=TIMED.format(seed=seed, scale=scale))


def test_e2e_unknown_key_exits_4(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", autopilot="budget:\n  round: 3\n")
    write_suite(pytester, 1, 1.0)
    result = pytester.runpytest("--autopilot-gate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*autopilot.yaml: budget.round: unknown key (did you mean 'rounds'?); expected one of*"]
    )
    assert "Traceback" not in result.stderr.str()


def test_e2e_gate_on_a_metric_no_test_produces(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", autopilot="gates:\n  - {metric: step_tme, max: 1}\n")
    write_suite(pytester, 1, 1.0)
    result = pytester.runpytest("--autopilot-gate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(
        ["*autopilot.yaml: gates[[]0[]].metric: expected a metric*'step_tme'*step_time*"]
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "*baseline file *missing.json does not exist*"),
        ("{not json", "*missing.json:1: not valid JSON*"),
        ('{"format": 2, "metrics": {}}', "*metrics format 2 is not supported*"),
        ('{"metrics": {"step_time": {"value": "fast"}}}', "*'value' must be a number*"),
    ],
)
def test_e2e_bad_baseline_file(
    pytester: pytest.Pytester, content: str | None, message: str
) -> None:
    pytester.makefile(".yaml", autopilot="gates:\n  - {metric: step_time, max_regression: 0.05}\n")
    write_suite(pytester, 1, 1.0)
    if content is not None:
        (pytester.path / "missing.json").write_text(content)
    result = pytester.runpytest("--autopilot-gate", "--autopilot-baseline", "missing.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_e2e_relative_gate_without_baseline(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", autopilot="gates:\n  - {metric: step_time, max_regression: 0.05}\n")
    write_suite(pytester, 1, 1.0)
    result = pytester.runpytest("--autopilot-gate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "expected --autopilot-baseline PATH" in result.stdout.str() + result.stderr.str()


def test_e2e_relative_gate_catches_a_regression_not_noise(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", autopilot="gates:\n  - {metric: step_time, max_regression: 0.05}\n")
    write_suite(pytester, 1, 1.0)
    saved = pytester.runpytest("--autopilot-save", "base.json")
    assert saved.ret == pytest.ExitCode.OK
    assert (
        len(
            json.loads((pytester.path / "base.json").read_text())["metrics"]["step_time"]["samples"]
        )
        == 40
    )

    write_suite(pytester, 2, 1.0)
    noise = pytester.runpytest("--autopilot-gate", "--autopilot-baseline", "base.json")
    assert noise.ret == pytest.ExitCode.OK
    noise.stdout.fnmatch_lines(
        ["autopilot: PASS step_time = * (max_regression 5%, baseline *): *95% CI*vs baseline*"]
    )

    write_suite(pytester, 3, 1.12)
    slow = pytester.runpytest(
        "--autopilot-gate", "--autopilot-baseline", "base.json", "--autopilot-json", "out.json"
    )
    assert slow.ret == pytest.ExitCode.TESTS_FAILED
    slow.stdout.fnmatch_lines(
        ["autopilot: FAIL step_time = *: +1*% (95% CI +*)*regression beyond the 5% allowed*"]
    )
    (gate,) = json.loads((pytester.path / "out.json").read_text())["gates"]
    assert (gate["kind"], gate["passed"]) == ("max_regression", False)
