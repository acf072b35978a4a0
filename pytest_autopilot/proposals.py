"""What flows between the loop and an optimizer: the context it sees and the candidates it proposes.

These types are the public face of the extension hooks (see :mod:`pytest_autopilot.hookspecs`).
The context carries only what an optimizer is allowed to know: feedback comes from failing
train cases and tests outside datasets, never from held-out (val/test) cases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pytest_autopilot.config import AutopilotConfig, Dimension, Objective
from pytest_autopilot.results import Metric

Verdict = Literal["accepted", "rejected", "violation", "failed", "timeout", "duplicate"]


@dataclass(frozen=True)
class FeedbackItem:
    """One thing the optimizer should know about the incumbent: a failure or a test's note."""

    nodeid: str
    text: str
    kind: Literal["failure", "note"] = "failure"


@dataclass(frozen=True)
class ParameterFile:
    """A file the optimizer may change, as it is at the commit being proposed from."""

    path: str
    """Relative to the repository root, POSIX separators."""
    text: str
    space: Mapping[str, Dimension] = field(default_factory=dict)


@dataclass(frozen=True)
class GateStatus:
    metric: str
    kind: str
    threshold: float
    value: float | None
    passed: bool
    reason: str


@dataclass
class CandidateRecord:
    """One evaluated (or refused) candidate, as the history shows it to optimizers."""

    id: str
    """``r<round>c<index>``; the baseline is ``r0``."""
    round: int
    commit: str | None
    parent: str | None
    rationale: str
    verdict: Verdict | None = None
    reason: str = ""
    metrics: dict[str, Metric] = field(default_factory=dict)
    params: dict[str, Any] | None = None
    """The point in the typed space, when the candidate came from one."""
    diff_summary: str = ""
    tree: str | None = None
    """Git tree id: two candidates with the same tree are the same code."""
    usage: dict[str, float] = field(default_factory=dict)
    """Tokens and cost an LLM optimizer spent on it."""
    paired_value: float | None = None
    """The objective on the baseline's scale: the incumbent's own paired value (the
    baseline's measured one) times the ratio the candidate showed beside that incumbent,
    measured side by side. ``None`` when no paired decision was made. Sessions measured side
    by side run slower or faster than one measured alone (their rounds take turns on one CPU
    and evict each other's caches), so a candidate's own measurement is only comparable with
    the incumbent's beside it; this value carries that comparison to one scale."""

    def objective_value(self, objective: Objective | None) -> float | None:
        if objective is None:
            return None
        metric = self.metrics.get(objective.metric)
        return None if metric is None else metric.value

    def comparable_value(self, objective: Objective | None) -> float | None:
        """The objective on the baseline's scale: :attr:`paired_value` when the candidate
        was decided side by side with its incumbent, else its own measured value."""
        if self.paired_value is not None and objective is not None:
            return self.paired_value
        return self.objective_value(objective)


class CommittedFiles(Protocol):
    """Files of the experiment's commits, read-only, and its directory (``Workspace``)."""

    @property
    def rootdir_prefix(self) -> str:
        """The rootdir's place inside the repository, ``""`` or ``"sub/dir/"``."""
        ...

    @property
    def experiment_dir(self) -> Path:
        """``.autopilot/<experiment>/``: where an optimizer may keep files of its own."""
        ...

    def read_texts(self, wanted: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Text of each (commit, rootdir-relative path) that exists and is text."""
        ...


@dataclass(frozen=True)
class OptimizerContext:
    """Everything an optimizer may use to propose the next round's candidates."""

    optimizer: str
    """The configured optimizer name; a hook implementation answers only for its own name."""
    round: int
    max_candidates: int
    config: AutopilotConfig
    objective: Objective
    incumbent: CandidateRecord
    baseline: CandidateRecord
    gates: Sequence[GateStatus]
    feedback: Sequence[FeedbackItem]
    history: Sequence[CandidateRecord]
    """Every candidate decided so far, in order, as a tuple of copies: changing them changes
    nothing in the run."""
    parameters: Sequence[ParameterFile]
    knowledge: Sequence[tuple[str, str]]
    """(path, text) of the config's ``knowledge`` files."""
    seed: int = 0
    protected_files: Sequence[str] = ()
    """The incumbent session's ``SessionResult.protected_files`` (test modules and dataset
    files, rootdir-relative): agent optimizers must never edit them, nor read the datasets."""
    files: CommittedFiles | None = None
    """Files of earlier candidates' commits, so optimizers never run git themselves; ``None``
    outside the loop (offline drivers, unit tests)."""

    def evaluated_params(self) -> list[dict[str, Any]]:
        """Points of the typed space already tried (whatever their verdict)."""
        return [dict(r.params) for r in self.history if r.params is not None]

    def read_files(self, wanted: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Text of each (commit, rootdir-relative path) that can be read; empty without git."""
        return self.files.read_texts(wanted) if self.files is not None else {}

    def read_file(self, commit: str, path: str) -> str | None:
        """One file of an earlier commit (rootdir-relative path), ``None`` when unreadable."""
        return self.read_files([(commit, path)]).get((commit, path))

    @property
    def rootdir_prefix(self) -> str:
        """The rootdir's place inside the repository, ``""`` or ``"sub/dir/"``."""
        return self.files.rootdir_prefix if self.files is not None else ""


@dataclass
class Proposal:
    """A candidate change. Give ``edits`` (path -> new full text), or ``apply``, or both.

    ``apply(worktree)`` runs inside the candidate's own git worktree (possibly in a thread,
    concurrently with other candidates' ``apply``) and may change files there; whatever it
    changed becomes the candidate, subject to the same diff checks as ``edits``. It may
    return a string that replaces the rationale.
    """

    rationale: str
    edits: Mapping[str, str] = field(default_factory=dict)
    apply: Callable[[Path], str | None] | None = None
    parent: str | None = None
    """Commit to branch from: any earlier commit of the experiment. Default: the incumbent."""
    params: dict[str, Any] | None = None
    usage: dict[str, float] = field(default_factory=dict)
    """Tokens and cost; ``apply`` updates this dict in place, so read it after ``apply``
    returns or raises."""
    transcript: list[dict[str, Any]] = field(default_factory=list)
    """What an LLM or agent optimizer was told and answered (prompt, replies, tool calls and
    results), filled in place by ``apply``, for the journal. Never holds a key or token."""


class CandidateFailed(Exception):
    """Raised by ``Proposal.apply`` when the candidate could not be made (e.g. the API kept
    failing after its retries); the message is the reason recorded with verdict ``failed``."""
