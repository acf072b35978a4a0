"""Refusals that must come before the work they would waste.

The platform, the test selection and the output paths are checked in ``pytest_configure``,
before the first test: a session (and for ``--autopilot`` a whole loop) that could only end in
"cannot write out.json" is not run at all. The objective is checked once round 0 has run,
before the loop starts a single candidate: a metric that round 0 did not measure cannot be
optimized, and no candidate would ever be accepted.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_autopilot.config import AutopilotConfig
    from pytest_autopilot.results import SessionResult

OUTPUT_OPTIONS = (
    ("autopilot_json", "--autopilot-json"),
    ("autopilot_save", "--autopilot-save"),
    ("autopilot_report", "--autopilot-report"),
    ("autopilot_html", "--autopilot-html"),
)
"""The output files a session writes at its end (``dest``, flag); unknown dests are skipped."""

MAX_LISTED = 40


def check_before_tests(config: pytest.Config, *, loop: bool) -> None:
    """What ``pytest_configure`` refuses: the platform and selection of a loop, output paths."""
    if loop:
        check_platform()
        check_selection(config)
    outputs = output_paths(config)
    if outputs:
        check_output_paths(outputs)


def check_platform() -> None:
    """The loop needs process groups (``os.killpg``) and ``fcntl.flock``: POSIX only."""
    if os.name != "posix" or not hasattr(os, "killpg"):
        raise pytest.UsageError(
            f"--autopilot needs a POSIX system (Linux, macOS), this is {sys.platform}: it runs "
            "candidate sessions in process groups and locks experiments with fcntl; use WSL "
            "on Windows (--autopilot-gate and the output files work everywhere)"
        )


def check_selection(config: pytest.Config) -> None:
    """Refuse ``--lf`` and ``--sw`` with ``--autopilot``.

    Round 0 (this session) is the measurement candidates are compared with; both options make
    it run a different selection than candidate sessions do, which always run the selection
    of the command line (they get no cache).
    """
    for dest, flag in (("lf", "--lf"), ("stepwise", "--sw"), ("stepwise_skip", "--sw-skip")):
        if config.getoption(dest, False):
            raise pytest.UsageError(
                f"{flag} does not work with --autopilot: round 0 must run the same tests as "
                "every candidate session; select tests with paths, -k or -m instead"
            )


def output_paths(config: pytest.Config) -> list[tuple[str, str, Path]]:
    """(flag, the path as given, the path resolved against the invocation directory)."""
    here = config.invocation_params.dir
    paths = []
    for dest, flag in OUTPUT_OPTIONS:
        given = getattr(config.option, dest, None)
        if isinstance(given, str) and given:
            paths.append((flag, given, here / given))
    return paths


def check_output_paths(outputs: Sequence[tuple[str, str, Path]]) -> None:
    """Each output file can be created or replaced; nothing is left behind by looking."""
    seen: dict[Path, str] = {}
    for flag, given, path in outputs:
        where = f"{flag} {given}"
        resolved = path.resolve()
        if resolved in seen:
            raise pytest.UsageError(f"{where}: the same file as {seen[resolved]}")
        seen[resolved] = where
        if path.is_dir():
            raise pytest.UsageError(f"{where}: is a directory; expected a file path")
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise pytest.UsageError(f"{where}: {ancestor} is a file, not a directory")
        try:
            _probe(path, ancestor)
        except OSError as exc:
            raise pytest.UsageError(f"{where}: cannot be written ({exc.strerror})") from None


def _probe(path: Path, ancestor: Path) -> None:
    """Try what writing will do: replace the file (a sibling temp file) or create its parent."""
    if path.parent.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(tmp)
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied")
    else:
        os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".autopilot-probe-"))


def describe_write_error(exc: OSError, outputs: Iterable[tuple[str, str, Path]]) -> str:
    """An error writing an output file, naming the flag and path the user gave."""
    failed = {str(exc.filename), str(exc.filename2)}
    for flag, given, path in outputs:
        temp = f"{path.parent}/.{path.name}."
        if str(path) in failed or any(name.startswith(temp) for name in failed):
            return f"cannot write {flag} {given}: {exc.strerror}"
    return f"cannot write {exc.filename}: {exc.strerror}"


def check_objective(
    config: AutopilotConfig, result: SessionResult, pytest_config: pytest.Config
) -> None:
    """Round 0 must have measured the objective, or no candidate could ever be judged.

    A metric round 0 knows it could not measure (a pytest-benchmark test under ``-n``, where
    candidate sessions run without xdist and do measure it) is left to the candidates.
    """
    if config.objective is None or result.resolve(config.objective.metric) is not None:
        return  # no objective: prepare_loop has refused it already
    name = config.objective.metric
    short = name.rsplit("::", 1)[-1]
    if any(key in (name, short) or key.rsplit("::", 1)[-1] == name for key in result.unmeasured):
        return  # a test produces it but round 0 could not time it (pytest-benchmark under -n)
    where = config.relpath() or (str(config.path) if config.path else "autopilot.yaml")
    names = sorted(result.metrics)
    close = get_close_matches(name, names, n=1)
    shown = ", ".join(names[:MAX_LISTED]) or "(none)"
    if len(names) > MAX_LISTED:
        shown += f", ... ({len(names) - MAX_LISTED} more)"
    why = (
        "round 0 did not measure it"
        + (f" (did you mean {close[0]!r}?)" if close else "")
        + f"; metrics measured: {shown}"
    )
    not_passed = sorted(t.nodeid for t in result.tests.values() if t.outcome != "passed")
    if not_passed:
        why += f"; {len(not_passed)} test(s) did not pass, the first: {not_passed[0]}"
    maxfail = pytest_config.getoption("maxfail", 0)
    failed = [t for t in result.tests.values() if t.outcome in ("failed", "error")]
    if maxfail and len(failed) >= maxfail:
        why += f"; -x/--maxfail={maxfail} stopped the session early"
    raise pytest.UsageError(
        f"{where}: objective.metric: expected a metric round 0 measured, got {name!r}: {why}"
    )
