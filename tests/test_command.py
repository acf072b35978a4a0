"""``optimizer: command``: an external agent command run in the candidate's worktree."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import pytest
from fake_messages_api import make_context

from pytest_autopilot.config import AutopilotConfig
from pytest_autopilot.optimizers import command as command_optimizer
from pytest_autopilot.optimizers.command import AgentRun
from pytest_autopilot.proposals import CandidateFailed, Proposal

AGENT = """\
import os, pathlib, sys
prompt = sys.stdin.read()
prompt_file = pathlib.Path(os.environ["AUTOPILOT_PROMPT_FILE"])
assert prompt_file.read_text() == prompt, "the prompt file holds the same prompt"
assert not prompt_file.resolve().is_relative_to(pathlib.Path.cwd().resolve())
assert "# Round 1, candidate " + os.environ["AUTOPILOT_CANDIDATE"] in prompt
path = pathlib.Path("params.yaml")
path.write_text(path.read_text().replace("workers: 2", "workers: 5"))
print("thinking..." * 1000)
print("Raised workers to 5: the loader waits on I/O.")
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "params.yaml").write_text("workers: 2\n")
    return root


def script(tmp_path: Path, source: str) -> str:
    path = tmp_path / "agent.py"
    path.write_text(source)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}"


def proposals_for(repo: Path, command: str, **kwargs: object) -> list[Proposal]:
    context = make_context(repo, optimizer="command", command=command, **kwargs)  # type: ignore[arg-type]
    proposals = command_optimizer.pytest_autopilot_propose(context)
    assert proposals is not None
    return list(proposals)


def run(proposal: Proposal, worktree: Path) -> str | None:
    assert isinstance(proposal.apply, AgentRun)
    return proposal.apply(worktree)


def test_the_agent_edits_the_worktree_and_its_stdout_tail_is_the_rationale(
    repo: Path, tmp_path: Path
) -> None:
    [proposal] = proposals_for(repo, script(tmp_path, AGENT))
    rationale = run(proposal, repo)
    assert (repo / "params.yaml").read_text() == "workers: 5\n"
    assert rationale is not None
    assert rationale.endswith("Raised workers to 5: the loader waits on I/O.")
    assert len(rationale) <= command_optimizer.TAIL_CHARS
    assert sorted(p.name for p in repo.iterdir()) == ["params.yaml"]
    prompt, record = proposal.transcript
    assert prompt["kind"] == "prompt" and "# Round 1, candidate 1 of 1" in prompt["text"]
    assert record["exit_status"] == 0


def test_each_candidate_is_asked_for_its_own_idea(repo: Path, tmp_path: Path) -> None:
    proposals = proposals_for(repo, script(tmp_path, AGENT), candidates=2)
    assert len(proposals) == 2
    texts = [p.apply.prompt.task for p in proposals]  # type: ignore[union-attr]
    assert "implement idea number 1" in texts[0] and "implement idea number 2" in texts[1]


def test_a_failing_command_fails_the_candidate(repo: Path, tmp_path: Path) -> None:
    failing = "import sys; print('partial'); sys.exit('no idea what to change')"
    [proposal] = proposals_for(repo, script(tmp_path, failing))
    with pytest.raises(CandidateFailed, match="exited with status 1: no idea what to change"):
        run(proposal, repo)


def test_timeout_kills_the_agent_and_its_children(repo: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    hanging = f"""\
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open({str(pidfile)!r}, "w").write(str(child.pid))
time.sleep(60)
"""
    [proposal] = proposals_for(repo, script(tmp_path, hanging), candidate_timeout=1.0)
    start = time.monotonic()
    with pytest.raises(CandidateFailed, match=r"ran past budget.candidate_timeout \(1 s\)"):
        run(proposal, repo)
    assert time.monotonic() - start < 5
    child = int(pidfile.read_text())
    for _ in range(50):
        if not _alive(child):
            break
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_a_missing_command_is_a_usage_error(tmp_path: Path) -> None:
    config = AutopilotConfig(
        path=tmp_path / "autopilot.yaml", rootdir=tmp_path, optimizer="command"
    )
    with pytest.raises(
        pytest.UsageError, match=r"autopilot.yaml: command: .* needs the agent command"
    ):
        command_optimizer.pytest_autopilot_check(None, config)  # type: ignore[arg-type]
