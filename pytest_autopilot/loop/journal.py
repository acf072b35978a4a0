"""The experiment's record on disk: ``.autopilot/<experiment>/``.

- ``journal.jsonl``: append-only, one JSON event per line, each line fsync'd before the loop
  goes on, so a ``kill -9`` loses at most the line being written (a torn last line is skipped
  when reading). Each kind of event is a small dataclass below (:class:`Event`); a line holds
  ``event`` (its name), ``time`` and the event's fields.
- ``state.json``: what a resumed run needs, replaced atomically (write, fsync, rename) after
  every candidate, so it always describes a consistent point between two candidates.
- ``lock``: held with ``flock`` by the run that owns the experiment (see :class:`Lock`); it
  holds the owner's pid, so that a second run can say which process to wait for.
- ``results/<label>.json`` and ``logs/<label>.log``: each child session's result and output.
- ``running/<label>.json``: the process group of each child session in flight. Children run in
  sessions of their own, so a ``kill -9`` of the loop leaves them running: the next start
  kills what these files name (:func:`kill_orphans`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pytest_autopilot.proposals import CandidateRecord, GateStatus

STATE_VERSION = 1


class ExperimentStore:
    """Files of one experiment under ``.autopilot/<experiment>/``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.journal_path = directory / "journal.jsonl"
        self.state_path = directory / "state.json"
        self.results_dir = directory / "results"
        self.logs_dir = directory / "logs"
        self.running_dir = directory / "running"

    def ensure(self) -> None:
        for path in (self.directory, self.results_dir, self.logs_dir, self.running_dir):
            path.mkdir(parents=True, exist_ok=True)

    def record(self, event: Event) -> None:
        """Append a typed event (see :class:`Event`) and make it durable before returning."""
        self.append(event.name, **event.to_json())

    def append(self, event: str, **data: Any) -> None:
        """Append one event and make it durable before returning."""
        line = json.dumps({"event": event, "time": round(time.time(), 3), **data}, default=str)
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def events(self) -> list[dict[str, Any]]:
        """Every complete event; a line torn by a crash is skipped."""
        try:
            text = self.journal_path.read_text()
        except FileNotFoundError:
            return []
        events = []
        for line in text.splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def load_state(self) -> dict[str, Any] | None:
        try:
            text = self.state_path.read_text()
        except FileNotFoundError:
            return None
        try:
            state = json.loads(text)
        except json.JSONDecodeError as exc:
            raise pytest.UsageError(
                f"{self.state_path}: unreadable resume state ({exc.msg}); "
                "pass --autopilot-fresh to start the experiment over"
            ) from None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise pytest.UsageError(
                f"{self.state_path}: unreadable resume state (not a state.json of version "
                f"{STATE_VERSION}); "
                "pass --autopilot-fresh to start the experiment over"
            )
        return state

    def save_state(self, state: dict[str, Any]) -> None:
        write_durably(self.state_path, json.dumps({"version": STATE_VERSION, **state}, indent=1))

    def clear(self) -> None:
        """Forget the experiment's record (``--autopilot-fresh``); the lock stays held."""
        self.journal_path.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)
        shutil.rmtree(self.results_dir, ignore_errors=True)
        shutil.rmtree(self.logs_dir, ignore_errors=True)
        shutil.rmtree(self.running_dir, ignore_errors=True)
        self.ensure()

    def result_path(self, label: str) -> Path:
        return self.results_dir / f"{label}.json"

    def log_path(self, label: str) -> Path:
        return self.logs_dir / f"{label}.log"


def write_durably(path: Path, text: str) -> None:
    """Replace ``path`` atomically: a reader (or a crash) sees the old or the new file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def note_child(store: ExperimentStore, label: str, pid: int) -> Path:
    """Record a child session's process group while it runs (see :func:`kill_orphans`)."""
    path = store.running_dir / f"{label}.json"
    path.write_text(json.dumps({"pid": pid, "start": _process_start(pid)}))
    return path


def kill_orphans(store: ExperimentStore) -> list[str]:
    """Kill the process groups of child sessions a dead run left behind; their labels."""
    killed = []
    paths = sorted(store.running_dir.glob("*.json")) if store.running_dir.exists() else []
    for path in paths:
        try:
            data = json.loads(path.read_text())
            pid, start = int(data["pid"]), data.get("start")
        except (OSError, ValueError, KeyError, TypeError):
            pid, start = 0, None
        if pid > 0 and process_alive(pid, start if isinstance(start, str) else None):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            killed.append(path.stem)
        path.unlink(missing_ok=True)
    return killed


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), which tells a recycled pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether ``pid`` is a running process (a zombie is not), and the same one if ``start``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    return start is None or fields[19] == start


class Lock:
    """One run per experiment: an exclusive ``flock`` on ``.autopilot/<experiment>/lock``.

    The kernel holds the lock for the open file, so it cannot be taken twice and is freed the
    moment its owner exits, ``kill -9`` included: nothing is ever stale, and the file is never
    unlinked (unlinking is what let two runs each hold "the" lock on different inodes). The
    owner writes its pid (and host) into the file after taking the lock, only so that a second
    run can say who holds it. The descriptor is not inherited by child sessions.

    On NFS, Linux turns ``flock`` into a byte-range lock that the server arbitrates (NLM for
    NFSv3, built into NFSv4), so runs on different machines exclude each other as long as the
    server supports locking; on a mount with ``nolock`` the lock is only local to each
    machine, and a client that loses its lease (a long network partition) loses the lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock; a UsageError naming the owner's pid if another run holds it."""
        import fcntl  # POSIX only: the plugin refuses --autopilot elsewhere

        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise pytest.UsageError(
                f"experiment is already being optimized by {self._owner()} "
                f"(lock {self.path}); wait for it, stop it, or choose another "
                "experiment with --autopilot-experiment"
            ) from None
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd

    def _owner(self) -> str:
        """``process N`` (``on host H`` when not this machine), as the owner wrote it."""
        for _ in range(20):
            try:
                owner = json.loads(self.path.read_text())
            except (OSError, ValueError):
                owner = None
            if isinstance(owner, dict) and isinstance(owner.get("pid"), int):
                host = owner.get("host")
                where = f" on host {host}" if host not in (None, socket.gethostname()) else ""
                return f"process {owner['pid']}{where}"
            time.sleep(0.01)  # the owner has the lock but has not written its pid yet
        return "another process"

    def release(self) -> None:
        """Free the lock; the pid is erased first, while still holding it."""
        import fcntl

        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# -- the journal's events ------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One line of ``journal.jsonl``; ``name`` is its ``event`` key, the fields the others."""

    name: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Start(Event):
    """A run began from scratch (not a resume)."""

    name: ClassVar[str] = "start"
    experiment: str
    baseline: str | None
    head: str | None
    pid: int
    optimizer: str


@dataclass(frozen=True)
class Resume(Event):
    name: ClassVar[str] = "resume"
    rounds_done: int
    pid: int


@dataclass(frozen=True)
class BaselineMeasured(Event):
    name: ClassVar[str] = "baseline"
    commit: str | None
    metrics: dict[str, Any]
    gates: list[dict[str, Any]]
    seconds: float


@dataclass(frozen=True)
class RoundStarted(Event):
    name: ClassVar[str] = "round"
    round: int
    incumbent: str
    resumed: int
    """Candidates of this round an interrupted run already decided."""


@dataclass(frozen=True)
class CandidateDecided(Event):
    """A candidate's verdict as it was decided: ``accepted`` may later be superseded."""

    name: ClassVar[str] = "candidate"
    record: CandidateRecord
    gates: list[GateStatus] | None = None
    """None for a candidate refused before evaluation (no gate keys on its line)."""
    seconds: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    exit_code: int | None = None
    executor: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        from pytest_autopilot.loop.state import record_to_json

        data = record_to_json(self.record)
        if self.gates is None:
            return data
        data.update(
            gates=[asdict(s) for s in self.gates],
            seconds=round(self.seconds, 3),
            started=round(self.started, 3),
            finished=round(self.finished, 3),
            exit_code=self.exit_code,
        )
        if self.executor:
            data["executor"] = self.executor
        return data


@dataclass(frozen=True)
class Measured(Event):
    """A re-measurement (the incumbent for a round, a confirmation)."""

    name: ClassVar[str] = "measure"
    label: str
    commit: str
    status: str
    reason: str
    metrics: dict[str, Any]
    seconds: float


@dataclass(frozen=True)
class Superseded(Event):
    name: ClassVar[str] = "superseded"
    id: str
    by: str


@dataclass(frozen=True)
class RoundDone(Event):
    name: ClassVar[str] = "round_done"
    round: int
    incumbent: str
    accepted: list[str]
    """Every candidate of the round that passed acceptance, the superseded ones included."""


@dataclass(frozen=True)
class OptimizerError(Event):
    name: ClassVar[str] = "optimizer_error"
    round: int
    traceback: str


@dataclass(frozen=True)
class Stopped(Event):
    name: ClassVar[str] = "stop"
    reason: str
    exit_status: int


@dataclass(frozen=True)
class Applied(Event):
    """``--autopilot-apply`` merged the best commit into the user's branch."""

    name: ClassVar[str] = "apply"
    commit: str
    how: str
