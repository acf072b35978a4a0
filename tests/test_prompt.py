"""The prompt shared by the LLM and command optimizers."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_messages_api import make_context

from pytest_autopilot.optimizers.prompt import build_prompt
from pytest_autopilot.proposals import CandidateRecord, FeedbackItem
from pytest_autopilot.results import Metric


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text("workers: 2\n")
    return tmp_path


def tried(id: str, verdict: str, reason: str, speed: float, rationale: str) -> CandidateRecord:
    return CandidateRecord(
        id=id,
        round=int(id[1]),
        commit="1" * 40,
        parent="0" * 40,
        rationale=rationale,
        verdict=verdict,  # type: ignore[arg-type]
        reason=reason,
        metrics={"speed": Metric("speed", speed)},
        diff_summary="params.yaml | 2 +-",
    )


def test_the_prefix_depends_on_the_configuration_only(repo: Path) -> None:
    knowledge = [("docs/tuning.md", "Use more workers on slow disks.")]
    first = build_prompt(
        make_context(repo, knowledge=knowledge, candidates=3), candidate=1, tool=True
    )
    (repo / "params.yaml").write_text("workers: 7\n")
    later = make_context(
        repo,
        knowledge=knowledge,
        candidates=3,
        round=4,
        history=[tried("r1c1", "rejected", "no gain", 2.1, "workers 4")],
        feedback=[FeedbackItem("test_speed.py::test_speed", "too slow: 2.0 s")],
    )
    other = build_prompt(later, candidate=3, tool=True)
    assert first.prefix.encode() == other.prefix.encode()
    assert first.task != other.task
    assert "Use more workers on slow disks." in first.prefix
    assert "`params.yaml`" in first.prefix and "`data/cases.yaml`" in first.prefix
    assert "`**/test_*.py`" in first.prefix
    command = build_prompt(later, candidate=3, tool=False)
    assert command.prefix != other.prefix and "str_replace_based_edit_tool" not in command.prefix


def test_the_task_carries_state_history_and_the_idea_number(repo: Path) -> None:
    context = make_context(
        repo,
        candidates=2,
        round=3,
        history=[
            tried("r1c1", "rejected", "speed 2.1 is not better than 2.0", 2.1, "workers: 4"),
            tried("r2c1", "violation", "edited test_speed.py", 1.0, "skip the slow test"),
        ],
        feedback=[FeedbackItem("test_speed.py::test_speed", "AssertionError: 2.0 > 1.0")],
    )
    task = build_prompt(context, candidate=2, tool=True).task
    assert "# Round 3, candidate 2 of 2" in task
    assert "implement idea number 2" in task
    assert "`speed`, lower is better. Incumbent (r0): 2" in task
    assert "- FAIL `speed` max 1: value 2 (2 > 1)" in task
    assert "AssertionError: 2.0 > 1.0" in task
    assert "```\nworkers: 2\n```" in task
    assert "- r1c1: rejected, `speed` = 2.1; speed 2.1 is not better than 2.0" in task
    assert "idea: workers: 4" in task and "diff: params.yaml | 2 +-" in task
    assert "- r2c1: violation" in task and "edited test_speed.py" in task
