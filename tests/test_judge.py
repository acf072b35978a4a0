"""The judge decides with a fake executor: measurements are scripted per commit, so every
path (regression, timeout, confirmation, supersession, out of time) is reached in
milliseconds and without git."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from pytest_autopilot.config import AutopilotConfig, Objective
from pytest_autopilot.loop import acceptance
from pytest_autopilot.loop.child import Evaluation
from pytest_autopilot.loop.judge import OUT_OF_TIME, Interrupted, Judge, Reference
from pytest_autopilot.proposals import CandidateRecord
from pytest_autopilot.results import Metric, SessionResult, TestResult

CONFIG = AutopilotConfig(path=None, rootdir=Path("."), objective=Objective("t", "min"))


def timing(level: float) -> SessionResult:
    """A session whose objective ``t`` is 30 noisy samples around ``level``."""
    samples = [level * (1.0 + 0.01 * (i % 7)) for i in range(30)]
    return SessionResult(
        metrics={"t": Metric("t", sum(samples) / len(samples), "min", samples)},
        tests={"t.py::ok": TestResult("t.py::ok", "passed")},
    )


def plain(value: float, outcome: str = "passed") -> SessionResult:
    return SessionResult(
        metrics={"t": Metric("t", value, "min")},
        tests={"t.py::ok": TestResult("t.py::ok", outcome)},  # type: ignore[arg-type]
    )


class FakeExecutor:
    """Answers each commit with its next scripted session (None: the session failed)."""

    def __init__(self, script: dict[str, list[SessionResult | str | None]]) -> None:
        self.script = {commit: list(answers) for commit, answers in script.items()}
        self.calls: list[list[str]] = []

    def measure(self, jobs: Sequence[tuple[str, str]]) -> list[Evaluation]:
        self.calls.append([label for label, _ in jobs])
        out = []
        for label, commit in jobs:
            answer = self.script[commit].pop(0)
            if isinstance(answer, str):
                out.append(Evaluation(label, commit, answer, reason=f"{answer} on purpose"))  # type: ignore[arg-type]
            elif answer is None:
                out.append(Evaluation(label, commit, "failed", reason="exit code 3"))
            else:
                out.append(Evaluation(label, commit, "ok", result=answer))
        return out


def judge(fake: FakeExecutor, parallel: int = 1) -> Judge:
    def accept(candidate: CandidateRecord, incumbent: CandidateRecord) -> tuple[bool, str]:
        return acceptance.pytest_autopilot_accept(candidate, incumbent, CONFIG) or (False, "")

    return Judge(CONFIG, accept, fake.measure, parallel)


def incumbent(result: SessionResult) -> CandidateRecord:
    return CandidateRecord("r0", 0, "base", None, "", "accepted", metrics=result.metrics)


def candidate(index: int) -> CandidateRecord:
    return CandidateRecord(f"r1c{index}", 1, f"c{index}", "base", f"try {index}")


def test_a_deterministic_improvement_is_accepted_without_a_second_measurement() -> None:
    fake = FakeExecutor({"c1": [plain(0.5)], "c2": [plain(2.0)], "c3": [plain(0.1, "failed")]})
    base = incumbent(plain(1.0))
    reference = judge(fake).reference(base, plain(1.0), "r1i")
    assert reference.measurement is None  # nothing sampled: no re-measurement
    told: list[str] = []
    outcome = judge(fake, parallel=2).judge_round(
        [candidate(1), candidate(2), candidate(3)],
        reference,
        base,
        decided=lambda d: told.append(f"{d.record.id} {d.verdict}"),
    )
    assert told == ["r1c1 accepted", "r1c2 rejected", "r1c3 rejected"]
    assert fake.calls == [["r1c1", "r1c2"], ["r1c3"]]
    assert outcome.winner is not None and outcome.winner.id == "r1c1"
    assert outcome.decisions[2].reason.startswith("broke 1 test(s) that passed on the incumbent")
    assert all(d.measurements == [] for d in outcome.decisions)


def test_a_sampled_win_is_confirmed_in_the_opposite_order() -> None:
    fake = FakeExecutor({"base": [timing(1.0), timing(1.0)], "c1": [timing(0.8), timing(0.8)]})
    base = incumbent(timing(1.0))
    j = judge(fake)
    reference = j.reference(base, timing(1.0), "r1i")
    assert reference.measurement is not None and reference.measurement.label == "r1i"
    outcome = j.judge_round([candidate(1)], reference, base)
    (decision,) = outcome.decisions
    assert decision.verdict == "accepted" and "; confirmed: " in decision.reason
    assert [m.label for m in decision.measurements] == ["r1c1-confirm", "r1c1-confirm-incumbent"]
    assert fake.calls == [["r1i"], ["r1c1"], ["r1c1-confirm"], ["r1c1-confirm-incumbent"]]


def test_a_win_the_second_measurement_does_not_confirm_is_rejected() -> None:
    fake = FakeExecutor({"base": [timing(1.0)], "c1": [timing(0.8), timing(1.0)]})
    base = incumbent(timing(1.0))
    outcome = judge(fake).judge_round([candidate(1)], Reference(base, timing(1.0)), base)
    (decision,) = outcome.decisions
    assert decision.verdict == "rejected"
    assert decision.reason.startswith("not confirmed by a second measurement (t ")
    assert "; first: t " in decision.reason and "better by more than 2%" in decision.reason
    assert outcome.winner is None


def test_a_failed_confirmation_measurement_rejects() -> None:
    fake = FakeExecutor({"base": [None], "c1": [timing(0.8), timing(0.8)]})
    base = incumbent(timing(1.0))
    outcome = judge(fake).judge_round([candidate(1)], Reference(base, timing(1.0)), base)
    assert outcome.decisions[0].verdict == "rejected"
    assert outcome.decisions[0].reason.endswith("; but the confirmation measurement failed")


def test_of_two_accepted_candidates_the_better_wins_and_the_other_is_superseded() -> None:
    fake = FakeExecutor({"c1": [plain(0.5)], "c2": [plain(0.2)]})
    base = incumbent(plain(1.0))
    told: list[str] = []
    earlier = CandidateRecord("r1c0", 1, "c0", "base", "", "accepted", "ok", plain(0.3).metrics)
    outcome = judge(fake).judge_round(
        [candidate(1), candidate(2)],
        Reference(base, plain(1.0)),
        base,
        earlier=[earlier],
        decided=lambda d: told.append(f"{d.record.id} {d.verdict}"),
    )
    assert told == ["r1c1 accepted", "r1c2 accepted"]  # provisional, as they were decided
    assert outcome.winner is not None and outcome.winner.id == "r1c2"
    assert [(d.record.id, d.verdict) for d in outcome.superseded] == [
        ("r1c0", "rejected"),
        ("r1c1", "rejected"),
    ]
    assert outcome.superseded[1] is outcome.decisions[0]
    assert outcome.superseded[1].reason.startswith("passed acceptance, but r1c2 was better (t ")
    assert earlier.verdict == "accepted"  # the judge changes no record


def test_timeouts_failures_time_budget_and_interrupts() -> None:
    fake = FakeExecutor({"c1": ["timeout"], "c2": [None], "c3": [plain(0.1)]})
    base = incumbent(plain(1.0))
    calls = iter([False, False, True])
    outcome = judge(fake).judge_round(
        [candidate(1), candidate(2), candidate(3)],
        Reference(base, plain(1.0)),
        base,
        out_of_time=lambda: next(calls),
    )
    assert [(d.verdict, d.reason) for d in outcome.decisions] == [
        ("timeout", "timeout on purpose"),
        ("failed", "exit code 3"),
        ("failed", OUT_OF_TIME),
    ]
    assert outcome.decisions[2].evaluation is None and fake.script["c3"]  # never measured
    with pytest.raises(Interrupted):
        judge(FakeExecutor({"c1": ["interrupted"]})).judge_round(
            [candidate(1)], Reference(base, plain(1.0)), base
        )
