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
and do nothing else.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROUNDS_ENV = "PYTEST_AUTOPILOT_LOCKSTEP"
"""Set to ``rounds`` to alternate round by round; by default whole timing tests alternate.

Round-by-round turns are only honest for benchmarks that do nothing between rounds. A
workload that runs in the background (an SPDL pipeline prefetching into its queues, a
thread pool) keeps working while its session waits for its turn, so the next rounds find
their results ready and measure the dequeue, not the work: the demo's loader measured 0.09x
its own CPU lower bound that way. Whole-test turns (the timing lock alone) have no such
bias, so they are the default."""

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
    """The turn-taking state next to the timing lock file ``path``, for one process."""

    def __init__(self, path: str, fd: int, flock: Callable[[int, int], None], ex: int, un: int):
        self.fd = fd
        self._flock = flock
        self._ex, self._un = ex, un
        self.pid = os.getpid()
        self.turn_path = Path(path + ".turn")
        self.waiting_dir = Path(path + ".waiting")
        self.waiting_dir.mkdir(exist_ok=True)
        self.taken_at = 0.0

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

    def hand_over(self) -> None:
        """Held exclusively: let one waiting session take a round, then take the lock back.

        This session says it is waiting *before* it lets go, so the other one, at its next
        round, sees it and hands the lock back instead of running two rounds in a row.
        """
        if time.monotonic() - self.taken_at < QUANTUM:
            return
        if not self.others_waiting():
            self._record_turn()
            return
        marker = self.waiting_dir / str(self.pid)
        marker.touch()
        try:
            self._flock(self.fd, self._un)
            deadline = time.monotonic() + MAX_HANDOVER
            while time.monotonic() < deadline and self._last_turn() == self.pid:
                if not self.others_waiting():
                    break
                time.sleep(_POLL)
            self._flock(self.fd, self._ex)
        finally:
            marker.unlink(missing_ok=True)
        self._record_turn()

    def others_waiting(self) -> bool:
        for entry in self.waiting_dir.iterdir():
            try:
                pid = int(entry.name)
            except ValueError:
                continue
            if pid == self.pid:
                continue
            if _alive(pid):
                return True
            entry.unlink(missing_ok=True)
        return False

    def _record_turn(self) -> None:
        self.taken_at = time.monotonic()
        with contextlib.suppress(OSError):
            self.turn_path.write_text(str(self.pid))

    def _last_turn(self) -> int | None:
        try:
            return int(self.turn_path.read_text() or "0")
        except (OSError, ValueError):
            return None


class TurnTimer:
    """A pytest-benchmark timer that takes turns at the start of every round."""

    def __init__(self, turns: Turns, clock: Callable[[], float] = time.perf_counter) -> None:
        self.turns = turns
        self.clock = clock
        self.rounds = 0
        self._in_round = False

    def __call__(self) -> float:
        if sys._getframe(1).f_code.co_name != "runner":
            return self.clock()
        if self._in_round:
            now = self.clock()
            self._in_round = False
            return now
        self.turns.hand_over()
        self.rounds += 1
        self._in_round = True
        return self.clock()

    def reset(self) -> None:
        """A new test: a round the last one left open (its target raised) is over."""
        self._in_round = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def by_rounds() -> bool:
    """Whether this session takes turns round by round (:data:`ROUNDS_ENV`)."""
    return os.environ.get(ROUNDS_ENV, "") == "rounds"


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
