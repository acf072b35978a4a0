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
import json
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


def test_four_sessions_take_rounds_round_robin(tmp_path: Path) -> None:
    """With more than two sessions, none takes another round before every other session
    still measuring has taken one: the two that happen to win the lock must not trade it
    while the rest wait, or the rest's rounds run later, beside other work (the loop's
    ``-n 3`` A/A runs kept no-ops that way)."""
    lock, log, batch = tmp_path / "timing.lock", tmp_path / "rounds.log", tmp_path / "batch"
    batch.mkdir()
    labels = ("a", "b", "c", "d")
    procs = [session(tmp_path, label, lock, log, 8, f"{batch}|4") for label in labels]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    order = [line.split()[0] for line in log.read_text().splitlines()]
    assert sorted(order) == sorted(labels * 8)
    done = dict.fromkeys(labels, 0)
    for label in order:
        done[label] += 1
        measuring = [n for n in done.values() if n < 8]
        assert not measuring or done[label] - min(measuring) <= 1, "".join(order)


ATEXIT = """import atexit, os, time

def _exit():
    with open(os.environ["ROUNDS_LOG"], "a") as out:
        out.write("exit start\\n")
    time.sleep(0.5)  # an interpreter shutdown: work after pytest_unconfigure
    with open(os.environ["ROUNDS_LOG"], "a") as out:
        out.write("exit end\\n")

atexit.register(_exit)

def test_plain():
    pass
"""


def plain_session(
    root: Path, text: str, lock: Path, log: Path, batch: str
) -> subprocess.Popen[str]:
    """A loop session (label ``q``) of one test module ``text``, with no timing test."""
    folder = root / "q"
    folder.mkdir()
    (folder / "test_plain.py").write_text(text)
    env = {**os.environ, timing.CHILD_ENV: "q", timing.TIMING_LOCK_ENV: str(lock),
           "ROUNDS_LOG": str(log), lockstep.BATCH_ENV: batch}  # fmt: skip
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    return subprocess.Popen([*command, "test_plain.py"], cwd=folder, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def test_no_round_runs_while_a_finished_session_is_still_exiting(tmp_path: Path) -> None:
    """A session the loop started holds the timing lock until its process is gone: what it
    does after pytest_unconfigure (an interpreter shutdown, tens of milliseconds of CPU)
    would otherwise run beside the rounds of the sessions still measuring."""
    lock, log, batch = tmp_path / "timing.lock", tmp_path / "rounds.log", tmp_path / "batch"
    batch.mkdir()
    first = plain_session(tmp_path, ATEXIT, lock, log, f"{batch}|2")
    second = session(tmp_path, "b", lock, log, 12, f"{batch}|2")
    for proc in (first, second):
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    lines = log.read_text().splitlines()
    start, end = lines.index("exit start"), lines.index("exit end")
    assert not [line for line in lines[start:end] if line.startswith("b ")], lines


LINGER = """\
import threading, time

def test_plain():
    threading.Thread(target=time.sleep, args=(30,)).start()  # never joined: the exit waits
"""


def test_a_session_that_does_not_exit_lets_go_of_the_lock_in_time(tmp_path: Path) -> None:
    lock, log, batch = tmp_path / "timing.lock", tmp_path / "rounds.log", tmp_path / "batch"
    batch.mkdir()
    first = plain_session(tmp_path, LINGER, lock, log, f"{batch}|2")
    try:
        began = time.monotonic()
        second = session(tmp_path, "b", lock, log, 3, f"{batch}|2")
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 0, out
        assert time.monotonic() - began < 20, "the lock was held until the thread ended"
        assert first.poll() is None
    finally:
        first.kill()
        first.communicate()


def test_whole_timing_tests_take_turns_when_asked(tmp_path: Path) -> None:
    lock, log, batch = tmp_path / "timing.lock", tmp_path / "rounds.log", tmp_path / "batch"
    batch.mkdir()
    first = session(tmp_path, "a", lock, log, 12, f"{batch}|2", by="tests")
    second = session(tmp_path, "b", lock, log, 12, f"{batch}|2", by="tests")
    for proc in (first, second):
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    labels = [line.split()[0] for line in log.read_text().splitlines()]
    assert sorted(labels) == ["a"] * 12 + ["b"] * 12
    assert sum(x != y for x, y in itertools.pairwise(labels)) == 1, "".join(labels)


BACKGROUND = """\
import os, threading, time

def test_step(benchmark):
    label = os.environ["PYTEST_AUTOPILOT_CHILD"]
    log = os.environ["ROUNDS_LOG"]
    count = iter(range(1000))
    stop = threading.Event()

    def prefetch():  # a pipeline working in the background between rounds
        while not stop.is_set():
            with open(log, "a") as out:
                out.write(f"bg {label}\\n")
            time.sleep(0.001)

    worker = threading.Thread(target=prefetch)
    worker.start()

    def work():
        n = next(count)
        with open(log, "a") as out:
            out.write(f"{label} {n} start\\n")
        time.sleep(0.03)
        with open(log, "a") as out:
            out.write(f"{label} {n} end\\n")

    benchmark.pedantic(work, rounds=6, iterations=1)
    stop.set()
    worker.join()
"""


def test_a_waiting_session_is_frozen_while_the_other_takes_its_round(tmp_path: Path) -> None:
    """A background thread of the waiting session never runs during the other's round."""
    lock, log, batch = tmp_path / "timing.lock", tmp_path / "rounds.log", tmp_path / "batch"
    batch.mkdir()
    procs = []
    for label in ("a", "b"):
        folder = tmp_path / label
        folder.mkdir()
        (folder / "test_bench.py").write_text(BACKGROUND)
        env = {**os.environ, timing.CHILD_ENV: label, timing.TIMING_LOCK_ENV: str(lock),
               "ROUNDS_LOG": str(log), lockstep.BATCH_ENV: f"{batch}|2"}  # fmt: skip
        env.pop(lockstep.ROUNDS_ENV, None)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "test_bench.py"]
        out = subprocess.PIPE
        proc = subprocess.Popen(command, cwd=folder, env=env, stdout=out, stderr=out, text=True)
        procs.append(proc)
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    running: str | None = None
    rounds = 0
    for line in log.read_text().splitlines():
        words = line.split()
        if words[0] == "bg":
            assert words[1] == running or running is None, (
                f"bg {words[1]} ran in a round of {running}"
            )
        elif words[2] == "start":
            running, rounds = words[0], rounds + 1
        else:
            running = None
    assert rounds == 12


def test_only_loop_sessions_of_the_same_start_are_frozen(tmp_path: Path) -> None:
    import fcntl

    lock = tmp_path / "timing.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    turns = lockstep.Turns(str(lock), fd, fcntl.flock, fcntl.LOCK_EX, fcntl.LOCK_UN)
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
                for _ in range(3)]  # fmt: skip
    try:
        loop_child, users_session, recycled = (p.pid for p in sleepers)
        for pid in (loop_child, users_session, recycled):
            (turns.waiting_dir / str(pid)).touch()
        (turns.freezable_dir / str(loop_child)).write_text(lockstep._start_time(loop_child) or "")
        (turns.freezable_dir / str(recycled)).write_text("1")  # an earlier process's pid
        turns.freeze_waiters()
        assert turns.frozen == [loop_child]
        assert reaches(loop_child, "T")
        assert not reaches(users_session, "T", tries=20) and not reaches(recycled, "T", tries=20)
        turns.thaw()
        assert turns.frozen == [] and reaches(loop_child, "S")
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
        os.close(fd)


def reaches(pid: int, state: str, tries: int = 400) -> bool:
    """Whether ``pid`` is in ``state`` (``T`` stopped, ``S`` sleeping) within a few tries: a
    stop or continue signal takes effect asynchronously."""
    for _ in range(tries):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2] == state:
            return True
        time.sleep(0.005)
    return False


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs two CPUs and sched_setaffinity",
)
def test_the_rounds_run_on_one_shared_cpu_and_new_threads_get_the_others_back(
    tmp_path: Path,
) -> None:
    import threading

    allowed = os.sched_getaffinity(0)
    pin = lockstep.CpuPin(str(tmp_path / "timing.lock"))
    pin.pin()
    try:
        assert os.sched_getaffinity(0) == {max(allowed)}
        assert (tmp_path / "timing.lock.cpu").read_text() == str(max(allowed))
        seen: list[set[int]] = []
        started, release = threading.Event(), threading.Event()

        def pool_thread() -> None:
            started.set()
            release.wait()
            seen.append(os.sched_getaffinity(0))

        worker = threading.Thread(target=pool_thread)
        worker.start()
        started.wait()
        pin.release_new_threads()
        release.set()
        worker.join()
        assert seen == [allowed]
    finally:
        pin.unpin()
    assert os.sched_getaffinity(0) == allowed


AFFINITY = """\
import json, os

def test_step(benchmark):
    during = []
    benchmark.pedantic(lambda: during.append(os.sched_getaffinity(0)), rounds=3, iterations=1)
    after = os.sched_getaffinity(0)
    with open(os.environ["ROUNDS_LOG"], "w") as out:
        json.dump({"during": sorted(set.union(*during)), "after": sorted(after)}, out)
"""


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs two CPUs and sched_setaffinity",
)
def test_code_after_the_benchmark_run_sees_the_sessions_own_cpus(tmp_path: Path) -> None:
    """A test that sizes something per core after its benchmark (the SPDL example's lower
    bound) must not count the one CPU the rounds were pinned to."""
    (tmp_path / "test_bench.py").write_text(AFFINITY)
    log = tmp_path / "affinity.log"
    env = {
        **os.environ,
        timing.CHILD_ENV: "a",
        timing.TIMING_LOCK_ENV: str(tmp_path / "timing.lock"),
        "ROUNDS_LOG": str(log),
    }
    env.pop(lockstep.BATCH_ENV, None)
    env.pop(lockstep.PIN_ENV, None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    done = subprocess.run([*command, "test_bench.py"], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    allowed = sorted(os.sched_getaffinity(0))
    assert json.loads(log.read_text()) == {"during": [max(allowed)], "after": allowed}


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
