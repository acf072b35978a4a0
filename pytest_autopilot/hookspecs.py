"""Extension points of pytest-autopilot, registered from ``pytest_addhooks``.

Implement them in a ``conftest.py`` or a plugin. The built-in optimizers (``search``,
``anthropic``, ``command``) and the built-in acceptance policy are ordinary implementations
of these same hooks, registered with ``trylast`` so that a user's implementation wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_autopilot.config import AutopilotConfig
    from pytest_autopilot.proposals import (
        CandidateRecord,
        FeedbackItem,
        OptimizerContext,
        Proposal,
    )
    from pytest_autopilot.results import SessionResult

hookspec = pytest.hookspec


@hookspec
def pytest_autopilot_optimizer_names(config: pytest.Config) -> Sequence[str]:
    """Name the optimizers this plugin provides, so that ``optimizer:`` can be validated.

    :param config: the pytest config.
    :return: names accepted by this plugin's :func:`pytest_autopilot_propose`.
    """
    raise NotImplementedError


@hookspec
def pytest_autopilot_check(config: pytest.Config, autopilot_config: AutopilotConfig) -> None:
    """Check, before the session runs, that the configured optimizer can work.

    Called once with ``--autopilot``, after the optimizer name was validated. Raise
    ``pytest.UsageError`` for anything the user must fix (a missing API key or command), so
    that the run stops before the session instead of after it. Check only when
    ``autopilot_config.optimizer`` is one of your names.

    :param config: the pytest config.
    :param autopilot_config: the loaded configuration, with command-line overrides applied.
    """


@hookspec(firstresult=True)
def pytest_autopilot_propose(context: OptimizerContext) -> Sequence[Proposal] | None:
    """Propose up to ``context.max_candidates`` candidates for the next round.

    Answer only when ``context.optimizer`` is one of your names; return ``None`` otherwise.
    An empty list means the optimizer has nothing left to try, which ends the loop.
    Stops at first non-None result.

    :param context: objective, gates, incumbent and baseline metrics, train feedback,
        history of every candidate so far, parameter files with their spaces. Compare
        candidates by ``record.comparable_value(context.objective)``: a candidate's own
        metrics were measured beside its incumbent, the baseline's alone.
    """
    raise NotImplementedError


@hookspec
def pytest_autopilot_feedback(
    context: OptimizerContext, result: SessionResult
) -> Sequence[FeedbackItem] | None:
    """Add feedback items for the optimizer, computed from the incumbent's session result.

    Items about held-out (val/test) cases must not be returned: they are dropped.

    :param context: the context being prepared (its ``feedback`` is what the loop found).
    :param result: the incumbent's full session result.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def pytest_autopilot_accept(
    candidate: CandidateRecord,
    incumbent: CandidateRecord,
    config: AutopilotConfig,
) -> tuple[bool, str] | None:
    """Decide whether an evaluated candidate beats the incumbent.

    Called only for candidates that ran, passed the diff checks and broke no test that
    passed on the incumbent. When the objective carries samples (a timing), an accepted
    candidate is measured again, then the incumbent again, and this hook is asked a second
    time with those measurements: the candidate is kept only if both answers accept.
    Stops at first non-None result.

    :param candidate: the candidate, with its metrics (and samples).
    :param incumbent: the incumbent, measured the same way.
    :param config: the autopilot configuration (objective, acceptance settings).
    :return: ``(accepted, reason)``.
    """
    raise NotImplementedError


@hookspec
def pytest_autopilot_candidate_done(candidate: CandidateRecord) -> None:
    """Observe a candidate once its verdict is final.

    Called once per candidate: at once for a candidate refused or rejected, and for an
    accepted one when its round closes, so an accepted candidate that another one of the
    round beat is seen as ``rejected`` (superseded), never as ``accepted``.

    :param candidate: a copy of the candidate record, with verdict, reason and metrics.
    """


@hookspec
def pytest_autopilot_round_done(
    round: int, candidates: Sequence[CandidateRecord], incumbent: CandidateRecord
) -> None:
    """Observe the end of a round.

    :param round: the round number (1-based).
    :param candidates: copies of every candidate of the round, with its final verdict.
    :param incumbent: a copy of the incumbent after the round.
    """
