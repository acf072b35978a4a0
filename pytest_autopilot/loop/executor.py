"""The executor seam: what evaluating a commit gives, and what every executor shares.

An :class:`Executor` turns ``(label, commit, timeout)`` into an :class:`Evaluation`: a
fresh pytest session of that commit ran somewhere and wrote its :class:`SessionResult` with
``--autopilot-json``, or the evaluation says why there is none. Two executors exist:
:class:`~pytest_autopilot.loop.child.LocalExecutor` (child processes on this machine) and
:class:`~pytest_autopilot.loop.remote.ExecnetExecutor` (execnet gateways, ``--tx``). Both
read what the session left with :func:`read_result`, word a timeout with
:func:`timeout_reason`, and give a session killed by a signal one more attempt through
:func:`evaluate_with_retry`, so a candidate is judged the same wherever it ran.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import pytest

from pytest_autopilot.loop.process import output_tail
from pytest_autopilot.results import SessionResult

Status = Literal["ok", "failed", "timeout", "interrupted"]

_EXIT_MEANINGS = {2: "interrupted or collection errors", 3: "internal error", 4: "usage error"}


@dataclass
class Evaluation:
    """What evaluating one commit gave: a session result, or why there is none."""

    label: str
    commit: str
    status: Status
    result: SessionResult | None = None
    reason: str = ""
    exit_code: int | None = None
    started: float = 0.0
    finished: float = 0.0
    log: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)
    """Where and how it ran (worker, bytes sent, ``retried``); journaled as ``executor``."""
    retryable: bool = False
    """The failure says nothing about the candidate (a session killed by a signal it did not
    ask for, a worker lost): :func:`evaluate_with_retry` tries once more."""

    @property
    def duration(self) -> float:
        return self.finished - self.started


class Executor(Protocol):
    """Evaluates commits; ``evaluate`` must be safe to call from several threads at once."""

    def evaluate(self, label: str, commit: str, timeout: float) -> Evaluation:
        """Run a session of ``commit`` for at most ``timeout`` seconds; never raises for a
        failure of the session or of where it ran (that is the evaluation's status)."""
        ...

    def cancel(self) -> None:
        """Stop every evaluation in flight (they return ``interrupted``) and refuse new ones.

        Called from the Ctrl+C handler too: it returns promptly (sets flags, signals processes).
        """
        ...

    def close(self) -> None:
        """Release what the executor holds (gateways, remote directories) when the run ends,
        after :meth:`cancel` too; no evaluation starts afterwards."""
        ...


def timeout_reason(timeout: float) -> str:
    return f"session ran past candidate_timeout ({timeout:g}s) and was killed"


def read_result(evaluation: Evaluation, result_path: Path, log_path: Path) -> None:
    """Judge a finished session from its exit code, its ``--autopilot-json`` file and its log.

    Sets ``status`` to ``ok`` with the :class:`SessionResult`, or to ``failed`` with a reason
    that quotes the end of the log. Exit codes 0 and 1 (tests failed) both carry a result; a
    negative one (killed by a signal) makes the evaluation ``retryable``.
    """
    code = evaluation.exit_code
    evaluation.status = "failed"
    if code is not None and code < 0:
        evaluation.reason = f"session killed by signal {-code}: {output_tail(log_path)}"
        evaluation.retryable = True
        return
    if code not in (0, 1):
        what = _EXIT_MEANINGS.get(code or 0, "error")
        evaluation.reason = f"session exited with status {code} ({what}): {output_tail(log_path)}"
        return
    try:
        data = json.loads(result_path.read_text())
        evaluation.result = SessionResult.from_json(data, source=str(result_path))
    except FileNotFoundError:
        evaluation.reason = f"session wrote no result file: {output_tail(log_path)}"
        return
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        evaluation.reason = f"unreadable session result: {result_path} is not JSON ({exc})"
        return
    except pytest.UsageError as exc:  # names the file, the key and what was expected
        evaluation.reason = f"unreadable session result: {exc}"
        return
    except (KeyError, TypeError, ValueError) as exc:
        evaluation.reason = f"unreadable session result: {result_path}: {exc!r}"
        return
    evaluation.status = "ok"


def evaluate_with_retry(attempt: Callable[[], Evaluation]) -> Evaluation:
    """One attempt, and a second when the first failed for a reason outside the candidate.

    A session killed by the OOM killer, a crashed interpreter or someone's ``kill``, or a
    worker that died, says nothing about the candidate. The second attempt's evaluation is
    returned with ``extra["retried"]`` holding the first reason; if it fails too, its reason
    names both. An executor cancelled in between returns ``interrupted``.
    """
    first = attempt()
    if not first.retryable:
        return first
    second = attempt()
    second.started = first.started
    second.extra["retried"] = first.reason
    if second.status == "interrupted":
        second.reason = "interrupted"
    elif second.status == "failed":
        same = second.reason == first.reason
        second.reason += " (twice)" if same else f" (also on the first attempt: {first.reason})"
    return second
