"""``pytest --autopilot -n N``: candidates evaluated at once, honest timings, tree experiments.

Each child session appends what it did to a trace file named by ``TRACE`` in the environment
(the loop passes the user's environment on to its children): its label, its working directory,
and the wall-clock interval of each test. Overlaps and worktrees are read from there, and from
the journal's ``started``/``finished`` of each candidate.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # noqa: F401  (in-process pytester runs must not re-import its C loader)
from test_loop import WALK_CONFTEST, candidates, journal, payload, project

TRACE_CONFTEST = """
import os, time
import pytest

@pytest.fixture(autouse=True)
def _trace(request):
    start = time.time()
    yield
    end = time.time()
    kind = "timing" if "benchmark" in request.fixturenames else "plain"
    with open(os.environ["TRACE"], "a") as out:
        label = os.environ.get("PYTEST_AUTOPILOT_CHILD", "user")
        out.write(f"{label} {os.getpid()} {kind} {start:.6f} {end:.6f} {os.getcwd()}\\n")
"""

SLOW_OBJECTIVE_TEST = """\
import json, os, pathlib, time

def meet(label, other, patience=60.0):
    # Both candidate sessions wait here for each other: they overlap if they run at once,
    # however late a loaded machine starts the second; run one after the other, they cannot.
    here = pathlib.Path(os.environ["TRACE"]).parent
    (here / ("arrived-" + label)).write_text("")
    deadline = time.monotonic() + patience
    while not (here / ("arrived-" + other)).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)

def test_loss(autopilot):
    label = os.environ.get("PYTEST_AUTOPILOT_CHILD", "")
    if label in ("r1c1", "r1c2"):
        meet(label, "r1c2" if label == "r1c1" else "r1c1")
    x = json.loads((pathlib.Path(__file__).parent / "params.json").read_text())["x"]
    autopilot.record("loss", (x - 3) ** 2, goal="min")
"""


def trace(path: Path) -> list[tuple[str, int, str, float, float, str]]:
    rows = []
    for line in path.read_text().splitlines():
        label, pid, kind, start, end, cwd = line.split(" ", 5)
        rows.append((label, int(pid), kind, float(start), float(end), cwd))
    return rows


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "trace.txt"
    monkeypatch.setenv("TRACE", str(path))
    return path


def test_n2_evaluates_two_candidates_at_once_in_their_own_worktrees(
    pytester: pytest.Pytester, traced: Path
) -> None:
    repo = project(
        pytester.path,
        conftest=WALK_CONFTEST + TRACE_CONFTEST,
        test=SLOW_OBJECTIVE_TEST,
        budget={"rounds": 1, "candidates": 2},
    )
    result = pytester.runpytest_subprocess("--autopilot", "-n", "2", "--autopilot-json=out.json")
    assert result.ret == 1, result.stdout.str()  # one round cannot reach x=3
    by_label = {row[0]: row for row in trace(traced)}
    c1, c2 = by_label["r1c1"], by_label["r1c2"]
    assert overlap(c1[3:5], c2[3:5]), "both candidate sessions ran their test at the same time"
    assert c1[5] != c2[5] and ".autopilot/worktrees/" in c1[5] and ".autopilot/worktrees/" in c2[5]
    events = {e["id"]: e for e in journal(repo) if e["event"] == "candidate"}
    first, second = events["r1c1"], events["r1c2"]
    assert first["started"] < second["finished"] and second["started"] < first["finished"]
    assert [c["verdict"] for c in candidates(payload(pytester.path / "out.json"))] == [
        "accepted",
        "rejected",
    ]


def test_n2_reaches_the_same_result_as_n1_on_a_deterministic_objective(
    pytester: pytest.Pytester,
) -> None:
    outcomes = []
    for workers in ("1", "2"):
        root = pytester.mkdir(f"n{workers}")
        repo = project(root, budget={"rounds": 6, "candidates": 2})
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "--autopilot", "-n", workers,
             "--autopilot-json=out.json", "-p", "no:cacheprovider"],
            cwd=root, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        data = payload(root / "out.json")
        outcomes.append(
            (
                [(c["id"], c["verdict"], c["params"]) for c in candidates(data)],
                data["best"]["metrics"],
                repo.show("autopilot/demo", "params.json"),
            )
        )
    assert outcomes[0] == outcomes[1]
    assert json.loads(outcomes[0][2]) == {"x": 3}


BENCH_OBJECTIVE_TEST = """\
import json, os, pathlib, time

def spin(n):
    total = 0
    for i in range(n):
        total += i * i
    return total

def test_plain():
    # The two candidates' sessions meet here (see SLOW_OBJECTIVE_TEST): parallel sessions
    # overlap however late a loaded machine starts the second; serial ones cannot.
    label = os.environ.get("PYTEST_AUTOPILOT_CHILD", "")
    if label in ("r1c1", "r1c2"):
        here = pathlib.Path(os.environ["TRACE"]).parent
        (here / ("plain-" + label)).write_text("")
        other = here / ("plain-" + ("r1c2" if label == "r1c1" else "r1c1"))
        deadline = time.monotonic() + 60.0
        while not other.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    spin(3_000_000)

def test_step(benchmark, autopilot):
    x = json.loads((pathlib.Path(__file__).parent / "params.json").read_text())["x"]
    benchmark.pedantic(spin, args=(20_000 + 1000 * abs(x - 3),), rounds=15, iterations=1)
    # the objective is exact, so that r1c1 (x=1) is accepted and confirmed on any machine
    loss = (x - 3) ** 2
    autopilot.record("loss", loss, goal="min", samples=[loss + i / 100 for i in range(20)])

def test_plain_after():
    spin(3_000_000)
"""


def test_n2_runs_plain_tests_in_parallel_and_every_timing_test(
    pytester: pytest.Pytester, traced: Path
) -> None:
    """Non-timing tests of the candidates run in parallel, and every session runs its timing
    test. That no benchmark *round* overlaps anything of another session (sessions take rounds
    in turn, and a session waiting for its turn lets the others go on) is shown round by round
    in ``test_lockstep.py``; a whole timing test's interval here includes those waits."""
    project(
        pytester.path,
        conftest=WALK_CONFTEST + TRACE_CONFTEST,
        test=BENCH_OBJECTIVE_TEST,
        budget={"rounds": 1, "candidates": 2},
        objective={"metric": "loss", "goal": "min"},
        gates=[{"metric": "test_step", "max": 0.0}],
    )
    result = pytester.runpytest_subprocess(
        "--autopilot", "-n", "2", "-p", "no:randomly", "--autopilot-json=out.json"
    )
    assert result.ret == 1, result.stdout.str()
    found = {c["id"]: c for c in candidates(payload(pytester.path / "out.json"))}
    assert found["r1c1"]["verdict"] == "accepted", found["r1c1"]["reason"]
    assert "1 measurement" in found["r1c1"]["reason"], "a clear win is decided by its first"
    rows = [r for r in trace(traced) if r[0] != "user"]
    sessions = {r[1] for r in rows}
    labels = {r[0] for r in rows}
    # The incumbent is measured beside the round's candidates, once: no confirmation sessions.
    assert labels == {"r0", "r1i", "r1c1", "r1c2"}, labels
    assert len(sessions) == len(labels)  # one session each
    timing = [r for r in rows if r[2] == "timing"]
    assert len(timing) == len(sessions)
    plain = [r for r in rows if r[2] == "plain" and r[0] in ("r1c1", "r1c2")]
    assert any(
        overlap(a[3:5], b[3:5]) for a, b in itertools.combinations(plain, 2) if a[1] != b[1]
    ), "the non-timing tests of the two candidates ran in parallel"


KILLED_ONCE_TEST = """\
import json, os, pathlib, signal

def test_loss(autopilot):
    here = pathlib.Path(__file__).parent
    x = json.loads((here / "params.json").read_text())["x"]
    marker = pathlib.Path(os.environ["TRACE"]).with_name("killed-" + str(x))
    if x == 1 and not marker.exists():
        marker.write_text("once")
        os.kill(os.getpid(), signal.SIGKILL)
    if x == -1:
        os.kill(os.getpid(), signal.SIGKILL)
    autopilot.record("loss", (x - 3) ** 2, goal="min")
"""


def test_a_session_killed_by_a_signal_is_retried_once_then_recorded_as_failed(
    pytester: pytest.Pytester, traced: Path
) -> None:
    repo = project(pytester.path, test=KILLED_ONCE_TEST, budget={"rounds": 1, "candidates": 2})
    result = pytester.runpytest_subprocess("--autopilot", "-n", "2", "--autopilot-json=out.json")
    assert result.ret == 1, result.stdout.str()
    found = {c["id"]: c for c in candidates(payload(pytester.path / "out.json"))}
    assert found["r1c1"]["verdict"] == "accepted"  # x=1: killed once, then measured
    assert found["r1c2"]["verdict"] == "failed"  # x=-1: killed every time
    both = r"\(twice\)|\(also on the first attempt: session killed by signal 9: .*\)"
    assert re.fullmatch(f"session killed by signal 9: .* (?:{both})", found["r1c2"]["reason"])
    events = {e["id"]: e for e in journal(repo) if e["event"] == "candidate"}
    assert "signal 9" in events["r1c1"]["executor"]["retried"]
    result.stdout.fnmatch_lines(["autopilot: r1c2 * failed: session killed by signal 9*"])


BRANCHING_CONFTEST = """\
import json
from pytest_autopilot.proposals import Proposal

def pytest_autopilot_optimizer_names(config):
    return ["branch"]

def pytest_autopilot_propose(context):
    if context.optimizer != "branch":
        return None
    if context.round == 1:
        return [Proposal("x to -2", edits={"params.json": '{"x": -2}\\n'}, params={"x": -2})]
    if context.round == 2:
        # go back to the rejected r1c1 and step from there
        return [
            Proposal("x to 2 from r1c1", edits={"params.json": '{"x": 2}\\n'}, params={"x": 2},
                     parent="r1c1")
        ]
    return []
"""


def test_a_candidate_may_grow_from_any_earlier_commit_and_the_report_draws_the_tree(
    pytester: pytest.Pytester,
) -> None:
    repo = project(pytester.path, conftest=BRANCHING_CONFTEST, optimizer="branch")
    result = pytester.runpytest_subprocess(
        "--autopilot", "--autopilot-json=out.json", "--autopilot-report=report.md"
    )
    assert result.ret == 1, result.stdout.str()
    data = payload(pytester.path / "out.json")
    found = {c["id"]: c for c in candidates(data)}
    assert found["r1c1"]["verdict"] == "rejected"
    assert found["r2c1"]["parent"] == found["r1c1"]["commit"]
    assert found["r2c1"]["verdict"] == "accepted"
    parents = repo.git("log", "-1", "--format=%P", found["r2c1"]["commit"]).split()
    assert parents == [found["r1c1"]["commit"]]
    events = {e["id"]: e for e in journal(repo) if e["event"] == "candidate"}
    assert events["r2c1"]["parent"] == found["r1c1"]["commit"]
    report = (pytester.path / "report.md").read_text()
    assert "r1c1 --> r2c1" in report and "r0 --> r1c1" in report
