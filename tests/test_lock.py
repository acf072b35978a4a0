"""The experiment lock: one holder at a time, freed the moment its owner dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_autopilot.loop.journal import Lock

ROOT = Path(__file__).resolve().parent.parent

HOLDER = """\
import sys, time
from pathlib import Path
from pytest_autopilot.loop.journal import Lock
Lock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(60)
"""


RACE = ("--tries", "60", "--processes", "3", "--kill-every", "30")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_a_barrier_race_never_has_two_winners() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "lock_race.py"), *RACE],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "double acquisitions: 0" in proc.stdout
    assert "tries nobody won: 0" in proc.stdout


def test_kill_9_of_the_owner_frees_the_lock_at_once(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    owner = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], env=_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline() == "held\n"
        with pytest.raises(pytest.UsageError, match=f"by process {owner.pid} "):
            Lock(path).acquire()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    started = time.monotonic()
    lock = Lock(path)
    lock.acquire()
    assert time.monotonic() - started < 1
    assert lock.held and path.exists()
    with pytest.raises(pytest.UsageError, match=f"by process {os.getpid()} "):
        Lock(path).acquire()  # another open of the file, even in the same process
    lock.release()
    assert path.exists() and path.read_text() == ""
    Lock(path).acquire()
