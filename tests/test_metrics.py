"""Metrics recorded during any session: benchmarks, the ``autopilot`` fixture, ``tests.*``."""

from __future__ import annotations

import json
import statistics
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from pytest_autopilot.results import ambiguous_names, read_session_file


def run_and_load(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    result = pytester.runpytest("--autopilot-save", "out.json", *args)
    data = json.loads((pytester.path / "out.json").read_text())
    assert isinstance(data, dict)
    return result, data


def test_benchmark_tests_become_metrics_with_their_samples(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_loader="""
        import pytest

        def work(n):
            return sum(range(n))

        def test_step_time(benchmark):
            benchmark.pedantic(work, args=(1000,), rounds=7, warmup_rounds=1)

        @pytest.mark.parametrize("size", [10, 100], ids=["small", "large"])
        def test_sized(benchmark, size):
            benchmark.pedantic(work, args=(size,), rounds=3)
        """
    )
    result, data = run_and_load(pytester)
    result.assert_outcomes(passed=3)
    metric = data["metrics"]["test_step_time"]
    assert metric["goal"] == "min"
    assert metric["nodeid"] == "test_loader.py::test_step_time"
    assert len(metric["samples"]) == 7
    assert metric["value"] == statistics.median(metric["samples"])
    assert all(s > 0 for s in metric["samples"])
    assert len(data["metrics"]["test_sized[small]"]["samples"]) == 3
    assert data["metrics"]["test_sized[large]"]["nodeid"] == "test_loader.py::test_sized[large]"
    saved = read_session_file(pytester.path / "out.json")
    assert saved.resolve("test_loader.py::test_step_time") == saved.metrics["test_step_time"]


def test_shared_short_names_are_stored_by_node_id(pytester: pytest.Pytester) -> None:
    body = "def test_time(benchmark):\n    benchmark.pedantic(sum, args=([1, 2],), rounds=2)\n"
    pytester.makepyfile(test_a=body, test_b=body)
    _, data = run_and_load(pytester)
    assert "test_time" not in data["metrics"]
    assert {"test_a.py::test_time", "test_b.py::test_time"} <= set(data["metrics"])
    saved = read_session_file(pytester.path / "out.json")
    assert ambiguous_names(saved.metrics.values()) == {
        "test_time": ["test_a.py::test_time", "test_b.py::test_time"]
    }


def test_failed_or_unused_benchmark_is_unmeasured(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_broken(benchmark):
            benchmark.pedantic(sum, args=([1],), rounds=2)
            assert False, "wrong answer"

        def test_unused(benchmark):
            pass
        """
    )
    _, data = run_and_load(pytester)
    assert data["metrics"].keys() >= {"tests.failed"}
    assert "test_broken" not in data["metrics"]
    assert data["unmeasured"]["test_broken"].startswith("the benchmark test failed: ")
    assert "wrong answer" in data["unmeasured"]["test_broken"]
    assert data["unmeasured"]["test_unused"] == "the test never called its benchmark fixture"


def test_benchmark_disabled_is_unmeasured(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_t(benchmark):\n    benchmark(sum, [1])\n")
    _, data = run_and_load(pytester, "--benchmark-disable")
    assert "--benchmark-disable" in data["unmeasured"]["test_t"]


def test_fixture_records_metrics_and_feedback(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import numpy as np

        def test_quality(autopilot):
            autopilot.record("accuracy", 0.9, goal="max")
            autopilot.record("latency", np.float64(0.25), samples=[0.2, 0.3, np.float32(0.25)])
            autopilot.feedback("accuracy dropped on long inputs")

        def test_failing(autopilot):
            autopilot.feedback("tried a smaller buffer")
            assert 2 + 2 == 5
        """
    )
    result, data = run_and_load(pytester)
    result.assert_outcomes(passed=1, failed=1)
    assert data["metrics"]["accuracy"] == {"value": 0.9, "goal": "max"}
    assert data["metrics"]["latency"] == {"value": 0.25, "goal": "min", "samples": [0.2, 0.3, 0.25]}
    tests = data["tests"]
    assert tests["test_fixture_records_metrics_and_feedback.py::test_quality"] == {
        "outcome": "passed",
        "notes": ["accuracy dropped on long inputs"],
    }
    failing = tests["test_fixture_records_metrics_and_feedback.py::test_failing"]
    assert failing["outcome"] == "failed"
    assert failing["notes"] == ["tried a smaller buffer"]
    assert failing["message"] == "assert (2 + 2) == 5"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ('record("x", float("nan"))', "value must be a finite number, got nan"),
        ('record("x", True)', "value must be a number, got bool True"),
        ('record("x", "1")', "value must be a number, got str '1'"),
        ('record("x", 1, goal="down")', "goal must be 'min' or 'max', got 'down'"),
        ('record("x", 1, samples=[])', "samples must not be empty"),
        ('record("x", 1, samples=[1, float("inf")])', "each sample must be a finite number"),
        ('record("x", 1, samples="12")', "samples must be a sequence of numbers"),
        ('record("", 1)', "name must be a non-empty string"),
        ('record("tests.passed", 1)', "reserved for the session"),
        ('record("x", 1); autopilot.record("x", 2)', "this test already recorded 'x'"),
        ("feedback(3)", "text must be a non-empty string, got 3"),
        ('score(float("inf"))', "autopilot.score() works only in a dataset test"),
    ],
)
def test_fixture_refuses_bad_arguments(pytester: pytest.Pytester, call: str, message: str) -> None:
    pytester.makepyfile(f"def test_bad(autopilot):\n    autopilot.{call}\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"E   *{message}*"])


def test_one_name_recorded_by_two_tests_is_unmeasured(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_a(autopilot):
            autopilot.record("loss", 1.0)

        def test_b(autopilot):
            autopilot.record("loss", 2.0)
        """
    )
    _, data = run_and_load(pytester)
    assert "loss" not in data["metrics"]
    assert "recorded by test_" in data["unmeasured"]["loss"]
    assert "distinct name" in data["unmeasured"]["loss"]


def test_session_counts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def broken():
            raise RuntimeError("setup broke")

        @pytest.fixture
        def bad_teardown():
            yield
            raise RuntimeError("teardown broke")

        def test_pass(): pass
        def test_fail(): assert 0
        def test_error(broken): pass
        def test_teardown_error(bad_teardown): pass
        @pytest.mark.skip(reason="no")
        def test_skip(): pass
        @pytest.mark.xfail(reason="known")
        def test_xfail(): assert 0
        @pytest.mark.xfail(reason="fixed?")
        def test_xpass(): pass
        """
    )
    _, data = run_and_load(pytester)
    values = {name: m["value"] for name, m in data["metrics"].items()}
    assert values == {"tests.passed": 2, "tests.failed": 3, "tests.total": 7}
    outcomes = {nodeid.split("::")[1]: t["outcome"] for nodeid, t in data["tests"].items()}
    assert outcomes == {
        "test_pass": "passed",
        "test_fail": "failed",
        "test_error": "error",
        "test_teardown_error": "error",
        "test_skip": "skipped",
        "test_xfail": "skipped",
        "test_xpass": "passed",
    }
    assert data["tests"]["test_session_counts.py::test_error"]["message"] == (
        "RuntimeError: setup broke"
    )
    assert data["protected_files"] == ["test_session_counts.py"]


def test_a_module_that_fails_to_import_counts_as_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n", test_bad="import not_a_module\n")
    _, data = run_and_load(pytester, "--continue-on-collection-errors")
    values = {name: m["value"] for name, m in data["metrics"].items()}
    assert values == {"tests.passed": 1, "tests.failed": 1, "tests.total": 2}
    bad = data["tests"]["test_bad.py"]
    assert bad["outcome"] == "error"
    assert "No module named 'not_a_module'" in bad["message"]


def test_metrics_go_into_junit_xml(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_a(autopilot):
            autopilot.record("loss", 0.125)

        def test_b(benchmark):
            benchmark.pedantic(sum, args=([1],), rounds=2)
        """
    )
    pytester.runpytest("--junitxml", "junit.xml").assert_outcomes(passed=2)
    suite = ET.parse(pytester.path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    props = {p.get("name"): p.get("value") for p in suite.iterfind("properties/property")}
    assert props["autopilot.loss"] == "0.125"
    assert props["autopilot.tests.passed"] == "2"
    assert props["autopilot.tests.total"] == "2"
    assert float(props["autopilot.test_b"] or "nan") > 0
