"""Loop paths the happy-path tests do not reach: a superseded winner and what observers hear,
an optimizer that crashes, the minutes budget running out mid-round, and feedback from
held-out cases that never reaches the optimizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from loophelpers import candidates, journal, payload, project

PAIR_CONFTEST = """\
import json, pathlib
from pytest_autopilot.proposals import Proposal

LOG = pathlib.Path(__file__).parent / ".autopilot" / "observed.jsonl"

def note(*entry):
    with LOG.open("a") as out:
        out.write(json.dumps(entry) + "\\n")

def pytest_autopilot_optimizer_names(config):
    return ["pair"]

def pytest_autopilot_propose(context):
    if context.optimizer != "pair":
        return None
    for record in context.history:  # copies: changing them changes nothing in the run
        record.verdict = "timeout"
        record.metrics.clear()
    params = next(p for p in context.parameters if p.path.endswith("params.json"))
    x = json.loads(params.text)["x"]
    return [
        Proposal(f"x to {x + s}", edits={params.path: json.dumps({"x": x + s}) + "\\n"},
                 params={"x": x + s})
        for s in (1, 2)
    ]

def pytest_autopilot_candidate_done(candidate):
    note("candidate", candidate.id, candidate.verdict)
    candidate.verdict = "accepted"

def pytest_autopilot_round_done(round, candidates, incumbent):
    note("round", round, [[c.id, c.verdict] for c in candidates], incumbent.id)
"""


def observed(root: Path) -> list[list[object]]:
    path = root / ".autopilot" / "observed.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_superseded_winner_is_reported_rejected_to_observers_and_everywhere(
    pytester: pytest.Pytester,
) -> None:
    repo = project(
        pytester.path,
        conftest=PAIR_CONFTEST,
        optimizer="pair",
        budget={"rounds": 2, "candidates": 2},
    )
    result = pytester.runpytest("--autopilot", "--autopilot-json=out.json")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            # Accepted candidates are said once the round closes, with their final verdict.
            "autopilot: r1c1 x=1 loss 9 -> 4 (-56%) rejected: passed acceptance, but r1c2 was "
            "better*",
            "autopilot: r1c2 x=2 loss 9 -> 1 (-89%) accepted",
        ]
    )
    # Observers hear each verdict once, final: r1c1 never as "accepted".
    assert observed(repo.path) == [
        ["candidate", "r1c1", "rejected"],
        ["candidate", "r1c2", "accepted"],
        ["round", 1, [["r1c1", "rejected"], ["r1c2", "accepted"]], "r1c2"],
        ["candidate", "r2c2", "rejected"],
        ["candidate", "r2c1", "accepted"],
        ["round", 2, [["r2c1", "accepted"], ["r2c2", "rejected"]], "r2c1"],
    ]
    verdicts = {
        c["id"]: (c["verdict"], c["reason"])
        for c in candidates(payload(pytester.path / "out.json"))
    }
    assert verdicts["r1c1"][0] == "rejected"
    assert verdicts["r1c1"][1].startswith("passed acceptance, but r1c2 was better (loss ")
    assert verdicts["r1c2"][0] == "accepted" and verdicts["r2c1"][0] == "accepted"
    assert verdicts["r2c2"][0] == "rejected"  # x=4 is worse than r2c1's x=3, not superseded
    assert "refs/autopilot/demo/rejected/r1c1" in repo.refs("refs/autopilot/demo/")
    assert "refs/autopilot/demo/accepted/r1c1" not in repo.refs("refs/autopilot/demo/")
    assert "Verdict: rejected" in repo.message(repo.rev("refs/autopilot/demo/rejected/r1c1"))
    events = [(e["event"], e.get("id")) for e in journal(repo)]
    assert ("superseded", "r1c1") in events


CRASHING_CONFTEST = """\
import os

def pytest_autopilot_optimizer_names(config):
    return ["crash"]

def pytest_autopilot_propose(context):
    if context.optimizer != "crash":
        return None
    if os.environ.get("MODEL_MISSING"):
        raise ValueError("the model file is missing")
    return []
"""


def test_an_optimizer_crash_stops_with_where_it_happened_and_the_run_resumes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = project(pytester.path, conftest=CRASHING_CONFTEST, optimizer="crash")
    monkeypatch.setenv("MODEL_MISSING", "1")
    result = pytester.runpytest("--autopilot")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stderr.str()
    result.stdout.fnmatch_lines(
        [
            "autopilot: ERROR: optimizer 'crash' failed in round 1: ValueError: the model file "
            "is missing at *conftest.py:10 (traceback in *journal.jsonl); fix it and run the "
            "same command to resume"
        ]
    )
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()
    (error,) = [e for e in journal(repo) if e["event"] == "optimizer_error"]
    assert error["round"] == 1 and "ValueError: the model file is missing" in error["traceback"]

    monkeypatch.delenv("MODEL_MISSING")
    again = pytester.runpytest("--autopilot")
    assert again.ret == 1  # the optimizer has nothing left; the loss gate still fails
    again.stdout.fnmatch_lines(["autopilot: resuming experiment demo after round 0 *"])


SLOW_X1_TEST = """\
import json, pathlib, time

def test_loss(autopilot):
    here = pathlib.Path(__file__).parent
    x = json.loads((here / "params.json").read_text())["x"]
    if x == 1:  # in .autopilot/worktrees/demo/r1c1: outlast the run's time budget
        started = json.loads((here.parents[2] / "demo" / "journal.jsonl").read_text()
                             .splitlines()[0])["time"]
        time.sleep(max(0.0, started + BUDGET + 0.5 - time.time()))
    autopilot.record("loss", (x - 3) ** 2, goal="min")

BUDGET = 9.0
"""


def test_the_minutes_budget_running_out_mid_round_leaves_the_rest_unevaluated(
    pytester: pytest.Pytester,
) -> None:
    project(
        pytester.path,
        test=SLOW_X1_TEST,
        budget={"rounds": 5, "candidates": 2, "minutes": 0.15},
    )
    result = pytester.runpytest("--autopilot", "--autopilot-json=out.json")
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            # r1c2's verdict is final at once; r1c1's accepted one when the round closes.
            "autopilot: r1c2 x=-1 failed: not evaluated: the time budget was spent",
            "autopilot: r1c1 x=1 loss 9 -> 4 (-56%) accepted",
            "autopilot: experiment demo stopped: time budget spent (0.15 minutes) "
            "(1 rounds, 2 candidates, 1 accepted)",
        ]
    )
    data = payload(pytester.path / "out.json")
    assert [(c["id"], c["verdict"]) for c in candidates(data)] == [
        ("r1c1", "accepted"),
        ("r1c2", "failed"),
    ]
    assert not (pytester.path / ".autopilot" / "demo" / "results" / "r1c2.json").exists()


HELD_OUT_CONFTEST = """\
import json, pathlib
from pytest_autopilot.proposals import FeedbackItem, Proposal

SEEN = pathlib.Path(__file__).parent / ".autopilot" / "seen.json"

def pytest_autopilot_optimizer_names(config):
    return ["peek"]

def pytest_autopilot_feedback(context, result):
    return [FeedbackItem(nodeid, "extra: " + nodeid) for nodeid in sorted(result.tests)]

def pytest_autopilot_propose(context):
    if context.optimizer != "peek":
        return None
    SEEN.write_text(json.dumps(sorted(f.text for f in context.feedback)))
    params = next(p for p in context.parameters if p.path.endswith("params.json"))
    return [Proposal("x to 3", edits={params.path: '{"x": 3}\\n'}, params={"x": 3})]
"""

CASES = """\
- {id: seen, split: train}
- {id: hidden, split: val}
- {id: secret, split: test}
"""

CASES_TEST = """\
import pytest

@pytest.mark.dataset("cases.yaml")
def test_case(case, autopilot):
    autopilot.score(1.0)
"""


def test_feedback_hooks_never_pass_held_out_cases_to_the_optimizer(
    pytester: pytest.Pytester,
) -> None:
    repo = project(pytester.path, conftest=HELD_OUT_CONFTEST, optimizer="peek")
    repo.write({"cases.yaml": CASES, "test_cases.py": CASES_TEST})
    repo.git("add", "-A")
    repo.git("commit", "--quiet", "-m", "cases")
    result = pytester.runpytest("--autopilot")
    assert result.ret == 0, result.stdout.str()
    seen = json.loads((repo.path / ".autopilot" / "seen.json").read_text())
    assert seen == [
        "extra: test_cases.py::test_case[seen]",
        "extra: test_obj.py::test_loss",
    ]
