"""The command line of pytest-autopilot: its flags, their converters, and what they ask for.

Only the standard library and pytest are imported here: this runs in every pytest session,
with or without an autopilot flag.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def experiment_name(text: str) -> str:
    from pytest_autopilot.names import EXPERIMENT_EXPECTED, is_experiment_name

    if not is_experiment_name(text):
        raise argparse.ArgumentTypeError(f"expected {EXPERIMENT_EXPECTED}, got {text!r}")
    return text


def optimizer_name(text: str) -> str:
    if not NAME_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected an optimizer name such as search, anthropic or command, got {text!r}"
        )
    return text


def file_path(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file path, got an empty string")
    return text


def add_options(parser: pytest.Parser) -> None:
    """The ``--autopilot*`` flags and the ``autopilot_config`` ini key."""
    group = parser.getgroup("autopilot", "pytest-autopilot: metrics, gates and optimization")
    group.addoption(
        "--autopilot",
        action="store_true",
        help="after the session (round 0, the baseline), run the optimization loop",
    )
    group.addoption(
        "--autopilot-gate",
        action="store_true",
        help="after the session, check the gates of autopilot.yaml; a failing gate exits 1",
    )
    for flag, metavar, kind, help_text in (
        ("--autopilot-config", "PATH", file_path, "autopilot config (default: autopilot.yaml)"),
        ("--autopilot-baseline", "PATH", file_path, "metrics file relative gates compare to"),
        ("--autopilot-against", "REF", str, "run REF's suite alongside, as the gates' baseline"),
        ("--autopilot-save", "PATH", file_path, "write this session's metrics, for a baseline"),
        ("--autopilot-json", "PATH", file_path, "write metrics, gates and rounds as JSON"),
        ("--autopilot-report", "PATH", file_path, "write a Markdown report (and to GitHub)"),
        ("--autopilot-html", "PATH", file_path, "write a self-contained HTML report"),
        ("--autopilot-optimizer", "NAME", optimizer_name, "override the config's optimizer"),
        ("--autopilot-rounds", "N", positive_int, "override budget.rounds"),
        ("--autopilot-candidates", "K", positive_int, "override budget.candidates"),
        ("--autopilot-experiment", "NAME", experiment_name, "override the experiment name"),
    ):
        group.addoption(
            flag,
            metavar=metavar,
            type=kind,
            default=None,
            dest=flag[2:].replace("-", "_"),
            help=help_text,
        )
    group.addoption(
        "--autopilot-fresh",
        action="store_true",
        help="forget the saved state of this experiment and start over (default: resume)",
    )
    group.addoption(
        "--autopilot-apply",
        action="store_true",
        help="at the end, bring the best commit onto the current branch (clean tree only)",
    )
    parser.addini(
        "autopilot_config",
        type="string",
        default="",
        help="path of the autopilot config, relative to the rootdir (default: autopilot.yaml)",
    )


class Flags:
    """The autopilot command-line flags, paths resolved against the invocation directory."""

    def __init__(self, config: pytest.Config) -> None:
        opt = config.option
        here = config.invocation_params.dir

        def path(value: str | None) -> Path | None:
            return None if value is None else here / value

        self.loop = bool(opt.autopilot)
        self.gate = bool(opt.autopilot_gate)
        self.baseline = path(opt.autopilot_baseline)
        self.against: str | None = opt.autopilot_against
        self.save = path(opt.autopilot_save)
        self.json = path(opt.autopilot_json)
        self.report = path(opt.autopilot_report)
        self.html = path(opt.autopilot_html)
        self.optimizer: str | None = opt.autopilot_optimizer
        self.rounds: int | None = opt.autopilot_rounds
        self.candidates: int | None = opt.autopilot_candidates
        self.experiment: str | None = opt.autopilot_experiment
        self.fresh = bool(opt.autopilot_fresh)
        self.apply = bool(opt.autopilot_apply)

    def check(self) -> None:
        """Refuse flags that would silently do nothing."""
        loop_only = {
            "--autopilot-optimizer": self.optimizer is not None,
            "--autopilot-rounds": self.rounds is not None,
            "--autopilot-candidates": self.candidates is not None,
            "--autopilot-experiment": self.experiment is not None,
            "--autopilot-fresh": self.fresh,
            "--autopilot-apply": self.apply,
        }
        if not self.loop:
            for flag, given in loop_only.items():
                if given:
                    raise pytest.UsageError(f"{flag} works only with --autopilot")
        if self.against is not None and (not self.gate or self.loop):
            raise pytest.UsageError(
                "--autopilot-against works only with --autopilot-gate (and not with --autopilot)"
            )
        if self.against is not None and self.baseline is not None:
            raise pytest.UsageError(
                "--autopilot-against and --autopilot-baseline both name the baseline: give one"
            )
        if self.baseline is not None and not (self.gate or self.loop):
            raise pytest.UsageError(
                "--autopilot-baseline works only with --autopilot-gate or --autopilot "
                "(it is what relative gates compare against)"
            )


def showing_help(config: pytest.Config) -> bool:
    """``--help`` and ``--version`` print and exit: a config error must not stop them."""
    return bool(getattr(config.option, "help", False) or getattr(config.option, "version", False))


def selection(config: pytest.Config) -> str:
    """The ``-k``/``-m`` options of this run, as the user typed them ("" when none)."""
    parts = []
    if config.option.keyword:
        parts.append(f"-k {config.option.keyword!r}")
    if config.option.markexpr:
        parts.append(f"-m {config.option.markexpr!r}")
    return " and ".join(parts)


def shown(path: Path, here: Path) -> str:
    try:
        return path.relative_to(here).as_posix()
    except ValueError:
        return str(path)


def junit_xml(config: pytest.Config) -> Any:
    if not getattr(config.option, "xmlpath", None):
        return None
    from _pytest.junitxml import xml_key

    return config.stash.get(xml_key, None)
