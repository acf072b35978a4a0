"""Lockstep: two sessions at their timing tests take benchmark rounds in turn.

Two real pytest sessions, started as the loop starts its children (``PYTEST_AUTOPILOT_CHILD``
and a timing lock path in their environment), each run one pedantic benchmark whose target
appends ``<label> <round>`` to a shared file. They are one batch (``lockstep.BATCH_ENV``), as
the loop's sessions started at once are, so the first to start waits for the other before
its first timing test. The order of those lines is the order in which the rounds ran; nothing
is timed.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_autopilot import lockstep, timing

BENCH = """\
import os

def test_step(benchmark):
    label = os.environ["PYTEST_AUTOPILOT_CHILD"]
    count = iter(range(1000))

    def work():
        with open(os.environ["ROUNDS_LOG"], "a") as out:
            out.write(f"{label} {next(count)}\\n")
        return sum(range(300000))  # longer than lockstep.QUANTUM

    benchmark.pedantic(work, rounds=N_ROUNDS, iterations=1)
"""


def session(
    root: Path, label: str, lock: Path, log: Path, rounds: int, batch: str, by: str = "rounds"
) -> subprocess.Popen[str]:
    folder = root / label
    folder.mkdir()
    (folder / "test_bench.py").write_text(BENCH.replace("N_ROUNDS", str(rounds)))
    env = {
        **os.environ,
        timing.CHILD_ENV: label,
        timing.TIMING_LOCK_ENV: str(lock),
        "ROUNDS_LOG": str(log),
        lockstep.BATCH_ENV: batch,
        lockstep.ROUNDS_ENV: by,
    }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    return subprocess.Popen(
        [*command, "test_bench.py"], cwd=folder, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_two_sessions_at_their_timing_tests_alternate_round_by_round(tmp_path: Path) -> None:
    lock, log, batch = tmp_path / "timing.lock", tmp_path / "rounds.log", tmp_path / "batch"
    batch.mkdir()
    first = session(tmp_path, "a", lock, log, 12, f"{batch}|2")
    time.sleep(1.0)  # not a measurement: gives "a" a head start the batch must absorb
    second = session(tmp_path, "b", lock, log, 12, f"{batch}|2")
    for proc in (first, second):
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    labels = [line.split()[0] for line in log.read_text().splitlines()]
    assert sorted(labels) == ["a"] * 12 + ["b"] * 12
    assert sum(x != y for x, y in itertools.pairwise(labels)) == 23, "".join(labels)


def test_by_default_whole_timing_tests_take_turns(tmp_path: Path) -> None:
    """A benchmark working in the background between rounds (a prefetching pipeline) would
    get its waits for free under round-by-round turns: by default a test keeps the lock."""
    lock, log, batch = tmp_path / "timing.lock", tmp_path / "rounds.log", tmp_path / "batch"
    batch.mkdir()
    first = session(tmp_path, "a", lock, log, 12, f"{batch}|2", by="")
    second = session(tmp_path, "b", lock, log, 12, f"{batch}|2", by="")
    for proc in (first, second):
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    labels = [line.split()[0] for line in log.read_text().splitlines()]
    assert sorted(labels) == ["a"] * 12 + ["b"] * 12
    assert sum(x != y for x, y in itertools.pairwise(labels)) == 1, "".join(labels)


def test_a_dead_waiter_never_blocks_a_hand_over(tmp_path: Path) -> None:
    import fcntl

    lock = tmp_path / "timing.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    turns = lockstep.Turns(str(lock), fd, fcntl.flock, fcntl.LOCK_EX, fcntl.LOCK_UN)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    (turns.waiting_dir / dead.stdout.strip()).touch()
    turns.acquire()
    assert not turns.others_waiting()
    assert list(turns.waiting_dir.iterdir()) == []
    turns.hand_over()  # returns at once: nobody is waiting
    os.close(fd)


def test_the_timer_only_takes_turns_inside_pytest_benchmarks_runner(tmp_path: Path) -> None:
    class Counting:
        def __init__(self) -> None:
            self.hand_overs = 0

        def hand_over(self) -> None:
            self.hand_overs += 1

    turns = Counting()
    timer = lockstep.TurnTimer(turns, clock=lambda: 1.0)  # type: ignore[arg-type]
    timer()  # a precision probe, not a round
    assert turns.hand_overs == 0

    def runner() -> None:
        timer()
        timer()

    for _ in range(3):
        runner()
    assert (turns.hand_overs, timer.rounds) == (3, 3)


@pytest.fixture(autouse=True)
def _no_inherited_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(timing.TIMING_LOCK_ENV, raising=False)
