"""The decisions of a round: measure, compare, confirm, and pick the winner.

:class:`Judge` touches neither git nor the terminal. It is given the round's candidates (as
commits), the incumbent, a way to measure commits (:data:`Measure`, the executor in a real run,
a fake in the unit tests) and the acceptance policy (:data:`Accept`, the
``pytest_autopilot_accept`` hook in a real run), and returns one :class:`Decision` per
candidate and the round's winner in a :class:`RoundDecision`. The controller applies the
decisions: records, refs, journal, output and observer hooks.

How a candidate is decided (:meth:`Judge.decide`):

1. A candidate that could not be measured is ``timeout`` or ``failed``.
2. One that breaks a test or lowers a dataset pass rate that held on the incumbent is
   ``rejected`` (:func:`pytest_autopilot.loop.acceptance.regressions`).
3. Otherwise, when the objective carries samples and the built-in policy is in charge, the
   run's :class:`~pytest_autopilot.racing.Racer` decides from paired measurements (the
   candidate's session next to the incumbent's): keep, drop, or measure both again, side by
   side, up to a cap (:meth:`Judge.race`). With another acceptance policy (a plugin's
   ``pytest_autopilot_accept``) or a deterministic objective the policy decides; an accepted
   candidate of a sampled objective is then measured again, then the incumbent again (the
   opposite order), and the policy must accept this second comparison too
   (:meth:`Judge.confirm`).

Of the round's accepted candidates the one with the best objective wins; the others become
``rejected`` ("superseded") before anyone is told their verdict (:meth:`Judge.pick_winner`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pytest_autopilot import racing
from pytest_autopilot.config import AutopilotConfig, Objective
from pytest_autopilot.loop import acceptance
from pytest_autopilot.loop.child import Evaluation
from pytest_autopilot.proposals import CandidateRecord, Verdict
from pytest_autopilot.results import Metric, SessionResult

Measure = Callable[[Sequence[tuple[str, str]]], list[Evaluation]]
"""Evaluate ``(label, commit)`` pairs, at once when it can; one :class:`Evaluation` each."""

Accept = Callable[[CandidateRecord, CandidateRecord], tuple[bool, str]]
"""The acceptance policy: ``(candidate, incumbent) -> (accepted, reason)``."""


OUT_OF_TIME = "not evaluated: the time budget was spent"


class Interrupted(Exception):
    """Ctrl+C: stop at the next safe point, keeping everything recorded so far."""


def hook_acceptance(hook: object, config: AutopilotConfig) -> Accept:
    """The ``pytest_autopilot_accept`` hook as an :data:`Accept` function."""

    def accept(candidate: CandidateRecord, incumbent: CandidateRecord) -> tuple[bool, str]:
        answer = hook.pytest_autopilot_accept(  # type: ignore[attr-defined]
            candidate=candidate, incumbent=incumbent, config=config
        )
        if answer is None:
            return False, "no acceptance policy answered"
        return bool(answer[0]), str(answer[1])

    return accept


@dataclass(frozen=True)
class Reference:
    """The incumbent as this round's candidates are compared with it."""

    record: CandidateRecord
    """The incumbent, carrying the metrics of ``result``."""
    result: SessionResult
    measurement: Evaluation | None = None
    """The re-measurement taken for this round, if one was taken (failed ones included)."""
    pending: str | None = None
    """With the racer: the label under which the incumbent is measured again *together with*
    the round's first candidates (their timing tests in lockstep), not before them."""


@dataclass
class Decision:
    """One candidate's verdict and what it rests on."""

    record: CandidateRecord
    """The candidate as the controller holds it; the judge never changes it."""
    verdict: Verdict
    reason: str
    evaluation: Evaluation | None = None
    """The candidate's own evaluation; None when it was not evaluated."""
    measurements: list[Evaluation] = field(default_factory=list)
    """Further measurements taken to decide (the confirmation of a sampled objective)."""
    pairs: list[racing.Pair] = field(default_factory=list)
    """The racer's paired measurements so far (none when the policy decided)."""
    ratio: float | None = None
    """The racer's estimate of the objective's ratio to the incumbent beside it."""

    @property
    def result(self) -> SessionResult | None:
        return None if self.evaluation is None else self.evaluation.result


@dataclass
class RoundDecision:
    """Every decision of the round, and which accepted candidate became the incumbent."""

    decisions: list[Decision]
    winner: CandidateRecord | None
    superseded: list[Decision] = field(default_factory=list)
    """Final decisions of the accepted candidates another one beat (now ``rejected``),
    earlier ones included; this round's are the same objects as in ``decisions``."""


class Judge:
    """Decides candidates against the incumbent with a measure function and a policy."""

    def __init__(
        self,
        config: AutopilotConfig,
        accept: Accept,
        measure: Measure,
        parallel: int = 1,
        racer: racing.Racer | None = None,
    ) -> None:
        assert config.objective is not None
        self.config = config
        self.objective: Objective = config.objective
        self.accept = accept
        self.measure = measure
        self.parallel = max(1, parallel)
        self.racer = racer
        """Decides sampled objectives when set (the built-in policy); else ``accept`` does."""

    def measure_one(self, label: str, commit: str) -> Evaluation:
        evaluation = self.measure([(label, commit)])[0]
        if evaluation.status == "interrupted":
            raise Interrupted
        return evaluation

    def reference(self, incumbent: CandidateRecord, result: SessionResult, label: str) -> Reference:
        """The incumbent for this round: measured again when its objective carries samples,
        in the same conditions as the candidates that follow; else its own measurement."""
        metric = incumbent.metrics.get(self.objective.metric)
        if metric is None or not metric.samples:
            return Reference(incumbent, result)
        if self.racer is not None:
            self.racer.prime(metric.samples)
            return Reference(incumbent, result, pending=label)
        fresh = self.measure_one(label, str(incumbent.commit))
        return self._fresh(Reference(incumbent, result), fresh)

    def _fresh(self, reference: Reference, fresh: Evaluation) -> Reference:
        """``reference`` measured again by ``fresh`` (kept as it was if that failed)."""
        incumbent, result = reference.record, reference.result
        if fresh.result is None:
            return Reference(incumbent, result, fresh)
        record = dataclasses.replace(incumbent, metrics=fresh.result.metrics)
        return Reference(record, fresh.result, fresh)

    def judge_round(
        self,
        candidates: Sequence[CandidateRecord],
        reference: Reference,
        incumbent: CandidateRecord,
        *,
        earlier: Sequence[CandidateRecord] = (),
        out_of_time: Callable[[], bool] = lambda: False,
        decided: Callable[[Decision], None] = lambda decision: None,
    ) -> RoundDecision:
        """Measure and decide ``candidates`` (``parallel`` at a time), then pick the winner.

        ``decided`` is told each decision as soon as it is made (the winner is not known yet:
        an ``accepted`` verdict is provisional until the round decision). ``earlier`` are the
        round's candidates decided before (by an interrupted run); their accepted ones compete
        for the win too. Candidates left when ``out_of_time`` turns true are not evaluated.
        """
        decisions: list[Decision] = []
        for index, start in enumerate(range(0, len(candidates), self.parallel)):
            chunk = candidates[start : start + self.parallel]
            if out_of_time():
                for record in candidates[start:]:
                    decision = Decision(
                        record, "failed", "not evaluated: the time budget was spent"
                    )
                    decisions.append(decision)
                    decided(decision)
                break
            jobs = [(r.id, str(r.commit)) for r in chunk]
            pending = reference.pending
            if pending is not None:
                label = pending if index == 0 else f"{pending}{index + 1}"
                jobs.insert(0, (label, str(reference.record.commit)))
            evaluations = self.measure(jobs)
            beside = reference
            fresh: Evaluation | None = None
            if pending is not None:
                fresh = evaluations.pop(0)
                if fresh.status == "interrupted":
                    raise Interrupted
                beside = self._fresh(reference, fresh)
            chunk_decisions = []
            for record, evaluation in zip(chunk, evaluations, strict=True):
                decision = self.decide(record, evaluation, beside, incumbent)
                if fresh is not None:
                    decision.measurements.insert(0, fresh)
                    fresh = None
                chunk_decisions.append(decision)
            raced = [d for d in chunk_decisions if d.pairs]
            if raced and self.racer is not None:
                self.race(self.racer, raced, incumbent)
            for decision in chunk_decisions:
                decisions.append(decision)
                decided(decision)
        accepted = [d.record for d in decisions if d.verdict == "accepted"]
        winner, superseded = self.pick_winner(
            [*(r for r in earlier if r.verdict == "accepted"), *accepted], decisions
        )
        return RoundDecision(decisions, winner, superseded)

    def decide(
        self,
        record: CandidateRecord,
        evaluation: Evaluation,
        reference: Reference,
        incumbent: CandidateRecord,
    ) -> Decision:
        """One candidate's verdict from its evaluation (see the module docstring)."""
        if evaluation.status == "interrupted":
            raise Interrupted
        if evaluation.result is None:
            verdict: Verdict = "timeout" if evaluation.status == "timeout" else "failed"
            return Decision(record, verdict, evaluation.reason, evaluation)
        measured = dataclasses.replace(record, metrics=evaluation.result.metrics)
        broken = acceptance.regressions(reference.result, evaluation.result)
        if broken:
            return Decision(record, "rejected", "; ".join(broken), evaluation)
        if self.racer is not None:
            first = racing.pair_metrics(
                self._objective(reference.result), self._objective(evaluation.result)
            )
            if first is not None:
                return Decision(record, "rejected", "", evaluation, pairs=[first])
        accepted, reason = self.accept(measured, reference.record)
        decision = Decision(record, "accepted" if accepted else "rejected", reason, evaluation)
        if accepted and self.sampled(measured, reference.record):
            self.confirm(decision, measured, incumbent)
        return decision

    def race(
        self, racer: racing.Racer, raced: Sequence[Decision], incumbent: CandidateRecord
    ) -> None:
        """Measure the undecided candidates again, all beside one new session of the
        incumbent (their timing tests in lockstep), until the racer keeps or drops each; the
        verdict and the reason (estimate, interval, measurements, why it stopped) go into
        each decision. A failed re-measurement leaves the candidate rejected with what was
        known."""
        name = self.objective.metric
        verdicts = {id(d): racer.decide(d.pairs) for d in raced}
        failed: set[int] = set()
        while undecided := [
            d for d in raced if id(d) not in failed and verdicts[id(d)].verdict == "more"
        ]:
            jobs = [(f"{d.record.id}-m{len(d.pairs) + 1}", str(d.record.commit)) for d in undecided]
            jobs.append((f"{jobs[0][0]}-incumbent", str(incumbent.commit)))
            *again, base = self.measure(jobs)
            if "interrupted" in (base.status, *(a.status for a in again)):
                raise Interrupted
            inc_metric = None if base.result is None else self._objective(base.result)
            for decision, evaluation in zip(undecided, again, strict=True):
                decision.measurements += [evaluation, base]
                known = verdicts[id(decision)].describe()
                if evaluation.result is None or base.result is None:
                    decision.reason = f"{name} {known}; then a re-measurement failed"
                    failed.add(id(decision))
                    continue
                more = racing.pair_metrics(inc_metric, self._objective(evaluation.result))
                if more is None:
                    decision.reason = f"{name} {known}; then it was not measured"
                    failed.add(id(decision))
                    continue
                decision.pairs.append(more)
                verdicts[id(decision)] = racer.decide(decision.pairs)
        for decision in raced:
            verdict = verdicts[id(decision)]
            decision.ratio = verdict.ratio
            if id(decision) in failed:
                continue
            racer.finished(decision.pairs)
            decision.verdict = "accepted" if verdict.verdict == "keep" else "rejected"
            decision.reason = f"{name} {verdict.describe()}"

    def _objective(self, result: SessionResult) -> Metric | None:
        return result.metrics.get(self.objective.metric)

    def sampled(self, record: CandidateRecord, reference: CandidateRecord) -> bool:
        name = self.objective.metric
        return any(
            (m := r.metrics.get(name)) is not None and bool(m.samples) for r in (record, reference)
        )

    def confirm(
        self, decision: Decision, measured: CandidateRecord, incumbent: CandidateRecord
    ) -> None:
        """Measure the candidate again, then the incumbent again (the opposite order), and
        keep ``accepted`` only if the policy accepts this second comparison too."""
        first = decision.reason
        again = self.measure_one(f"{measured.id}-confirm", str(measured.commit))
        decision.measurements.append(again)
        base = self.measure_one(f"{measured.id}-confirm-incumbent", str(incumbent.commit))
        decision.measurements.append(base)
        if again.result is None or base.result is None:
            decision.verdict = "rejected"
            decision.reason = f"{first}; but the confirmation measurement failed"
            return
        accepted, reason = self.accept(
            dataclasses.replace(measured, metrics=again.result.metrics),
            dataclasses.replace(incumbent, metrics=base.result.metrics),
        )
        if accepted:
            decision.reason = f"{first}; confirmed: {reason}"
        else:
            decision.verdict = "rejected"
            decision.reason = f"not confirmed by a second measurement ({reason}); first: {first}"

    def pick_winner(
        self, accepted: Sequence[CandidateRecord], decisions: Sequence[Decision]
    ) -> tuple[CandidateRecord | None, list[Decision]]:
        """The accepted candidate with the best objective (its paired value when it has one:
        those of an interrupted run's candidates were measured beside another session), and a
        ``rejected`` decision for each other one (this round's own decisions are changed in
        place)."""
        if not accepted:
            return None, []
        sign = 1.0 if self.objective.goal == "min" else -1.0
        own = {id(d.record): d for d in decisions}

        def value(record: CandidateRecord) -> float:
            if record.paired_value is not None:
                return sign * record.paired_value
            decision = own.get(id(record))
            result = decision.result if decision is not None else None
            metric = (result.metrics if result else record.metrics).get(self.objective.metric)
            return sign * (metric.value if metric is not None else 0.0)

        best = min(accepted, key=value)
        superseded = []
        for record in accepted:
            if record is best:
                continue
            decision = own.get(id(record)) or Decision(record, "accepted", record.reason)
            decision.verdict = "rejected"
            decision.reason = f"passed acceptance, but {best.id} was better ({decision.reason})"
            superseded.append(decision)
        return best, superseded
