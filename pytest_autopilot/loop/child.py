"""Evaluate a commit: a fresh ``python -m pytest`` in its own worktree, read back as data.

The controller never imports candidate code. Each evaluation checks the commit out into a
new worktree under ``.autopilot/worktrees/<experiment>/<label>``, runs the user's own test
selection and options there (minus the loop's flags and xdist's distribution), and reads the
:class:`SessionResult` the child wrote with ``--autopilot-json`` to a file outside the
worktree. Baseline, incumbent re-measurements and candidates all go through the same
:meth:`LocalExecutor.evaluate`, so they are measured under the same conditions.

:class:`~pytest_autopilot.loop.executor.Executor` (in :mod:`.executor`, re-exported here) is
the seam for evaluating elsewhere: :class:`~pytest_autopilot.loop.remote.ExecnetExecutor`
runs the same :class:`ChildSpec` on execnet gateways.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_autopilot.loop.executor import (
    Evaluation,
    Executor,
    Status,
    evaluate_with_retry,
    read_result,
    timeout_reason,
)
from pytest_autopilot.loop.journal import ExperimentStore, note_child
from pytest_autopilot.loop.process import kill_group, same_scheduling_group, signal_group
from pytest_autopilot.loop.workspace import Workspace, clean_environ
from pytest_autopilot.timing import TIMING_LOCK_ENV, default_lock_path

__all__ = [  # Evaluation, Executor and Status live in executor.py; imported from here too
    "CHILD_ENV",
    "ChildSpec",
    "Evaluation",
    "Executor",
    "LocalExecutor",
    "Status",
    "child_args",
]

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

    def environment(
        self,
        worktree: Path,
        label: str,
        base: Mapping[str, str] | None = None,
        pathsep: str = os.pathsep,
    ) -> dict[str, str]:
        """The user's environment, with imports resolving to the worktree, not the checkout.

        ``base`` is the environment the session starts from: by default this process's, without
        the variables that relocate git; a remote worker passes the part of its own that
        changes here (``PYTHONPATH``, ``PYTEST_ADDOPTS``, the timing lock) and its ``pathsep``.
        """
        env = clean_environ() if base is None else dict(base)
        paths = [str(worktree)]
        if self.rootdir_rel:
            paths.append(str(worktree / self.rootdir_rel))
        for entry in env.get("PYTHONPATH", "").split(pathsep):
            if entry:
                mapped = _map_path_arg(entry, self.repo, worktree)
                if mapped not in paths:
                    paths.append(mapped)
        env["PYTHONPATH"] = pathsep.join(paths)
        if env.get("PYTEST_ADDOPTS"):
            env["PYTEST_ADDOPTS"] = shlex.join(child_args(shlex.split(env["PYTEST_ADDOPTS"])))
        env[CHILD_ENV] = label
        # The loop's lock, never one from the user's environment (issue 16, item 3); a remote
        # worker's base carries the path it computed for its own machine.
        env[TIMING_LOCK_ENV] = (base or {}).get(TIMING_LOCK_ENV) or default_lock_path()
        return env


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
        """Run the session; one killed by a signal it did not ask for is run once more
        (:func:`~pytest_autopilot.loop.executor.evaluate_with_retry`)."""
        return evaluate_with_retry(lambda: self._evaluate_once(label, commit, timeout))

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
            evaluation.reason = timeout_reason(timeout)
            return evaluation
        read_result(evaluation, result_path, log_path)
        return evaluation

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
                **same_scheduling_group(),
            )
            with self._lock:
                self._running[proc.pid] = proc
            note = note_child(self.store, log_path.stem, proc.pid)
            try:
                try:
                    return proc.wait(timeout=timeout), False
                except subprocess.TimeoutExpired:
                    kill_group(proc)
                    return None, True
            except BaseException:
                kill_group(proc)
                raise
            finally:
                kill_group(proc, wait=False)  # whatever the session left running
                with self._lock:
                    self._running.pop(proc.pid, None)
                    others = list(self._running)
                for pid in others:  # a session that died holding the timing lock froze them
                    signal_group(pid, signal.SIGCONT)
                note.unlink(missing_ok=True)

    def cancel(self) -> None:
        """Kill every session in flight and refuse new ones (safe in a signal handler)."""
        self._cancelled = True
        with self._lock:
            running = list(self._running.values())
        for proc in running:
            kill_group(proc)

    def close(self) -> None:
        """Nothing to release: each evaluation removes its own worktree and process group."""
