"""Can two runs hold one experiment lock? A barrier race on ``loop.journal.Lock``.

``--processes`` workers each open their own ``Lock`` on one file; for every try they meet at a
barrier, all call ``acquire()`` at once, meet again (so every attempt is over while the winner
still holds the lock), and count how many succeeded. Before each try the file holds the record
of an owner that has exited, as a killed run leaves it (the case an unlink-based lock gets
wrong). Exactly one must: more is a double
acquisition, none a lost lock. Every ``--kill-every``-th try the winner is a process that is
then killed with SIGKILL while holding the lock (no release), and the next try must still find
the lock free.

Printed: tries, double acquisitions, tries nobody won, and the time taken.

Usage: ``python benchmarks/lock_race.py [--tries 1000] [--processes 4] [--kill-every 50]``
(exit status 1 when any try did not have exactly one winner)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from pytest_autopilot.loop.journal import Lock


def _racer(
    index: int,
    path: str,
    tries: int,
    barriers: tuple[Barrier, ...],
    stale: str,
    wins: mp.Queue[int],
) -> None:
    lock = Lock(Path(path))
    start, attempted, released = barriers
    for attempt in range(tries):
        if index == 0:
            Path(path).write_text(stale)  # what a run killed while holding the lock leaves
        start.wait()
        with contextlib.suppress(pytest.UsageError):
            lock.acquire()
        attempted.wait()
        if lock.held:
            wins.put(attempt)
            lock.release()
        released.wait()


def _killed_owner(path: str, ready: mp.Queue[int]) -> None:
    Lock(Path(path)).acquire()
    ready.put(os.getpid())
    time.sleep(60)


def _stale_record(ctx: mp.context.ForkContext) -> str:
    """The lock file's text naming a process that has exited."""
    dead = ctx.Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    return json.dumps({"pid": dead.pid, "host": socket.gethostname()})


def race(tries: int, processes: int, kill_every: int) -> tuple[int, int, float]:
    """(double acquisitions, tries nobody won, seconds) over ``tries`` barrier races."""
    ctx = mp.get_context("fork")
    doubles = nobody = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "lock")
        stale = _stale_record(ctx)
        done = 0
        while done < tries:
            chunk = min(kill_every or tries, tries - done)
            barriers = tuple(ctx.Barrier(processes) for _ in range(3))
            wins: mp.Queue[int] = ctx.Queue()
            workers = [
                ctx.Process(target=_racer, args=(i, path, chunk, barriers, stale, wins))
                for i in range(processes)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            counts = [0] * chunk
            while not wins.empty():
                counts[wins.get()] += 1
            doubles += sum(1 for c in counts if c > 1)
            nobody += sum(1 for c in counts if c == 0)
            done += chunk
            if kill_every and done < tries:
                ready: mp.Queue[int] = ctx.Queue()
                owner = ctx.Process(target=_killed_owner, args=(path, ready))
                owner.start()
                os.kill(ready.get(timeout=30), signal.SIGKILL)
                owner.join()
    return doubles, nobody, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--kill-every", type=int, default=50)
    args = parser.parse_args()
    doubles, nobody, seconds = race(args.tries, args.processes, args.kill_every)
    print(f"tries: {args.tries} ({args.processes} processes each)")
    print(f"double acquisitions: {doubles}")
    print(f"tries nobody won: {nobody}")
    print(f"time: {seconds:.1f} s")
    return 0 if doubles == 0 and nobody == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
