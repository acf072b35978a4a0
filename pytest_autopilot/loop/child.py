"""Evaluate a commit: a fresh ``python -m pytest`` in its own worktree, read back as data.

The controller never imports candidate code. Each evaluation checks the commit out into a
new worktree under ``.autopilot/worktrees/<experiment>/<label>``, runs the user's own test
selection and options there (minus the loop's flags and xdist's distribution), and reads the
:class:`SessionResult` the child wrote with ``--autopilot-json`` to a file outside the
worktree. Baseline, incumbent re-measurements and candidates all go through the same
:meth:`LocalExecutor.evaluate`, so they are measured under the same conditions.

:class:`Executor` is the seam for evaluating elsewhere (issue 4: several at once, or on
execnet gateways): anything that turns ``(label, commit, timeout)`` into an
:class:`Evaluation` can replace :class:`LocalExecutor`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import pytest

from pytest_autopilot.loop.journal import ExperimentStore, note_child
from pytest_autopilot.loop.workspace import Workspace, clean_environ
from pytest_autopilot.results import SessionResult
from pytest_autopilot.timing import TIMING_LOCK_ENV, default_lock_path

CHILD_ENV = "PYTEST_AUTOPILOT_CHILD"
"""Set in a child session's environment (to its label), so that it never starts a loop."""

_DROP_FLAGS = frozenset(
    {
        "--autopilot",
        "--autopilot-gate",
        "--autopilot-fresh",
        "--autopilot-apply",
        "--lf",
        "--last-failed",
        "--ff",
        "--failed-first",
        "--nf",
        "--new-first",
        "--sw",
        "--stepwise",
        "--sw-skip",
        "--stepwise-skip",
        "--sw-reset",
        "--stepwise-reset",
        "--cache-clear",
        "--cache-show",
        "-f",
        "--looponfail",
        "--benchmark-autosave",
        "--benchmark-save-data",
    }
)
"""Options without a value that a child must not get: the loop's own, and those that need the
cache (disabled in children) or write the user's output files."""

_DROP_WITH_VALUE = frozenset(
    {
        "-n",
        "--numprocesses",
        "--maxprocesses",
        "--dist",
        "--tx",
        "--rsyncdir",
        "--rsyncignore",
        "--basetemp",
        "--lfnf",
        "--last-failed-no-failures",
        "--max-worker-restart",
        "--maxschedchunk",
        "--junitxml",
        "--junit-xml",
        "--junitprefix",
        "--junit-prefix",
        "--benchmark-json",
        "--benchmark-save",
    }
)
"""Options with a value a child must not get: xdist's distribution (a child runs its tests in
one process), a shared basetemp (children would wipe each other's), the user's output files."""

_KEEP_AUTOPILOT = frozenset({"--autopilot-config"})


def child_args(args: Sequence[str]) -> list[str]:
    """The user's command-line arguments as a child session gets them.

    Every ``--autopilot*`` option goes (except ``--autopilot-config``), as do the options in
    :data:`_DROP_FLAGS` and :data:`_DROP_WITH_VALUE`, in their ``--opt value``, ``--opt=value``
    and ``-nVALUE`` spellings. pytest parses without abbreviations, so spellings are exact.
    """
    out: list[str] = []
    it = iter(args)
    for arg in it:
        name, eq, _ = arg.partition("=")
        if arg == "--":
            out.append(arg)
            out.extend(it)
            break
        if name in _DROP_FLAGS and not eq:
            continue
        takes_value = name in _DROP_WITH_VALUE or (
            name.startswith("--autopilot-") and name not in _KEEP_AUTOPILOT
        )
        if takes_value:
            if not eq:
                next(it, None)
            continue
        if arg.startswith("-n") and not arg.startswith("--") and len(arg) > 2:
            continue  # -n4, -nauto
        out.append(arg)
    return out


def _map_path_arg(arg: str, repo: Path, worktree: Path) -> str:
    """An absolute path into the user's checkout, pointed at the same place in the worktree.

    Handles ``/abs/path``, ``/abs/path::node`` and ``--opt=/abs/path``.
    """
    prefix = ""
    value = arg
    if arg.startswith("-") and "=" in arg:
        prefix, value = arg.split("=", 1)
        prefix += "="
    path_part, sep, node = value.partition("::")
    if not path_part.startswith("/"):
        return arg
    try:
        rel = Path(path_part).relative_to(repo)
    except ValueError:
        return arg
    return f"{prefix}{worktree / rel}{sep}{node}"


@dataclass(frozen=True)
class ChildSpec:
    """How a child session is started, fixed once from the controller's own invocation."""

    args: tuple[str, ...]
    """The user's arguments, already through :func:`child_args`."""
    repo: Path
    invocation_rel: str | None
    """The directory pytest was started from, relative to the repository (``None``: outside)."""
    rootdir_rel: str
    xdist: bool
    """Whether xdist is loaded: then ``-n 0`` overrides a ``-n`` in the ini file's addopts."""
    python: str = sys.executable

    @classmethod
    def from_config(cls, pytest_config: pytest.Config, workspace: Workspace) -> ChildSpec:
        params = pytest_config.invocation_params
        try:
            rel: str | None = Path(params.dir).resolve().relative_to(workspace.repo).as_posix()
        except ValueError:
            rel = None
        return cls(
            args=tuple(child_args([str(a) for a in params.args])),
            repo=workspace.repo,
            invocation_rel=rel,
            rootdir_rel=workspace.rootdir_rel,
            xdist=pytest_config.pluginmanager.hasplugin("xdist"),
        )

    def cwd(self, worktree: Path) -> Path:
        rel = self.invocation_rel if self.invocation_rel is not None else self.rootdir_rel
        return worktree / rel if rel not in ("", ".") else worktree

    def command(self, worktree: Path, result_path: Path) -> list[str]:
        args = [_map_path_arg(a, self.repo, worktree) for a in self.args]
        extra = ["-p", "no:cacheprovider", f"--autopilot-json={result_path}"]
        if self.xdist:
            extra += ["-n", "0"]
        if "--" in args:
            cut = args.index("--")
            return [self.python, "-m", "pytest", *args[:cut], *extra, *args[cut:]]
        return [self.python, "-m", "pytest", *args, *extra]

    def environment(self, worktree: Path, label: str) -> dict[str, str]:
        """The user's environment, with imports resolving to the worktree, not the checkout."""
        env = clean_environ()
        paths = [str(worktree)]
        if self.rootdir_rel:
            paths.append(str(worktree / self.rootdir_rel))
        for entry in env.get("PYTHONPATH", "").split(os.pathsep):
            if entry:
                mapped = _map_path_arg(entry, self.repo, worktree)
                if mapped not in paths:
                    paths.append(mapped)
        env["PYTHONPATH"] = os.pathsep.join(paths)
        if env.get("PYTEST_ADDOPTS"):
            env["PYTEST_ADDOPTS"] = shlex.join(child_args(shlex.split(env["PYTEST_ADDOPTS"])))
        env[CHILD_ENV] = label
        env[TIMING_LOCK_ENV] = default_lock_path()
        return env


Status = Literal["ok", "failed", "timeout", "interrupted"]


@dataclass
class Evaluation:
    """What evaluating one commit gave: a session result, or why there is none."""

    label: str
    commit: str
    status: Status
    result: SessionResult | None = None
    reason: str = ""
    exit_code: int | None = None
    started: float = 0.0
    finished: float = 0.0
    log: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.finished - self.started


class Executor(Protocol):
    """Evaluates commits; must be safe to call from several threads at once."""

    def evaluate(self, label: str, commit: str, timeout: float) -> Evaluation: ...

    def cancel(self) -> None:
        """Stop every evaluation in flight (they return ``interrupted``) and refuse new ones."""
        ...


class LocalExecutor:
    """Evaluates a commit in a fresh worktree with a child pytest in its own process group."""

    def __init__(self, workspace: Workspace, store: ExperimentStore, spec: ChildSpec) -> None:
        self.workspace = workspace
        self.store = store
        self.spec = spec
        self._lock = threading.RLock()  # cancel() runs in a signal handler too
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._cancelled = False

    def evaluate(self, label: str, commit: str, timeout: float) -> Evaluation:
        """Run the session; one killed by a signal it did not ask for is run once more.

        A session that dies that way (the OOM killer, a crashed interpreter, someone's
        ``kill``) says nothing about the candidate, so it gets a second chance; the
        evaluation's ``extra["retried"]`` says why.
        """
        first = self._evaluate_once(label, commit, timeout)
        code = first.exit_code
        if first.status != "failed" or code is None or code >= 0 or self._cancelled:
            return first
        second = self._evaluate_once(label, commit, timeout)
        second.started = first.started
        second.extra["retried"] = first.reason
        if second.status == "failed":
            second.reason = f"{second.reason} (also on the first attempt: {first.reason})"
        return second

    def _evaluate_once(self, label: str, commit: str, timeout: float) -> Evaluation:
        evaluation = Evaluation(label, commit, "interrupted", started=time.time())
        if self._cancelled:
            evaluation.reason = "interrupted before it started"
            evaluation.finished = time.time()
            return evaluation
        result_path = self.store.result_path(label)
        result_path.unlink(missing_ok=True)
        log_path = self.store.log_path(label)
        evaluation.log = log_path
        worktree = self.workspace.add_worktree(label, commit)
        try:
            code, timed_out = self._run(
                self.spec.command(worktree, result_path),
                self.spec.cwd(worktree),
                self.spec.environment(worktree, label),
                timeout,
                log_path,
            )
        finally:
            self.workspace.remove_worktree(worktree)
        evaluation.finished = time.time()
        evaluation.exit_code = code
        if self._cancelled:
            evaluation.reason = "interrupted"
            return evaluation
        if timed_out:
            evaluation.status = "timeout"
            evaluation.reason = f"session ran past candidate_timeout ({timeout:g}s) and was killed"
            return evaluation
        self._read(evaluation, result_path, log_path)
        return evaluation

    def _read(self, evaluation: Evaluation, result_path: Path, log_path: Path) -> None:
        code = evaluation.exit_code
        evaluation.status = "failed"
        if code is not None and code < 0:
            evaluation.reason = f"session killed by signal {-code}: {_tail(log_path)}"
            return
        if code not in (0, 1):
            what = {2: "interrupted or collection errors", 3: "internal error", 4: "usage error"}
            evaluation.reason = (
                f"session exited with status {code} ({what.get(code or 0, 'error')}): "
                f"{_tail(log_path)}"
            )
            return
        try:
            data = json.loads(result_path.read_text())
            evaluation.result = SessionResult.from_json(data, source=str(result_path))
        except FileNotFoundError:
            evaluation.reason = f"session wrote no result file: {_tail(log_path)}"
            return
        except (json.JSONDecodeError, pytest.UsageError) as exc:
            evaluation.reason = f"unreadable session result: {exc}"
            return
        evaluation.status = "ok"

    def _run(
        self,
        command: list[str],
        cwd: Path,
        env: Mapping[str, str],
        timeout: float,
        log_path: Path,
    ) -> tuple[int | None, bool]:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            with self._lock:
                self._running[proc.pid] = proc
            note = note_child(self.store, log_path.stem, proc.pid)
            try:
                try:
                    return proc.wait(timeout=timeout), False
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                    return None, True
            except BaseException:
                _kill_group(proc)
                raise
            finally:
                _kill_group(proc, wait=False)  # whatever the session left running
                with self._lock:
                    self._running.pop(proc.pid, None)
                note.unlink(missing_ok=True)

    def cancel(self) -> None:
        self._cancelled = True
        with self._lock:
            running = list(self._running.values())
        for proc in running:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes], *, wait: bool = True) -> None:
    """Kill the child's whole process group: the session and anything it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if wait:
        proc.wait()


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    tail = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(tail) if tail else "(no output)"
