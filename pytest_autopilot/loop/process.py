"""Child processes in process groups of their own: stop the whole group, read what it printed.

A child session or an agent command may start processes of its own (xdist workers, compilers,
servers); they share its process group (``start_new_session=True``), so killing the group
leaves nothing behind. :mod:`pytest_autopilot.loop.remote_worker` keeps stdlib-only copies of
:func:`kill_group` and :func:`read_tail`, since execnet ships that module's source alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

TAIL_LINES = 12
"""Lines of a session's output a failure reason quotes."""


def signal_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process group led by ``pid``; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def kill_group(proc: subprocess.Popen[bytes], *, grace: float = 0.0, wait: bool = True) -> None:
    """Kill ``proc``'s whole process group: the process and anything it started.

    With ``grace``, the group gets SIGTERM first and SIGKILL only if ``proc`` is still there
    after ``grace`` seconds (an agent may want to save its work). ``wait=False`` returns at
    once, for a group whose leader has already exited.
    """
    if grace > 0 and proc.poll() is None:
        signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    signal_group(proc.pid, signal.SIGKILL)
    if wait:
        proc.wait()


def read_tail(handle: IO[bytes], limit: int) -> bytes:
    """The last ``limit`` bytes of an open binary file (where a summary is)."""
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - limit))
    return handle.read()


def output_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last non-blank lines of a log on one line, for a failure reason."""
    limit = 64 * 1024
    try:
        with open(path, "rb") as log:
            data = read_tail(log, limit)
            cut = log.tell() > len(data)  # the first line may be a fragment
    except OSError:
        return "(no output)"
    text = data.decode(errors="replace").splitlines()[1 if cut else 0 :]
    tail = [line for line in text if line.strip()][-lines:]
    return " | ".join(tail) if tail else "(no output)"


def same_scheduling_group() -> dict[str, Any]:
    """Popen arguments for a child session in its own process group but this process's session.

    Linux's autogroup scheduler shares the CPU between *sessions*, not processes: a child in a
    new session (``setsid``) competes as a group of its own, on a footing unrelated to the
    parent's, and on a busy machine two lockstep sessions of identical code then differ by
    tens of percent for their whole life (seen with ``benchmarks/against_gate.py``). A new
    process group is all :func:`kill_group` needs; Python 3.10 has only the new session.
    """
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"start_new_session": True}
