"""Keep the timing tests of concurrent candidate sessions from overlapping anything else.

With ``pytest --autopilot -n N`` several candidate sessions run at once, and a benchmark that
shares the CPU with another candidate's tests measures the neighbour as much as its own code.
Every session the loop starts gets the path of a machine-wide lock file in
:data:`TIMING_LOCK_ENV`. The session holds that lock *shared* from ``pytest_configure`` until its
process is gone (at most :data:`EXIT_HOLD` seconds after ``pytest_unconfigure``) and
converts it to *exclusive* around each timing test (one that uses
pytest-benchmark's ``benchmark`` fixture). A timing test therefore starts only once every other
session is itself waiting at a timing test or has finished, and no session makes progress while
it runs: non-timing tests run in parallel, timing tests one at a time, in whatever order the
sessions reach them (incumbent and candidates interleave). While several sessions sit at
their timing tests they take benchmark *rounds* in turn (:mod:`pytest_autopilot.lockstep`),
so drift hits the rounds of every commit alike. Only the interpreter start of a session,
before its plugins are configured, can still overlap a measurement.

``flock`` locks belong to the open file, so a session that dies releases its lock with it.

Only a session the loop started (one with ``PYTEST_AUTOPILOT_CHILD`` set) ever takes the lock,
and the loop always sets the path itself: a ``PYTEST_AUTOPILOT_TIMING_LOCK`` left in the user's
environment is neither taken by the controller (which would hold it shared while its children
wait for it exclusively: a deadlock until ``candidate_timeout``) nor passed on to children.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Callable, Generator
from pathlib import Path

import pytest

TIMING_LOCK_ENV = "PYTEST_AUTOPILOT_TIMING_LOCK"
READY_ENV = "PYTEST_AUTOPILOT_TIMING_READY"
"""A file a child session creates once it holds the lock (``--autopilot-against`` waits)."""
PLUGIN_NAME = "autopilot-timing-lock"
EXIT_HOLD = 2.0
"""Longest a finished session holds the timing lock while its process shuts down, in seconds."""
CHILD_ENV = "PYTEST_AUTOPILOT_CHILD"
"""Set (to its label) in every session the loop starts: ``loop.child.CHILD_ENV``."""


def default_lock_path() -> str:
    """One lock per user and machine, so that two loops at once are serialized too."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return str(Path(tempfile.gettempdir()) / f"pytest-autopilot-{uid}.timing.lock")


def is_timing_test(item: pytest.Item) -> bool:
    return "benchmark" in getattr(item, "fixturenames", ())


class TimingLock:
    """The shared/exclusive lock a candidate session takes; registered only in such sessions."""

    def __init__(self, path: str, before_first: Callable[[], None] | None = None) -> None:
        import fcntl  # POSIX only: elsewhere register() does not get here

        from pytest_autopilot.lockstep import CpuPin, Turns, TurnTimer, by_rounds

        self._fcntl = fcntl
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(self.fd, fcntl.LOCK_SH)
        self.turns = Turns(
            path,
            self.fd,
            fcntl.flock,
            fcntl.LOCK_EX,
            fcntl.LOCK_UN,
            freezable=bool(os.environ.get(CHILD_ENV)),
        )
        self.timer = TurnTimer(self.turns, pin=CpuPin(path), alternate=by_rounds())
        if before_first is None and os.environ.get(CHILD_ENV):
            from pytest_autopilot.lockstep import join_batch

            before_first = join_batch()
        self._before_first = before_first
        """Called once before the first timing test (e.g. to wait for the other session)."""
        ready = os.environ.get(READY_ENV)
        if ready and os.environ.get(CHILD_ENV):
            Path(ready).touch()
        _open_locks.append(self)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        if not is_timing_test(item):
            return (yield)
        if self._before_first is not None:
            wait, self._before_first = self._before_first, None
            wait()
        self.turns.acquire(start_of_test=True)
        try:
            return (yield)
        finally:
            self.timer.finish()
            self.turns.release(self._fcntl.LOCK_SH)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, object, object]:
        """Give the test's ``benchmark`` fixture the turn-taking timer: it pins the rounds'
        CPU and, unless whole tests alternate (:data:`pytest_autopilot.lockstep.ROUNDS_ENV`),
        hands the lock over between rounds. The pin ends with the benchmark run, not with
        the test: code after it (``os.sched_getaffinity`` sizing a pool, a bound per core)
        sees the session's own CPUs."""
        fixture = getattr(item, "funcargs", {}).get("benchmark")
        if fixture is not None and hasattr(fixture, "_timer"):
            fixture._timer = self.timer
            for name in ("_raw", "_raw_pedantic"):
                run = getattr(fixture, name, None)
                if callable(run):
                    setattr(fixture, name, _then(run, self.timer.finish))
        return (yield)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """Let go of everything but the lock itself when this is a session the loop started as
        a process of its own: the lock is then held until the process is gone (the kernel
        releases it). Its interpreter shutdown after this hook is tens of milliseconds of
        CPU, which would otherwise run beside the next rounds of the sessions still measuring
        (rounds of 10 ms of CPU were seen to take 15-22 ms). A process that does not end
        (a thread it never joins) lets go after :data:`EXIT_HOLD` seconds."""
        if _own_process():
            self.turns.close()
            closer = threading.Timer(EXIT_HOLD, self.close)
            closer.daemon = True
            closer.start()
        else:
            self.close()

    def close(self) -> None:
        if self in _open_locks:
            _open_locks.remove(self)
        if self.fd >= 0:
            self.turns.close()
            os.close(self.fd)
            self.fd = -1


def _own_process() -> bool:
    """Whether this session is the process's own ``python -m pytest`` (as the loop starts its
    children) and its only one: a session run in-process by another (pytester) must close its
    lock, as the process goes on and a lock kept would block its next timing test for good."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", None) == "pytest.__main__" and len(_open_locks) == 1


_open_locks: list[TimingLock] = []


def _then(run: Callable[..., object], after: Callable[[], None]) -> Callable[..., object]:
    def wrapped(*args: object, **kwargs: object) -> object:
        try:
            return run(*args, **kwargs)
        finally:
            after()

    return wrapped


def register(config: pytest.Config) -> None:
    """Take the lock when this session was started by the loop with one (never otherwise)."""
    path = os.environ.get(TIMING_LOCK_ENV)
    child = os.environ.get(CHILD_ENV)
    if path and child and os.name == "posix" and not hasattr(config, "workerinput"):
        config.pluginmanager.register(TimingLock(path), PLUGIN_NAME)
