"""The remote half of :mod:`pytest_autopilot.loop.remote`, run inside an execnet gateway.

execnet sends this module's *source* with ``gateway.remote_exec(module)``, so it imports only
the standard library: the remote interpreter needs pytest-autopilot for the child session,
not for this code. Each ``remote_exec`` serves one request on its channel and answers with
plain data. The worker keeps a bare repository in a temporary directory of its own (one per
gateway), fetches the candidate commit from the git bundle the controller sends, checks it
out into a worktree, runs the child ``pytest`` there in a process group of its own, and sends
back the exit code, the result file's text and the log. It never sees the controller's
repository, journal or refs.

Requests (``op``):

- ``hello``: create the cache directory; answer the interpreter, the part of the environment
  the controller adapts for a child (``PYTHONPATH``, ``PYTEST_ADDOPTS``, this machine's timing
  lock), and whatever makes this machine unable to evaluate (no git, no pytest-autopilot).
- ``evaluate``: answer ``need`` when the commit is missing (the controller then sends
  ``{"bundle": bytes, "ref": name}``), then ``started``, then ``done`` with the outcome
  ``exited``, ``timeout`` or ``killed``. The child's process group is killed on timeout, on a
  ``kill`` message, and when the channel closes (the controller went away or cancelled).
- ``cleanup``: remove the cache directory.

:func:`_kill_group`, :func:`_read_tail`, :func:`_timing_lock_path` and
:data:`TIMING_LOCK_ENV` are stdlib-only copies of :func:`pytest_autopilot.loop.process.kill_group`,
:func:`~pytest_autopilot.loop.process.read_tail` and their counterparts in
:mod:`pytest_autopilot.timing`: execnet ships this module's source alone, so it cannot import them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

LOG_LIMIT = 8 * 1024 * 1024
"""Bytes of a child's log sent back at most (its end, where pytest's summary is)."""

TIMING_LOCK_ENV = "PYTEST_AUTOPILOT_TIMING_LOCK"


def _environ(drop: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def _git(args: list[str], cwd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "core.hooksPath=/dev/null", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


def _check(proc: subprocess.CompletedProcess[str], what: str) -> str | None:
    if proc.returncode == 0:
        return None
    return f"{what} failed ({proc.returncode}): {proc.stderr.strip()}"


def _thaw_frozen(lock: str) -> None:
    """Continue every session frozen at this lock (``pytest_autopilot.lockstep``): one killed
    while it held the lock cannot thaw those it froze. Each is named by its pid and start time
    in ``<lock>.freezable/``, so a recycled pid is left alone."""
    folder = lock + ".freezable"
    if not lock or not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        try:
            with open(os.path.join(folder, name)) as mark:
                started = mark.read()
            with open(f"/proc/{int(name)}/stat") as stat_file:
                stat = stat_file.read()
        except (OSError, ValueError):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if len(fields) > 19 and fields[19] == started:
            with contextlib.suppress(OSError):
                os.kill(int(name), signal.SIGCONT)


def _timing_lock_path() -> str:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tempfile.gettempdir(), f"pytest-autopilot-{uid}.timing.lock")


def _adapted_environ(env: dict[str, str]) -> dict[str, str]:
    """What ``ChildSpec.environment`` starts from on the controller side."""
    adapted = {key: env[key] for key in ("PYTHONPATH", "PYTEST_ADDOPTS") if env.get(key)}
    adapted[TIMING_LOCK_ENV] = _timing_lock_path()
    return adapted


def hello(request: dict[str, Any]) -> dict[str, Any]:
    env = _environ(request["drop_env"])
    cache = tempfile.mkdtemp(prefix="pytest-autopilot-worker-")
    problems = []
    if shutil.which("git", path=env.get("PATH")) is None:
        problems.append("git is not on PATH")
    else:
        problem = _check(_git(["init", "--quiet", "--bare", "repo.git"], cache, env), "git init")
        if problem:
            problems.append(problem)
    probe = subprocess.run(
        [sys.executable, "-c", f"import {', '.join(request['modules'])}"],
        cwd=cache,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no output)"])[-1]
        problems.append(f"{sys.executable} cannot import what the sessions need: {last}")
    if problems:
        shutil.rmtree(cache, ignore_errors=True)
    return {
        "python": sys.executable,
        "cache": cache,
        "pathsep": os.pathsep,
        "environ": _adapted_environ(env),
        "problems": problems,
    }


def _fetch(channel: Any, request: dict[str, Any], repo: str, env: dict[str, str]) -> str | None:
    """Make sure the commit is in the cache repository; a reason when it cannot be."""
    commit = request["commit"]
    have = _git(["cat-file", "-e", f"{commit}^{{commit}}"], repo, env)
    if have.returncode == 0:
        return None
    channel.send({"kind": "need"})
    transfer = channel.receive()
    bundle = os.path.join(request["cache"], f"{request['label']}.bundle")
    with open(bundle, "wb") as out:
        out.write(transfer["bundle"])
    try:
        fetched = _git(
            ["fetch", "--quiet", bundle, f"+{transfer['ref']}:refs/keep/{commit}"], repo, env
        )
    finally:
        os.unlink(bundle)
    return _check(fetched, "git fetch from the bundle")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _remove_worktree(repo: str, worktree: str, env: dict[str, str]) -> None:
    _git(["worktree", "remove", "--force", "--force", worktree], repo, env)
    if os.path.exists(worktree):
        shutil.rmtree(worktree, ignore_errors=True)
        _git(["worktree", "prune"], repo, env)


def _read_tail(log: IO[bytes]) -> bytes:
    size = log.seek(0, os.SEEK_END)
    log.seek(max(0, size - LOG_LIMIT))
    return log.read()


def _checkout(channel: Any, request: dict[str, Any], repo: str, env: dict[str, str]) -> str | None:
    """The commit checked out at ``request["worktree"]``; a reason when it cannot be."""
    problem = _fetch(channel, request, repo, env)
    if problem is not None:
        return problem
    worktree = request["worktree"]
    if os.path.exists(worktree):
        _remove_worktree(repo, worktree, env)
    os.makedirs(os.path.dirname(worktree), exist_ok=True)
    added = _git(["worktree", "add", "--quiet", "--detach", worktree, request["commit"]], repo, env)
    return _check(added, "git worktree add")


def _watch(channel: Any, proc: subprocess.Popen[bytes], deadline: float) -> str:
    """Wait for the session: ``exited``, ``timeout``, ``killed`` (asked to) or ``lost``."""
    while proc.poll() is None:
        left = deadline - time.time()
        if left <= 0:
            return "timeout"
        try:
            message = channel.receive(timeout=min(0.2, left))
        except channel.TimeoutError:
            continue
        except EOFError:
            return "lost"
        if message == "kill":
            return "killed"
    return "exited"


def _run_session(channel: Any, request: dict[str, Any]) -> tuple[str, int | None, float, float]:
    """Run the child in a process group of its own: outcome, exit code, start and end."""
    os.makedirs(os.path.dirname(request["result"]), exist_ok=True)
    if os.path.exists(request["result"]):
        os.unlink(request["result"])
    env = _environ(request["drop_env"])
    env.update(request["env"])
    started = time.time()
    with open(request["log"], "wb") as log:
        proc = subprocess.Popen(
            request["command"],
            cwd=request["cwd"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    outcome = "lost"
    try:
        channel.send({"kind": "started", "worktree": request["worktree"]})
        outcome = _watch(channel, proc, started + request["timeout"])
    finally:
        _kill_group(proc)  # on a timeout or kill, and whatever a finished session left
        proc.wait()
        if outcome != "exited" or proc.returncode < 0:
            _thaw_frozen(env.get(TIMING_LOCK_ENV, ""))
    code = proc.returncode if outcome == "exited" else None
    return outcome, code, started, time.time()


def _take(path: str, read: Callable[[IO[bytes]], Any]) -> Any:
    """What ``read`` gives for the file at ``path`` (``None`` if there is none); removes it."""
    try:
        with open(path, "rb") as handle:
            data = read(handle)
    except FileNotFoundError:
        return None
    os.unlink(path)
    return data


def evaluate(channel: Any, request: dict[str, Any]) -> None:
    repo = os.path.join(request["cache"], "repo.git")
    git_env = _environ(request["drop_env"])
    problem = _checkout(channel, request, repo, git_env)
    if problem is not None:
        channel.send({"kind": "error", "reason": problem})
        return
    try:
        outcome, code, started, finished = _run_session(channel, request)
    finally:
        _remove_worktree(repo, request["worktree"], git_env)
    if outcome == "lost":
        return
    result = _take(request["result"], lambda handle: handle.read().decode())
    log = _take(request["log"], _read_tail)
    channel.send(
        {
            "kind": "done",
            "outcome": outcome,
            "exit_code": code,
            "result": result,
            "log": log if log is not None else b"",
            "started": started,
            "finished": finished,
        }
    )


def serve(channel: Any) -> None:
    request = channel.receive()
    op = request["op"]
    if op == "hello":
        channel.send(hello(request))
    elif op == "evaluate":
        evaluate(channel, request)
    elif op == "cleanup":
        shutil.rmtree(request["cache"], ignore_errors=True)
        channel.send({"kind": "done"})
    else:
        channel.send({"kind": "error", "reason": f"unknown request {op!r}"})


if __name__ == "__channelexec__":
    serve(globals()["channel"])
