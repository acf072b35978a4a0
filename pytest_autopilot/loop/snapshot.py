"""The baseline snapshot: HEAD plus the user's uncommitted changes, without the files tests write.

The user's index is never written: the snapshot goes through a copy of it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_autopilot.loop.gitcmd import GitError

if TYPE_CHECKING:
    from pytest_autopilot.loop.workspace import Workspace

GENERATED = ("**/__pycache__/**", "**/*.py[co]", "**/.pytest_cache/**", "**/.benchmarks/**")
"""What Python, pytest and pytest-benchmark write while tests run (git globs): never part of a
snapshot, even in a repository that does not ignore them, or every run would see other code
than the last one and the bytecode would reach the user's branch through a merge."""
SKIP_GENERATED = tuple(f":(exclude,glob){pattern}" for pattern in GENERATED)
ONLY_GENERATED = tuple(f":(glob){pattern}" for pattern in GENERATED)

_UNFINISHED = (
    ("MERGE_HEAD", "merge"),
    ("rebase-merge", "rebase"),
    ("rebase-apply", "rebase"),
    ("CHERRY_PICK_HEAD", "cherry-pick"),
    ("REVERT_HEAD", "revert"),
)
"""Files git keeps while an operation waits for the user (``git rev-parse --git-path``)."""


def snapshot_baseline(workspace: Workspace, message: str, exclude: Sequence[str] = ()) -> str:
    """The state the run starts from: HEAD plus uncommitted changes, as a commit.

    Tracked changes and untracked files that are not ignored go in, through a copy of the
    user's index (so unchanged files are not hashed again); the user's index is never
    written. ``exclude`` (repository-relative) and :data:`GENERATED` files stay as HEAD has
    them: the run's own output files and bytecode, which would otherwise make the next
    run's baseline differ. A clean tree gives
    HEAD itself, so the best branch fast-forwards from it.
    """
    refuse_unfinished_operation(workspace)
    head = workspace.head_commit()
    with workspace.temp_index() as env:
        user_index = Path(workspace.git("rev-parse", "--git-path", "index"))
        if not user_index.is_absolute():
            user_index = workspace.repo / user_index
        try:
            if user_index.exists():
                shutil.copyfile(user_index, env["GIT_INDEX_FILE"])
            workspace.git("add", "-A", "--", ".", *SKIP_GENERATED, env=env)
        except GitError:
            Path(env["GIT_INDEX_FILE"]).unlink(missing_ok=True)
            if head is not None:
                workspace.git("read-tree", head, env=env)
            workspace.git("add", "-A", "--", ".", *SKIP_GENERATED, env=env)
        for pathspec in (*exclude, *ONLY_GENERATED):  # as HEAD has them, even if staged
            if head is not None:
                workspace.git("reset", "--quiet", head, "--", pathspec, env=env, check=False)
            else:
                workspace.git(
                    "rm",
                    "--cached",
                    "-r",
                    "--quiet",
                    "--ignore-unmatch",
                    "--",
                    pathspec,
                    env=env,
                )
        tree = workspace.git("write-tree", env=env)
    if head is not None and workspace.tree_of(head) == tree:
        return head
    return workspace.commit(tree, [head] if head else [], message)


def refuse_unfinished_operation(workspace: Workspace) -> None:
    """A tree in the middle of a merge, rebase or cherry-pick is no state to start from."""
    for marker, operation in _UNFINISHED:
        path = Path(workspace.git("rev-parse", "--git-path", marker))
        if (path if path.is_absolute() else workspace.repo / path).exists():
            raise pytest.UsageError(
                f"a {operation} is in progress in {workspace.repo}: finish it (or abort it with "
                f"`git {operation} --abort`) before --autopilot snapshots the tree"
            )
    if workspace.git("ls-files", "--unmerged"):
        raise pytest.UsageError(
            f"{workspace.repo} has unmerged paths (a conflict): resolve them before --autopilot "
            "snapshots the tree"
        )
