"""pytest-xdist: workers' records merged on the controller give the serial run's metrics."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml  # noqa: F401  (kept imported: pytester would drop and re-import its C extension)

SUITE = {
    "test_cases": """
        import pytest

        @pytest.mark.dataset("data/words.yaml")
        def test_word(case, autopilot):
            autopilot.score(len(case["w"]) / 10)
            assert case["w"].isalpha(), f"{case['w']!r} is not a word"

        @pytest.mark.parametrize("n", range(12))
        def test_many(n, autopilot):
            autopilot.record(f"value_{n}", n * 0.1, goal="max", samples=[n, n + 0.5])
            if n == 7:
                autopilot.feedback("seven is odd")
            assert n != 5
    """,
    "test_bench": """
        def test_step_time(benchmark):
            benchmark.pedantic(sum, args=(range(100),), rounds=3)
    """,
}
WORDS = "".join(
    f"- {{id: w{i}, w: {w}}}\n"
    for i, w in enumerate(["apple", "pear", "b4nana", "kiwi", "fig", "plum", "x1", "lime"])
)


def make_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**SUITE)
    pytester.makefile(".yaml", **{"data/words": WORDS})


def saved(pytester: pytest.Pytester, name: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--autopilot-save", name, *args
    )
    data = json.loads((pytester.path / name).read_text())
    assert isinstance(data, dict)
    return int(result.ret), data


def test_xdist_metrics_equal_serial_metrics(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    ret_serial, serial = saved(pytester, "serial.json")
    ret_dist, dist = saved(pytester, "dist.json", "-n", "2")
    assert ret_serial == ret_dist == pytest.ExitCode.TESTS_FAILED
    bench = serial["metrics"].pop("test_step_time")
    assert len(bench["samples"]) == 3
    assert "test_step_time" not in dist["metrics"]
    assert dist["unmeasured"] == {
        "test_step_time": "pytest-benchmark is disabled under pytest-xdist (-n 2); "
        "run without -n to measure it"
    }
    assert dist["metrics"] == serial["metrics"]
    for tests in (serial["tests"], dist["tests"]):
        for test in tests.values():
            if "message" in test:  # its explanation shows object addresses: first line only
                test["message"] = test["message"].splitlines()[0]
    assert dist["tests"] == serial["tests"]
    assert serial["tests"]["test_cases.py::test_word[w6]"]["message"] == (
        "AssertionError: 'x1' is not a word"
    )
    assert dist["protected_files"] == serial["protected_files"]
    assert serial["metrics"]["tests.total"]["value"] == 21
    assert serial["metrics"]["words.pass_rate"]["value"] == 0.75
    assert serial["metrics"]["value_11"]["samples"] == [11, 11.5]
    seven = serial["tests"]["test_cases.py::test_many[7]"]
    assert seven["notes"] == ["seven is odd"]


def test_gate_on_benchmark_unmeasured_under_xdist_fails_with_the_reason(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_bench=SUITE["test_bench"])
    pytester.makefile(".yaml", autopilot="gates:\n  - {metric: test_step_time, max: 10.0}\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--autopilot-gate")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["autopilot: FAIL test_step_time = not measured (max 10)*disabled under pytest-xdist*"]
    )
    serial = pytester.runpytest("-p", "no:cacheprovider", "--autopilot-gate")
    assert serial.ret == 0
    serial.stdout.fnmatch_lines(["autopilot: PASS test_step_time = * (max 10)*"])


def test_without_xdist_plugin(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    result = pytester.runpytest("-p", "no:xdist", "--autopilot-save", "m.json")
    result.assert_outcomes(passed=18, failed=3)
    data = json.loads((pytester.path / "m.json").read_text())
    assert data["metrics"]["words.pass_rate"]["value"] == 0.75
    assert len(data["metrics"]["test_step_time"]["samples"]) == 3
