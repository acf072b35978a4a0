"""The optimization loop: rounds of candidates as git commits, decided on fresh measurements.

:func:`prepare_loop` runs from ``pytest_configure`` and refuses early (no git repository, no
objective, unknown optimizer, a live run on the same experiment, a saved experiment that
started from other code). It snapshots the baseline (HEAD plus uncommitted changes) before a
single test runs. :func:`run_loop` runs from ``pytest_sessionfinish`` on the controller:

1. The baseline commit is measured in its own worktree, exactly as candidates will be.
2. Each round asks the optimizer (``pytest_autopilot_propose``) for up to K proposals, turns
   each into a tree and a commit on top of its parent, refuses duplicates (a tree already
   evaluated) and violations (its actual diff leaves the parameters or touches a protected
   path), and evaluates the rest with :class:`~pytest_autopilot.loop.child.LocalExecutor`.
3. A candidate that breaks a test or a dataset pass rate is rejected; otherwise the acceptance
   hook decides. When the objective carries samples (a timing), the incumbent is measured
   again in every round right before its candidates, and a candidate that looks better is
   measured once more, after which the incumbent is measured once more: acceptance needs both
   comparisons, in both orders, to agree. Noise and drift between sessions then have to fool
   the test twice, in opposite directions, to pass as progress.
4. The best accepted candidate of the round becomes the incumbent and ``autopilot/<name>``
   moves to it. The loop stops when all gates pass on the incumbent, or a budget runs out
   (rounds, patience, minutes), or the optimizer has nothing left.

The record (journal, state, refs) is written after every candidate, so Ctrl+C or ``kill -9``
loses at most the candidates in flight, and the same command resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from pytest_autopilot import racing
from pytest_autopilot.config import AutopilotConfig, glob_match, is_protected, protected_globs
from pytest_autopilot.loop import acceptance
from pytest_autopilot.loop.child import CHILD_ENV, ChildSpec, Evaluation, Executor, LocalExecutor
from pytest_autopilot.loop.journal import ExperimentStore, Lock, kill_orphans
from pytest_autopilot.loop.judge import (
    Decision,
    Interrupted,
    Judge,
    Reference,
    RoundDecision,
    hook_acceptance,
)
from pytest_autopilot.loop.protect import violations
from pytest_autopilot.loop.state import RunState, frozen_copy, record_to_json
from pytest_autopilot.loop.workspace import (
    GitError,
    InvalidEdit,
    Workspace,
    validate_experiment,
)
from pytest_autopilot.proposals import (
    CandidateFailed,
    CandidateRecord,
    FeedbackItem,
    GateStatus,
    OptimizerContext,
    ParameterFile,
    Proposal,
    Verdict,
)
from pytest_autopilot.report import fmt, gate_lines
from pytest_autopilot.results import SessionResult, read_session_file

BUILTIN_PLUGINS = (
    ("autopilot-optimizer-search", "pytest_autopilot.optimizers.search"),
    ("autopilot-optimizer-anthropic", "pytest_autopilot.optimizers.anthropic_api"),
    ("autopilot-optimizer-command", "pytest_autopilot.optimizers.command"),
    ("autopilot-acceptance", "pytest_autopilot.loop.acceptance"),
)

PREFIX = "autopilot:"
SUMMARY_WIDTH = 48


@dataclass
class LoopOutcome:
    """What the loop hands back to ``plugin.py``: the exit status and the JSON payload part."""

    exit_status: int
    """0: the gates pass at the end; 1: budget spent with a failing gate; 2: interrupted."""
    payload: dict[str, Any]
    """``rounds``, ``baseline``, ``best``, ``gates``, ``passed`` (the contract's JSON shape)."""


class LoopRun:
    """What :func:`prepare_loop` set up for :func:`run_loop`; releases the lock at unconfigure."""

    def __init__(
        self,
        workspace: Workspace,
        store: ExperimentStore,
        lock: Lock,
        baseline_commit: str,
        state: RunState | None,
        pruned: list[str],
        orphans: list[str],
    ) -> None:
        self.workspace = workspace
        self.store = store
        self.lock = lock
        self.baseline_commit = baseline_commit
        self.baseline_tree = workspace.tree_of(baseline_commit)
        self.state = state
        self.pruned = pruned
        self.orphans = orphans

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.lock.release()


run_key = pytest.StashKey[LoopRun]()


def _config_name(config: AutopilotConfig) -> str:
    return config.relpath() or (str(config.path) if config.path else "autopilot.yaml")


def _register_builtins(pytest_config: pytest.Config) -> None:
    import importlib

    pm = pytest_config.pluginmanager
    for name, module_name in BUILTIN_PLUGINS:
        if pm.get_plugin(name) is None:
            pm.register(importlib.import_module(module_name), name)


def optimizer_names(pytest_config: pytest.Config) -> list[str]:
    answers = pytest_config.hook.pytest_autopilot_optimizer_names(config=pytest_config)
    return sorted({name for names in answers for name in names})


def prepare_loop(pytest_config: pytest.Config, autopilot_config: AutopilotConfig) -> None:
    """Validate everything a loop needs and take the experiment, before any test runs."""
    if hasattr(pytest_config, "workerinput"):
        return
    config = autopilot_config
    if os.environ.get(CHILD_ENV):
        raise pytest.UsageError(
            f"--autopilot inside a candidate session ({os.environ[CHILD_ENV]}): remove "
            "--autopilot from addopts; give it on the command line"
        )
    where = _config_name(config)
    if config.path is None:
        raise pytest.UsageError(
            f"--autopilot needs a configuration: no autopilot.yaml in the rootdir "
            f"{config.rootdir} (or give --autopilot-config PATH)"
        )
    if config.objective is None:
        raise pytest.UsageError(
            f"{where}: objective: expected {{metric: NAME, goal: min|max}} "
            "(required by --autopilot), got nothing"
        )
    if not config.parameters:
        raise pytest.UsageError(
            f"{where}: parameters: expected at least one file the optimizer may change "
            "(required by --autopilot), got none"
        )
    validate_experiment(config.experiment, where)
    _register_builtins(pytest_config)
    names = optimizer_names(pytest_config)
    if config.optimizer not in names:
        raise pytest.UsageError(
            f"{where}: optimizer: expected one of {', '.join(names) or '(none)'}, "
            f"got {config.optimizer!r}"
        )
    pytest_config.hook.pytest_autopilot_check(config=pytest_config, autopilot_config=config)

    workspace = Workspace.discover(config.rootdir, config.experiment)
    if workspace.current_branch() == workspace.best_ref:
        raise pytest.UsageError(
            f"the current branch is {workspace.best_branch}, which the loop moves to its best "
            "commit; switch to another branch first"
        )
    workspace.ensure_layout()
    store = ExperimentStore(workspace.experiment_dir)
    store.ensure()
    lock = Lock(workspace.experiment_dir / "lock")
    lock.acquire()
    try:
        orphans = kill_orphans(store)
        pruned = workspace.prune_worktrees()
        fresh = bool(pytest_config.getoption("autopilot_fresh", False))
        state = None if fresh else RunState.load(store)
        if state is None:
            workspace.delete_experiment_refs()
            store.clear()
        else:
            workspace.delete_experiment_refs(under="transfer")  # a dead run's remote transfers
        baseline_commit = workspace.snapshot_baseline(
            f"autopilot: baseline of experiment {config.experiment}\n\n"
            "HEAD plus the uncommitted changes present when the run started.\n",
            exclude=_output_files(pytest_config, workspace),
        )
        run = LoopRun(workspace, store, lock, baseline_commit, state, pruned, orphans)
        if state is not None and state.baseline.tree != run.baseline_tree:
            changed = workspace.changed_paths(str(state.baseline.tree), run.baseline_tree)
            shown = ", ".join(changed[:8]) + (", ..." if len(changed) > 8 else "")
            raise pytest.UsageError(
                f"experiment {config.experiment!r} started from other code (its baseline "
                f"{str(state.baseline.commit)[:12]}; changed since: {shown or 'unknown'}); "
                "pass --autopilot-fresh to start it over from the current tree, or "
                "--autopilot-experiment NAME for a new one"
            )
    except BaseException:
        lock.release()
        raise
    pytest_config.stash[run_key] = run
    pytest_config.pluginmanager.register(run, "autopilot-loop")


def _output_files(pytest_config: pytest.Config, workspace: Workspace) -> list[str]:
    """Files this run writes into the tree (repository-relative): not part of any baseline."""
    here = pytest_config.invocation_params.dir
    paths = []
    for option in ("autopilot_json", "autopilot_report", "autopilot_save", "xmlpath"):
        value = pytest_config.getoption(option, None)
        if isinstance(value, str) and value:
            try:
                rel = (here / value).resolve().relative_to(workspace.repo)
            except ValueError:
                continue
            paths.append(rel.as_posix())
    return paths


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


def make_racer(pytest_config: pytest.Config, config: AutopilotConfig) -> racing.Racer | None:
    """The run's sequential paired decisions, unless a plugin brings its own acceptance policy.

    The error budget ``1 - acceptance.confidence`` covers the whole run: it is split over the
    ``rounds * candidates`` the budget allows (:class:`~pytest_autopilot.racing.RacePlan`).
    """
    impls = pytest_config.pluginmanager.hook.pytest_autopilot_accept.get_hookimpls()
    if config.objective is None or any(i.plugin_name != "autopilot-acceptance" for i in impls):
        return None
    plan = racing.RacePlan(
        1.0 - config.acceptance.confidence, config.budget.rounds * config.budget.candidates
    )
    return racing.Racer(config.objective.goal, config.acceptance.min_effect, plan)


@contextmanager
def lockstep_batch(directory: Path, count: int) -> Iterator[None]:
    """Sessions started in this block wait for each other before their first timing test
    (:data:`pytest_autopilot.lockstep.BATCH_ENV`), so their rounds really alternate."""
    from pytest_autopilot.lockstep import BATCH_ENV

    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[BATCH_ENV] = f"{directory}|{count}"
    try:
        yield
    finally:
        os.environ.pop(BATCH_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


def local_workers(pytest_config: pytest.Config) -> int:
    """``-n N`` as xdist resolved it (``auto`` included); 0 without it."""
    numprocesses = pytest_config.getoption("numprocesses", None)
    return numprocesses if isinstance(numprocesses, int) and numprocesses > 0 else 0


def remote_specs(pytest_config: pytest.Config) -> list[str]:
    """``--tx`` execution specs given without ``-n`` (with ``-n``, xdist fills ``tx`` itself)."""
    tx = pytest_config.getoption("tx", None)
    if local_workers(pytest_config) or not tx:
        return []
    from pytest_autopilot.loop.remote import expand_tx

    return expand_tx([str(spec) for spec in tx])


def make_executor(pytest_config: pytest.Config, run: LoopRun, specs: Sequence[str]) -> Executor:
    """Local child sessions, or sessions on the execnet gateways of ``specs`` (``--tx``)."""
    spec = ChildSpec.from_config(pytest_config, run.workspace)
    if specs:
        from pytest_autopilot.loop.remote import ExecnetExecutor

        return ExecnetExecutor(run.workspace, run.store, spec, specs)
    return LocalExecutor(run.workspace, run.store, spec)


class Controller:
    """One run of the loop; all its state is here and in the experiment's files."""

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
        specs = remote_specs(pytest_config)
        self.parallel = local_workers(pytest_config) or len(specs) or 1
        """How many candidate sessions may run at once (``-n N``, or one per ``--tx`` spec)."""
        self.executor: Executor = executor or make_executor(pytest_config, run, specs)
        self.hook = pytest_config.hook
        self.judge = Judge(
            config,
            hook_acceptance(self.hook, config),
            self._evaluate_all,
            self.parallel,
            racer=make_racer(pytest_config, config),
        )
        given = pytest_config.getoption("autopilot_baseline", None)
        self.gate_baseline = (
            read_session_file(pytest_config.invocation_params.dir / given) if given else None
        )
        """``--autopilot-baseline``: what relative gates compare with, instead of the run's r0."""
        self.results: dict[str, SessionResult] = {}
        self.head = self.workspace.head_commit()
        baseline = CandidateRecord(
            id="r0",
            round=0,
            commit=run.baseline_commit,
            parent=self.head if self.head != run.baseline_commit else None,
            rationale="baseline: the code the run started from",
            tree=run.baseline_tree,
        )
        self.state = run.state or RunState.fresh(config.experiment, baseline)
        self.resumed = run.state is not None
        self.started = time.monotonic()
        self.exhausted = False
        self.interrupted = False
        self.stop_reason = ""
        self.said = False
        self._applying: list[Proposal] = []
        self._applying_lock = threading.Lock()

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> LoopOutcome:
        status: int
        with self._sigint():
            try:
                self._start()
                while not (reason := self._stop_reason()):
                    self._round(self.state.rounds_done + 1)
                self.stop_reason = reason
                status = 0 if self._gates_pass(self.state.incumbent) else 1
            except (Interrupted, KeyboardInterrupt):
                self.executor.cancel()
                self.stop_reason = "interrupted"
                status = 2
            finally:
                if "r0" in self.results:
                    self._save()
                close = getattr(self.executor, "close", None)
                if callable(close):
                    close()
        self.store.append("stop", reason=self.stop_reason, exit_status=status)
        self._summary(status)
        if status != 2 and self.pytest_config.getoption("autopilot_apply", False):
            self._apply()
        return LoopOutcome(status, self.payload())

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
            for proposal in list(self._applying):
                cancel = getattr(proposal.apply, "cancel", None)
                if callable(cancel):
                    cancel()

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _check_interrupt(self) -> None:
        if self.interrupted:
            raise Interrupted

    def _elapsed(self) -> float:
        return self.state.elapsed_before + time.monotonic() - self.started

    def _stop_reason(self) -> str:
        budget = self.config.budget
        if self.config.gates and self._gates_pass(self.state.incumbent):
            return "all gates pass"
        if self.exhausted:
            return "the optimizer has nothing left to propose"
        if self.state.rounds_done >= budget.rounds:
            return f"round budget spent ({budget.rounds} rounds)"
        if self.state.stale_rounds >= budget.patience:
            return f"no improvement in {budget.patience} rounds (patience)"
        if self._elapsed() >= budget.minutes * 60:
            return f"time budget spent ({budget.minutes:g} minutes)"
        return ""

    def _gates_pass(self, record: CandidateRecord) -> bool:
        return all(status.passed for status in self.state.gates.get(record.id, []))

    def _say(self, line: str, **markup: bool) -> None:
        reporter = self.pytest_config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            if not self.said:
                reporter.write("\n")
                self.said = True
            reporter.write_line(f"{PREFIX} {line}", **markup)
            reporter.flush()

    # -- start and resume -----------------------------------------------------------------

    def _start(self) -> None:
        budget = self.config.budget
        for label in self.run_info.orphans:
            self._say(f"killed the session {label} that an earlier run left running")
        for name in self.run_info.pruned:
            self._say(f"removed the worktree {name} left by an earlier run that did not finish")
        if self.resumed:
            self._load_results()
            self._say(
                f"resuming experiment {self.config.experiment} after round "
                f"{self.state.rounds_done} ({len(self.state.records)} candidates so far, "
                f"incumbent {self.state.incumbent.id})"
            )
            self.store.append("resume", rounds_done=self.state.rounds_done, pid=os.getpid())
            return
        head = self.head
        if head is None:
            origin = "your files (no commit yet)"
        elif head == self.state.baseline.commit:
            origin = f"HEAD {head[:10]}"
        else:
            origin = "HEAD plus your uncommitted changes"
        self._say(
            f"experiment {self.config.experiment}: baseline {str(self.state.baseline.commit)[:10]} "
            f"({origin}); objective {self.objective.metric} ({self.objective.goal}); "
            f"optimizer {self.config.optimizer}; budget {budget.rounds} rounds x "
            f"{budget.candidates} candidates"
        )
        self.store.append(
            "start",
            experiment=self.config.experiment,
            baseline=self.state.baseline.commit,
            head=head,
            pid=os.getpid(),
            optimizer=self.config.optimizer,
        )
        evaluation = self.executor.evaluate(
            "r0", str(self.state.baseline.commit), budget.candidate_timeout
        )
        if evaluation.status == "interrupted":
            raise Interrupted
        if evaluation.result is None:
            raise pytest.UsageError(
                f"the baseline could not be measured in a worktree ({evaluation.reason}); "
                "candidates are evaluated in fresh git worktrees, so everything the tests need "
                f"must be committed or not ignored (log: {evaluation.log})"
            )
        result = evaluation.result
        for problem in acceptance.regressions(self.session_result, result, where="here"):
            self._say(
                f"warning: in a clean worktree, the baseline {problem} "
                "(does a test need a file that git ignores or does not track?)",
                yellow=True,
            )
        self.state.baseline.metrics = result.metrics
        self.state.baseline.verdict = "accepted"
        self.state.baseline.reason = "baseline"
        self.results["r0"] = result
        self.state.gates["r0"] = self._evaluate_gates(result)
        self.state.trees[str(self.state.baseline.tree)] = "r0"
        self.workspace.set_ref(
            f"{self.workspace.ref_prefix}/baseline",
            str(self.state.baseline.commit),
            "autopilot: baseline",
        )
        self.workspace.set_ref(
            self.workspace.best_ref, str(self.state.baseline.commit), "autopilot: baseline"
        )
        self.store.append(
            "baseline",
            commit=self.state.baseline.commit,
            metrics=_metrics_json(self.state.baseline),
            gates=[asdict(s) for s in self.state.gates["r0"]],
            seconds=round(evaluation.duration, 3),
        )
        self._say(
            f"r0 baseline {self.objective.metric} "
            f"{_num(self.state.baseline.objective_value(self.objective))} "
            f"({evaluation.duration:.1f}s)"
        )
        self._save()

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

    def _save(self) -> None:
        self.state.save(self.store, self._elapsed())

    def _evaluate_gates(self, result: SessionResult) -> list[GateStatus]:
        from pytest_autopilot.gates import evaluate_gates

        baseline = self.gate_baseline or self.results.get("r0", result)
        return evaluate_gates(self.config, result, baseline)

    # -- rounds ------------------------------------------------------------------------------

    def _round(self, number: int) -> None:
        done = self.state.in_round(number)
        incumbent = self.state.incumbent.id
        self.store.append("round", round=number, incumbent=incumbent, resumed=len(done))
        reference = self._reference(number)
        wanted = self.config.budget.candidates - len(done)
        proposals: Sequence[Proposal] = []
        if wanted > 0:
            proposals = self._proposals(number, wanted)
            if not proposals and not done:
                self.exhausted = True
                return
        self._check_interrupt()
        outcome = None
        if proposals and not self._out_of_time():
            earlier = list(done)
            first = 1 + max((_position(r)[1] for r in done), default=0)
            pending = self._prepare(number, first, proposals, reference.result)
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
        answer = self._propose(self._context(number, wanted))
        if answer is None:
            raise pytest.UsageError(
                f"{_config_name(self.config)}: optimizer: no plugin answered for "
                f"{self.config.optimizer!r}"
            )
        return list(answer)[:wanted]

    def _out_of_time(self) -> bool:
        return self._elapsed() >= self.config.budget.minutes * 60

    def _stop_evaluating(self) -> bool:
        self._check_interrupt()
        return self._out_of_time()

    def _record_decision(
        self, decision: Decision, reference: CandidateRecord, done: list[CandidateRecord]
    ) -> None:
        """Record one decision of the judge: journal, commit and ref, then the live line."""
        record = decision.record
        if decision.evaluation is None:
            self.state.release_tree(record.tree)
            self._refused(record, decision.verdict, decision.reason)
        else:
            for measurement in decision.measurements:
                self._note_measurement(measurement)
            record.verdict, record.reason = decision.verdict, decision.reason
            if decision.result is not None:
                record.metrics = decision.result.metrics
                self.results[record.id] = decision.result
                self.state.gates[record.id] = self._evaluate_gates(decision.result)
            self._journal(record, decision.evaluation)
            self._file_ref(record)
        self._finish(record, reference, done)

    def _finish(
        self, record: CandidateRecord, reference: CandidateRecord, done: list[CandidateRecord]
    ) -> None:
        """A decided candidate: record it durably, then tell the user and the observers."""
        done.append(record)
        self.state.records.append(record)
        self._save()
        self._live_line(record, reference)
        if record.verdict != "accepted":  # final now; an accepted one only when the round closes
            self.hook.pytest_autopilot_candidate_done(candidate=frozen_copy(record))

    def _propose(self, context: OptimizerContext) -> Sequence[Proposal] | None:
        """Ask the optimizer; a crash in it stops the loop with where it happened, resumable."""
        try:
            answer: Sequence[Proposal] | None = self.hook.pytest_autopilot_propose(context=context)
        except (pytest.UsageError, KeyboardInterrupt):
            raise
        except Exception as exc:
            frames = traceback.extract_tb(exc.__traceback__)
            where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
            self.store.append(
                "optimizer_error", round=context.round, traceback=traceback.format_exc()
            )
            raise pytest.UsageError(
                f"optimizer {self.config.optimizer!r} failed in round {context.round}: "
                f"{type(exc).__name__}: {exc}{where} (traceback in {self.store.journal_path}); "
                "fix it and run the same command to resume"
            ) from None
        return answer

    def _reference(self, number: int) -> Reference:
        incumbent = self.state.incumbent
        reference = self.judge.reference(incumbent, self.results[incumbent.id], f"r{number}i")
        if reference.measurement is not None:
            self._note_measurement(reference.measurement)
        return reference

    def _note_measurement(self, evaluation: Evaluation) -> None:
        self.store.append(
            "measure",
            label=evaluation.label,
            commit=evaluation.commit,
            status=evaluation.status,
            reason=evaluation.reason,
            metrics=_result_metrics(evaluation.result),
            seconds=round(evaluation.duration, 3),
        )
        if evaluation.result is None:
            self._say(f"{evaluation.label} re-measurement failed: {evaluation.reason}", yellow=True)

    def _close_round(
        self, number: int, candidates: list[CandidateRecord], outcome: RoundDecision | None
    ) -> None:
        """Supersede all accepted candidates but the winner, move the incumbent, then tell the
        observers the final verdicts."""
        final = [c for c in candidates if c.verdict == "accepted"]
        winner = outcome.winner if outcome is not None else None
        for decision in outcome.superseded if outcome is not None else ():
            other = decision.record
            other.verdict, other.reason = decision.verdict, decision.reason
            self._file_ref(other)
            self.store.append("superseded", id=other.id, by=str(winner and winner.id))
            self._say(
                f"{other.id} passed acceptance too, but {winner and winner.id} is better: kept"
            )
        if winner is not None:
            self.state.incumbent = winner
            self.results[winner.id] = self._load_result(winner.id)
            self.workspace.set_ref(
                self.workspace.best_ref, str(winner.commit), f"autopilot: {winner.id} accepted"
            )
            self.state.stale_rounds = 0
        else:
            self.state.stale_rounds += 1
        self.state.rounds_done = number
        self.store.append(
            "round_done",
            round=number,
            incumbent=self.state.incumbent.id,
            accepted=[c.id for c in final],
        )
        self._save()
        for record in final:
            self.hook.pytest_autopilot_candidate_done(candidate=frozen_copy(record))
        self.hook.pytest_autopilot_round_done(
            round=number,
            candidates=tuple(frozen_copy(c) for c in candidates),
            incumbent=frozen_copy(self.state.incumbent),
        )

    def _load_result(self, cid: str) -> SessionResult:
        if cid in self.results:
            return self.results[cid]
        path = self.store.result_path(cid)
        return SessionResult.from_json(json.loads(path.read_text()), source=str(path))

    # -- one candidate -----------------------------------------------------------------------

    def _prepare(
        self,
        number: int,
        first: int,
        proposals: Sequence[Proposal],
        reference_result: SessionResult,
    ) -> list[CandidateRecord]:
        """Turn the round's proposals into provisional commits, ready to evaluate.

        Proposals that edit through a callable (an LLM conversation, an agent command) are
        applied concurrently, each in its own scratch worktree. Duplicates and violations are
        decided here, in proposal order; the others come back without a verdict and with
        ``commit`` set to the provisional commit.
        """
        records = [
            CandidateRecord(
                id=f"r{number}c{index}",
                round=number,
                commit=None,
                parent=None,
                rationale=proposal.rationale,
                params=dict(proposal.params) if proposal.params is not None else None,
                usage=dict(proposal.usage),
            )
            for index, proposal in enumerate(proposals, start=first)
        ]
        jobs = list(zip(records, proposals, strict=True))
        if sum(p.apply is not None for p in proposals) > 1:
            with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
                made = list(pool.map(lambda job: self._make_tree(*job), jobs))
        else:
            made = [self._make_tree(record, proposal) for record, proposal in jobs]
        for record, tree in zip(records, made, strict=True):
            self._check_interrupt()
            if isinstance(tree, tuple):
                self._refused(record, *tree)
                continue
            assert record.parent is not None
            record.tree = tree
            record.diff_summary = self.workspace.diff_stat(record.parent, tree)
            same = self.state.trees.get(tree)
            if same is not None:
                self._refused(record, "duplicate", f"same code as {same}")
                continue
            self.state.trees[tree] = record.id
            problems = violations(
                self.workspace.diff(record.parent, tree),
                self.workspace,
                self.config,
                reference_result,
            )
            if problems:
                self._refused(record, "violation", "; ".join(problems))
                continue
            record.commit = self.workspace.commit(tree, [record.parent], self._message(record))
        return records

    def _make_tree(self, record: CandidateRecord, proposal: Proposal) -> str | tuple[Verdict, str]:
        """The proposal as a git tree on top of its parent, or why it could not be made."""
        parent = self._parent(proposal.parent)
        if parent is None:
            return "failed", f"unknown parent {proposal.parent!r}"
        record.parent = parent
        with self._applying_lock:
            self._applying.append(proposal)
        try:
            if proposal.apply is None:
                return self.workspace.build_tree(parent, proposal.edits)
            tree, replaced = self.workspace.tree_in_worktree(
                parent, record.id, proposal.edits, proposal.apply
            )
            if replaced:
                record.rationale = replaced
            return tree
        except InvalidEdit as exc:
            return "violation", str(exc)
        except CandidateFailed as exc:
            self._check_interrupt()
            return "failed", str(exc) or "the optimizer gave up"
        except (pytest.UsageError, KeyboardInterrupt):
            raise
        except Exception as exc:
            self._check_interrupt()
            return "failed", f"applying the proposal raised {exc!r}"
        finally:
            with self._applying_lock:
                self._applying.remove(proposal)
            record.usage = dict(proposal.usage)
            self._keep_transcript(record.id, proposal)

    def _keep_transcript(self, cid: str, proposal: Proposal) -> None:
        if proposal.transcript:
            path = self.store.logs_dir / f"{cid}.transcript.json"
            path.write_text(json.dumps(proposal.transcript, indent=1, default=str))

    def _parent(self, wanted: str | None) -> str | None:
        if wanted is None:
            return self.state.incumbent.commit
        known = {r.id: r.commit for r in [self.state.baseline, *self.state.records] if r.commit}
        if wanted in known:
            return known[wanted]
        commit = self.workspace.resolve(wanted)
        return commit if commit in known.values() else None

    def _refused(self, record: CandidateRecord, verdict: Verdict, reason: str) -> CandidateRecord:
        """A candidate decided without evaluation: still committed and kept when it has a tree."""
        record.verdict = verdict
        record.reason = reason
        if record.tree is not None and record.parent is not None:
            self._file_ref(record)
        self.store.append("candidate", **record_to_json(record))
        return record

    def _file_ref(self, record: CandidateRecord) -> None:
        """Write the candidate's final commit (message with verdict and metrics) and its ref."""
        assert record.tree is not None and record.parent is not None
        prefix = self.workspace.ref_prefix
        accepted = record.verdict == "accepted"
        record.commit = self.workspace.commit(record.tree, [record.parent], self._message(record))
        kind, other = ("accepted", "rejected") if accepted else ("rejected", "accepted")
        self.workspace.set_ref(
            f"{prefix}/{kind}/{record.id}",
            record.commit,
            f"autopilot: {record.id} {record.verdict}",
        )
        self.workspace.delete_ref(f"{prefix}/{other}/{record.id}")

    def _evaluate_all(self, jobs: Sequence[tuple[str, str]]) -> list[Evaluation]:
        """Evaluate ``(label, commit)`` pairs at once, each in its own worktree and session.

        Timing tests of the sessions never overlap anything: :mod:`pytest_autopilot.timing`.
        """
        timeout = self.config.budget.candidate_timeout
        if len(jobs) == 1:
            return [self.executor.evaluate(jobs[0][0], jobs[0][1], timeout)]
        batch = self.store.running_dir / f"batch-{jobs[0][0]}"
        with lockstep_batch(batch, len(jobs)), ThreadPoolExecutor(len(jobs)) as pool:
            futures = [pool.submit(self.executor.evaluate, lab, com, timeout) for lab, com in jobs]
            return [future.result() for future in futures]

    def _journal(self, record: CandidateRecord, evaluation: Evaluation) -> None:
        self.store.append(
            "candidate",
            **record_to_json(record),
            gates=[asdict(s) for s in self.state.gates.get(record.id, [])],
            seconds=round(evaluation.duration, 3),
            started=round(evaluation.started, 3),
            finished=round(evaluation.finished, 3),
            exit_code=evaluation.exit_code,
            **({"executor": evaluation.extra} if evaluation.extra else {}),
        )

    def _message(self, record: CandidateRecord) -> str:
        rationale = record.rationale.strip() or "(no rationale given)"
        lines = [
            f"autopilot {record.id}: {_shorten(rationale.splitlines()[0], 60)}",
            "",
            f"Experiment: {self.config.experiment}",
            f"Round: {record.round}",
            f"Candidate: {record.id}",
        ]
        if record.params is not None:
            lines.append(f"Params: {json.dumps(record.params, sort_keys=True, default=str)}")
        if record.verdict is not None:
            lines.append(f"Verdict: {record.verdict}")
            lines.append(f"Reason: {record.reason}")
        lines += ["", "Rationale:", rationale]
        if record.metrics:
            lines += ["", "Metrics:"]
            for name, metric in sorted(record.metrics.items()):
                n = f", {len(metric.samples)} samples" if metric.samples else ""
                lines.append(f"  {name} = {fmt(metric.value)} ({metric.goal}{n})")
        return "\n".join(lines) + "\n"

    # -- what the optimizer sees ---------------------------------------------------------

    def _context(self, number: int, wanted: int) -> OptimizerContext:
        incumbent_result = self.results[self.state.incumbent.id]
        context = OptimizerContext(
            optimizer=self.config.optimizer,
            round=number,
            max_candidates=wanted,
            config=self.config,
            objective=self.objective,
            incumbent=self.state.incumbent,
            baseline=self.state.baseline,
            gates=list(self.state.gates.get(self.state.incumbent.id, [])),
            feedback=_feedback(incumbent_result),
            history=list(self.state.records),
            parameters=self._parameter_files(str(self.state.incumbent.commit), incumbent_result),
            knowledge=self._knowledge(),
            seed=self.config.search.seed,
            protected_files=list(incumbent_result.protected_files),
        )
        extra: list[FeedbackItem] = []
        for items in self.hook.pytest_autopilot_feedback(context=context, result=incumbent_result):
            for item in items or ():
                test = incumbent_result.tests.get(item.nodeid)
                if test is None or not test.held_out:
                    extra.append(item)
        if not extra:
            return context
        return dataclasses.replace(context, feedback=[*context.feedback, *extra])

    def _parameter_files(self, commit: str, result: SessionResult) -> list[ParameterFile]:
        protected = protected_globs(self.config, result)
        files: list[ParameterFile] = []
        for path in self.workspace.list_files(commit):
            rel = self.workspace.to_rootdir_path(path)
            if rel is None or is_protected(rel, protected):
                continue
            specs = [s for s in self.config.parameters if glob_match(s.path, rel)]
            if not specs:
                continue
            blob = self.workspace.read_blob(commit, path)
            try:
                text = (blob or b"").decode()
            except UnicodeDecodeError:
                continue
            space = next((s.space for s in specs if s.space), {})
            files.append(ParameterFile(path=path, text=text, space=space))
        return files

    def _knowledge(self) -> list[tuple[str, str]]:
        out = []
        for rel in self.config.knowledge:
            blob = self.workspace.read_blob(
                str(self.state.baseline.commit), self.workspace.to_repo_path(rel)
            )
            if blob is not None:
                out.append((rel, blob.decode(errors="replace")))
        return out

    # -- output ------------------------------------------------------------------------------

    def _change(self, record: CandidateRecord) -> str:
        if record.params:
            text = " ".join(f"{k}={v}" for k, v in record.params.items())
        elif record.diff_summary:
            text = record.diff_summary
        else:
            text = (record.rationale.strip().splitlines() or [""])[0]
        return _shorten(text or "(no change)", SUMMARY_WIDTH)

    def _live_line(self, record: CandidateRecord, reference: CandidateRecord) -> None:
        name = self.objective.metric
        after = record.objective_value(self.objective)
        line = f"{record.id} {self._change(record)}"
        if after is not None:
            before = reference.objective_value(self.objective)
            line += f" {name} {_num(before)} -> {_num(after)}{_percent(before, after)}"
        line += f" {record.verdict}"
        if record.verdict != "accepted" or self._raced():
            line += f": {_shorten(record.reason, 160)}"
        if record.usage.get("requests"):
            line += f" [{_usage_text(record.usage)}]"
        self._say(line, green=record.verdict == "accepted")

    def _raced(self) -> bool:
        """Whether sequential paired decisions decided candidates (a sampled objective)."""
        return self.judge.racer is not None and self.judge.racer.decided > 0

    def _summary(self, status: int) -> None:
        name = self.objective.metric
        base = self.state.baseline.objective_value(self.objective)
        self._say(
            f"experiment {self.config.experiment} stopped: {self.stop_reason} "
            f"({self.state.rounds_done} rounds, {len(self.state.records)} candidates, "
            f"{sum(1 for r in self.state.records if r.verdict == 'accepted')} accepted)"
        )
        rows = [("id", "verdict", name, "change")]
        rows.append(("r0", "baseline", _num(base), ""))
        for record in sorted(self.state.records, key=_position):
            value = record.objective_value(self.objective)
            shown = _num(value) + _percent(base, value) if value is not None else "-"
            rows.append((record.id, str(record.verdict), shown, self._change(record)))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            self._say(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
                + "  "
                + row[3]
            )
        best_gates = self.state.gates.get(self.state.incumbent.id, [])
        for line in gate_lines(best_gates, self.results.get("r0")):
            self._say(line.removeprefix(PREFIX).strip())
        racer = self.judge.racer
        if racer is not None and racer.decided:
            self._say(f"decisions: {racer.describe()}")
        usage = self._usage()
        if usage.get("requests"):
            self._say(f"{self.config.optimizer} usage: {_usage_text(usage)}")
        branch = self.workspace.best_branch
        if status == 2:
            self._say(
                f"interrupted: state saved in {self.store.directory}; run the same command to "
                "resume (or add --autopilot-fresh to start over)",
                yellow=True,
            )
        if self.state.incumbent is self.state.baseline or self.state.incumbent.id == "r0":
            self._say(f"no candidate beat the baseline; {branch} points at the baseline")
            return
        best = self.state.incumbent.objective_value(self.objective)
        self._say(
            f"best: {self.state.incumbent.id} ({str(self.state.incumbent.commit)[:10]}) {name} "
            f"{_num(base)} -> {_num(best)}{_percent(base, best)} on branch {branch}",
            green=True,
        )
        self._say(f"bring it in with: git merge {branch}   (or rerun with --autopilot-apply)")

    def _apply(self) -> None:
        best = self.state.incumbent
        branch = self.workspace.best_branch
        if best.id == "r0" or best.commit is None:
            self._say("--autopilot-apply: nothing to apply, no candidate beat the baseline")
            return
        head = self.workspace.head_commit()
        if head is not None and self._is_ancestor(best.commit, head):
            self._say(f"--autopilot-apply: {branch} is already part of HEAD")
            return
        if not self.workspace.is_clean():
            self._say(
                "--autopilot-apply refused: the working tree has uncommitted changes; commit or "
                f"stash them, then run: git merge {branch}",
                red=True,
            )
            return
        ok, how = self.workspace.merge(best.commit)
        if ok:
            self._say(f"--autopilot-apply: merged {branch} into the current branch ({how})")
            self.store.append("apply", commit=best.commit, how=how)
        else:
            self._say(f"--autopilot-apply failed, nothing changed: {how}", red=True)

    def _is_ancestor(self, commit: str, head: str) -> bool:
        try:
            self.workspace.git("merge-base", "--is-ancestor", commit, head)
        except GitError:
            return False
        return True

    # -- the JSON payload ----------------------------------------------------------------

    def payload(self) -> dict[str, Any]:
        rounds: dict[int, list[dict[str, Any]]] = {}
        for record in sorted(self.state.records, key=_position):
            entry = record_to_json(record)
            entry["gates"] = [asdict(s) for s in self.state.gates.get(record.id, [])]
            rounds.setdefault(record.round, []).append(entry)
        best_gates = self.state.gates.get(self.state.incumbent.id, [])
        return {
            "experiment": self.config.experiment,
            "objective": {"metric": self.objective.metric, "goal": self.objective.goal},
            "stop_reason": self.stop_reason,
            "rounds": [{"round": n, "candidates": c} for n, c in sorted(rounds.items())],
            "baseline": {
                "commit": self.state.baseline.commit,
                "metrics": _metrics_json(self.state.baseline),
            },
            "best": {
                "id": self.state.incumbent.id,
                "commit": self.state.incumbent.commit,
                "branch": self.workspace.best_branch,
                "metrics": _metrics_json(self.state.incumbent),
            },
            "gates": [asdict(s) for s in best_gates],
            "passed": all(s.passed for s in best_gates),
            "usage": self._usage(),
        }

    def _usage(self) -> dict[str, float]:
        """Tokens, requests and cost of every candidate so far (LLM optimizers report them)."""
        total: dict[str, float] = {}
        for record in self.state.records:
            for key, value in record.usage.items():
                if key != "turns":
                    total[key] = total.get(key, 0) + value
        if "cost_usd" in total:
            total["cost_usd"] = round(total["cost_usd"], 6)
        return total


def _feedback(result: SessionResult) -> list[FeedbackItem]:
    """Failures and notes the optimizer may see: never from held-out (val/test) cases."""
    items = []
    for nodeid, test in result.tests.items():
        if test.held_out:
            continue
        if test.outcome in ("failed", "error"):
            items.append(FeedbackItem(nodeid, test.message or test.outcome, "failure"))
        items.extend(FeedbackItem(nodeid, note, "note") for note in test.notes)
    return items


def _metrics_json(record: CandidateRecord) -> dict[str, Any]:
    return {name: m.to_json() for name, m in sorted(record.metrics.items())}


def _result_metrics(result: SessionResult | None) -> dict[str, Any]:
    if result is None:
        return {}
    return {name: m.to_json() for name, m in sorted(result.metrics.items())}


def _num(value: float | None) -> str:
    """Four significant digits for the terminal; the commit messages and JSON keep them all."""
    if value is None or not math.isfinite(value) or float(value).is_integer():
        return fmt(value)
    return f"{value:.4g}"


def _position(record: CandidateRecord) -> tuple[int, int]:
    """Round and candidate number: the order proposals were made in, whatever decided first."""
    return record.round, int(record.id.rpartition("c")[2] or 0)


def _usage_text(usage: dict[str, float]) -> str:
    def count(key: str) -> str:
        return f"{int(usage.get(key, 0)):,}"

    return (
        f"{count('requests')} requests, {count('input_tokens')} input + "
        f"{count('cache_read_input_tokens')} cache-read + "
        f"{count('cache_creation_input_tokens')} cache-write, {count('output_tokens')} output "
        f"tokens, ${usage.get('cost_usd', 0.0):.4f}"
    )


def _percent(before: float | None, after: float | None) -> str:
    if before is None or after is None or before == 0:
        return ""
    return f" ({(after - before) / abs(before) * 100:+.0f}%)"


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
