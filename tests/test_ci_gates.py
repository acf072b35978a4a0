"""Everyday CI use: dataset cases judged by gates, the comparison table, pytest-benchmark
baselines, and the flags pytest users expect (--collect-only, --help, -k/-m)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ci_project import loop_project

from pytest_autopilot.config import GateSpec
from pytest_autopilot.gates import judge_failures, names_dataset
from pytest_autopilot.results import SessionResult, TestResult

WORDS = """\
- {id: a, split: val, word: apple}
- {id: b, split: val, word: banana}
- {id: c, split: val, word: cherry}
- {id: d, split: train, word: date}
"""

SUITE = """\
import pytest

@pytest.mark.dataset("words.yaml")
def test_words(case):
    assert case["word"] not in ("banana", "date")

def test_loss(autopilot):
    autopilot.record("loss", 0.3)
"""


def write_suite(root: Path, gates: list[dict[str, Any]], suite: str = SUITE) -> None:
    (root / "words.yaml").write_text(WORDS)
    (root / "test_suite.py").write_text(suite)
    (root / "autopilot.yaml").write_text(json.dumps({"gates": gates}))


def read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_failing_dataset_cases_are_measurements_when_a_gate_names_their_dataset(
    pytester: pytest.Pytester,
) -> None:
    write_suite(
        pytester.path,
        [{"metric": "words.val.pass_rate", "min": 0.5}, {"metric": "loss", "max": 0.5}],
    )
    result = pytester.runpytest("--autopilot-gate", "--autopilot-json=out.json")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "autopilot: all 2 gates passed",
            "autopilot: 2 dataset cases failed; judged by gate words.val.pass_rate >= 0.5",
            "*2 failed, 3 passed*",
        ]
    )
    data = read(pytester.path / "out.json")
    assert data["passed"] is True
    assert data["judgement"].startswith("2 dataset cases failed; judged by gate")


def test_a_failing_gate_on_the_dataset_fails_the_run(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path, [{"metric": "words.val.pass_rate", "min": 0.9}])
    result = pytester.runpytest("--autopilot-gate", "--autopilot-json=out.json")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["autopilot: FAIL words.val.pass_rate = 0.666667 (min 0.9)"])
    assert read(pytester.path / "out.json")["passed"] is False


def test_without_a_gate_on_the_dataset_pytest_outcome_stands(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path, [{"metric": "loss", "max": 0.5}])
    result = pytester.runpytest("--autopilot-gate", "--autopilot-json=out.json")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "autopilot: all 1 gates passed",
            "autopilot: 2 dataset cases of words failed and no gate names a words metric: "
            "pytest's outcome stands",
        ]
    )
    assert read(pytester.path / "out.json")["passed"] is False


def test_a_failing_test_outside_datasets_always_fails_the_run(pytester: pytest.Pytester) -> None:
    suite = SUITE + "\ndef test_broken():\n    assert False, 'broken'\n"
    write_suite(pytester.path, [{"metric": "words.pass_rate", "min": 0.1}], suite)
    result = pytester.runpytest("--autopilot-gate", "--autopilot-json=out.json")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "autopilot: 2 dataset cases failed; judged by gate words.pass_rate >= 0.1; "
            "1 test outside datasets failed: the run fails"
        ]
    )
    assert read(pytester.path / "out.json")["passed"] is False


def test_judge_failures_is_usable_on_any_session_result() -> None:
    result = SessionResult()
    for nodeid, outcome, dataset in (
        ("t::a", "failed", "words"),
        ("t::b", "error", "words"),
        ("t::c", "failed", "intents"),
        ("t::d", "passed", None),
    ):
        result.tests[nodeid] = TestResult(nodeid, outcome, dataset=dataset)  # type: ignore[arg-type]
    judged = judge_failures([GateSpec("words.val.score", "min", 0.2)], result)
    assert not judged.tests_ok
    assert dict(judged.measured) == {"words": 2}
    assert dict(judged.unjudged) == {"intents": 1}
    assert judge_failures(
        [GateSpec("words.pass_rate", "min", 0.2), GateSpec("intents.test.pass_rate", "min", 0)],
        result,
    ).tests_ok
    assert names_dataset("my.words.val.pass_rate", "my.words")
    assert not names_dataset("words.custom", "words")
    assert not names_dataset("wordsmith.pass_rate", "words")


TIMED = """\
import time

def test_sleep(benchmark):
    benchmark.pedantic(time.sleep, args=(0.0005,), rounds=30, iterations=1)

def test_loss(autopilot):
    autopilot.record("loss", 0.3, goal="min", samples=[0.3] * 6)
"""


def test_comparison_table_in_terminal_json_and_markdown(pytester: pytest.Pytester) -> None:
    (pytester.path / "test_suite.py").write_text(TIMED)
    (pytester.path / "autopilot.yaml").write_text(
        json.dumps({"gates": [{"metric": "test_sleep", "max_regression": 10.0}]})
    )
    saved = pytester.runpytest("--autopilot-save=base.json")
    assert saved.ret == 0, saved.stdout.str()
    result = pytester.runpytest(
        "--autopilot-gate",
        "--autopilot-baseline=base.json",
        "--autopilot-json=out.json",
        "--autopilot-report=report.md",
        "--autopilot-html=report.html",
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "autopilot: this run against the baseline file",
            "autopilot:   metric * baseline * this run * change * gate",
            "autopilot:   loss * 0.3 * 0.3 * +0.0% *",
            "autopilot:   test_sleep * 0.0* 0.0* [[]*] *pass",
        ]
    )
    rows = {row["metric"]: row for row in read(pytester.path / "out.json")["comparison"]}
    assert set(rows) >= {"loss", "test_sleep", "tests.passed"}
    assert rows["test_sleep"]["gate"] == "pass"
    assert rows["test_sleep"]["noise_test"] is True
    assert rows["tests.total"]["noise_test"] is False
    markdown = (pytester.path / "report.md").read_text()
    assert "### Comparison: this run against the baseline" in markdown
    assert "| metric | baseline | this run | change | gate |" in markdown
    html = (pytester.path / "report.html").read_text()
    assert "<h2>This run against the baseline</h2>" in html
    assert "<h2>Gates</h2>" in html and "<h2>Convergence</h2>" not in html


def benchmark_json(with_data: bool) -> dict[str, Any]:
    data = [0.010, 0.011, 0.012, 0.013, 0.030, 0.010, 0.011, 0.012]
    stats: dict[str, Any] = {"min": 0.010, "max": 0.030, "mean": 0.0149, "median": 0.0115}
    if with_data:
        stats["data"] = data
    return {
        "machine_info": {"node": "ci"},
        "version": "5.1.0",
        "benchmarks": [
            {"name": "test_sleep", "fullname": "test_suite.py::test_sleep", "stats": stats}
        ],
    }


@pytest.mark.parametrize("with_data", [True, False])
def test_pytest_benchmark_json_is_a_baseline(pytester: pytest.Pytester, with_data: bool) -> None:
    (pytester.path / "test_suite.py").write_text(TIMED)
    (pytester.path / "autopilot.yaml").write_text(
        "gates:\n  - {metric: test_sleep, max_regression: 0.5}\n"
        "benchmark_statistic: {test_sleep: min}\n"
    )
    (pytester.path / "bench.json").write_text(json.dumps(benchmark_json(with_data)))
    result = pytester.runpytest(
        "--autopilot-gate", "--autopilot-baseline=bench.json", "--autopilot-json=out.json"
    )
    out = result.stdout.str()
    assert "baseline bench.json: pytest-benchmark file, 1 benchmarks" in out
    base = next(
        r for r in read(pytester.path / "out.json")["comparison"] if r["metric"] == "test_sleep"
    )
    assert base["baseline"] == 0.010  # min, from the data or the summary statistics
    if with_data:
        assert "no noise test is possible" not in out
        assert base["noise_test"] is True
    else:
        assert "without raw data (test_sleep)" in out
        assert "no noise test is possible" in out
        assert base["noise_test"] is False


def test_pytest_benchmark_autosave_directory_and_a_real_file(pytester: pytest.Pytester) -> None:
    (pytester.path / "test_suite.py").write_text(TIMED)
    (pytester.path / "autopilot.yaml").write_text(
        "gates:\n  - {metric: test_sleep, max_regression: 10}\n"
    )
    saved = pytester.runpytest("--benchmark-autosave", "--benchmark-save-data")
    assert saved.ret == 0, saved.stdout.str()
    result = pytester.runpytest("--autopilot-gate", "--autopilot-baseline=.benchmarks")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "autopilot: PASS test_sleep = * (max_regression 1000%, baseline *",
            "*pytest-benchmark file*",
        ]
    )
    result.stdout.no_fnmatch_line("*no noise test*")


def test_benchmark_statistic_must_be_known(pytester: pytest.Pytester) -> None:
    (pytester.path / "test_suite.py").write_text(TIMED)
    (pytester.path / "autopilot.yaml").write_text("benchmark_statistic: {test_sleep: p99}\n")
    result = pytester.runpytest("--autopilot-gate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*benchmark_statistic.test_sleep: expected median, min or mean*"])


def test_collect_only_with_autopilot_runs_no_loop(pytester: pytest.Pytester) -> None:
    loop_project(pytester.path, gates=[{"metric": "not.produced", "min": 1}])
    result = pytester.runpytest("--autopilot", "--collect-only")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(
        [
            "*<Function test_loss>*",
            "autopilot: --collect-only: collected 1 test; no optimization loop was run",
        ]
    )


def test_help_prints_even_with_a_broken_config(pytester: pytest.Pytester) -> None:
    (pytester.path / "autopilot.yaml").write_text("gates: 3\n")
    result = pytester.runpytest("--autopilot", "--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*--autopilot-html=PATH*"])


@pytest.mark.parametrize(
    ("args", "shown"),
    [(["-k", "nothing_here"], "-k 'nothing_here'"), (["-m", "slow"], "-m 'slow'")],
)
def test_a_selection_of_no_test_is_a_usage_error_with_autopilot(
    pytester: pytest.Pytester, args: list[str], shown: str
) -> None:
    loop_project(pytester.path)
    result = pytester.runpytest("--autopilot", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines([f"autopilot: ERROR: {shown} selected no test (1 deselected)*"])
