"""Live progress of the loop: what runs now, what is best so far, what budget is left.

A candidate session may run for minutes (``candidate_timeout`` is 600 s by default); without
this the terminal stays silent meanwhile. On a terminal one status line is rewritten in place;
elsewhere (CI logs) a plain line is written every ``interval`` seconds while the loop works,
never with a carriage return or an escape sequence.

The loop reports events (:meth:`Progress.round_started`, :meth:`Progress.candidate_started`,
:meth:`Progress.candidate_finished`, :meth:`Progress.incumbent`); a thread calls
:meth:`Progress.tick` (see :meth:`Progress.start`). Events may come from several threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from pytest_autopilot.report import fmt


class Sink(Protocol):
    """Where progress goes: a status line rewritten in place, or plain lines."""

    isatty: bool

    def status(self, text: str) -> None: ...

    def line(self, text: str) -> None: ...

    def clear(self) -> None: ...


class ReporterSink:
    """pytest's terminal reporter as a :class:`Sink`."""

    def __init__(self, reporter: object) -> None:
        self.reporter = reporter
        self.isatty = bool(getattr(reporter, "isatty", False))
        self.shown = False

    def status(self, text: str) -> None:
        width = getattr(getattr(self.reporter, "_tw", None), "fullwidth", 80)
        if len(text) >= width:  # a wrapped line cannot be rewritten in place
            text = text[: max(10, width - 2)] + "…"
        self.reporter.rewrite(text, erase=True)  # type: ignore[attr-defined]
        self.reporter.flush()  # type: ignore[attr-defined]
        self.shown = True

    def line(self, text: str) -> None:
        self.reporter.write_line(text)  # type: ignore[attr-defined]
        self.reporter.flush()  # type: ignore[attr-defined]

    def clear(self) -> None:
        if self.shown:
            self.reporter.rewrite("", erase=True)  # type: ignore[attr-defined]
            self.reporter.write("\r")  # type: ignore[attr-defined]
            self.shown = False


class Progress:
    """The state behind the status line, and when to show it."""

    def __init__(
        self,
        sink: Sink,
        *,
        rounds: int,
        minutes: float,
        metric: str,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 30.0,
        elapsed_before: float = 0.0,
        rounds_before: int = 0,
    ) -> None:
        self.sink = sink
        self.rounds = rounds
        self.minutes = minutes
        self.metric = metric
        self.clock = clock
        self.interval = interval
        """Seconds between plain lines when the output is not a terminal."""
        self.started = clock() - elapsed_before
        self.rounds_before = rounds_before
        self.round = rounds_before
        self.round_durations: list[float] = []
        self.round_start: float | None = None
        self.in_flight: dict[str, float] = {}
        self.best: tuple[str, float | None] = ("r0", None)
        self.last_line: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- events ------------------------------------------------------------------------------

    def round_started(self, number: int) -> None:
        with self._lock:
            now = self.clock()
            if self.round_start is not None:
                self.round_durations.append(now - self.round_start)
            self.round = number
            self.round_start = now
        self.tick(force=True)

    def round_finished(self) -> None:
        with self._lock:
            if self.round_start is not None:
                self.round_durations.append(self.clock() - self.round_start)
                self.round_start = None

    def candidate_started(self, cid: str) -> None:
        with self._lock:
            self.in_flight[cid] = self.clock()
        self.tick()

    def candidate_finished(self, cid: str) -> None:
        with self._lock:
            self.in_flight.pop(cid, None)
        self.tick()

    def incumbent(self, cid: str, value: float | None) -> None:
        with self._lock:
            self.best = (cid, value)

    # -- output ------------------------------------------------------------------------------

    def text(self) -> str:
        """``round 3/20 | running r3c1 12s, r3c2 4s | best loss 0.5 (r2c1) | left: ...``."""
        with self._lock:
            now = self.clock()
            parts = [f"round {self.round}/{self.rounds}"]
            if self.in_flight:
                running = ", ".join(
                    f"{cid} {_duration(now - since)}" for cid, since in self.in_flight.items()
                )
                parts.append(f"running {running}")
            cid, value = self.best
            parts.append(f"best {self.metric} {fmt(value)} ({cid})")
            parts.append(self._budget(now))
        return "autopilot: " + " | ".join(parts)

    def _budget(self, now: float) -> str:
        elapsed = now - self.started
        minutes_left = max(0.0, self.minutes * 60 - elapsed)
        done = max(0, self.round - 1)
        rounds_left = max(0, self.rounds - done)
        text = f"left {rounds_left} rounds, {_duration(minutes_left)}"
        if not self.round_durations:
            return text + ", time left unknown yet"
        per_round = sum(self.round_durations) / len(self.round_durations)
        running = now - self.round_start if self.round_start is not None else 0.0
        estimate = max(0.0, rounds_left * per_round - min(running, per_round))
        return text + f", about {_duration(min(estimate, minutes_left))} to go"

    def tick(self, *, force: bool = False) -> None:
        """Show the state: every call on a terminal, every ``interval`` seconds elsewhere."""
        text = self.text()
        if self.sink.isatty:
            self.sink.status(text)
            return
        now = self.clock()
        if force or self.last_line is None or now - self.last_line >= self.interval:
            self.last_line = now
            self.sink.line(_plain(text))

    def clear(self) -> None:
        """Remove the status line before the loop writes a line of its own."""
        if self.sink.isatty:
            self.sink.clear()

    # -- the ticking thread ------------------------------------------------------------------

    def start(self, every: float = 1.0) -> None:
        """Tick from a daemon thread every ``every`` seconds until :meth:`stop`."""

        def run() -> None:
            while not self._stop.wait(every):
                self.tick()

        self._stop.clear()
        self._thread = threading.Thread(target=run, name="autopilot-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.clear()


def _duration(seconds: float) -> str:
    seconds = float(round(max(0.0, seconds)))  # 59.6 s is "1m00s", never "59m60s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def _plain(text: str) -> str:
    """No control character reaches a log (a candidate id or metric name cannot smuggle one)."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)
