"""``optimizer: command``: an external coding agent (``claude -p``, ``codex exec -``, a script).

The configured shell command runs in the candidate's worktree with the prompt of
:mod:`.prompt` on its stdin and in the file named by ``AUTOPILOT_PROMPT_FILE`` (kept outside
the worktree so that it is never committed). Whatever it changed there is the candidate; the
loop checks that diff like any other. The command runs in its own process group so that a
timeout or a cancellation kills the agent and everything it started.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_autopilot.config import AutopilotConfig
from pytest_autopilot.loop.process import kill_group, read_tail
from pytest_autopilot.optimizers.anthropic_api import redact
from pytest_autopilot.optimizers.prompt import Prompt, build_prompt
from pytest_autopilot.proposals import CandidateFailed, OptimizerContext, Proposal

NAME = "command"
TAIL_CHARS = 2_000
POLL_SECONDS = 0.2
KILL_GRACE_SECONDS = 2.0


@pytest.hookimpl
def pytest_autopilot_optimizer_names(config: pytest.Config) -> Sequence[str]:
    return [NAME]


@pytest.hookimpl
def pytest_autopilot_check(config: pytest.Config, autopilot_config: AutopilotConfig) -> None:
    if autopilot_config.optimizer == NAME and not (autopilot_config.command or "").strip():
        source = autopilot_config.relpath() or "autopilot.yaml"
        raise pytest.UsageError(
            f"{source}: command: optimizer 'command' needs the agent command to run, "
            'expected a shell command string such as command: "claude -p", got nothing'
        )


@pytest.hookimpl
def pytest_autopilot_propose(context: OptimizerContext) -> Sequence[Proposal] | None:
    if context.optimizer != NAME:
        return None
    command = (context.config.command or "").strip()
    if not command:
        raise pytest.UsageError("optimizer 'command' needs `command:` in the autopilot config")
    prefix = context.rootdir_prefix
    proposals = []
    for index in range(1, context.max_candidates + 1):
        proposal = Proposal(rationale=f"command: idea {index} of {context.max_candidates}")
        proposal.apply = AgentRun(
            command=command,
            prompt=build_prompt(context, candidate=index, tool=False, prefix=prefix),
            timeout=context.config.budget.candidate_timeout,
            env_extra={
                "AUTOPILOT_ROUND": str(context.round),
                "AUTOPILOT_CANDIDATE": str(index),
                "AUTOPILOT_CANDIDATES": str(context.max_candidates),
            },
            transcript=proposal.transcript,
        )
        proposals.append(proposal)
    return proposals


@dataclass
class AgentRun:
    """One run of the agent command; called by the loop with the worktree root."""

    command: str
    prompt: Prompt
    timeout: float
    env_extra: dict[str, str]
    transcript: list[dict[str, Any]]
    _cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Kill the agent's process group at the next poll (the loop calls it on Ctrl+C)."""
        self._cancelled.set()

    def __call__(self, worktree: Path) -> str:
        text = self.prompt.text()
        self.transcript.append({"kind": "prompt", "text": text})
        with tempfile.TemporaryDirectory(prefix="autopilot-prompt-") as tmp:
            prompt_file = Path(tmp) / "prompt.md"
            prompt_file.write_text(text)
            env = {**os.environ, **self.env_extra, "AUTOPILOT_PROMPT_FILE": str(prompt_file)}
            with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
                start = time.monotonic()
                status, why = self._run(worktree, env, text, out, err)
                seconds = time.monotonic() - start
                stdout, stderr = _tail(out), _tail(err)
        stdout, stderr = redact(stdout), redact(stderr)
        self.transcript.append(
            {
                "kind": "command",
                "command": redact(self.command),
                "exit_status": status,
                "seconds": round(seconds, 3),
                "stdout_tail": stdout,
                "stderr_tail": stderr,
            }
        )
        if why is not None:
            raise CandidateFailed(why)
        if status != 0:
            detail = (stderr or stdout).strip().splitlines()[-1:] or [""]
            raise CandidateFailed(f"command exited with status {status}: {detail[0][:300]}")
        return stdout.strip() or f"command: {self.command}"

    def _run(
        self, worktree: Path, env: dict[str, str], text: str, out: Any, err: Any
    ) -> tuple[int | None, str | None]:
        """Run to completion, timeout or cancellation; ``(status, why it was stopped)``."""
        proc = subprocess.Popen(
            self.command,
            shell=True,
            cwd=worktree,
            env=env,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        feeder = threading.Thread(target=_feed, args=(proc, text), daemon=True)
        feeder.start()
        deadline = time.monotonic() + self.timeout
        why: str | None = None
        try:
            while proc.poll() is None:
                if self._cancelled.is_set() or not threading.main_thread().is_alive():
                    why = "cancelled"
                elif time.monotonic() > deadline:
                    why = f"command ran past budget.candidate_timeout ({self.timeout:g} s)"
                if why is not None:
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(POLL_SECONDS)
        finally:
            # TERM first if the agent still runs, then KILL whatever it left in its group
            kill_group(proc, grace=KILL_GRACE_SECONDS)
        return proc.returncode, why


def _feed(proc: subprocess.Popen[bytes], text: str) -> None:
    """Write the prompt to stdin without blocking the watcher (an agent may never read it)."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(text.encode())
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass


def _tail(handle: Any) -> str:
    return read_tail(handle, TAIL_CHARS * 4).decode("utf-8", errors="replace")[-TAIL_CHARS:]
