"""Lockstep: concurrent sessions take benchmark *rounds* in turn, not whole timing tests.

:mod:`pytest_autopilot.timing` makes a timing test wait until every other session is itself
waiting at a timing test (or done). This module goes one step further: while the sessions sit
at their timing tests, they alternate round by round (incumbent round 1, candidate round 1,
incumbent round 2, ...), so a load spike, a CPU-frequency change or heat hits the rounds of
both commits alike instead of all the rounds of one of them.

How: pytest-benchmark calls its timer twice per round, ``start = timer()`` and ``end =
timer()``, from a local function named ``runner``. :class:`TurnTimer` replaces the fixture's
timer for the test. At each round's start it hands the exclusive lock to a waiting session
(if any, and once it has held the lock for :data:`QUANTUM`), waits until that session has
taken a round, takes the lock back, and only then reads the clock; the end of a round just
reads the clock. Who is waiting is a file per waiting
process (``<lock>.waiting/<pid>``); whose turn it was, the pid in ``<lock>.turn``. Dead
waiters (their pid is gone) are ignored and their files removed, and every wait is capped at
:data:`MAX_HANDOVER` seconds, so a session that dies or moves on never blocks the others.
Calls from anywhere but ``runner`` (pytest-benchmark's timer-precision probe) read the clock
and do nothing else. With three or more sessions the turns go round-robin: a session that let
go competes for the lock again only once every session then waiting has had its turn
(``<lock>.turns/<pid>`` counts each session's turns).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROUNDS_ENV = "PYTEST_AUTOPILOT_LOCKSTEP"
"""Set to ``tests`` to alternate whole timing tests; by default sessions alternate rounds.

Round-by-round turns would flatter a workload that runs in the background between rounds
(an SPDL pipeline prefetching into its queues, a thread pool): while its session waited for
its turn it kept working, and its next rounds found their results ready (the demo's loader
once measured 0.09x its own CPU lower bound that way). A waiting session the loop started is
therefore *frozen* (SIGSTOP, every thread) while another session's round runs, and thawed
(SIGCONT) when its turn comes: its background work stops with it."""

PIN_ENV = "PYTEST_AUTOPILOT_PIN"
"""Set to ``0`` to leave the rounds on whatever CPU the scheduler picks (:class:`CpuPin`)."""

MAX_HANDOVER = 2.0
"""Longest a session waits for a waiting session to take its round, in seconds."""

QUANTUM = 0.002
"""A session keeps the lock for further rounds until it has held it this long (seconds):
micro-benchmarks of thousands of rounds then alternate in blocks of rounds instead of paying
a hand-over per round; drift over 2 ms is nil."""

_POLL = 0.0005

BATCH_ENV = "PYTEST_AUTOPILOT_LOCKSTEP_BATCH"
"""``<directory>|<count>``: the loop started ``count`` sessions at once. Each says it is
configured (a file named by its pid in the directory) and, before its first timing test,
waits until all have: otherwise the first to start would run all its rounds before the others
even hold the lock."""

MAX_BATCH_WAIT = 10.0
"""Longest a session waits for the others of its batch (one may never start), in seconds."""


class Turns:
    """The turn-taking state next to the timing lock file ``path``, for one process.

    ``freezable``: this process may be frozen (SIGSTOP) while it waits and another session
    holds the lock, and says so in ``<lock>.freezable/<pid>`` (with its start time, so a
    recycled pid is never stopped). Only sessions the loop started are: never the user's own
    session, which a shell with job control would report as stopped.
    """

    def __init__(
        self,
        path: str,
        fd: int,
        flock: Callable[[int, int], None],
        ex: int,
        un: int,
        *,
        freezable: bool = False,
    ) -> None:
        self.fd = fd
        self._flock = flock
        self._ex, self._un = ex, un
        self.pid = os.getpid()
        self.turn_path = Path(path + ".turn")
        self.waiting_dir = Path(path + ".waiting")
        self.waiting_dir.mkdir(exist_ok=True)
        self.freezable_dir = Path(path + ".freezable")
        self.freezable_dir.mkdir(exist_ok=True)
        self.taken_at = 0.0
        self.turns_dir = Path(path + ".turns")
        self.turns_dir.mkdir(exist_ok=True)
        self.turns_taken = 0
        self.frozen: list[int] = []
        """Waiting sessions this one stopped while it holds the lock; thawed before it lets go."""
        self._freezable = False
        if freezable:
            started = _start_time(self.pid)
            if started is not None:
                with contextlib.suppress(OSError):
                    (self.freezable_dir / str(self.pid)).write_text(started)
                    self._freezable = True

    def acquire(self, *, start_of_test: bool = False) -> None:
        """Take the lock exclusively, saying so while waiting; then record the turn.

        At the start of a test the first round may hand over at once: the test's setup is
        not a round, and the other session should not wait two rounds for its first.
        """
        marker = self.waiting_dir / str(self.pid)
        marker.touch()
        try:
            self._flock(self.fd, self._ex)
        finally:
            marker.unlink(missing_ok=True)
        self._record_turn()
        if start_of_test:
            self.taken_at = 0.0

    def release(self, shared: int) -> None:
        """The timing test is over: thaw whoever this session froze, hold the lock ``shared``.

        A session still waiting for its rounds takes the lock first: this one waits for it
        to have done so before asking for the shared lock, which then waits for that timing
        test to end. Otherwise what this session does next (the next tests, its exit) would
        run beside the other's last rounds, or hold it off until this session has ended.
        """
        self.thaw()
        if not self.others_waiting():
            self._flock(self.fd, shared)
            return
        self._flock(self.fd, self._un)
        deadline = time.monotonic() + MAX_HANDOVER
        while time.monotonic() < deadline and self._last_turn() == self.pid:
            if not self.others_waiting():
                break
            time.sleep(_POLL)
        self._flock(self.fd, shared)

    def hand_over(self) -> None:
        """Held exclusively: let one waiting session take a round, then take the lock back.

        This session says it is waiting *before* it lets go, so the other one, at its next
        round, sees it and hands the lock back instead of running two rounds in a row.
        """
        if time.monotonic() - self.taken_at < QUANTUM:
            return
        waiting = {pid: self._turns_of(pid) for pid in self._waiters()}
        if not waiting:
            self._record_turn()
            return
        marker = self.waiting_dir / str(self.pid)
        marker.touch()
        try:
            self.thaw()
            self._flock(self.fd, self._un)
            deadline = time.monotonic() + MAX_HANDOVER
            while time.monotonic() < deadline and self._owed(waiting):
                time.sleep(_POLL)
            self._flock(self.fd, self._ex)
        finally:
            marker.unlink(missing_ok=True)
        self._record_turn()

    def _owed(self, waiting: dict[int, int]) -> bool:
        """Whether a session that was waiting when this one let go has not had its turn yet
        and still waits. This one competes for the lock again only then: with three or more
        sessions, the two that happen to win the lock would otherwise take turns between
        themselves while the rest wait, and run their rounds later, beside other work, not
        beside the rounds they are compared with (an A/A run kept 6 no-ops of 36 that way)."""
        return any(
            self._turns_of(pid) <= taken and (self.waiting_dir / str(pid)).exists() and _alive(pid)
            for pid, taken in waiting.items()
        )

    def _turns_of(self, pid: int) -> int:
        try:
            return int((self.turns_dir / str(pid)).read_text() or "0")
        except (OSError, ValueError):
            return 0

    def others_waiting(self) -> bool:
        return bool(self._waiters())

    def _waiters(self) -> list[int]:
        waiters = []
        for entry in self.waiting_dir.iterdir():
            try:
                pid = int(entry.name)
            except ValueError:
                continue
            if pid == self.pid:
                continue
            if _alive(pid):
                waiters.append(pid)
            else:
                entry.unlink(missing_ok=True)
                (self.freezable_dir / entry.name).unlink(missing_ok=True)
        return waiters

    def freeze_waiters(self) -> None:
        """Stop every waiting session the loop started (held exclusively): a pipeline that
        prefetches in the background must not work while it waits for its turn."""
        for pid in self._waiters():
            if pid in self.frozen:
                continue
            try:
                started = (self.freezable_dir / str(pid)).read_text()
            except OSError:
                continue
            if started and started == _start_time(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGSTOP)
                    self.frozen.append(pid)
        for pid in self.frozen:
            _wait_stopped(pid)

    def thaw(self) -> None:
        for pid in self.frozen:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)
        self.frozen = []

    def close(self) -> None:
        self.thaw()
        (self.turns_dir / str(self.pid)).unlink(missing_ok=True)
        if self._freezable:
            (self.freezable_dir / str(self.pid)).unlink(missing_ok=True)

    def _record_turn(self) -> None:
        self.taken_at = time.monotonic()
        self.turns_taken += 1
        with contextlib.suppress(OSError):
            self.turn_path.write_text(str(self.pid))
            (self.turns_dir / str(self.pid)).write_text(str(self.turns_taken))
        self.freeze_waiters()

    def _last_turn(self) -> int | None:
        try:
            return int(self.turn_path.read_text() or "0")
        except (OSError, ValueError):
            return None


class CpuPin:
    """Runs this session's benchmark rounds on the one CPU every lockstep session uses.

    On a virtual machine each virtual CPU has its own speed of the moment (the host's load on
    it, its frequency after idling): two sessions of identical code whose rounds alternate on
    *different* CPUs were seen to differ by 1.8x for whole stretches, the same two on one CPU
    by a few percent, round by round. So the thread that runs the rounds is pinned to the CPU
    named in ``<lock>.cpu`` (the first session picks the highest one it may use) while its
    timing test runs. Threads that appear meanwhile (a pool a pipeline starts) would inherit
    the pin; they are given back the thread's own CPUs after each round, and the thread its
    own when the benchmark run returns. Nothing happens with a single CPU or without
    ``sched_setaffinity``.
    """

    def __init__(self, path: str) -> None:
        self.cpu_path = Path(path + ".cpu")
        self.original: set[int] | None = None
        self.known: set[str] = set()

    def _shared_cpu(self, allowed: set[int]) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            cpu = int(self.cpu_path.read_text())
            return cpu if cpu in allowed else None
        cpu = max(allowed)
        with contextlib.suppress(OSError):
            self.cpu_path.write_text(str(cpu))
        return cpu

    def pin(self) -> None:
        if self.original is not None or not hasattr(os, "sched_setaffinity"):
            return
        if os.environ.get(PIN_ENV, "") == "0":
            return
        allowed = set(os.sched_getaffinity(0))
        cpu = self._shared_cpu(allowed) if len(allowed) > 1 else None
        if cpu is None:
            return
        self.known = _threads()
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            return
        self.original = allowed

    def release_new_threads(self) -> None:
        """Threads started since :meth:`pin` get the CPUs the pinned thread had."""
        if self.original is None:
            return
        now = _threads()
        for tid in now - self.known:
            with contextlib.suppress(OSError, ValueError):
                os.sched_setaffinity(int(tid), self.original)
        self.known = now

    def unpin(self) -> None:
        if self.original is None:
            return
        self.release_new_threads()
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, self.original)
        self.original = None


def _threads() -> set[str]:
    try:
        return set(os.listdir("/proc/self/task"))
    except OSError:
        return set()


class TurnTimer:
    """A pytest-benchmark timer that takes turns at the start of every round.

    With ``alternate`` off (:data:`ROUNDS_ENV` ``tests``) it only pins the rounds' CPU.
    """

    def __init__(
        self,
        turns: Turns,
        clock: Callable[[], float] = time.perf_counter,
        pin: CpuPin | None = None,
        *,
        alternate: bool = True,
    ) -> None:
        self.turns = turns
        self.clock = clock
        self.pin = pin
        self.alternate = alternate
        self.rounds = 0
        self._in_round = False

    def __call__(self) -> float:
        if sys._getframe(1).f_code.co_name != "runner":
            return self.clock()
        if self._in_round:
            now = self.clock()
            self._in_round = False
            if self.pin is not None:
                self.pin.release_new_threads()
            return now
        if self.pin is not None:
            self.pin.pin()
        if self.alternate:
            self.turns.hand_over()
        self.rounds += 1
        self._in_round = True
        return self.clock()

    def finish(self) -> None:
        """The benchmark run (or the test) is over: a round it left open (its target raised)
        is over too, and its thread gets its own CPUs back."""
        self._in_round = False
        if self.pin is not None:
            self.pin.unpin()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


FREEZE_WAIT = 0.01
"""Longest a session waits for a frozen one to have stopped, in seconds."""


def _wait_stopped(pid: int) -> None:
    """Return once every thread of ``pid`` has stopped (a stop signal takes effect a little
    later, on each thread's next way out of the kernel), or after :data:`FREEZE_WAIT`."""
    deadline = time.monotonic() + FREEZE_WAIT
    while time.monotonic() < deadline:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
            states = [Path(f"/proc/{pid}/task/{tid}/stat").read_text() for tid in tasks]
        except OSError:
            return
        if all(stat[stat.rindex(")") + 2] in "tT" for stat in states):
            return
        time.sleep(0.0001)


def _start_time(pid: int) -> str | None:
    """When ``pid`` started (field 22 of ``/proc/<pid>/stat``): a pid and this name one
    process, never a later one that reused the pid. ``None`` without ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def by_rounds() -> bool:
    """Whether this session takes turns round by round (:data:`ROUNDS_ENV`; the default)."""
    return os.environ.get(ROUNDS_ENV, "") != "tests"


def join_batch() -> Callable[[], None] | None:
    """Say this session is configured; return the wait for the others (None: no batch)."""
    value = os.environ.get(BATCH_ENV, "")
    directory, _, count = value.rpartition("|")
    if not directory or not count.isdigit():
        return None
    folder = Path(directory)
    with contextlib.suppress(OSError):
        (folder / str(os.getpid())).touch()
    expected = int(count)

    def wait() -> None:
        deadline = time.monotonic() + MAX_BATCH_WAIT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if sum(1 for _ in folder.iterdir()) >= expected:
                    return
            time.sleep(0.005)

    return wait
