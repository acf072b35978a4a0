"""The machine-wide timing lock: only sessions the loop starts take it, at the loop's path.

A ``PYTEST_AUTOPILOT_TIMING_LOCK`` left in the user's environment used to make the controller
hold the lock shared while its children waited for it exclusively: every timing test then hung
until ``candidate_timeout``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml  # noqa: F401  (in-process pytester runs must not re-import its C loader)
from test_loop import WALK_CONFTEST, candidates, payload, project

from pytest_autopilot import timing

LOCK_LOG_CONFTEST = """
import os
import pytest

@pytest.fixture(autouse=True)
def _log_lock(request):
    label = os.environ.get("PYTEST_AUTOPILOT_CHILD", "user")
    lock = os.environ.get("PYTEST_AUTOPILOT_TIMING_LOCK", "-")
    holder = request.config.pluginmanager.has_plugin("autopilot-timing-lock")
    with open(os.environ["LOCK_LOG"], "a") as out:
        out.write(f"{label} {lock} {holder}\\n")
    yield
"""

BENCH_TEST = """\
import json, pathlib

def test_step(benchmark):
    x = json.loads((pathlib.Path(__file__).parent / "params.json").read_text())["x"]
    benchmark.pedantic(sum, args=(range(2000 + 100 * abs(x - 3)),), rounds=5, iterations=1)
"""


def test_a_timing_lock_in_the_users_environment_neither_deadlocks_nor_reaches_children(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    users_lock = tmp_path / "users.lock"
    log = tmp_path / "lock.log"
    monkeypatch.setenv(timing.TIMING_LOCK_ENV, str(users_lock))
    monkeypatch.setenv("LOCK_LOG", str(log))
    project(
        pytester.path,
        conftest=WALK_CONFTEST + LOCK_LOG_CONFTEST,
        test=BENCH_TEST,
        budget={"rounds": 1, "candidates": 1, "candidate_timeout": 60},
        objective={"metric": "test_step", "goal": "min"},
        gates=[{"metric": "test_step", "max": 0.0}],
    )
    result = pytester.runpytest_subprocess(
        "--autopilot", "--autopilot-json=out.json", "-p", "no:randomly", timeout=240
    )
    assert result.ret in (0, 1), result.stdout.str()
    verdicts = [c["verdict"] for c in candidates(payload(pytester.path / "out.json"))]
    assert verdicts and "timeout" not in verdicts, verdicts
    rows = [line.split() for line in log.read_text().splitlines()]
    controller = [r for r in rows if r[0] == "user"]
    children = [r for r in rows if r[0] != "user"]
    assert controller and all(r[2] == "False" for r in controller)
    assert children and all(r[1:] == [timing.default_lock_path(), "True"] for r in children)
    assert json.loads((pytester.path / "params.json").read_text()) == {"x": 0}


def test_a_session_outside_the_loop_never_takes_the_lock(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(timing.TIMING_LOCK_ENV, str(tmp_path / "users.lock"))
    monkeypatch.delenv(timing.CHILD_ENV, raising=False)
    pytester.makepyfile(
        """
        def test_holder(request):
            assert not request.config.pluginmanager.has_plugin("autopilot-timing-lock")
        """
    )
    assert pytester.runpytest_subprocess("-p", "no:randomly").ret == 0
