"""Evaluate candidates on execnet gateways: the machines ``--tx`` names, as pytest-xdist does.

:class:`ExecnetExecutor` is an :class:`~pytest_autopilot.loop.child.Executor` that runs each
child session on one of the gateways (``popen``, ``ssh=host//python=...``,
``socket=host:port``), one session per gateway at a time. The commit travels through git: the
controller writes a bundle of it, leaving out the commits that gateway already holds, and the
worker (:mod:`pytest_autopilot.loop.remote_worker`) fetches it into a repository of its own.
What comes back is data (exit code, result JSON text, log), turned into the same
:class:`Evaluation` a :class:`LocalExecutor` gives and stored in the same files, so resuming
and reporting do not care where a candidate ran. The worker never touches the controller's
repository, journal or refs.

A gateway that dies or misbehaves costs only the candidate it was running: the gateway is
dropped (and made again on next use), and the candidate is tried once more on another one.
"""

from __future__ import annotations

import dataclasses
import itertools
import shlex
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_autopilot.loop import remote_worker
from pytest_autopilot.loop.child import (
    CHILD_ENV,
    ChildSpec,
    Evaluation,
    LocalExecutor,
    _map_path_arg,
    child_args,
)
from pytest_autopilot.loop.journal import ExperimentStore
from pytest_autopilot.loop.workspace import _GIT_LOCATION_VARS, GitError, Workspace
from pytest_autopilot.timing import TIMING_LOCK_ENV

GATEWAY_TYPES = ("popen", "ssh", "socket", "vagrant_ssh")

SETUP_TIMEOUT = 300.0
"""Seconds a gateway may take to answer before its session starts (setup, git transfer)."""

RESULT_GRACE = 60.0
"""Seconds past the candidate timeout to wait for a worker's answer before calling it hung."""

POLL = 0.25
"""How often a waiting evaluation looks at :meth:`ExecnetExecutor.cancel`'s flag."""

KNOWN_COMMITS = 64
"""Commits a bundle excludes at most: the ones a gateway received last."""


def expand_tx(specs: Sequence[str]) -> list[str]:
    """xdist's ``--tx`` values with ``N*spec`` expanded, e.g. ``['2*popen']`` -> two ``popen``.

    Each spec must name a gateway type execnet knows; ``via=`` (gateways through gateways)
    is refused, since every spec here gets a gateway of its own.
    """
    import execnet

    out: list[str] = []
    for raw in specs:
        count, star, spec = raw.partition("*")
        if not star:
            count, spec = "1", raw
        if not count.isdigit() or int(count) < 1:
            raise pytest.UsageError(
                f"--tx {raw!r}: expected N*SPEC with N a positive integer, e.g. 2*popen"
            )
        try:
            parsed = execnet.XSpec(spec)
        except (AttributeError, ValueError) as exc:
            raise pytest.UsageError(f"--tx {raw!r}: not an execnet spec ({exc})") from None
        kinds = [kind for kind in GATEWAY_TYPES if getattr(parsed, kind)]
        if len(kinds) != 1:
            raise pytest.UsageError(
                f"--tx {raw!r}: expected exactly one of popen, ssh=HOST, socket=HOST:PORT "
                "(with options like //python=PATH), e.g. ssh=build1//python=/opt/venv/bin/python"
            )
        if parsed.via or parsed.id:
            raise pytest.UsageError(
                f"--tx {raw!r}: via= and id= are not supported with --autopilot "
                "(each spec gets a gateway of its own)"
            )
        out.extend([spec] * int(count))
    return out


class _WorkerFailure(Exception):
    """The gateway, not the candidate, failed: try the candidate once more.

    ``drop``: the gateway itself is broken and is made again on next use; otherwise only the
    session died (killed by a signal on the worker, as a local one can be).
    """

    def __init__(self, reason: str, *, drop: bool = True) -> None:
        super().__init__(reason)
        self.drop = drop


class _Cancelled(Exception):
    pass


@dataclass
class _Slot:
    """One ``--tx`` entry: its gateway (made on first use) and what that gateway holds."""

    index: int
    spec: str
    gateway: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    """The worker's ``hello`` answer: interpreter, cache directory, environment."""
    commits: dict[str, None] = field(default_factory=dict)
    """Commits the gateway's repository holds, oldest first."""
    busy: bool = False


class ExecnetExecutor:
    """Evaluates commits on execnet gateways, one session per gateway at a time."""

    def __init__(
        self,
        workspace: Workspace,
        store: ExperimentStore,
        spec: ChildSpec,
        tx: Sequence[str],
    ) -> None:
        import execnet

        if not tx:
            raise ValueError("ExecnetExecutor needs at least one gateway spec")
        self.workspace = workspace
        self.store = store
        self.spec = spec
        self._execnet = execnet
        self._group = execnet.Group()
        self._slots = [_Slot(i, s) for i, s in enumerate(tx)]
        self._cond = threading.Condition()
        self._made = itertools.count(1)
        self._reader = LocalExecutor(workspace, store, spec)
        self._timing_lock = TIMING_LOCK_ENV in spec.environment(workspace.repo, "probe")
        self._cancelled = False

    # -- the Executor protocol ----------------------------------------------------------------

    def evaluate(self, label: str, commit: str, timeout: float) -> Evaluation:
        evaluation = Evaluation(
            label, commit, "interrupted", started=time.time(), log=self.store.log_path(label)
        )
        first: str | None = None
        avoid: int | None = None
        for _attempt in range(2):
            slot = self._acquire(avoid)
            if slot is None:
                evaluation.status = "interrupted"
                evaluation.reason = "interrupted" if first else "interrupted before it started"
                break
            try:
                self._run(slot, evaluation, timeout)
            except _Cancelled:
                evaluation.status = "interrupted"
                evaluation.reason = "interrupted"
                break
            except _WorkerFailure as exc:
                if exc.drop:
                    self._drop(slot)
                if self._cancelled:
                    evaluation.status = "interrupted"
                    evaluation.reason = "interrupted"
                    break
                if first is None:
                    first = str(exc)
                    evaluation.extra["retried"] = first
                    avoid = slot.index
                    continue
                evaluation.status = "failed"
                evaluation.reason = (
                    f"{exc} (twice)" if str(exc) == first else f"{exc} (retried after: {first})"
                )
                break
            finally:
                self._release(slot)
            break
        evaluation.finished = time.time()
        return evaluation

    def cancel(self) -> None:
        """Stop every evaluation in flight and refuse new ones.

        Only sets a flag (it is called from a signal handler): the evaluating threads look at
        it every :data:`POLL` seconds and ask their worker to kill the session.
        """
        self._cancelled = True

    def close(self) -> None:
        """Remove the workers' directories and exit every gateway."""
        self._cancelled = True
        with self._cond:
            self._cond.notify_all()
        for slot in self._slots:
            if slot.gateway is not None and slot.info:
                try:
                    channel = slot.gateway.remote_exec(remote_worker)
                    channel.send({"op": "cleanup", "cache": slot.info["cache"]})
                    channel.receive(timeout=10)
                except (EOFError, OSError, self._execnet.RemoteError):
                    pass
        self._group.terminate(timeout=2.0)

    # -- slots ----------------------------------------------------------------------------------

    def _acquire(self, avoid: int | None) -> _Slot | None:
        """An idle slot (one that holds a live gateway first); ``None`` once cancelled."""
        with self._cond:
            while not self._cancelled:
                idle = [s for s in self._slots if not s.busy]
                if idle:
                    slot = min(idle, key=lambda s: (s.index == avoid, s.gateway is None, s.index))
                    slot.busy = True
                    return slot
                self._cond.wait(POLL)
        return None

    def _release(self, slot: _Slot) -> None:
        with self._cond:
            slot.busy = False
            self._cond.notify()

    def _drop(self, slot: _Slot) -> None:
        gateway, slot.gateway, slot.info, slot.commits = slot.gateway, None, {}, {}
        if gateway is not None:
            gateway.exit()

    def _gateway(self, slot: _Slot, label: str) -> Any:
        """The slot's gateway, made and greeted on first use."""
        if slot.gateway is not None:
            return slot.gateway
        modules = ["pytest", "pytest_autopilot"] + (["xdist"] if self.spec.xdist else [])
        gateway_id = f"autopilot{slot.index}-{next(self._made)}"
        try:
            gateway = self._group.makegateway(f"{slot.spec}//id={gateway_id}")
        except Exception as exc:
            raise _WorkerFailure(
                f"worker {slot.spec} could not be started for {label}: {_describe(exc)}"
            ) from None
        try:
            channel = gateway.remote_exec(remote_worker)
            channel.send({"op": "hello", "drop_env": list(_GIT_LOCATION_VARS), "modules": modules})
            info = self._receive(channel, slot, label, SETUP_TIMEOUT)
        except BaseException:
            gateway.exit()
            raise
        if info["problems"]:
            gateway.exit()
            raise _WorkerFailure(
                f"worker {slot.spec} cannot evaluate {label}: {'; '.join(info['problems'])}"
            )
        slot.gateway, slot.info = gateway, info
        return gateway

    # -- one attempt ------------------------------------------------------------------------

    def _run(self, slot: _Slot, evaluation: Evaluation, timeout: float) -> None:
        label, commit = evaluation.label, evaluation.commit
        gateway = self._gateway(slot, label)
        info = slot.info
        cache = info["cache"]
        worktree = Path(f"{cache}/wt/{label}")
        remote_result = Path(f"{cache}/out/{label}.json")
        spec = dataclasses.replace(self.spec, python=info["python"])
        request = {
            "op": "evaluate",
            "cache": cache,
            "label": label,
            "commit": commit,
            "worktree": str(worktree),
            "result": str(remote_result),
            "log": f"{cache}/out/{label}.log",
            "command": spec.command(worktree, remote_result),
            "cwd": str(spec.cwd(worktree)),
            "env": self._environment(info, worktree, label),
            "timing_lock": self._timing_lock,
            "drop_env": [*_GIT_LOCATION_VARS, TIMING_LOCK_ENV],
            "timeout": timeout,
        }
        try:
            channel = gateway.remote_exec(remote_worker)
            channel.send(request)
        except (EOFError, OSError) as exc:
            raise _WorkerFailure(self._lost(slot, label, exc)) from None
        reply = self._receive(channel, slot, label, SETUP_TIMEOUT)
        evaluation.extra["sent"] = "nothing: the worker holds the commit"
        if reply["kind"] == "need":
            ref, bundle, count = self._bundle(slot, label, commit)
            try:
                channel.send({"bundle": bundle, "ref": ref})
            except OSError as exc:
                raise _WorkerFailure(self._lost(slot, label, exc)) from None
            evaluation.extra["sent"] = f"git bundle of {count} commit(s), {len(bundle)} bytes"
            reply = self._receive(channel, slot, label, SETUP_TIMEOUT)
        if reply["kind"] == "error":
            raise _WorkerFailure(
                f"worker {slot.spec} could not check out {label}: {reply['reason']}"
            )
        slot.commits.pop(commit, None)
        slot.commits[commit] = None
        evaluation.extra["worker"] = slot.spec
        evaluation.extra["worktree"] = reply["worktree"]
        done = self._receive(channel, slot, label, timeout + RESULT_GRACE)
        self._finish(evaluation, done, timeout)

    def _finish(self, evaluation: Evaluation, done: dict[str, Any], timeout: float) -> None:
        """Store what came back where a local session leaves it, and judge it the same way."""
        log_path = self.store.log_path(evaluation.label)
        result_path = self.store.result_path(evaluation.label)
        log_path.write_bytes(done["log"])
        result_path.unlink(missing_ok=True)
        if done["result"] is not None:
            result_path.write_text(done["result"])
        evaluation.exit_code = done["exit_code"]
        evaluation.extra["remote_started"] = f"{done['started']:.3f}"
        evaluation.extra["remote_finished"] = f"{done['finished']:.3f}"
        if done["outcome"] == "killed" or self._cancelled:
            raise _Cancelled
        if done["outcome"] == "timeout":
            evaluation.status = "timeout"
            evaluation.reason = f"session ran past candidate_timeout ({timeout:g}s) and was killed"
            return
        self._reader._read(evaluation, result_path, log_path)
        code = evaluation.exit_code
        if code is not None and code < 0:
            raise _WorkerFailure(
                f"session of {evaluation.label} on worker {evaluation.extra['worker']} was "
                f"killed by signal {-code}: {evaluation.reason}",
                drop=False,
            )

    def _environment(self, info: dict[str, Any], worktree: Path, label: str) -> dict[str, str]:
        """What :meth:`ChildSpec.environment` sets, computed from the worker's environment."""
        paths = [str(worktree)]
        if self.spec.rootdir_rel:
            paths.append(str(worktree / self.spec.rootdir_rel))
        for entry in info["pythonpath"].split(info["pathsep"]):
            mapped = _map_path_arg(entry, self.spec.repo, worktree) if entry else ""
            if mapped and mapped not in paths:
                paths.append(mapped)
        env = {"PYTHONPATH": info["pathsep"].join(paths), CHILD_ENV: label}
        if info["addopts"]:
            env["PYTEST_ADDOPTS"] = shlex.join(child_args(shlex.split(info["addopts"])))
        return env

    def _bundle(self, slot: _Slot, label: str, commit: str) -> tuple[str, bytes, int]:
        """A bundle of ``commit`` without what the gateway holds, under a temporary ref.

        Returns the ref the bundle names, its bytes and how many commits it carries.
        """
        ref = f"{self.workspace.ref_prefix}/transfer/{label}-{slot.index}"
        exclude = [f"^{c}" for c in list(slot.commits)[-KNOWN_COMMITS:]]
        self.workspace.set_ref(ref, commit, "autopilot: send to a worker")
        try:
            count = int(self.workspace.git("rev-list", "--count", ref, *exclude))
            with tempfile.TemporaryDirectory(prefix="autopilot-bundle-") as tmp:
                path = Path(tmp) / "transfer.bundle"
                self.workspace.git("bundle", "create", "--quiet", str(path), ref, *exclude)
                return ref, path.read_bytes(), count
        except GitError as exc:
            raise _WorkerFailure(f"could not bundle {label} for {slot.spec}: {exc}") from None
        finally:
            self.workspace.delete_ref(ref)

    def _receive(self, channel: Any, slot: _Slot, label: str, limit: float) -> Any:
        """The worker's next answer; cancellation and a dead or hung worker become exceptions."""
        deadline = time.monotonic() + limit
        while True:
            if self._cancelled:
                self._kill(channel)
                raise _Cancelled
            try:
                return channel.receive(timeout=POLL)
            except self._execnet.TimeoutError:
                if time.monotonic() > deadline:
                    raise _WorkerFailure(
                        f"worker {slot.spec} did not answer for {limit:g}s during {label}"
                    ) from None
            except (EOFError, OSError, self._execnet.RemoteError) as exc:
                raise _WorkerFailure(self._lost(slot, label, exc)) from None

    def _kill(self, channel: Any) -> None:
        """Ask the worker to kill the session; wait briefly so that it is gone on return."""
        try:
            channel.send("kill")
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                try:
                    reply = channel.receive(timeout=POLL)
                except self._execnet.TimeoutError:
                    continue
                if isinstance(reply, dict) and reply.get("kind") in ("done", "error"):
                    return
        except (EOFError, OSError, self._execnet.RemoteError):
            pass

    @staticmethod
    def _lost(slot: _Slot, label: str, exc: BaseException) -> str:
        return f"worker {slot.spec} died during {label}: {_describe(exc)}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    last = text[-1] if text else ""
    name = type(exc).__name__
    if isinstance(exc, EOFError) and not last:
        return "EOFError: the connection closed before the session's result came back"
    return f"{name}: {last}" if last else name
