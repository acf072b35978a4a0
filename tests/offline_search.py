"""Drive ``optimizer: search`` (or any optimizer hook) against a function instead of sessions.

The loop runs the optimizer's hook against pytest sessions in git worktrees; this runs the same
hook against a Python function, the way the loop would, for tests and for comparing search
strategies (``benchmarks/search_synthetic.py``, ``benchmarks/optimizer_efficiency.py``) without
git or pytest sessions. It is not part of the plugin::

    from offline_search import drive  # tests/ is on sys.path (rootdir conftest, prepend mode)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pytest_autopilot.config import (
    Acceptance,
    AutopilotConfig,
    Budget,
    Dimension,
    Objective,
    OptunaSettings,
    SearchSettings,
)
from pytest_autopilot.optimizers import search
from pytest_autopilot.paramfiles import Scalar, read_values
from pytest_autopilot.proposals import (
    CandidateRecord,
    FeedbackItem,
    OptimizerContext,
    ParameterFile,
    Proposal,
)
from pytest_autopilot.results import Goal, Metric

PATH = "params.yaml"

Propose = Callable[[OptimizerContext], Sequence[Proposal] | None]
Measured = float | None | Mapping[str, float]


@dataclass
class Trial:
    """One evaluation of :func:`drive`: the point, its measured value, and the verdict."""

    id: str
    params: dict[str, Any]
    value: float | None
    accepted: bool


def drive(
    space: Mapping[str, Dimension],
    start: Mapping[str, Scalar],
    evaluate: Callable[[dict[str, Any]], Measured],
    *,
    evaluations: int,
    candidates: int = 2,
    seed: int = 0,
    goal: Goal = "min",
    min_effect: float = 0.02,
    notes: Callable[[dict[str, Any]], Sequence[str]] | None = None,
    interrupt_after: int | None = None,
    optimizer: str = "search",
    rootdir: Path = Path("."),
    sampler: str = "tpe",
) -> list[Trial]:
    """Run an optimizer against ``evaluate``, the way the loop runs it against sessions.

    The parameter file is a YAML text written from ``start`` (dotted keys nest) and edited by
    the proposals; ``evaluate`` gets the values read back from each proposal's file and
    returns the objective (``None``: the candidate failed), or a mapping of metrics with the
    objective under ``"objective"`` (per-stage statistics, say). A candidate becomes the incumbent
    when it beats it by ``min_effect``, a simple stand-in for the loop's noise-aware
    acceptance. ``notes`` gives feedback texts for the incumbent's point. The first trial is
    the start point, then up to ``evaluations`` candidates.

    ``interrupt_after=N`` stops after the N-th candidate as Ctrl+C would: the rest of that
    round is lost, the history goes through JSON and the round starts again with what is
    left of it, as the loop resumes (same round number, fewer candidates wanted).
    ``optimizer`` is ``search`` or ``optuna`` (whose study file goes under ``rootdir``, with
    ``sampler`` as ``optuna.sampler``).
    """
    run = _OfflineRun(space, evaluate, candidates, seed, goal, min_effect, notes)
    run.optimizer = optimizer
    run.config = dataclasses.replace(
        run.config, rootdir=rootdir, optimizer=optimizer, optuna=OptunaSettings(sampler=sampler)
    )
    if optimizer == "optuna":
        from pytest_autopilot.optimizers import optuna_sampler

        run.propose = optuna_sampler.pytest_autopilot_propose
    return run.run(start, evaluations, interrupt_after)


class _OfflineRun:
    def __init__(
        self,
        space: Mapping[str, Dimension],
        evaluate: Callable[[dict[str, Any]], Measured],
        candidates: int,
        seed: int,
        goal: Goal,
        min_effect: float,
        notes: Callable[[dict[str, Any]], Sequence[str]] | None,
    ) -> None:
        self.space = dict(space)
        self.evaluate = evaluate
        self.candidates = candidates
        self.seed = seed
        self.goal: Goal = goal
        self.min_effect = min_effect
        self.notes = notes
        self.objective = Objective("objective", goal)
        self.config = AutopilotConfig(
            path=None,
            rootdir=Path("."),
            objective=self.objective,
            budget=Budget(candidates=candidates),
            acceptance=Acceptance(min_effect=min_effect),
            search=SearchSettings(seed=seed),
        )
        self.texts: dict[str, str] = {}
        self.history: list[CandidateRecord] = []
        self.trials: list[Trial] = []
        self.propose: Propose = search.pytest_autopilot_propose
        self.optimizer = "search"

    def run(
        self, start: Mapping[str, Scalar], evaluations: int, interrupt_after: int | None
    ) -> list[Trial]:
        self.texts["r0"] = yaml.safe_dump(_nested(start), sort_keys=False)
        baseline = CandidateRecord(id="r0", round=0, commit="r0", parent=None, rationale="")
        self.trials.append(self.measure(baseline, self.texts["r0"]))
        baseline.params = dict(self.trials[0].params)
        if self.trials[0].value is None:
            return self.trials
        baseline.verdict = "accepted"
        self.baseline = self.incumbent = baseline
        number = 0
        while len(self.trials) <= evaluations:
            number += 1
            done = [r for r in self.history if r.round == number]
            wanted = min(self.candidates - len(done), evaluations + 1 - len(self.trials))
            proposals = self.propose(self.context(number, wanted)) if wanted > 0 else []
            if not proposals and not done:
                break
            for index, proposal in enumerate(proposals or [], start=1 + len(done)):
                self.candidate(number, index, proposal)
                if interrupt_after is not None and len(self.trials) == interrupt_after + 1:
                    interrupt_after = None
                    self.resume()
                    break
            else:
                self.close_round(number)
                continue
            number -= 1
        return self.trials

    def context(self, number: int, wanted: int) -> OptimizerContext:
        point = _params_at(self.texts[self.incumbent.id], self.space)
        return OptimizerContext(
            optimizer=self.optimizer,
            round=number,
            max_candidates=wanted,
            config=self.config,
            objective=self.objective,
            incumbent=self.incumbent,
            baseline=self.baseline,
            gates=[],
            feedback=[
                FeedbackItem("offline", text, "note")
                for text in (self.notes(point) if self.notes else ())
            ],
            history=list(self.history),
            parameters=[ParameterFile(PATH, self.texts[self.incumbent.id], self.space)],
            knowledge=[],
            seed=self.seed,
        )

    def candidate(self, number: int, index: int, proposal: Proposal) -> None:
        cid = f"r{number}c{index}"
        record = CandidateRecord(
            id=cid,
            round=number,
            commit=cid,
            parent=proposal.parent or self.incumbent.id,
            rationale=proposal.rationale,
            params=dict(proposal.params or {}),
        )
        self.texts[cid] = proposal.edits.get(PATH, self.texts[self.incumbent.id])
        self.trials.append(self.measure(record, self.texts[cid]))
        self.history.append(record)

    def close_round(self, number: int) -> None:
        best: CandidateRecord | None = None
        for record in self.history:
            if record.round != number:
                continue
            reference = (best or self.incumbent).objective_value(self.objective)
            value = record.objective_value(self.objective)
            if value is not None and reference is not None and self.better(value, reference):
                best = record
            record.verdict = record.verdict or "rejected"
        if best is not None:
            best.verdict = "accepted"
            self.incumbent = best
            next(t for t in self.trials if t.id == best.id).accepted = True

    def resume(self) -> None:
        """What a resumed loop knows: the records as they come back from JSON."""
        stored = json.loads(json.dumps([dataclasses.asdict(r) for r in self.history]))
        self.history = [
            CandidateRecord(**{**r, "metrics": {k: Metric(**m) for k, m in r["metrics"].items()}})
            for r in stored
        ]
        ids = {r.id: r for r in self.history}
        self.incumbent = ids.get(self.incumbent.id, self.incumbent)

    def better(self, value: float, reference: float) -> bool:
        if self.goal == "min":
            return value < reference - abs(reference) * self.min_effect
        return value > reference + abs(reference) * self.min_effect

    def measure(self, record: CandidateRecord, text: str) -> Trial:
        values = _params_at(text, self.space)
        result = self.evaluate(dict(values))
        extra: dict[str, float] = {}
        if isinstance(result, Mapping):
            extra = {k: float(v) for k, v in result.items() if k != "objective"}
            result = result.get("objective")
        value = None if result is None else float(result)
        if value is None:
            record.verdict, record.reason = "failed", "evaluate returned None"
        else:
            record.metrics = {"objective": Metric("objective", value, self.goal)}
            record.metrics.update({k: Metric(k, v) for k, v in extra.items()})
        return Trial(record.id, dict(values), value, False)


def _nested(start: Mapping[str, Scalar]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in start.items():
        node = nested
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return nested


def _params_at(text: str, space: Mapping[str, Dimension]) -> dict[str, Any]:
    return dict(read_values(text, list(space), "yaml", PATH))
