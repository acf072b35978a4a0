"""From proposal to commit: trees, duplicates, violations, refs and commit messages.

:class:`CandidateMaker` turns a round's proposals into candidate records. Each proposal becomes
a git tree on top of its parent (edits written straight into a tree, or ``apply`` run in a
scratch worktree, several at once), then a provisional commit. A tree already evaluated is a
``duplicate``; a diff that leaves the parameters or touches a protected path is a
``violation``; both are decided here, before any evaluation. Every candidate that has a tree
ends up as a commit under ``refs/autopilot/<experiment>/{accepted,rejected}/<id>`` whose
message carries its verdict, reason and metrics (:meth:`CandidateMaker.file_ref`).
:func:`merge_best` brings the best one into the user's branch (``--autopilot-apply``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from pytest_autopilot.config import AutopilotConfig
from pytest_autopilot.loop.journal import Applied, CandidateDecided, ExperimentStore
from pytest_autopilot.loop.output import shorten
from pytest_autopilot.loop.protect import violations
from pytest_autopilot.loop.state import RunState
from pytest_autopilot.loop.workspace import InvalidEdit, Workspace
from pytest_autopilot.proposals import CandidateFailed, CandidateRecord, Proposal, Verdict
from pytest_autopilot.report import fmt
from pytest_autopilot.results import SessionResult


class CandidateMaker:
    """Makes the round's candidate commits; knows the run's state for parents and duplicates."""

    def __init__(
        self,
        workspace: Workspace,
        store: ExperimentStore,
        config: AutopilotConfig,
        state: RunState,
        check_interrupt: Callable[[], None],
    ) -> None:
        self.workspace = workspace
        self.store = store
        self.config = config
        self.state = state
        self.check_interrupt = check_interrupt
        self._applying: list[Proposal] = []
        self._applying_lock = threading.Lock()

    def cancel_applying(self) -> None:
        """Ctrl+C: tell every ``apply`` in flight that can be cancelled to stop."""
        for proposal in list(self._applying):
            cancel = getattr(proposal.apply, "cancel", None)
            if callable(cancel):
                cancel()

    def prepare(
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
            self.check_interrupt()
            if isinstance(tree, tuple):
                self.refuse(record, *tree)
            else:
                self._check_tree(record, tree, reference_result)
        return records

    def _check_tree(
        self, record: CandidateRecord, tree: str, reference_result: SessionResult
    ) -> None:
        """Refuse a duplicate or a violation; commit anything else provisionally."""
        assert record.parent is not None
        record.tree = tree
        record.diff_summary = self.workspace.diff_stat(record.parent, tree)
        same = self.state.claim_tree(tree, record.id)
        if same is not None:
            self.refuse(record, "duplicate", f"same code as {same}")
            return
        diff = self.workspace.diff(record.parent, tree)
        problems = violations(diff, self.workspace, self.config, reference_result)
        if problems:
            self.refuse(record, "violation", "; ".join(problems))
            return
        record.commit = self.workspace.commit(tree, [record.parent], self.message(record))

    def _make_tree(self, record: CandidateRecord, proposal: Proposal) -> str | tuple[Verdict, str]:
        """The proposal as a git tree on top of its parent, or why it could not be made."""
        parent = self.parent(proposal.parent)
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
            self.check_interrupt()
            return "failed", str(exc) or "the optimizer gave up"
        except (pytest.UsageError, KeyboardInterrupt):
            raise
        except Exception as exc:
            self.check_interrupt()
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

    def parent(self, wanted: str | None) -> str | None:
        """The commit a proposal branches from: the incumbent, or an earlier candidate's."""
        if wanted is None:
            return self.state.incumbent.commit
        known = self.state.known_commits()
        if wanted in known:
            return known[wanted]
        commit = self.workspace.resolve(wanted)
        return commit if commit in known.values() else None

    def refuse(self, record: CandidateRecord, verdict: Verdict, reason: str) -> None:
        """A candidate decided without evaluation: still committed and kept when it has a tree."""
        record.verdict = verdict
        record.reason = reason
        if record.tree is not None and record.parent is not None:
            self.file_ref(record)
        self.store.record(CandidateDecided(record))

    def file_ref(self, record: CandidateRecord) -> None:
        """Write the candidate's final commit (message with verdict and metrics) and its ref."""
        assert record.tree is not None and record.parent is not None
        prefix = self.workspace.ref_prefix
        accepted = record.verdict == "accepted"
        record.commit = self.workspace.commit(record.tree, [record.parent], self.message(record))
        kind, other = ("accepted", "rejected") if accepted else ("rejected", "accepted")
        self.workspace.set_ref(
            f"{prefix}/{kind}/{record.id}",
            record.commit,
            f"autopilot: {record.id} {record.verdict}",
        )
        self.workspace.delete_ref(f"{prefix}/{other}/{record.id}")

    def message(self, record: CandidateRecord) -> str:
        return commit_message(record, self.config.experiment)


def commit_message(record: CandidateRecord, experiment: str) -> str:
    """A candidate commit's message: what was tried, why, and (once decided) what it gave."""
    rationale = record.rationale.strip() or "(no rationale given)"
    lines = [
        f"autopilot {record.id}: {shorten(rationale.splitlines()[0], 60)}",
        "",
        f"Experiment: {experiment}",
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


def merge_best(
    workspace: Workspace,
    store: ExperimentStore,
    best: CandidateRecord,
    say: Callable[..., None],
) -> None:
    """``--autopilot-apply``: merge the best commit into the user's branch, only onto a clean
    working tree; anything else leaves the user's files as they are and says why."""
    branch = workspace.best_branch
    if best.id == "r0" or best.commit is None:
        say("--autopilot-apply: nothing to apply, no candidate beat the baseline")
        return
    head = workspace.head_commit()
    if head is not None and workspace.is_ancestor(best.commit, head):
        say(f"--autopilot-apply: {branch} is already part of HEAD")
        return
    if not workspace.is_clean():
        say(
            "--autopilot-apply refused: the working tree has uncommitted changes; commit or "
            f"stash them, then run: git merge {branch}",
            red=True,
        )
        return
    ok, how = workspace.merge(best.commit)
    if ok:
        say(f"--autopilot-apply: merged {branch} into the current branch ({how})")
        store.record(Applied(best.commit, how))
    else:
        say(f"--autopilot-apply failed, nothing changed: {how}", red=True)
