"""Live progress of the loop, driven by events and a fake clock, on real terminal reporters."""

from __future__ import annotations

import io
import time

import pytest

from pytest_autopilot.loop.progress import Progress, ReporterSink


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def reporter(pytester: pytest.Pytester, stream: io.StringIO) -> pytest.TerminalReporter:
    config = pytester.parseconfig()
    return pytest.TerminalReporter(config, stream)


def progress(sink: ReporterSink, clock: FakeClock, **kwargs: float) -> Progress:
    return Progress(sink, rounds=10, minutes=60, metric="loss", clock=clock, **kwargs)


def test_plain_lines_every_interval_when_not_a_terminal(pytester: pytest.Pytester) -> None:
    stream = io.StringIO()
    clock = FakeClock()
    p = progress(ReporterSink(reporter(pytester, stream)), clock, interval=30.0)
    p.incumbent("r0", 9.5)
    p.round_started(1)
    p.candidate_started("r1c1")
    p.candidate_started("r1c2")
    clock.now += 12
    p.tick()  # within the interval: nothing new
    clock.now += 20
    p.tick()
    p.candidate_finished("r1c1")
    p.incumbent("r1c1", 4.5)
    clock.now += 31
    p.candidate_finished("r1c2")
    p.round_finished()
    clock.now += 5
    p.round_started(2)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "autopilot: round 1/10 | best loss 9.5 (r0) | left 10 rounds, 1h00m, time left unknown yet",
        "autopilot: round 1/10 | running r1c1 32s, r1c2 32s | best loss 9.5 (r0) | "
        "left 10 rounds, 59m28s, time left unknown yet",
        "autopilot: round 1/10 | best loss 4.5 (r1c1) | "
        "left 10 rounds, 58m57s, time left unknown yet",
        "autopilot: round 2/10 | best loss 4.5 (r1c1) | left 9 rounds, 58m52s, about 9m27s to go",
    ]
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_the_estimate_is_bounded_by_the_minutes_left(pytester: pytest.Pytester) -> None:
    stream = io.StringIO()
    clock = FakeClock()
    p = progress(ReporterSink(reporter(pytester, stream)), clock, interval=1e9)
    p.round_started(1)
    clock.now += 600  # ten minutes a round, nine rounds left, fifty minutes of budget
    p.round_started(2)
    assert p.text().endswith("left 9 rounds, 50m00s, about 50m00s to go")
    clock.now += 3000
    assert p.text().endswith("left 9 rounds, 0s, about 0s to go")


def test_a_terminal_gets_one_status_line_rewritten_in_place(pytester: pytest.Pytester) -> None:
    stream = TtyStream()
    clock = FakeClock()
    p = progress(ReporterSink(reporter(pytester, stream)), clock)
    p.round_started(3)
    p.candidate_started("r3c1")
    clock.now += 7
    p.tick()
    p.clear()
    text = stream.getvalue()
    assert "\n" not in text
    assert text.count("\r") >= 3
    assert "\rautopilot: round 3/10 | running r3c1 7s | best loss n/a (r0)" in text
    assert text.endswith("\r")


def test_a_control_character_in_a_name_never_reaches_a_log(pytester: pytest.Pytester) -> None:
    stream = io.StringIO()
    p = Progress(
        ReporterSink(reporter(pytester, stream)), rounds=2, minutes=1, metric="bad\x1b[2Jname"
    )
    p.tick()
    assert "\x1b" not in stream.getvalue()
    assert "bad?[2Jname" in stream.getvalue()


def test_the_thread_ticks_until_stopped(pytester: pytest.Pytester) -> None:
    stream = io.StringIO()
    p = Progress(
        ReporterSink(reporter(pytester, stream)), rounds=2, minutes=1, metric="loss", interval=0
    )
    p.start(every=0.01)
    deadline = time.monotonic() + 5
    while stream.getvalue().count("\n") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    p.stop()
    count = stream.getvalue().count("\n")
    assert count >= 2
    time.sleep(0.05)
    assert stream.getvalue().count("\n") == count


def test_durations_round_before_they_are_split_into_units() -> None:
    from pytest_autopilot.loop.progress import _duration

    assert [_duration(s) for s in (59.6, 3599.6, 119.5, 7199.9)] == [
        "1m00s",
        "1h00m",
        "2m00s",
        "2h00m",
    ]
