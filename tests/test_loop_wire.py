"""The loop as a user meets it: live progress lines in a CI log, and failing dataset cases that
the gates judge instead of rejecting every candidate."""

from __future__ import annotations

import re

import pytest
import yaml  # noqa: F401  (in-process pytester runs must not re-import its C loader)
from loophelpers import OBJECTIVE_TEST, candidates, payload, project

SLOW_TEST = OBJECTIVE_TEST.replace(
    "def test_loss(autopilot):\n",
    "def test_loss(autopilot):\n    import time\n    time.sleep(1.5)\n",
)


def test_a_ci_log_gets_plain_periodic_progress_lines_while_a_candidate_runs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_AUTOPILOT_PROGRESS_INTERVAL", "0.2")
    project(pytester.path, test=SLOW_TEST, budget={"rounds": 1})
    result = pytester.runpytest("--autopilot")
    out = result.stdout.str()
    assert result.ret == 1, out  # one round cannot reach the gate
    running = [
        line
        for line in result.outlines
        if re.fullmatch(
            r"autopilot: round 1/1 \| running r1c1 \d+s \| best loss 9 \(r0\) "
            r"\| left 1 rounds, \S+.*",
            line,
        )
    ]
    assert len(running) >= 2, out  # periodic, not once per event
    assert "\r" not in out and "\x1b" not in out
    result.stdout.fnmatch_lines(["autopilot: r1c1 x=1 loss 9 -> 4 (-56%) accepted"])


def test_a_progress_interval_that_is_not_a_number_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_AUTOPILOT_PROGRESS_INTERVAL", "soon")
    project(pytester.path, budget={"rounds": 1})
    result = pytester.runpytest("--autopilot")
    assert result.ret == 4
    result.stdout.fnmatch_lines(
        ["*PYTEST_AUTOPILOT_PROGRESS_INTERVAL='soon': expected a positive number of seconds*"]
    )


WORDS = """\
- {id: a, split: val, word: apple}
- {id: b, split: val, word: banana}
- {id: c, split: val, word: cherry}
- {id: d, split: train, word: date}
"""

WORDS_TEST = """\
import pytest

@pytest.mark.dataset("words.yaml")
def test_words(case):
    assert case["word"] != "banana"
"""


def dataset_project(pytester: pytest.Pytester, extra_test: str = "") -> None:
    gates = [{"metric": "words.val.pass_rate", "min": 0.5}, {"metric": "loss", "max": 0.5}]
    repo = project(pytester.path, gates=gates)
    repo.commit("a dataset", {"words.yaml": WORDS, "test_words.py": WORDS_TEST + extra_test})


def test_failing_dataset_cases_under_a_gate_are_measurements_in_the_loop(
    pytester: pytest.Pytester,
) -> None:
    dataset_project(pytester)
    result = pytester.runpytest("--autopilot", "--autopilot-json=out.json")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "autopilot: r1c1 x=1 loss 9 -> 4 (-56%) accepted",
            "autopilot: r3c1 x=3 loss 1 -> 0 (-100%) accepted",
            "autopilot: experiment demo stopped: all gates pass *",
            "autopilot: r3c1: 1 dataset case failed; judged by gate words.val.pass_rate >= 0.5",
        ]
    )
    data = payload(pytester.path / "out.json")
    assert [c["verdict"] for c in candidates(data)] == ["accepted"] * 3
    assert data["passed"] is True
    assert data["judgement"].startswith("1 dataset case failed; judged by gate")


def test_a_failing_test_outside_datasets_fails_the_loop_even_when_the_gates_pass(
    pytester: pytest.Pytester,
) -> None:
    dataset_project(pytester, "\ndef test_broken():\n    assert False\n")
    result = pytester.runpytest("--autopilot", "--autopilot-json=out.json")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["autopilot: r3c1: *1 test outside datasets failed: the run fails*"]
    )
    data = payload(pytester.path / "out.json")
    assert data["passed"] is False
    assert all(gate["passed"] for gate in data["gates"])
