"""The optimization loop: rounds of candidates as git commits, decided on fresh measurements.

:func:`~pytest_autopilot.loop.prepare.prepare_loop` runs from ``pytest_configure``, refuses
early and snapshots the baseline before a single test runs. :func:`run_loop` runs from
``pytest_sessionfinish`` on the controller, and :class:`Controller` is this algorithm:

1. Measure the baseline commit in its own worktree, exactly as candidates will be
   (:meth:`Controller.start`), or resume from ``state.json`` (:mod:`~.state`).
2. Until a stop reason (:meth:`Controller.stop_reason`: all gates pass on the incumbent, the
   optimizer has nothing left, the rounds, patience or minutes budget is spent), play a round
   (:meth:`Controller.play_round`):

   a. the judge measures the incumbent again when the objective is noisy (:mod:`~.judge`);
   b. the optimizer (``pytest_autopilot_propose``) gets an immutable context
      (:mod:`~.context`) and answers with up to K proposals;
   c. each proposal becomes a tree and a commit; duplicates and violations are refused before
      any evaluation (:mod:`~.candidates`);
   d. the judge evaluates the rest through the executor (``-n N`` or ``--tx`` at a time),
      decides each against the incumbent, confirms noisy wins, and picks the round's winner;
   e. the winner becomes the incumbent and ``autopilot/<name>`` moves to it; the other
      accepted candidates are superseded. Observers hear each verdict once it is final.

3. Print the summary (:mod:`~.output`), merge with ``--autopilot-apply``, and return the exit
   status and the JSON payload: 0 when the gates pass on the incumbent and its failing tests,
   if any, are dataset cases that a gate judges (:func:`~pytest_autopilot.gates.judge_failures`).

Meanwhile :mod:`~.progress` hears of rounds, evaluations and incumbents, and shows them.

The record (journal, state, refs) is written after every candidate, so Ctrl+C or ``kill -9``
loses at most the candidates in flight, and the same command resumes.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any

import pytest

from pytest_autopilot.config import AutopilotConfig
from pytest_autopilot.gates import Judgement, judge_failures
from pytest_autopilot.loop import acceptance
from pytest_autopilot.loop.candidates import CandidateMaker, merge_best
from pytest_autopilot.loop.child import Evaluation, Executor
from pytest_autopilot.loop.context import ask_optimizer, optimizer_context
from pytest_autopilot.loop.journal import (
    BaselineMeasured,
    CandidateDecided,
    Measured,
    Resume,
    RoundDone,
    RoundStarted,
    Start,
    Stopped,
    Superseded,
)
from pytest_autopilot.loop.judge import (
    Decision,
    Interrupted,
    Judge,
    Reference,
    RoundDecision,
    hook_acceptance,
)
from pytest_autopilot.loop.output import LoopOutput, metrics_json, num, payload, position
from pytest_autopilot.loop.prepare import (
    LoopRun,
    local_workers,
    lockstep_batch,
    make_executor,
    make_racer,
    optimizer_names,
    prepare_loop,
    remote_specs,
    run_key,
)
from pytest_autopilot.loop.state import RunState, frozen_copy
from pytest_autopilot.proposals import CandidateRecord, GateStatus, Proposal
from pytest_autopilot.results import SessionResult, read_session_file

__all__ = ["Controller", "LoopOutcome", "optimizer_names", "prepare_loop", "run_loop"]


@dataclass
class LoopOutcome:
    """What the loop hands back to ``plugin.py``: the exit status and the JSON payload part."""

    exit_status: int
    """0: the gates pass at the end; 1: budget spent with a failing gate; 2: interrupted."""
    payload: dict[str, Any]
    """``rounds``, ``baseline``, ``best``, ``gates``, ``passed`` (the contract's JSON shape)."""


def run_loop(
    pytest_config: pytest.Config, autopilot_config: AutopilotConfig, session_result: SessionResult
) -> LoopOutcome:
    """Optimize until the gates pass or the budget is spent; see the module docstring."""
    run = pytest_config.stash.get(run_key, None)
    if run is None:
        raise pytest.UsageError("internal error: run_loop called without prepare_loop")
    try:
        return Controller(pytest_config, autopilot_config, run, session_result).run()
    finally:
        run.lock.release()


class Controller:
    """One run of the loop. Its state is :attr:`state` (saved to ``state.json``), the session
    results it still needs (:attr:`results`) and the experiment's files."""

    def __init__(
        self,
        pytest_config: pytest.Config,
        config: AutopilotConfig,
        run: LoopRun,
        session_result: SessionResult,
        executor: Executor | None = None,
    ) -> None:
        assert config.objective is not None
        self.pytest_config = pytest_config
        self.config = config
        self.objective = config.objective
        self.run_info = run
        self.workspace = run.workspace
        self.store = run.store
        self.session_result = session_result
        self.hook = pytest_config.hook
        specs = remote_specs(pytest_config)
        parallel = local_workers(pytest_config) or len(specs) or 1
        self.executor: Executor = executor or make_executor(pytest_config, run, specs)
        given = pytest_config.getoption("autopilot_baseline", None)
        self.gate_baseline = (
            read_session_file(pytest_config.invocation_params.dir / given) if given else None
        )
        """``--autopilot-baseline``: what relative gates compare with, instead of the run's r0."""
        self.head = self.workspace.head_commit()
        self.resumed = run.state is not None
        self.state = run.state or RunState.fresh(config.experiment, self._baseline_record())
        self.results: dict[str, SessionResult] = {}
        self.unsaid: list[tuple[CandidateRecord, CandidateRecord]] = []
        """Accepted candidates of the round and their reference: said once it closes."""
        self.judge = Judge(
            config,
            hook_acceptance(self.hook, config),
            self.evaluate,
            parallel,
            racer=make_racer(pytest_config, config),
        )
        self.candidates = CandidateMaker(
            self.workspace, self.store, config, self.state, self.check_interrupt
        )
        self.output = LoopOutput(pytest_config, config)
        self.progress = self.output.start_progress(self.state)
        self.started = time.monotonic()
        self.exhausted = False
        self.interrupted = False
        self.stop = ""

    def _baseline_record(self) -> CandidateRecord:
        commit = self.run_info.baseline_commit
        return CandidateRecord(
            id="r0",
            round=0,
            commit=commit,
            parent=self.head if self.head != commit else None,
            rationale="baseline: the code the run started from",
            tree=self.run_info.baseline_tree,
        )

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> LoopOutcome:
        status: int
        with self._sigint():
            try:
                self.start()
                self._new_incumbent()
                self.progress.start(every=min(1.0, self.progress.interval))
                while not (reason := self.stop_reason()):
                    self.play_round(self.state.rounds_done + 1)
                self.stop = reason
                status = 0 if self.passed() else 1
            except (Interrupted, KeyboardInterrupt):
                self.executor.cancel()
                self.stop = "interrupted"
                status = 2
            finally:
                self.progress.stop()
                if "r0" in self.results:
                    self.save()
                self.executor.close()
        self.store.record(Stopped(self.stop, status))
        racer = self.judge.racer
        decisions = racer.describe() if racer is not None and racer.decided else None
        judgement = self.judgement()
        self.output.summary(self.state, self.stop, self.results.get("r0"), judgement, decisions)
        interrupted_in = str(self.store.directory) if status == 2 else None
        self.output.closing(self.state, self.workspace.best_branch, interrupted_in)
        if status != 2 and self.pytest_config.getoption("autopilot_apply", False):
            merge_best(self.workspace, self.store, self.state.incumbent, self.output.say)
        branch = self.workspace.best_branch
        return LoopOutcome(status, payload(self.state, self.config, self.stop, branch, judgement))

    @contextmanager
    def _sigint(self) -> Iterator[None]:
        """First Ctrl+C: kill the children and stop at the next safe point; second: at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True
            self.executor.cancel()
            self.candidates.cancel_applying()

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def check_interrupt(self) -> None:
        if self.interrupted:
            raise Interrupted

    def elapsed(self) -> float:
        return self.state.elapsed_before + time.monotonic() - self.started

    def out_of_time(self) -> bool:
        return self.elapsed() >= self.config.budget.minutes * 60

    def judgement(self) -> Judgement | None:
        """The contract's rule for the incumbent's failing tests: dataset cases that a gate
        watches are measurements; other failures fail the run (``None``: not measured)."""
        result = self.results.get(self.state.incumbent.id)
        return judge_failures(self.config.gates, result) if result is not None else None

    def passed(self) -> bool:
        judgement = self.judgement()
        tests_ok = judgement is None or judgement.tests_ok
        return tests_ok and self.state.gates_pass(self.state.incumbent)

    def stop_reason(self) -> str:
        budget = self.config.budget
        if self.config.gates and self.passed():
            return "all gates pass"
        if self.exhausted:
            return "the optimizer has nothing left to propose"
        if self.state.rounds_done >= budget.rounds:
            return f"round budget spent ({budget.rounds} rounds)"
        if self.state.stale_rounds >= budget.patience:
            return f"no improvement in {budget.patience} rounds (patience)"
        if self.out_of_time():
            return f"time budget spent ({budget.minutes:g} minutes)"
        return ""

    def save(self) -> None:
        self.state.save(self.store, self.elapsed())

    # -- start and resume -----------------------------------------------------------------

    def start(self) -> None:
        for label in self.run_info.orphans:
            self.output.say(f"killed the session {label} that an earlier run left running")
        for name in self.run_info.pruned:
            self.output.say(
                f"removed the worktree {name} left by an earlier run that did not finish"
            )
        if self.resumed:
            self._load_results()
            self.output.say(
                f"resuming experiment {self.config.experiment} after round "
                f"{self.state.rounds_done} ({len(self.state.records)} candidates so far, "
                f"incumbent {self.state.incumbent.id})"
            )
            self.store.record(Resume(self.state.rounds_done, os.getpid()))
            return
        self.output.announce(self.state, self.head)
        config, commit, head = self.config, self.state.baseline.commit, self.head
        self.store.record(Start(config.experiment, commit, head, os.getpid(), config.optimizer))
        self._measure_baseline()

    def _new_incumbent(self) -> None:
        incumbent = self.state.incumbent
        self.progress.incumbent(incumbent.id, incumbent.comparable_value(self.objective))

    def _measure_baseline(self) -> None:
        baseline = self.state.baseline
        evaluation = self.judge.measure_one("r0", str(baseline.commit))
        if evaluation.result is None:
            raise pytest.UsageError(
                f"the baseline could not be measured in a worktree ({evaluation.reason}); "
                "candidates are evaluated in fresh git worktrees, so everything the tests need "
                f"must be committed or not ignored (log: {evaluation.log})"
            )
        result = evaluation.result
        for problem in acceptance.regressions(self.session_result, result, where="here"):
            self.output.say(
                f"warning: in a clean worktree, the baseline {problem} "
                "(does a test need a file that git ignores or does not track?)",
                yellow=True,
            )
        baseline.metrics, baseline.verdict, baseline.reason = result.metrics, "accepted", "baseline"
        self.results["r0"] = result
        self.state.gates["r0"] = self._evaluate_gates(result)
        self.state.trees[str(baseline.tree)] = "r0"
        for ref in (f"{self.workspace.ref_prefix}/baseline", self.workspace.best_ref):
            self.workspace.set_ref(ref, str(baseline.commit), "autopilot: baseline")
        gates = [asdict(s) for s in self.state.gates["r0"]]
        seconds = round(evaluation.duration, 3)
        self.store.record(BaselineMeasured(baseline.commit, metrics_json(baseline), gates, seconds))
        self.output.say(
            f"r0 baseline {self.objective.metric} "
            f"{num(baseline.objective_value(self.objective))} ({evaluation.duration:.1f}s)"
        )
        self.save()

    def _load_results(self) -> None:
        for cid in {"r0", self.state.incumbent.id}:
            path = self.store.result_path(cid)
            try:
                self.results[cid] = SessionResult.from_json(
                    json.loads(path.read_text()), source=str(path)
                )
            except (OSError, ValueError, KeyError, TypeError, pytest.UsageError):
                raise pytest.UsageError(
                    f"{path}: the saved result of {cid} is missing or unreadable; "
                    "pass --autopilot-fresh to start the experiment over"
                ) from None

    def _evaluate_gates(self, result: SessionResult) -> list[GateStatus]:
        from pytest_autopilot.gates import evaluate_gates

        baseline = self.gate_baseline or self.results.get("r0", result)
        return evaluate_gates(self.config, result, baseline)

    # -- rounds ------------------------------------------------------------------------------

    def play_round(self, number: int) -> None:
        """Propose, make, judge and record one round's candidates; see the module docstring."""
        self.progress.round_started(number)
        try:
            self._play_round(number)
        finally:
            self.progress.round_finished()

    def _play_round(self, number: int) -> None:
        done = self.state.in_round(number)
        earlier = list(done)  # decided by an interrupted run: they compete for the win too
        self.store.record(RoundStarted(number, self.state.incumbent.id, resumed=len(done)))
        reference = self._reference(number)
        wanted = self.config.budget.candidates - len(done)
        proposals = self._proposals(number, wanted) if wanted > 0 else []
        if wanted > 0 and not proposals and not done:
            self.exhausted = True
            return
        self.check_interrupt()
        pending: list[CandidateRecord] = []
        if proposals and not self.out_of_time():
            first = 1 + max((position(r)[1] for r in done), default=0)
            pending = self.candidates.prepare(number, first, proposals, reference.result)
            for record in pending:
                if record.verdict is not None:
                    self._finish(record, reference.record, done)
        outcome = self.judge.judge_round(
            [r for r in pending if r.verdict is None],
            reference,
            self.state.incumbent,
            earlier=earlier,
            out_of_time=self._stop_evaluating,
            decided=lambda decision: self._record_decision(decision, reference.record, done),
        )
        self._close_round(number, done, outcome)

    def _proposals(self, number: int, wanted: int) -> list[Proposal]:
        incumbent_result = self.results[self.state.incumbent.id]
        context = optimizer_context(
            self.hook, self.config, self.state, self.workspace, incumbent_result, number, wanted
        )
        return ask_optimizer(self.hook, self.config, self.store, context)

    def _stop_evaluating(self) -> bool:
        self.check_interrupt()
        return self.out_of_time()

    def _reference(self, number: int) -> Reference:
        incumbent = self.state.incumbent
        reference = self.judge.reference(incumbent, self.results[incumbent.id], f"r{number}i")
        if reference.measurement is not None:
            self._note_measurement(reference.measurement)
        return reference

    def _note_measurement(self, evaluation: Evaluation) -> None:
        result = evaluation.result
        metrics = (
            {name: m.to_json() for name, m in sorted(result.metrics.items())} if result else {}
        )
        self.store.record(
            Measured(
                evaluation.label,
                evaluation.commit,
                evaluation.status,
                evaluation.reason,
                metrics,
                round(evaluation.duration, 3),
            )
        )
        if result is None:
            self.output.say(
                f"{evaluation.label} re-measurement failed: {evaluation.reason}", yellow=True
            )

    def _record_decision(
        self, decision: Decision, reference: CandidateRecord, done: list[CandidateRecord]
    ) -> None:
        """Record one decision of the judge: journal, commit and ref, then the live line."""
        record = decision.record
        if decision.evaluation is None:
            self.state.release_tree(record.tree)
            self.candidates.refuse(record, decision.verdict, decision.reason)
        else:
            for measurement in decision.measurements:
                self._note_measurement(measurement)
            record.verdict, record.reason = decision.verdict, decision.reason
            base = reference.comparable_value(self.objective)
            if decision.ratio is not None and base is not None:
                record.paired_value = base * decision.ratio
            if decision.result is not None:
                record.metrics = decision.result.metrics
                self.results[record.id] = decision.result
                self.state.gates[record.id] = self._evaluate_gates(decision.result)
            self.store.record(self._decided_event(record, decision.evaluation))
            self.candidates.file_ref(record)
        self._finish(record, reference, done)

    def _decided_event(self, record: CandidateRecord, evaluation: Evaluation) -> CandidateDecided:
        return CandidateDecided(
            record,
            gates=self.state.gates.get(record.id, []),
            seconds=evaluation.duration,
            started=evaluation.started,
            finished=evaluation.finished,
            exit_code=evaluation.exit_code,
            executor=dict(evaluation.extra),
        )

    def _finish(
        self, record: CandidateRecord, reference: CandidateRecord, done: list[CandidateRecord]
    ) -> None:
        """A decided candidate: record it durably, then tell the user and the observers."""
        done.append(record)
        self.state.add(record)
        self.save()
        if record.verdict == "accepted":  # final, and said, only when the round closes
            self.unsaid.append((record, reference))
            return
        self._say_decided(record, reference)
        self.hook.pytest_autopilot_candidate_done(candidate=frozen_copy(record))

    def _say_decided(self, record: CandidateRecord, reference: CandidateRecord) -> None:
        racer = self.judge.racer
        self.output.live_line(record, reference, raced=racer is not None and racer.decided > 0)

    def _close_round(
        self, number: int, candidates: list[CandidateRecord], outcome: RoundDecision
    ) -> None:
        """Supersede every accepted candidate but the winner, move the incumbent, save, then
        tell the observers the final verdicts."""
        accepted = [c for c in candidates if c.verdict == "accepted"]
        winner = outcome.winner
        for decision in outcome.superseded:
            self._supersede(decision, winner)
        if winner is not None:
            self.state.incumbent = winner
            self.results[winner.id] = self._load_result(winner.id)
            self.workspace.set_ref(
                self.workspace.best_ref, str(winner.commit), f"autopilot: {winner.id} accepted"
            )
            self.state.stale_rounds = 0
            self._new_incumbent()
        else:
            self.state.stale_rounds += 1
        self.state.rounds_done = number
        self.store.record(RoundDone(number, self.state.incumbent.id, [c.id for c in accepted]))
        self.save()
        for record, reference in self.unsaid:
            self._say_decided(record, reference)
        self.unsaid.clear()
        for record in accepted:
            self.hook.pytest_autopilot_candidate_done(candidate=frozen_copy(record))
        self.hook.pytest_autopilot_round_done(
            round=number,
            candidates=tuple(frozen_copy(c) for c in candidates),
            incumbent=frozen_copy(self.state.incumbent),
        )

    def _supersede(self, decision: Decision, winner: CandidateRecord | None) -> None:
        other = decision.record
        best = winner.id if winner is not None else ""
        other.verdict, other.reason = decision.verdict, decision.reason
        self.candidates.file_ref(other)
        self.store.record(Superseded(other.id, best))

    def _load_result(self, cid: str) -> SessionResult:
        if cid in self.results:
            return self.results[cid]
        path = self.store.result_path(cid)
        return SessionResult.from_json(json.loads(path.read_text()), source=str(path))

    def evaluate(self, jobs: Sequence[tuple[str, str]]) -> list[Evaluation]:
        """Evaluate ``(label, commit)`` pairs at once, each in its own worktree and session.

        Timing tests of the sessions never overlap anything: :mod:`pytest_autopilot.timing`.
        """
        if len(jobs) == 1:
            return [self._evaluate_one(*jobs[0])]
        batch = self.store.running_dir / f"batch-{jobs[0][0]}"
        with lockstep_batch(batch, len(jobs)), ThreadPoolExecutor(len(jobs)) as pool:
            futures = [pool.submit(self._evaluate_one, label, commit) for label, commit in jobs]
            return [future.result() for future in futures]

    def _evaluate_one(self, label: str, commit: str) -> Evaluation:
        self.progress.candidate_started(label)
        try:
            return self.executor.evaluate(label, commit, self.config.budget.candidate_timeout)
        finally:
            self.progress.candidate_finished(label)
