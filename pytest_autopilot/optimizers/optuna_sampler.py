"""``optimizer: optuna``: any Optuna sampler over the typed spaces, through ask and tell.

For users who already know Optuna, or want its samplers (``optuna: {sampler: tpe|gp|cmaes,
seed: N}``; TPE by default) on the same ``space:`` declarations the built-in search uses. The
trials live in an Optuna journal file, ``.autopilot/<experiment>/optuna.log``
(``JournalFileBackend``, no database needed), so ``optuna-dashboard
.autopilot/<experiment>/optuna.log`` shows the experiment, and a resumed loop continues the
same study.

Each round the study is brought up to date with the history first: a trial asked earlier is
told the objective its candidate measured (failed, timed out or breaking tests: ``FAIL``);
measured points of other origins (the baseline, another optimizer) are added as finished
trials. Trials asked but never evaluated (an interrupted round) are proposed again before
new ones are asked, and the sampler is seeded with the seed plus the number of trials, so a
resumed run asks what the uninterrupted run would have asked.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_autopilot.config import (
    AutopilotConfig,
    ChoiceDimension,
    FloatDimension,
    IntDimension,
)
from pytest_autopilot.optimizers.search import Axis, axes_of, check_spaces
from pytest_autopilot.paramfiles import file_format, read_values, write_values
from pytest_autopilot.proposals import CandidateRecord, OptimizerContext, Proposal

if TYPE_CHECKING:
    pass

NAME = "optuna"
INSTALL = "pip install 'pytest-autopilot[optuna]'"
STORAGE_FILE = "optuna.log"
CANDIDATE_ATTR = "autopilot_candidate"
NEEDS = {"gp": ("torch", "scipy"), "cmaes": ("cmaes",), "tpe": ()}
"""Modules a sampler imports lazily, checked before the session rather than mid-run."""


@pytest.hookimpl
def pytest_autopilot_optimizer_names(config: pytest.Config) -> Sequence[str]:
    return [NAME]


@pytest.hookimpl
def pytest_autopilot_check(config: pytest.Config, autopilot_config: AutopilotConfig) -> None:
    """Refuse before the session: Optuna or the sampler's modules missing, or no space."""
    if autopilot_config.optimizer != NAME:
        return
    source = autopilot_config.relpath() or "autopilot.yaml"
    if importlib.util.find_spec("optuna") is None:
        raise pytest.UsageError(
            f"{source}: optimizer: optuna needs the Optuna package, which is not installed; "
            f"install it with: {INSTALL}"
        )
    sampler = autopilot_config.optuna.sampler
    missing = [m for m in NEEDS.get(sampler, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise pytest.UsageError(
            f"{source}: optuna.sampler: {sampler} needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed; install with: "
            f"pip install {' '.join(missing)} (or choose sampler: tpe)"
        )
    check_spaces(autopilot_config, NAME)


@pytest.hookimpl(trylast=True)
def pytest_autopilot_propose(context: OptimizerContext) -> Sequence[Proposal] | None:
    if context.optimizer != NAME:
        return None
    return OptunaRound(context).propose()


class OptunaRound:
    """One round: sync the study with the history, then ask for the candidates."""

    def __init__(self, context: OptimizerContext) -> None:
        import optuna

        self.optuna = optuna
        self.context = context
        self.axes = axes_of(context.parameters)
        self.files = {p.path: p for p in context.parameters}
        self.distributions = {a.name: distribution(optuna, a) for a in self.axes}
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    def propose(self) -> list[Proposal]:
        if not self.axes or self.context.max_candidates <= 0:
            return []
        study = self.study()
        self.sync(study)
        pending = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
        proposals = [self.proposal(t.number, t.params) for t in pending]
        settings = self.context.config.optuna
        seed = self.context.seed if settings.seed is None else settings.seed
        while len(proposals) < self.context.max_candidates:
            study.sampler = sampler(self.optuna, settings.sampler, seed + len(study.trials))
            trial = study.ask(self.distributions)
            proposals.append(self.proposal(trial.number, trial.params))
        return proposals[: self.context.max_candidates]

    def study(self) -> Any:
        optuna = self.optuna
        config = self.context.config
        path = self.storage_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(path))
        )
        goal = self.context.objective.goal
        direction = "minimize" if goal == "min" else "maximize"
        study = optuna.create_study(
            storage=storage, study_name=config.experiment, direction=direction, load_if_exists=True
        )
        ids = {self.context.baseline.id, *(r.id for r in self.context.history)}
        told = {t.user_attrs.get(CANDIDATE_ATTR) for t in study.get_trials(deepcopy=False)}
        if told - ids - {None}:
            # Trials of candidates this run does not know: the experiment started over
            # (``--autopilot-fresh``), so its study does too.
            optuna.delete_study(study_name=config.experiment, storage=storage)
            study = optuna.create_study(
                storage=storage, study_name=config.experiment, direction=direction
            )
        return study

    def storage_path(self) -> Path:
        if self.context.files is not None:
            return self.context.files.experiment_dir / STORAGE_FILE
        config = self.context.config
        return config.rootdir / ".autopilot" / config.experiment / STORAGE_FILE

    def sync(self, study: Any) -> None:
        """Tell the study what the history measured since the last round. A duplicate (the
        same code as an earlier candidate) is told the value that candidate measured."""
        trials = study.get_trials(deepcopy=False)
        known = {t.user_attrs.get(CANDIDATE_ATTR) for t in trials}
        running = {self.key(t.params): t for t in trials if t.state.name == "RUNNING"}
        points = [(r, self.params_of(r)) for r in (self.context.baseline, *self.context.history)]
        measured = {
            self.key(p): v
            for r, p in points
            if p is not None and (v := self.value_of(r)) is not None and math.isfinite(v)
        }
        for record, params in points:
            if record.id in known or params is None:
                continue
            value = self.value_of(record)
            if record.verdict == "duplicate":
                value = measured.get(self.key(params), math.inf)
            if value is None:
                continue
            trial = running.pop(self.key(params), None)
            if trial is not None:
                self.tell(study, trial, record.id, value)
            elif math.isfinite(value) and self.inside(params):
                study.add_trial(
                    self.optuna.trial.create_trial(
                        params=params,
                        distributions=self.distributions,
                        value=value,
                        user_attrs={CANDIDATE_ATTR: record.id},
                    )
                )
            known.add(record.id)

    def tell(self, study: Any, trial: Any, candidate: str, value: float) -> None:
        self.optuna.Trial(study, trial._trial_id).set_user_attr(CANDIDATE_ATTR, candidate)
        if math.isfinite(value):
            study.tell(trial.number, value)
        else:
            study.tell(trial.number, state=self.optuna.trial.TrialState.FAIL)

    def params_of(self, record: CandidateRecord) -> dict[str, Any] | None:
        if record.params is not None and all(a.name in record.params for a in self.axes):
            return {a.name: a.plain(record.params[a.name]) for a in self.axes}
        if record.id == self.context.incumbent.id:
            texts = {p: f.text for p, f in self.files.items()}
        elif record.commit:
            wanted = [(record.commit, p) for p in self.files]
            got = self.context.read_files(wanted)
            texts = {p: got[(record.commit, p)] for p in self.files if (record.commit, p) in got}
        else:
            return None
        if len(texts) != len(self.files):
            return None
        try:
            values = {
                p: read_values(t, [a.key for a in self.axes if a.path == p], file_format(p), p)
                for p, t in texts.items()
            }
        except pytest.UsageError:
            return None
        return {a.name: a.plain(values[a.path][a.key]) for a in self.axes}

    def value_of(self, record: CandidateRecord) -> float | None:
        """The objective; ``inf`` for a failure; ``None`` when nothing was measured."""
        if record.verdict in ("failed", "timeout"):
            return math.inf
        if record.verdict in ("violation", "duplicate") or not record.metrics:
            return None
        failed = record.metrics.get("tests.failed")
        reference = self.context.baseline.metrics.get("tests.failed")
        if failed is not None and reference is not None and failed.value > reference.value:
            return math.inf
        value = record.comparable_value(self.context.objective)
        return math.inf if value is None or not math.isfinite(value) else value

    def inside(self, params: dict[str, Any]) -> bool:
        """Optuna refuses a finished trial outside its distributions (a start out of range)."""
        for axis in self.axes:
            value, dim = params[axis.name], axis.dim
            if isinstance(dim, ChoiceDimension):
                if axis.normalize(value) not in {axis.normalize(c) for c in dim.choices}:
                    return False
            elif not dim.low <= float(value) <= dim.high:
                return False
        return True

    def key(self, params: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(a.normalize(params.get(a.name)) for a in self.axes)

    def proposal(self, number: int, params: dict[str, Any]) -> Proposal:
        point = {a.name: a.plain(params[a.name]) for a in self.axes}
        edits: dict[str, str] = {}
        changes: list[str] = []
        for path, file in self.files.items():
            axes = [a for a in self.axes if a.path == path]
            old = read_values(file.text, [a.key for a in axes], file_format(path), path)
            changes += [
                f"{a.name} {a.show(old[a.key])} -> {a.show(point[a.name])}"
                for a in axes
                if a.normalize(old[a.key]) != a.normalize(point[a.name])
            ]
            values = {a.key: point[a.name] for a in axes}
            text = write_values(file.text, values, file_format(path), path)
            if text != file.text:
                edits[path] = text
        sampler = self.context.config.optuna.sampler
        what = "; ".join(changes) or "no change"
        rationale = f"{what} (Optuna {sampler} sampler, trial {number})"
        return Proposal(rationale=rationale, edits=edits, params=point)


def distribution(optuna: Any, axis: Axis) -> Any:
    dim = axis.dim
    if isinstance(dim, IntDimension):
        return optuna.distributions.IntDistribution(dim.low, dim.high, log=dim.log)
    if isinstance(dim, FloatDimension):
        return optuna.distributions.FloatDistribution(dim.low, dim.high, log=dim.log)
    assert isinstance(dim, ChoiceDimension)
    return optuna.distributions.CategoricalDistribution(list(dim.choices))


def sampler(optuna: Any, name: str, seed: int) -> Any:
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)
