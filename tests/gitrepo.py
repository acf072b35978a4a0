"""Real git repositories for tests: create one in ``tmp_path``, commit, and snapshot it.

Shared by every test that needs git (the loop, the optimizers, the command optimizer)::

    from gitrepo import init_repo  # tests/ is on sys.path (rootdir conftest, prepend mode)

    repo = init_repo(tmp_path, {"params.json": '{"x": 0}'})
    before = repo.user_state()
    ...  # run something that must not touch the user's things
    assert repo.user_state() == before

Repositories get a local identity and no signing, so they work on machines without a global
git configuration, and a ``.gitignore`` for pytest's own droppings so that ``git status`` shows
only what a test did.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_IGNORE = "__pycache__/\n.pytest_cache/\n"

_SKIPPED_DIRS = {".git", ".autopilot", "__pycache__", ".pytest_cache"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    return env


@dataclass(frozen=True)
class UserState:
    """Everything of the user's that a run must leave alone, in comparable form."""

    head: str
    """``ref: refs/heads/main @ <sha>`` or a detached sha."""
    status: str
    index: str
    stash: str
    refs: Mapping[str, str]
    """Every ref except the experiment refs (``refs/autopilot/``, ``refs/heads/autopilot/``)."""
    files: Mapping[str, str]
    """Working tree path -> sha256 (and ``-> target`` for symlinks), outside ``.git``."""


class GitRepo:
    """A git working tree at ``path`` with helpers for tests."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def git(self, *args: str, check: bool = True, cwd: Path | None = None) -> str:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd or self.path,
            env=_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout.rstrip("\n")

    def write(self, files: Mapping[str, str]) -> None:
        for rel, text in files.items():
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)

    def read(self, rel: str) -> str:
        return (self.path / rel).read_text()

    def commit(self, message: str = "commit", files: Mapping[str, str] | None = None) -> str:
        """Write ``files`` (if any), stage everything and commit; returns the new HEAD."""
        if files:
            self.write(files)
        self.git("add", "-A")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def rev(self, rev: str) -> str:
        return self.git("rev-parse", "--verify", rev)

    def show(self, rev: str, path: str) -> str:
        """A file's exact text at a revision (``path`` relative to the repository root)."""
        return subprocess.run(
            ["git", "show", f"{rev}:{path}"],
            cwd=self.path,
            env=_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def message(self, rev: str) -> str:
        return self.git("log", "-1", "--format=%B", rev)

    def refs(self, prefix: str = "refs/") -> dict[str, str]:
        out = self.git("for-each-ref", "--format=%(refname) %(objectname)", prefix)
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def worktrees(self) -> list[str]:
        out = self.git("worktree", "list", "--porcelain")
        return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]

    def user_state(self) -> UserState:
        symbolic = self.git("symbolic-ref", "--quiet", "HEAD", check=False)
        head = f"ref: {symbolic} @ {self.git('rev-parse', 'HEAD', check=False)}"
        refs = {
            name: sha
            for name, sha in self.refs().items()
            if not name.startswith(("refs/autopilot/", "refs/heads/autopilot/"))
        }
        return UserState(
            head=head,
            status=self.git("status", "--porcelain", "--untracked-files=all"),
            index=self.git("ls-files", "--stage"),
            stash=self.git("stash", "list", "--format=%H %s"),
            refs=refs,
            files=self._files(),
        )

    def _files(self) -> dict[str, str]:
        files: dict[str, str] = {}
        for root, dirs, names in os.walk(self.path):
            dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS]
            for name in names:
                full = Path(root, name)
                rel = full.relative_to(self.path).as_posix()
                if full.is_symlink():
                    files[rel] = f"-> {os.readlink(full)}"
                else:
                    files[rel] = hashlib.sha256(full.read_bytes()).hexdigest()
        return files


def init_repo(
    path: Path,
    files: Mapping[str, str] | None = None,
    *,
    commit: bool = True,
    gitignore: str = DEFAULT_IGNORE,
) -> GitRepo:
    """A new repository at ``path`` (created if needed) on branch ``main``.

    :param files: relative path -> text, written before the first commit.
    :param commit: make the initial commit (``False`` leaves the files untracked).
    :param gitignore: the ``.gitignore`` to write; empty for none.
    """
    path.mkdir(parents=True, exist_ok=True)
    repo = GitRepo(path)
    repo.git("init", "--quiet", "--initial-branch=main")
    repo.git("config", "user.name", "Test User")
    repo.git("config", "user.email", "test@example.com")
    repo.git("config", "commit.gpgsign", "false")
    if gitignore:
        repo.write({".gitignore": gitignore})
    if files:
        repo.write(files)
    if commit:
        repo.commit("initial")
    return repo
