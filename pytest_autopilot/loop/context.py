"""What the optimizer sees each round: :func:`optimizer_context`.

The context holds copies (an optimizer may keep or change them without touching the run), the
parameter files as they are at the incumbent, the ``knowledge`` files of the baseline, and
feedback from the incumbent's session: failures and notes of tests outside held-out (val/test)
splits only, including what ``pytest_autopilot_feedback`` implementations add.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Sequence

import pytest

from pytest_autopilot.config import AutopilotConfig, glob_match, is_protected, protected_globs
from pytest_autopilot.loop.journal import ExperimentStore, OptimizerError
from pytest_autopilot.loop.prepare import config_name
from pytest_autopilot.loop.state import RunState, frozen_copy
from pytest_autopilot.loop.workspace import Workspace
from pytest_autopilot.proposals import FeedbackItem, OptimizerContext, ParameterFile, Proposal
from pytest_autopilot.results import SessionResult


def optimizer_context(
    hook: object,
    config: AutopilotConfig,
    state: RunState,
    workspace: Workspace,
    incumbent_result: SessionResult,
    number: int,
    wanted: int,
) -> OptimizerContext:
    """The context of round ``number``, asking for up to ``wanted`` proposals."""
    assert config.objective is not None
    incumbent = state.incumbent
    context = OptimizerContext(
        optimizer=config.optimizer,
        round=number,
        max_candidates=wanted,
        config=config,
        objective=config.objective,
        incumbent=frozen_copy(incumbent),
        baseline=frozen_copy(state.baseline),
        gates=tuple(state.gates.get(incumbent.id, [])),
        feedback=tuple(feedback(incumbent_result)),
        history=state.history(),
        parameters=tuple(
            parameter_files(workspace, config, str(incumbent.commit), incumbent_result)
        ),
        knowledge=tuple(knowledge(workspace, config, str(state.baseline.commit))),
        seed=config.search.seed,
        protected_files=tuple(incumbent_result.protected_files),
        files=workspace,
    )
    extra: list[FeedbackItem] = []
    answers = hook.pytest_autopilot_feedback(  # type: ignore[attr-defined]
        context=context, result=incumbent_result
    )
    for items in answers:
        for item in items or ():
            test = incumbent_result.tests.get(item.nodeid)
            if test is None or not test.held_out:
                extra.append(item)
    if not extra:
        return context
    return dataclasses.replace(context, feedback=(*context.feedback, *extra))


def feedback(result: SessionResult) -> list[FeedbackItem]:
    """Failures and notes the optimizer may see: never from held-out (val/test) cases."""
    items = []
    for nodeid, test in result.tests.items():
        if test.held_out:
            continue
        if test.outcome in ("failed", "error"):
            items.append(FeedbackItem(nodeid, test.message or test.outcome, "failure"))
        items.extend(FeedbackItem(nodeid, note, "note") for note in test.notes)
    return items


def parameter_files(
    workspace: Workspace, config: AutopilotConfig, commit: str, result: SessionResult
) -> list[ParameterFile]:
    """The files at ``commit`` the optimizer may change, with their typed spaces."""
    protected = protected_globs(config, result)
    files: list[ParameterFile] = []
    for path in workspace.list_files(commit):
        rel = workspace.to_rootdir_path(path)
        if rel is None or is_protected(rel, protected):
            continue
        specs = [s for s in config.parameters if glob_match(s.path, rel)]
        if not specs:
            continue
        blob = workspace.read_blob(commit, path)
        try:
            text = (blob or b"").decode()
        except UnicodeDecodeError:
            continue
        space = next((s.space for s in specs if s.space), {})
        files.append(ParameterFile(path=path, text=text, space=space))
    return files


def knowledge(workspace: Workspace, config: AutopilotConfig, commit: str) -> list[tuple[str, str]]:
    """(path, text) of the config's ``knowledge`` files, as the baseline has them."""
    out = []
    for rel in config.knowledge:
        blob = workspace.read_blob(commit, workspace.to_repo_path(rel))
        if blob is not None:
            out.append((rel, blob.decode(errors="replace")))
    return out


def ask_optimizer(
    hook: object, config: AutopilotConfig, store: ExperimentStore, context: OptimizerContext
) -> list[Proposal]:
    """``pytest_autopilot_propose``: up to ``context.max_candidates`` proposals. A crash in the
    optimizer stops the loop with where it happened (traceback in the journal), resumable."""
    try:
        answer: Sequence[Proposal] | None = hook.pytest_autopilot_propose(  # type: ignore[attr-defined]
            context=context
        )
    except (pytest.UsageError, KeyboardInterrupt):
        raise
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        store.record(OptimizerError(context.round, traceback.format_exc()))
        raise pytest.UsageError(
            f"optimizer {config.optimizer!r} failed in round {context.round}: "
            f"{type(exc).__name__}: {exc}{where} (traceback in {store.journal_path}); "
            "fix it and run the same command to resume"
        ) from None
    if answer is None:
        raise pytest.UsageError(
            f"{config_name(config)}: optimizer: no plugin answered for {config.optimizer!r}"
        )
    return list(answer)[: context.max_candidates]
