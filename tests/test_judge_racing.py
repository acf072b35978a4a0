"""The judge with the run's racer: sequential paired decisions through a fake executor.

Sessions are scripted per commit (see ``test_judge.FakeExecutor``), so what is measured, in
which pairs and how often, is seen exactly and without git or timing.
"""

from __future__ import annotations

import random

from test_judge import CONFIG, FakeExecutor, candidate, incumbent, judge

from pytest_autopilot import racing
from pytest_autopilot.loop.judge import Judge
from pytest_autopilot.results import Metric, SessionResult, TestResult


def noisy(level: float, seed: int, sd: float = 0.03) -> SessionResult:
    rng = random.Random(seed)
    samples = [level * (1.0 + rng.gauss(0.0, sd)) for _ in range(12)]
    return SessionResult(
        metrics={"t": Metric("t", sorted(samples)[6], "min", samples)},
        tests={"t.py::ok": TestResult("t.py::ok", "passed")},
    )


def racing_judge(fake: FakeExecutor, parallel: int = 1) -> Judge:
    plain = judge(fake, parallel)
    racer = racing.Racer("min", 0.02, racing.RacePlan(0.05, 40))
    return Judge(CONFIG, plain.accept, fake.measure, parallel, racer=racer)


def test_a_2x_win_is_kept_by_its_first_measurement_next_to_the_incumbents() -> None:
    fake = FakeExecutor({"base": [noisy(1.0, 1)], "c1": [noisy(0.5, 2)]})
    base = incumbent(noisy(1.0, 0))
    j = racing_judge(fake)
    reference = j.reference(base, noisy(1.0, 0), "r1i")
    (decision,) = j.judge_round([candidate(1)], reference, base).decisions
    assert decision.verdict == "accepted"
    assert [m.label for m in decision.measurements] == ["r1i"]  # the incumbent, alongside
    assert decision.reason.startswith("t -50.")
    assert "1 measurement): clearly better by more than 2%" in decision.reason
    assert fake.calls == [["r1i", "r1c1"]]
    assert j.racer is not None and j.racer.decided == 1


def test_a_no_op_and_a_loser_are_dropped_by_their_first_measurement() -> None:
    fake = FakeExecutor({"base": [noisy(1.0, 1)], "c1": [noisy(1.0, 2)], "c2": [noisy(1.3, 3)]})
    base = incumbent(noisy(1.0, 0))
    j = racing_judge(fake, parallel=2)
    reference = j.reference(base, noisy(1.0, 0), "r1i")
    outcome = j.judge_round([candidate(1), candidate(2)], reference, base)
    assert [d.verdict for d in outcome.decisions] == ["rejected", "rejected"]
    assert "1 measurement): cannot be shown better by 2%" in outcome.decisions[0].reason
    assert outcome.decisions[1].reason.endswith("1 measurement): clearly worse")
    assert fake.calls == [["r1i", "r1c1", "r1c2"]]


def test_an_undecided_candidate_is_measured_again_side_by_side_with_the_incumbent() -> None:
    """Every measurement is a pair of sessions run at once: their timing tests in lockstep."""
    fake = FakeExecutor(
        {
            "base": [noisy(1.0, 1, 0.06), noisy(1.0, 4, 0.06), noisy(1.0, 6, 0.06)],
            "c1": [noisy(0.9, 2, 0.06), noisy(0.9, 3, 0.06), noisy(0.9, 5, 0.06)],
        }
    )
    base = incumbent(noisy(1.0, 0, 0.06))
    j = racing_judge(fake)
    (decision,) = j.judge_round(
        [candidate(1)], j.reference(base, base_result(), "r1i"), base
    ).decisions
    assert fake.calls[:2] == [["r1i", "r1c1"], ["r1c1-m2", "r1c1-m2-incumbent"]]
    assert len(decision.measurements) == 1 + 2 * (len(fake.calls) - 1)
    assert f"{len(fake.calls)} measurements)" in decision.reason


def test_a_failed_repeat_rejects_with_what_was_known() -> None:
    fake = FakeExecutor(
        {"base": [noisy(1.0, 1, 0.06), None], "c1": [noisy(0.9, 2, 0.06), noisy(0.9, 3, 0.06)]}
    )
    base = incumbent(noisy(1.0, 0, 0.06))
    j = racing_judge(fake)
    (decision,) = j.judge_round(
        [candidate(1)], j.reference(base, base_result(), "r1i"), base
    ).decisions
    assert decision.verdict == "rejected"
    assert decision.reason.endswith("undecided: measuring again; then a re-measurement failed")


def base_result() -> SessionResult:
    return noisy(1.0, 0, 0.06)


def test_with_one_candidate_at_a_time_each_gets_its_own_incumbent_session_beside_it() -> None:
    """A candidate compared with an incumbent session measured at another time would see the
    machine's drift as an effect: every chunk of a round measures the incumbent again."""
    fake = FakeExecutor(
        {
            "base": [noisy(1.0, 1), noisy(1.0, 3)],
            "c1": [noisy(1.0, 2)],
            "c2": [noisy(0.5, 4)],
        }
    )
    base = incumbent(noisy(1.0, 0))
    j = racing_judge(fake, parallel=1)
    reference = j.reference(base, noisy(1.0, 0), "r1i")
    outcome = j.judge_round([candidate(1), candidate(2)], reference, base)
    assert fake.calls == [["r1i", "r1c1"], ["r1i2", "r1c2"]]
    assert [[m.label for m in d.measurements] for d in outcome.decisions] == [["r1i"], ["r1i2"]]
    assert [d.verdict for d in outcome.decisions] == ["rejected", "accepted"]


def test_undecided_candidates_of_a_chunk_are_measured_again_beside_one_incumbent_session() -> None:
    fake = FakeExecutor(
        {
            "base": [noisy(1.0, s, 0.06) for s in (1, 4, 7)],
            "c1": [noisy(0.9, s, 0.06) for s in (2, 5, 8)],
            "c2": [noisy(0.9, s, 0.06) for s in (3, 6, 9)],
        }
    )
    base = incumbent(noisy(1.0, 0, 0.06))
    j = racing_judge(fake, parallel=2)
    outcome = j.judge_round(
        [candidate(1), candidate(2)], j.reference(base, base_result(), "r1i"), base
    )
    assert fake.calls[:2] == [["r1i", "r1c1", "r1c2"], ["r1c1-m2", "r1c2-m2", "r1c1-m2-incumbent"]]
    partners = [
        [m for m in d.measurements if m.label == "r1c1-m2-incumbent"] for d in outcome.decisions
    ]
    assert [len(p) for p in partners] == [1, 1]
    assert partners[0][0] is partners[1][0]  # one incumbent session is the partner of both
