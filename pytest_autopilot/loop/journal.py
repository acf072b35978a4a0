"""The experiment's record on disk: ``.autopilot/<experiment>/``.

- ``journal.jsonl``: append-only, one JSON event per line, each line fsync'd before the loop
  goes on, so a ``kill -9`` loses at most the line being written (a torn last line is skipped
  when reading).
- ``state.json``: what a resumed run needs, replaced atomically (write, fsync, rename) after
  every candidate, so it always describes a consistent point between two candidates.
- ``lock``: the pid (and start time) of the run that owns the experiment. A lock whose process
  is gone is stale and taken over; a live one makes a second run refuse.
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
from pathlib import Path
from typing import Any

import pytest

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
    """One run per experiment: ``.autopilot/<experiment>/lock`` holds the owner's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False

    def acquire(self) -> None:
        """Take the lock, recovering a stale one; a UsageError if a live run holds it."""
        me = {
            "pid": os.getpid(),
            "start": _process_start(os.getpid()),
            "host": socket.gethostname(),
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and self._alive(owner):
                    raise pytest.UsageError(
                        f"experiment is already being optimized by process {owner['pid']} "
                        f"(lock {self.path}); wait for it, stop it, or choose another "
                        "experiment with --autopilot-experiment"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            try:
                os.write(fd, json.dumps(me).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            self.held = True
            return
        raise pytest.UsageError(f"cannot take the experiment lock {self.path}")

    def _owner(self) -> dict[str, Any] | None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            # Being written right now, or torn by a crash: look again after a moment.
            time.sleep(0.05)
            try:
                owner = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                return None
        return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None

    @staticmethod
    def _alive(owner: dict[str, Any]) -> bool:
        if owner.get("host") not in (None, socket.gethostname()):
            return True  # another machine's run, on a shared filesystem: trust it
        start = owner.get("start")
        return process_alive(owner["pid"], start if isinstance(start, str) else None)

    def release(self) -> None:
        if self.held:
            self.held = False
            self.path.unlink(missing_ok=True)
