"""Git for the loop: the baseline commit, candidate trees and commits, refs, worktrees, apply.

Everything here leaves the user's working tree, index, HEAD, stash and branches alone: the
baseline is written through a temporary index (``GIT_INDEX_FILE``), candidates are built
through temporary indexes or in worktrees under ``.autopilot/worktrees/``, and the only refs
written are ``refs/heads/autopilot/<experiment>`` and ``refs/autopilot/<experiment>/...``.
Commits are made with ``commit-tree`` so that the user's hooks and signing never run on them.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from pytest_autopilot.loop.gitcmd import GIT_LOCATION_VARS, IDENTITY, GitError, clean_environ, git
from pytest_autopilot.loop.snapshot import GENERATED, SKIP_GENERATED
from pytest_autopilot.loop.snapshot import snapshot_baseline as _snapshot_baseline
from pytest_autopilot.names import EXPERIMENT_EXPECTED, is_experiment_name

__all__ = [
    "FILE_MODE",
    "GENERATED",
    "GITLINK_MODE",
    "GIT_LOCATION_VARS",
    "IDENTITY",
    "SYMLINK_MODE",
    "DiffEntry",
    "GitError",
    "InvalidEdit",
    "Workspace",
    "clean_environ",
    "git",
    "normalize_edit_path",
    "validate_experiment",
]

_WORKTREE_LOCK = threading.RLock()
"""git's worktree bookkeeping (``.git/worktrees``, ``prune``) is not safe to run concurrently."""

FILE_MODE = "100644"
SYMLINK_MODE = "120000"
GITLINK_MODE = "160000"


class InvalidEdit(ValueError):
    """An optimizer asked to write a path that cannot be in the repository."""


def validate_experiment(name: str, source: str) -> None:
    """An experiment name becomes a branch, a ref prefix and a directory name."""
    if not is_experiment_name(name):
        raise pytest.UsageError(
            f"{source}: experiment: expected {EXPERIMENT_EXPECTED}, got {name!r}"
        )


def normalize_edit_path(path: str) -> str:
    """A repository-relative POSIX path, or :class:`InvalidEdit` (absolute, ``..``, ``.git``)."""
    raw = path.replace("\\", "/")
    if raw.startswith("/"):
        raw = raw.lstrip("/")  # the repository root, as the text editor tool's paths mean it
    parts = [p for p in PurePosixPath(raw).parts if p != "."]
    if not parts or any(p == ".." for p in parts) or parts[0] == ".git":
        raise InvalidEdit(f"cannot write {path!r}: not a path inside the repository")
    return "/".join(parts)


@dataclass(frozen=True)
class DiffEntry:
    """One changed path between two trees, as ``git diff-tree --raw`` reports it."""

    status: str
    """``A`` added, ``D`` deleted, ``M`` modified, ``T`` type change, ``R`` rename, ``C`` copy."""
    path: str
    old_path: str | None
    old_mode: str
    new_mode: str

    def paths(self) -> list[str]:
        return [self.path] if self.old_path is None else [self.old_path, self.path]

    def describe(self) -> str:
        if self.old_path is not None:
            return f"{self.status} {self.old_path} -> {self.path}"
        return f"{self.status} {self.path}"


class Workspace:
    """The user's repository as the loop sees it: one experiment's refs, worktrees and files."""

    def __init__(self, repo: Path, rootdir: Path, experiment: str) -> None:
        self.repo = repo
        self.rootdir = rootdir
        self.experiment = experiment
        rel = rootdir.resolve().relative_to(repo.resolve()).as_posix()
        self.rootdir_rel = "" if rel == "." else rel
        self.autopilot_dir = repo / ".autopilot"
        self.experiment_dir = self.autopilot_dir / experiment
        self.worktrees_dir = self.autopilot_dir / "worktrees" / experiment
        self.best_branch = f"autopilot/{experiment}"
        self.best_ref = f"refs/heads/autopilot/{experiment}"
        self.ref_prefix = f"refs/autopilot/{experiment}"

    @classmethod
    def discover(cls, rootdir: Path, experiment: str) -> Workspace:
        """Find the repository holding the rootdir; a UsageError when there is none."""
        if shutil.which("git") is None:
            raise pytest.UsageError("--autopilot needs git on PATH (candidates are git commits)")
        try:
            top = git(["rev-parse", "--show-toplevel"], rootdir)
            bare = git(["rev-parse", "--is-bare-repository"], rootdir)
        except GitError:
            raise pytest.UsageError(
                f"--autopilot needs a git repository: the rootdir {rootdir} is not inside one "
                "(run `git init` and commit your project first)"
            ) from None
        if bare == "true" or not top:
            raise pytest.UsageError(f"--autopilot needs a working tree, {rootdir} has none")
        return cls(Path(top).resolve(), rootdir.resolve(), experiment)

    def git(
        self,
        *args: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        check: bool = True,
    ) -> str:
        return git(args, cwd or self.repo, env=env, input=input, check=check)

    # -- layout ---------------------------------------------------------------------------

    def ensure_layout(self) -> None:
        """Create ``.autopilot/`` ignoring itself, so nothing in it ever shows in git status."""
        if self.autopilot_dir.exists() and not self.autopilot_dir.is_dir():
            raise pytest.UsageError(
                f"{self.autopilot_dir} is a file: --autopilot keeps its experiments in a "
                "directory of that name; move the file away"
            )
        self.autopilot_dir.mkdir(exist_ok=True)
        ignore = self.autopilot_dir / ".gitignore"
        if not ignore.exists():
            ignore.write_text("*\n")
        self.experiment_dir.mkdir(exist_ok=True)
        self.worktrees_dir.mkdir(parents=True, exist_ok=True)

    def to_repo_path(self, rootdir_relative: str) -> str:
        """A rootdir-relative path (as in ``autopilot.yaml``) as a repository-relative one."""
        if not self.rootdir_rel:
            return rootdir_relative
        return f"{self.rootdir_rel}/{rootdir_relative}"

    def to_rootdir_path(self, repo_relative: str) -> str | None:
        """A repository-relative path relative to the rootdir; ``None`` when outside it."""
        if not self.rootdir_rel:
            return repo_relative
        prefix = self.rootdir_rel + "/"
        return repo_relative[len(prefix) :] if repo_relative.startswith(prefix) else None

    # -- reading ------------------------------------------------------------------------------

    def head_commit(self) -> str | None:
        out = self.git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
        return out or None

    def current_branch(self) -> str | None:
        out = self.git("symbolic-ref", "--quiet", "HEAD", check=False)
        return out or None

    def tree_of(self, commit: str) -> str:
        return self.git("rev-parse", f"{commit}^{{tree}}")

    def resolve(self, rev: str) -> str | None:
        out = self.git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
        return out or None

    def list_files(self, commit: str) -> list[str]:
        out = self.git("ls-tree", "-r", "-z", "--name-only", commit)
        return [p for p in out.split("\0") if p]

    def read_blob(self, commit: str, path: str) -> bytes | None:
        proc = subprocess.run(
            ["git", "cat-file", "blob", f"{commit}:{path}"],
            cwd=self.repo,
            env=clean_environ(),
            capture_output=True,
            start_new_session=True,
            check=False,
        )
        return proc.stdout if proc.returncode == 0 else None

    @property
    def rootdir_prefix(self) -> str:
        """The rootdir's place inside the repository, ``""`` or ``"sub/dir/"``."""
        return f"{self.rootdir_rel}/" if self.rootdir_rel else ""

    def read_texts(self, wanted: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The text of each (commit, rootdir-relative path) through one ``git cat-file
        --batch``, for optimizers reading earlier candidates' files (see
        ``OptimizerContext.read_files``); what is missing, not a file or not UTF-8 is left out."""
        wanted = list(dict.fromkeys(wanted))
        if not wanted:
            return {}
        request = "".join(f"{c}:{self.to_repo_path(p)}\n" for c, p in wanted).encode()
        try:
            proc = subprocess.run(
                ["git", "cat-file", "--batch"],
                input=request,
                cwd=self.repo,
                env=clean_environ(),
                capture_output=True,
                start_new_session=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return {}
        texts: dict[tuple[str, str], str] = {}
        out, pos = proc.stdout, 0
        for item in wanted if proc.returncode == 0 else ():
            end = out.find(b"\n", pos)
            if end < 0:
                break
            header, pos = out[pos:end].split(), end + 1
            if len(header) != 3 or header[1] != b"blob":
                continue
            size = int(header[2])
            blob, pos = out[pos : pos + size], pos + size + 1
            try:
                texts[item] = blob.decode()
            except UnicodeDecodeError:
                continue
        return texts

    def diff(self, old: str, new: str) -> list[DiffEntry]:
        """Every changed path from ``old`` to ``new`` (commits or trees), renames included."""
        out = self.git("diff-tree", "-r", "-z", "-M", "--raw", "--no-commit-id", old, new)
        fields = out.split("\0")
        entries: list[DiffEntry] = []
        i = 0
        while i < len(fields) and fields[i]:
            meta = fields[i].lstrip(":").split()
            old_mode, new_mode, status = meta[0], meta[1], meta[4][0]
            if status in ("R", "C"):
                entries.append(DiffEntry(status, fields[i + 2], fields[i + 1], old_mode, new_mode))
                i += 3
            else:
                entries.append(DiffEntry(status, fields[i + 1], None, old_mode, new_mode))
                i += 2
        return entries

    def diff_stat(self, old: str, new: str) -> str:
        """``loader.yaml +2 -1, src/a.py +10 -3``: what changed, for a one-line summary."""
        out = self.git("diff-tree", "-r", "-z", "-M", "--numstat", "--no-commit-id", old, new)
        fields = out.split("\0")
        parts: list[str] = []
        i = 0
        while i < len(fields) and fields[i]:
            added, deleted, path = fields[i].split("\t", 2)
            if not path:  # a rename: the two paths follow
                path = fields[i + 2]
                i += 3
            else:
                i += 1
            parts.append(f"{path} +{added} -{deleted}")
        return ", ".join(parts)

    def diff_text(self, old: str, new: str) -> str:
        """The unified diff from ``old`` to ``new``, as ``git diff`` shows it (for reports)."""
        return self.git("diff", "--no-color", "--no-ext-diff", "-M", old, new)

    def changed_paths(self, old: str, new: str) -> list[str]:
        out = self.git("diff-tree", "-r", "-z", "--name-only", "--no-commit-id", old, new)
        return [p for p in out.split("\0") if p]

    def is_clean(self) -> bool:
        """No staged or unstaged change to a tracked file (untracked files are fine to merge)."""
        return not self.git("status", "--porcelain", "--untracked-files=no")

    # -- writing objects and refs -------------------------------------------------------------

    def snapshot_baseline(self, message: str, exclude: Sequence[str] = ()) -> str:
        """HEAD plus uncommitted changes, as a commit (see :func:`snapshot.snapshot_baseline`)."""
        return _snapshot_baseline(self, message, exclude)

    @contextmanager
    def temp_index(self) -> Iterator[dict[str, str]]:
        with tempfile.TemporaryDirectory(prefix="autopilot-index-") as tmp:
            yield {"GIT_INDEX_FILE": str(Path(tmp) / "index")}

    def build_tree(self, parent: str, edits: Mapping[str, str]) -> str:
        """The tree of ``parent`` with whole-file ``edits`` applied, without any checkout."""
        with self.temp_index() as env:
            self.git("read-tree", parent, env=env)
            lines = []
            for raw_path, text in edits.items():
                path = normalize_edit_path(raw_path)
                blob = self.git("hash-object", "-w", "--stdin", input=text)
                mode = self._mode_of(parent, path)
                lines.append(f"{mode} {blob}\t{path}")
            if lines:
                self.git("update-index", "--add", "--index-info", env=env, input="\n".join(lines))
            return self.git("write-tree", env=env)

    def _mode_of(self, commit: str, path: str) -> str:
        out = self.git("ls-tree", commit, "--", path)
        mode = out.split(" ", 1)[0] if out else ""
        return mode if mode in ("100644", "100755") else FILE_MODE

    def tree_in_worktree(
        self,
        parent: str,
        label: str,
        edits: Mapping[str, str],
        apply: Callable[[Path], str | None],
    ) -> tuple[str, str | None]:
        """Apply ``edits`` then ``apply(worktree)`` in a scratch worktree; return the tree.

        The tree is whatever the worktree holds afterwards (new untracked files included,
        ignored ones not), so the diff check sees exactly what the optimizer did.
        """
        worktree = self.add_worktree(f"{label}-edit", parent)
        try:
            for raw_path, text in edits.items():
                target = worktree / normalize_edit_path(raw_path)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_symlink():
                    target.unlink()
                target.write_text(text)
            replaced = apply(worktree)
            self.git("add", "-A", "--", ".", *SKIP_GENERATED, cwd=worktree)
            return self.git("write-tree", cwd=worktree), replaced
        finally:
            self.remove_worktree(worktree)

    def commit(self, tree: str, parents: Sequence[str], message: str) -> str:
        args = ["commit-tree", "--no-gpg-sign", tree]
        for parent in parents:
            args += ["-p", parent]
        return self.git(*args, "-F", "-", env=IDENTITY, input=message)

    def set_ref(self, ref: str, commit: str, reason: str) -> None:
        self.git("update-ref", "-m", reason, ref, commit)

    def delete_ref(self, ref: str) -> None:
        self.git("update-ref", "-d", ref, check=False)

    def experiment_refs(self) -> dict[str, str]:
        """Every ref of this experiment (the best branch and ``refs/autopilot/<name>/...``)."""
        out = self.git(
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            self.best_ref,
            self.ref_prefix + "/",
        )
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def delete_experiment_refs(self, under: str | None = None) -> None:
        """Every ref of the experiment, or only those under ``refs/autopilot/<name>/<under>/``."""
        refs = list(self.experiment_refs())
        if under is not None:
            refs = [r for r in refs if r.startswith(f"{self.ref_prefix}/{under}/")]
        if refs:
            self.git("update-ref", "--stdin", input="".join(f"delete {r}\n" for r in refs))

    # -- worktrees ----------------------------------------------------------------------------

    def add_worktree(self, label: str, commit: str) -> Path:
        """A fresh worktree of ``commit``; callable from several threads (one per label)."""
        path = self.worktrees_dir / label
        with _WORKTREE_LOCK:
            if path.exists():
                self._remove_worktree(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.git("worktree", "add", "--quiet", "--detach", str(path), commit)
        return path

    def remove_worktree(self, path: Path) -> None:
        with _WORKTREE_LOCK:
            self._remove_worktree(path)

    def _remove_worktree(self, path: Path) -> None:
        self.git("worktree", "remove", "--force", "--force", str(path), check=False)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
            self.git("worktree", "prune", check=False)

    def prune_worktrees(self) -> list[str]:
        """Remove what a dead run left: worktree directories and git's records of them."""
        left = (
            sorted(p.name for p in self.worktrees_dir.iterdir())
            if self.worktrees_dir.exists()
            else []
        )
        for name in left:
            self.remove_worktree(self.worktrees_dir / name)
        self.git("worktree", "prune", check=False)
        return left

    # -- bringing the result in -------------------------------------------------------------

    def is_ancestor(self, commit: str, head: str) -> bool:
        """Whether ``commit`` is already part of ``head``'s history."""
        try:
            self.git("merge-base", "--is-ancestor", commit, head)
        except GitError:
            return False
        return True

    def merge(self, commit: str) -> tuple[bool, str]:
        """Bring ``commit`` onto the current branch: fast-forward, else a merge commit.

        A merge that stops on a conflict is aborted, leaving the tree as it was.
        """
        env = {"GIT_MERGE_AUTOEDIT": "no"}
        ff = subprocess.run(
            ["git", "merge", "--ff-only", "--quiet", commit],
            cwd=self.repo,
            env=clean_environ(env),
            capture_output=True,
            text=True,
            check=False,
        )
        if ff.returncode == 0:
            return True, "fast-forward"
        merged = subprocess.run(
            ["git", "merge", "--no-edit", "--quiet", commit],
            cwd=self.repo,
            env=clean_environ(env),
            capture_output=True,
            text=True,
            check=False,
        )
        if merged.returncode == 0:
            return True, "merge commit"
        self.git("merge", "--abort", check=False)
        return False, (merged.stderr or merged.stdout).strip()
