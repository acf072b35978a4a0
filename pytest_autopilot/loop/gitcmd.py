"""Running git for the loop: a clean environment, no user hooks, a session of its own."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

IDENTITY = {
    "GIT_AUTHOR_NAME": "pytest-autopilot",
    "GIT_AUTHOR_EMAIL": "pytest-autopilot@localhost",
    "GIT_COMMITTER_NAME": "pytest-autopilot",
    "GIT_COMMITTER_EMAIL": "pytest-autopilot@localhost",
}
"""Candidate commits are the tool's work: they never depend on (or borrow) a user identity."""

GIT_LOCATION_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_PREFIX",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_NAMESPACE",
)
"""Set when pytest runs inside a git hook; they would point our commands at the user's index."""


class GitError(RuntimeError):
    """A git command failed; the message holds the command and git's own words."""


def clean_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment without the variables that relocate git."""
    env = {k: v for k, v in os.environ.items() if k not in GIT_LOCATION_VARS}
    env["GIT_TERMINAL_PROMPT"] = "0"
    if extra:
        env.update(extra)
    return env


def git(
    args: Sequence[str],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
) -> str:
    """Run git and return its stdout without the trailing newline.

    It runs in a session of its own, so that a Ctrl+C meant for pytest never stops git half-way
    through writing a ref; the loop notices the interrupt between git commands instead. The
    user's hooks never run (a post-checkout hook in every candidate worktree would be theirs
    to pay for, and not theirs to expect).
    """
    proc = subprocess.run(
        ["git", "-c", "core.hooksPath=/dev/null", *args],
        cwd=cwd,
        env=clean_environ(env),
        input=input,
        capture_output=True,
        text=True,
        start_new_session=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.rstrip("\n")
