"""The executor seam's shared parts: reading what a session left, retrying a killed session.

The sessions here are tiny real processes (``python -c``) rather than pytest runs, so that the
retry and the reader are shown on real exit codes and real files in a fraction of a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_autopilot.loop.executor import Evaluation, evaluate_with_retry, read_result
from pytest_autopilot.loop.process import output_tail
from pytest_autopilot.results import Metric, SessionResult

SESSION = """\
import os, pathlib, signal, sys
here = pathlib.Path(sys.argv[1])
attempt = len(list(here.glob("attempt-*"))) + 1
(here / f"attempt-{attempt}").write_text("")
print(f"attempt {attempt} starting")
if attempt <= int(sys.argv[2]):
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
(here / "result.json").write_text(sys.argv[3])
"""
"""Killed by SIGKILL on its first ``argv[2]`` attempts; then writes ``argv[3]`` as its result."""


def result_json(loss: float) -> str:
    result = SessionResult(metrics={"loss": Metric("loss", loss, "min")})
    return json.dumps(result.to_json())


def session_attempt(tmp_path: Path, killed: int) -> tuple[list[Evaluation], Evaluation]:
    """Run :data:`SESSION` through :func:`evaluate_with_retry`; every attempt and the outcome."""
    attempts: list[Evaluation] = []

    def attempt() -> Evaluation:
        evaluation = Evaluation("r1c1", "c0ffee", "interrupted", started=time.time())
        log = tmp_path / f"log-{len(attempts) + 1}.txt"
        with open(log, "wb") as out:
            code = subprocess.call(
                [sys.executable, "-c", SESSION, str(tmp_path), str(killed), result_json(4.0)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        evaluation.exit_code = code
        evaluation.finished = time.time()
        read_result(evaluation, tmp_path / "result.json", log)
        attempts.append(evaluation)
        return evaluation

    return attempts, evaluate_with_retry(attempt)


def test_a_session_killed_by_a_signal_is_run_once_more_and_the_first_reason_kept(
    tmp_path: Path,
) -> None:
    attempts, evaluation = session_attempt(tmp_path, killed=1)
    assert len(attempts) == 2
    assert evaluation.status == "ok"
    assert evaluation.result is not None and evaluation.result.metrics["loss"].value == 4.0
    assert evaluation.extra["retried"] == "session killed by signal 9: attempt 1 starting"
    assert evaluation is attempts[1]
    assert evaluation.started == attempts[0].started  # the duration covers both attempts
    assert evaluation.finished > attempts[0].finished


def test_a_session_killed_twice_is_failed_with_both_reasons(tmp_path: Path) -> None:
    attempts, evaluation = session_attempt(tmp_path, killed=2)
    assert len(attempts) == 2
    assert evaluation.status == "failed"
    assert evaluation.reason == (
        "session killed by signal 9: attempt 2 starting "
        "(also on the first attempt: session killed by signal 9: attempt 1 starting)"
    )
    assert evaluation.extra["retried"] == "session killed by signal 9: attempt 1 starting"


def test_a_failure_about_the_candidate_is_not_retried(tmp_path: Path) -> None:
    calls: list[int] = []

    def attempt() -> Evaluation:
        calls.append(1)
        evaluation = Evaluation("r1c1", "c0ffee", "interrupted", exit_code=4)
        read_result(evaluation, tmp_path / "none.json", tmp_path / "none.log")
        return evaluation

    evaluation = evaluate_with_retry(attempt)
    assert (len(calls), evaluation.status) == (1, "failed")
    assert evaluation.reason == "session exited with status 4 (usage error): (no output)"
    assert "retried" not in evaluation.extra


def test_an_executor_cancelled_before_the_second_attempt_is_interrupted() -> None:
    outcomes = iter(
        [
            Evaluation("r1c1", "c0ffee", "failed", reason="worker lost", retryable=True),
            Evaluation("r1c1", "c0ffee", "interrupted", reason="interrupted before it started"),
        ]
    )
    evaluation = evaluate_with_retry(lambda: next(outcomes))
    assert (evaluation.status, evaluation.reason) == ("interrupted", "interrupted")
    assert evaluation.extra["retried"] == "worker lost"


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "session.log"
    path.write_text("collected 1 item\n\ntest_obj.py .\n\n==== 1 passed in 0.01s ====\n")
    return path


def read(exit_code: int, result: Path, log: Path) -> Evaluation:
    evaluation = Evaluation("r1c1", "c0ffee", "interrupted", exit_code=exit_code)
    read_result(evaluation, result, log)
    return evaluation


def test_the_reader_turns_a_result_file_into_a_session_result(tmp_path: Path, log: Path) -> None:
    result = tmp_path / "result.json"
    result.write_text(result_json(2.5))
    evaluation = read(1, result, log)  # tests failed: still a measurement
    assert (evaluation.status, evaluation.reason, evaluation.retryable) == ("ok", "", False)
    assert evaluation.result is not None and evaluation.result.metrics["loss"].value == 2.5


def test_the_reader_says_a_session_wrote_no_result_and_quotes_its_log(
    tmp_path: Path, log: Path
) -> None:
    evaluation = read(0, tmp_path / "missing.json", log)
    assert (evaluation.status, evaluation.result) == ("failed", None)
    assert evaluation.reason == (
        "session wrote no result file: collected 1 item | test_obj.py . | "
        "==== 1 passed in 0.01s ===="
    )


def test_the_reader_names_a_result_file_that_is_not_json(tmp_path: Path, log: Path) -> None:
    result = tmp_path / "result.json"
    result.write_text('{"metrics": {')
    evaluation = read(0, result, log)
    assert evaluation.status == "failed"
    assert evaluation.reason.startswith(f"unreadable session result: {result} is not JSON (")


def test_the_reader_refuses_a_result_of_the_wrong_shape(tmp_path: Path, log: Path) -> None:
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"metrics": {"loss": {"value": "fast"}}}))
    evaluation = read(0, result, log)
    assert evaluation.status == "failed"
    assert evaluation.reason.startswith("unreadable session result: ")
    assert "'value' must be a number" in evaluation.reason


def test_an_output_tail_of_a_long_log_drops_the_cut_first_line(tmp_path: Path) -> None:
    path = tmp_path / "long.log"
    path.write_text("x" * 70_000 + "\n" + "\n".join(f"line {i}" for i in range(20)) + "\n")
    assert output_tail(path) == " | ".join(f"line {i}" for i in range(8, 20))
    path.write_text("y" * 70_000)  # one line, longer than what is read
    assert output_tail(path) == "(no output)"
