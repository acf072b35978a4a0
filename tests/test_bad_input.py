"""Bad input of every kind: refused by name, without a traceback, leaving the user's things alone.

Each case builds a small project in a real git repository (or a deliberately broken one), runs
pytest with the plugin in process, and checks four things: the exit status, that the message
names the file, key or flag at fault, that neither "Traceback" nor "INTERNALERROR" appears, and
that the user's HEAD, index, working tree, stash and branches are exactly as before.

Most bad input is refused in ``pytest_configure``, before a test runs. The git states are
checked with an objective no test records: ``prepare_loop`` (git, snapshot, lock) runs at
configure time, round 0 runs, and the loop is refused before its first candidate, so a git
state that is accepted costs one tiny session and no candidate.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml  # noqa: F401  (in-process pytester runs must not re-import its C loader)
from gitrepo import GitRepo, init_repo

from pytest_autopilot.loop.journal import Lock

USAGE = int(pytest.ExitCode.USAGE_ERROR)
FAILED = int(pytest.ExitCode.TESTS_FAILED)

CONFTEST = """\
def pytest_autopilot_optimizer_names(config):
    return ["walk"]

def pytest_autopilot_propose(context):
    return [] if context.optimizer == "walk" else None
"""

TEST = """\
import json, pathlib

def test_loss(autopilot):
    x = json.loads((pathlib.Path(__file__).parent / "params.json").read_text())["x"]
    autopilot.record("loss", (x - 3) ** 2 + 1.0, goal="min")
"""

DATASET_TEST = """\
import pytest

@pytest.mark.dataset("cases.yaml")
def test_case(case):
    assert case
"""

CONFIG: dict[str, Any] = {
    "experiment": "demo",
    "objective": {"metric": "loss", "goal": "min"},
    "parameters": [{"path": "params.json"}],
    "optimizer": "walk",
    "gates": [{"metric": "loss", "max": 100}],
}

UNMEASURED = {**CONFIG, "objective": {"metric": "nosuch", "goal": "min"}}
"""A loop that prepares (git, snapshot, lock), runs round 0, and is refused before candidates."""

ACCEPTED = "objective.metric: expected a metric round 0 measured, got 'nosuch'"
"""What a git state the loop accepts ends with, under :data:`UNMEASURED`."""


def config(**changes: Any) -> str:
    data = {**CONFIG, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not None})


def baseline(**changes: Any) -> str:
    data: dict[str, Any] = {
        "format": 1,
        "metrics": {"loss": {"value": 10.0, "goal": "min"}},
        "tests": {"test_obj.py::test_loss": {"outcome": "passed"}},
        "unmeasured": {},
        **changes,
    }
    return json.dumps(data)


REGRESSION = config(gates=[{"metric": "loss", "max_regression": 0.1}])
TIMED_TEST = """\
def test_loss(autopilot):
    autopilot.record("loss", 10.0, goal="min")
"""


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    ret: int
    expect: tuple[str, ...]
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    """Written over the base project before its commit (``None`` text: left out)."""
    setup: Callable[[GitRepo], None] | None = None
    """Run after the commit: the git state or the uncommitted files under test."""
    repo: str = "commit"
    """``commit``: a repository with the project committed; ``none``: no repository at all;
    ``custom``: ``setup`` makes the repository itself (from the project files in place)."""
    env: Mapping[str, str] = field(default_factory=dict)


def gate(*extra: str) -> tuple[str, ...]:
    return ("--autopilot-gate", *extra)


def with_baseline(text: str | bytes) -> dict[str, str | bytes]:
    return {"base.json": text}


KEEP_GOING = ("--continue-on-collection-errors",)
"""Dataset errors are collection errors; carrying on skips pytest's costly interrupt report."""

BASE = ("--autopilot-gate", "--autopilot-baseline", "base.json")

CONFIG_CASES: list[Any] = [
    Case("yaml-syntax", gate(), USAGE, ("autopilot.yaml",), {"autopilot.yaml": "gates: [\n"}),
    Case("top-level-list", gate(), USAGE, ("autopilot.yaml",), {"autopilot.yaml": "- 1\n"}),
    Case("top-level-scalar", gate(), USAGE, ("autopilot.yaml",), {"autopilot.yaml": "3\n"}),
    Case(
        "unknown-key",
        gate(),
        USAGE,
        ("autopilot.yaml", "bogus"),
        {"autopilot.yaml": config(bogus=1)},
    ),
    Case("non-utf8", gate(), USAGE, ("autopilot.yaml",), {"autopilot.yaml": b"gates: \xff\xfe\n"}),
    Case(
        "gates-not-list",
        gate(),
        USAGE,
        ("autopilot.yaml", "gates"),
        {"autopilot.yaml": config(gates=3)},
    ),
    Case(
        "gate-not-mapping",
        gate(),
        USAGE,
        ("autopilot.yaml", "gates[0]"),
        {"autopilot.yaml": config(gates=["loss"])},
    ),
    Case(
        "gate-no-kind",
        gate(),
        USAGE,
        ("autopilot.yaml", "gates[0]"),
        {"autopilot.yaml": config(gates=[{"metric": "loss"}])},
    ),
    Case(
        "gate-two-kinds",
        gate(),
        USAGE,
        ("autopilot.yaml", "gates[0]"),
        {"autopilot.yaml": config(gates=[{"metric": "loss", "max": 1, "min": 0}])},
    ),
    Case(
        "gate-threshold-text",
        gate(),
        USAGE,
        ("autopilot.yaml", "gates[0]"),
        {"autopilot.yaml": config(gates=[{"metric": "loss", "max": "abc"}])},
    ),
    Case(
        "gate-threshold-bool",
        gate(),
        USAGE,
        ("autopilot.yaml", "gates[0]"),
        {"autopilot.yaml": config(gates=[{"metric": "loss", "max": True}])},
    ),
    Case(
        "gate-metric-missing",
        gate(),
        USAGE,
        ("autopilot.yaml", "gates[0]"),
        {"autopilot.yaml": config(gates=[{"max": 1}])},
    ),
    Case(
        "gate-unknown-metric",
        gate(),
        USAGE,
        ("autopilot.yaml", "gates[0].metric", "loss"),
        {"autopilot.yaml": config(gates=[{"metric": "los", "max": 1}])},
    ),
    Case(
        "gate-negative-regression",
        gate("--autopilot-baseline", "base.json"),
        USAGE,
        ("autopilot.yaml", "gates[0]"),
        {
            "autopilot.yaml": config(gates=[{"metric": "loss", "max_regression": -1}]),
            "base.json": baseline(),
        },
    ),
    Case(
        "relative-gate-no-baseline",
        gate(),
        USAGE,
        ("autopilot.yaml", "gates[0]", "--autopilot-baseline"),
        {"autopilot.yaml": REGRESSION},
    ),
    Case(
        "objective-not-mapping",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "objective"),
        {"autopilot.yaml": config(objective=3)},
    ),
    Case(
        "objective-bad-goal",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "goal"),
        {"autopilot.yaml": config(objective={"metric": "loss", "goal": "up"})},
    ),
    Case(
        "objective-missing",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "objective"),
        {"autopilot.yaml": config(objective=None)},
    ),
    Case(
        "objective-unmeasured",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "objective.metric", "nosuch", "metrics measured: loss"),
        {"autopilot.yaml": json.dumps(UNMEASURED)},
    ),
    Case(
        "parameters-missing",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "parameters"),
        {"autopilot.yaml": config(parameters=None)},
    ),
    Case(
        "parameters-not-list",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "parameters"),
        {"autopilot.yaml": config(parameters="params.json")},
    ),
    Case(
        "parameter-file-missing",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "parameters[0]", "nothere.json"),
        {"autopilot.yaml": config(parameters=[{"path": "nothere.json"}])},
    ),
    Case(
        "parameter-absolute",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "parameters[0]", "/etc/hostname"),
        {"autopilot.yaml": config(parameters=[{"path": "/etc/hostname"}])},
    ),
    Case(
        "parameter-outside",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "parameters[0]", "../x.json"),
        {"autopilot.yaml": config(parameters=[{"path": "../x.json"}])},
    ),
    Case(
        "parameter-in-git-dir",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "parameters[0]", "always protected"),
        {"autopilot.yaml": config(parameters=[{"path": ".git/config"}])},
    ),
    Case(
        "optimizer-unknown",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "optimizer", "nosuchopt"),
        {"autopilot.yaml": config(optimizer="nosuchopt")},
    ),
    Case(
        "experiment-bad-name",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "experiment", "a b"),
        {"autopilot.yaml": config(experiment="a b")},
    ),
    Case(
        "experiment-dotdot",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "experiment"),
        {"autopilot.yaml": config(experiment="a..b")},
    ),
    Case(
        "budget-rounds-zero",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "budget", "rounds"),
        {"autopilot.yaml": config(budget={"rounds": 0})},
    ),
    Case(
        "budget-rounds-text",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "budget", "rounds"),
        {"autopilot.yaml": config(budget={"rounds": "many"})},
    ),
    Case(
        "budget-unknown-key",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "budget", "roundz"),
        {"autopilot.yaml": config(budget={"roundz": 3})},
    ),
    Case(
        "acceptance-confidence",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "confidence"),
        {"autopilot.yaml": config(acceptance={"confidence": 2})},
    ),
    Case(
        "protected-not-list",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "protected"),
        {"autopilot.yaml": config(protected=5)},
    ),
    Case(
        "empty-config-loop",
        ("--autopilot",),
        USAGE,
        ("autopilot.yaml", "objective"),
        {"autopilot.yaml": ""},
    ),
    Case(
        "config-flag-missing", gate("--autopilot-config", "nothere.yaml"), USAGE, ("nothere.yaml",)
    ),
    Case(
        "config-flag-directory", gate("--autopilot-config", "sub"), USAGE, ("sub",), {"sub/x": ""}
    ),
]

DATASET_CASES = [
    Case("dataset-missing", KEEP_GOING, FAILED, ("cases.yaml",), {"test_obj.py": DATASET_TEST}),
    Case(
        "dataset-yaml-syntax",
        KEEP_GOING,
        FAILED,
        ("cases.yaml:",),
        {"test_obj.py": DATASET_TEST, "cases.yaml": "- {a: [\n"},
    ),
    Case(
        "dataset-not-list",
        KEEP_GOING,
        FAILED,
        ("cases.yaml",),
        {"test_obj.py": DATASET_TEST, "cases.yaml": "3\n"},
    ),
    Case(
        "dataset-case-scalar",
        KEEP_GOING,
        FAILED,
        ("cases.yaml:",),
        {"test_obj.py": DATASET_TEST, "cases.yaml": "- 1\n- 2\n"},
    ),
    Case(
        "dataset-bad-split",
        KEEP_GOING,
        FAILED,
        ("cases.yaml:", "split"),
        {"test_obj.py": DATASET_TEST, "cases.yaml": "- {q: 1, split: dev}\n"},
    ),
    Case(
        "dataset-non-utf8",
        KEEP_GOING,
        FAILED,
        ("cases.yaml",),
        {"test_obj.py": DATASET_TEST, "cases.yaml": b"- {q: \xff}\n"},
    ),
    Case(
        "dataset-jsonl-bad-line",
        KEEP_GOING,
        FAILED,
        ("cases.jsonl:2",),
        {
            "test_obj.py": DATASET_TEST.replace("cases.yaml", "cases.jsonl"),
            "cases.jsonl": '{"q": 1}\n{"q": \n',
        },
    ),
    Case(
        "dataset-jsonl-array-line",
        KEEP_GOING,
        FAILED,
        ("cases.jsonl:1",),
        {
            "test_obj.py": DATASET_TEST.replace("cases.yaml", "cases.jsonl"),
            "cases.jsonl": "[1, 2]\n",
        },
    ),
    Case(
        "dataset-wrong-suffix",
        KEEP_GOING,
        FAILED,
        ("cases.txt",),
        {"test_obj.py": DATASET_TEST.replace("cases.yaml", "cases.txt"), "cases.txt": "q\n"},
    ),
    Case(
        "dataset-marker-no-path",
        KEEP_GOING,
        FAILED,
        ("dataset",),
        {"test_obj.py": DATASET_TEST.replace('("cases.yaml")', "()")},
    ),
]

BASELINE_CASES = [
    Case("baseline-missing", BASE, USAGE, ("base.json", "does not exist")),
    Case("baseline-directory", BASE, USAGE, ("base.json",), {"base.json/x": ""}),
    Case("baseline-bad-json", BASE, USAGE, ("base.json:1",), with_baseline("{")),
    Case(
        "baseline-non-utf8",
        BASE,
        USAGE,
        ("base.json", "UTF-8"),
        with_baseline(b'{"metrics": "\xff"}'),
    ),
    Case("baseline-list", BASE, USAGE, ("base.json", "metrics"), with_baseline("[]")),
    Case("baseline-no-metrics", BASE, USAGE, ("base.json", "metrics"), with_baseline("{}")),
    Case(
        "baseline-metrics-list",
        BASE,
        USAGE,
        ("base.json", "metrics"),
        with_baseline(baseline(metrics=[1])),
    ),
    Case(
        "baseline-value-text",
        BASE,
        USAGE,
        ("base.json", "'loss'", "value"),
        with_baseline(baseline(metrics={"loss": {"value": "1"}})),
    ),
    Case(
        "baseline-goal",
        BASE,
        USAGE,
        ("base.json", "'loss'", "goal"),
        with_baseline(baseline(metrics={"loss": {"value": 1, "goal": "up"}})),
    ),
    Case(
        "baseline-samples-text",
        BASE,
        USAGE,
        ("base.json", "'loss'", "samples"),
        with_baseline(baseline(metrics={"loss": {"value": 1, "samples": ["a"]}})),
    ),
    Case(
        "baseline-tests-mapping-of-int",
        BASE,
        USAGE,
        ("base.json", "tests['t']"),
        with_baseline(baseline(tests={"t": 1})),
    ),
    Case(
        "baseline-tests-list",
        BASE,
        USAGE,
        ("base.json", "tests"),
        with_baseline(baseline(tests=[])),
    ),
    Case(
        "baseline-test-no-outcome",
        BASE,
        USAGE,
        ("base.json", "tests['t'].outcome"),
        with_baseline(baseline(tests={"t": {}})),
    ),
    Case(
        "baseline-test-bad-outcome",
        BASE,
        USAGE,
        ("base.json", "tests['t'].outcome", "'won'"),
        with_baseline(baseline(tests={"t": {"outcome": "won"}})),
    ),
    Case(
        "baseline-unmeasured-list",
        BASE,
        USAGE,
        ("base.json", "unmeasured"),
        with_baseline(baseline(unmeasured=[1])),
    ),
    Case(
        "baseline-unmeasured-number",
        BASE,
        USAGE,
        ("base.json", "unmeasured['x']"),
        with_baseline(baseline(unmeasured={"x": 1})),
    ),
    Case(
        "baseline-protected-text",
        BASE,
        USAGE,
        ("base.json", "protected_files"),
        with_baseline(baseline(protected_files="x")),
    ),
    Case(
        "baseline-format",
        BASE,
        USAGE,
        ("base.json", "format 99"),
        with_baseline(baseline(format=99)),
    ),
    Case(
        "baseline-nan-fails-gate",
        BASE,
        FAILED,
        ("FAIL", "cannot compare", "nan"),
        {
            "autopilot.yaml": REGRESSION,
            "test_obj.py": TIMED_TEST,
            "base.json": baseline(metrics={"loss": {"value": float("nan")}}),
        },
    ),
    Case(
        "baseline-zero-samples-fail-gate",
        BASE,
        FAILED,
        ("FAIL", "cannot compare", "0"),
        {
            "autopilot.yaml": REGRESSION,
            "test_obj.py": TIMED_TEST,
            "base.json": baseline(metrics={"loss": {"value": 0.0, "samples": [0.0] * 8}}),
        },
    ),
    Case(
        "baseline-nan-samples-fail-gate",
        BASE,
        FAILED,
        ("FAIL", "cannot compare", "not finite"),
        {
            "autopilot.yaml": REGRESSION,
            "test_obj.py": TIMED_TEST,
            "base.json": baseline(metrics={"loss": {"value": 1.0, "samples": [float("nan")] * 8}}),
        },
    ),
    Case(
        "baseline-lacks-metric-fails-gate",
        BASE,
        FAILED,
        ("FAIL", "missing from the baseline"),
        {
            "autopilot.yaml": REGRESSION,
            "test_obj.py": TIMED_TEST,
            "base.json": baseline(metrics={}),
        },
    ),
]

FLAG_CASES = [
    Case(
        "rounds-zero",
        ("--autopilot", "--autopilot-rounds", "0"),
        USAGE,
        ("--autopilot-rounds", "'0'"),
    ),
    Case(
        "rounds-text",
        ("--autopilot", "--autopilot-rounds", "x"),
        USAGE,
        ("--autopilot-rounds", "'x'"),
    ),
    Case(
        "candidates-negative",
        ("--autopilot", "--autopilot-candidates=-1"),
        USAGE,
        ("--autopilot-candidates", "'-1'"),
    ),
    Case(
        "experiment-flag-space",
        ("--autopilot", "--autopilot-experiment", "a b"),
        USAGE,
        ("--autopilot-experiment", "'a b'"),
    ),
    Case(
        "experiment-flag-lock",
        ("--autopilot", "--autopilot-experiment", "x.lock"),
        USAGE,
        ("--autopilot-experiment", "'x.lock'"),
    ),
    Case(
        "optimizer-flag-slash",
        ("--autopilot", "--autopilot-optimizer", "a/b"),
        USAGE,
        ("--autopilot-optimizer", "'a/b'"),
    ),
    Case(
        "optimizer-flag-unknown",
        ("--autopilot", "--autopilot-optimizer", "nope"),
        USAGE,
        ("optimizer", "'nope'"),
    ),
    Case("fresh-without-loop", ("--autopilot-fresh",), USAGE, ("--autopilot-fresh", "--autopilot")),
    Case("apply-without-loop", ("--autopilot-apply",), USAGE, ("--autopilot-apply", "--autopilot")),
    Case(
        "rounds-without-loop",
        ("--autopilot-rounds", "2"),
        USAGE,
        ("--autopilot-rounds", "--autopilot"),
    ),
    Case(
        "baseline-without-gate",
        ("--autopilot-baseline", "base.json"),
        USAGE,
        ("--autopilot-baseline",),
        with_baseline(baseline()),
    ),
    Case("config-flag-empty", gate("--autopilot-config="), USAGE, ("--autopilot-config",)),
    Case("loop-with-lf", ("--autopilot", "--lf"), USAGE, ("--lf",)),
    Case("loop-with-sw", ("--autopilot", "--sw"), USAGE, ("--sw",)),
    Case(
        "loop-x-after-failure",
        ("--autopilot", "-x", "-p", "no:randomly"),
        USAGE,
        ("objective.metric", "'loss'", "--maxfail"),
        {"test_a.py": "def test_a():\n    assert False\n", "test_obj.py": TEST},
    ),
]

OUTPUT_CASES = [
    Case(
        "json-directory",
        ("--autopilot-json", "out"),
        USAGE,
        ("--autopilot-json out:", "directory"),
        {"out/keep": ""},
    ),
    Case(
        "json-under-file",
        ("--autopilot-json", "afile/x.json"),
        USAGE,
        ("--autopilot-json afile/x.json:", "not a directory"),
        {"afile": ""},
    ),
    Case(
        "json-in-proc",
        ("--autopilot-json", "/proc/x.json"),
        USAGE,
        ("--autopilot-json /proc/x.json:",),
    ),
    Case(
        "json-deep-in-proc",
        ("--autopilot-json", "/proc/self/nope/x.json"),
        USAGE,
        ("--autopilot-json /proc/self/nope/x.json:",),
    ),
    Case("save-directory", ("--autopilot-save", "."), USAGE, ("--autopilot-save .:", "directory")),
    Case(
        "report-under-file",
        ("--autopilot-report", "params.json/r.md"),
        USAGE,
        ("--autopilot-report params.json/r.md:",),
    ),
    Case(
        "json-same-as-save",
        ("--autopilot-json", "a.json", "--autopilot-save", "./a.json"),
        USAGE,
        ("--autopilot-save ./a.json", "--autopilot-json a.json"),
    ),
    Case(
        "loop-json-directory",
        ("--autopilot", "--autopilot-json", "out"),
        USAGE,
        ("--autopilot-json out:",),
        {"out/keep": ""},
    ),
]


def _detach(repo: GitRepo) -> None:
    repo.git("checkout", "--quiet", "--detach")


def _conflict(command: str) -> Callable[[GitRepo], None]:
    def setup(repo: GitRepo) -> None:
        repo.git("checkout", "--quiet", "-b", "other")
        repo.commit("other", {"params.json": '{"x": 1}\n'})
        repo.git("checkout", "--quiet", "main")
        repo.commit("main", {"params.json": '{"x": 2}\n'})
        if command == "rebase":
            repo.git("rebase", "other", check=False)
        elif command == "cherry-pick":
            repo.git("cherry-pick", "other", check=False)
        else:
            repo.git("merge", "other", check=False)

    return setup


def _no_commits(repo: GitRepo) -> None:
    GitRepo(repo.path).git("init", "--quiet", "--initial-branch=main")
    (repo.path / ".gitignore").write_text("__pycache__/\n.pytest_cache/\n")


def _bare(repo: GitRepo) -> None:
    repo.git("init", "--quiet", "--bare")


def _shallow(repo: GitRepo) -> None:
    files = _project_files({"autopilot.yaml": json.dumps(UNMEASURED)})
    source = init_repo(repo.path.parent / f"{repo.path.name}-source", files)
    source.commit("second", {"extra.txt": "x\n"})
    for path in list(repo.path.iterdir()):
        path.unlink()
    repo.git(
        "clone",
        "--quiet",
        "--depth",
        "1",
        source.path.as_uri(),
        str(repo.path),
        cwd=repo.path.parent,
    )
    repo.git("config", "user.name", "Test User")
    repo.git("config", "user.email", "test@example.com")


def _dirty(repo: GitRepo) -> None:
    repo.write({"untracked.txt": "new\n", "params.json": '{"x": 1}\n', "staged.txt": "s\n"})
    repo.git("add", "staged.txt")


def _on_best_branch(repo: GitRepo) -> None:
    repo.git("checkout", "--quiet", "-b", "autopilot/demo")


def _autopilot_file(repo: GitRepo) -> None:
    (repo.path / ".autopilot").write_text("not a directory\n")


def _autopilot_ignored_dir(repo: GitRepo) -> None:
    (repo.path / ".autopilot" / "demo").mkdir(parents=True)
    (repo.path / ".autopilot" / ".gitignore").write_text("*\n")


def _corrupt_state(text: str) -> Callable[[GitRepo], None]:
    def setup(repo: GitRepo) -> None:
        _autopilot_ignored_dir(repo)
        (repo.path / ".autopilot" / "demo" / "state.json").write_text(text)

    return setup


def _index_lock(repo: GitRepo) -> None:
    (repo.path / ".git" / "index.lock").write_text("")


def _stash(repo: GitRepo) -> None:
    repo.write({"params.json": '{"x": 5}\n'})
    repo.git("stash", "--quiet")


def _linked_worktree(repo: GitRepo) -> None:
    main = repo.path.parent / f"{repo.path.name}-main"
    source = init_repo(main, _project_files({"autopilot.yaml": json.dumps(UNMEASURED)}))
    for path in list(repo.path.iterdir()):
        path.unlink()
    repo.path.rmdir()
    source.git("worktree", "add", "--quiet", "-b", "wt", str(repo.path))
    os.chdir(repo.path)  # the directory pytester runs in was replaced


HELD: list[Lock] = []


def _lock_held(repo: GitRepo) -> None:
    _autopilot_ignored_dir(repo)
    lock = Lock(repo.path / ".autopilot" / "demo" / "lock")
    lock.acquire()
    HELD.append(lock)


def _unmeasured(
    setup: Callable[[GitRepo], None] | None = None, repo: str = "commit", **kw: Any
) -> dict[str, Any]:
    return {"files": {"autopilot.yaml": json.dumps(UNMEASURED)}, "setup": setup, "repo": repo, **kw}


LOOP = ("--autopilot", "-p", "no:randomly")

GIT_CASES: list[Any] = [
    Case("git-not-a-repo", LOOP, USAGE, ("needs a git repository",), repo="none"),
    Case("git-bare", LOOP, USAGE, ("--autopilot needs",), **_unmeasured(_bare, repo="custom")),
    Case("git-no-commits", LOOP, USAGE, (ACCEPTED,), **_unmeasured(_no_commits, repo="custom")),
    Case("git-detached-head", LOOP, USAGE, (ACCEPTED,), **_unmeasured(_detach)),
    Case("git-mid-merge", LOOP, USAGE, ("merge",), **_unmeasured(_conflict("merge"))),
    Case("git-mid-rebase", LOOP, USAGE, ("rebase",), **_unmeasured(_conflict("rebase"))),
    Case(
        "git-mid-cherry-pick",
        LOOP,
        USAGE,
        ("cherry-pick",),
        **_unmeasured(_conflict("cherry-pick")),
    ),
    Case("git-shallow", LOOP, USAGE, (ACCEPTED,), **_unmeasured(_shallow, repo="custom")),
    Case("git-dirty-untracked-staged", LOOP, USAGE, (ACCEPTED,), **_unmeasured(_dirty)),
    Case("git-stash-present", LOOP, USAGE, (ACCEPTED,), **_unmeasured(_stash)),
    Case("git-index-lock", LOOP, USAGE, (ACCEPTED,), **_unmeasured(_index_lock)),
    Case(
        "git-linked-worktree",
        LOOP,
        USAGE,
        (ACCEPTED,),
        **_unmeasured(_linked_worktree, repo="custom"),
    ),
    Case(
        "git-on-best-branch",
        LOOP,
        USAGE,
        ("autopilot/demo", "switch to another branch"),
        **_unmeasured(_on_best_branch),
    ),
    Case("git-autopilot-is-a-file", LOOP, USAGE, (".autopilot",), **_unmeasured(_autopilot_file)),
    Case(
        "git-lock-held",
        LOOP,
        USAGE,
        (f"already being optimized by process {os.getpid()}",),
        **_unmeasured(_lock_held),
    ),
    Case(
        "git-state-not-json",
        LOOP,
        USAGE,
        ("state.json", "--autopilot-fresh"),
        **_unmeasured(_corrupt_state("{")),
    ),
    Case(
        "git-state-wrong-shape",
        LOOP,
        USAGE,
        ("state.json", "--autopilot-fresh"),
        **_unmeasured(_corrupt_state('{"version": 1, "records": 5, "baseline_tree": []}')),
    ),
    Case(
        "git-env-git-dir",
        LOOP,
        USAGE,
        (ACCEPTED,),
        env={"GIT_DIR": "/nonexistent/.git", "GIT_INDEX_FILE": "/nonexistent/index"},
        **_unmeasured(),
    ),
    Case(
        "git-not-on-path",
        LOOP,
        USAGE,
        ("git on PATH",),
        env={"PATH": "/nonexistent"},
        **_unmeasured(),
    ),
]

CASES = CONFIG_CASES + DATASET_CASES + BASELINE_CASES + FLAG_CASES + OUTPUT_CASES + GIT_CASES


def _project_files(extra: Mapping[str, str | bytes]) -> dict[str, str]:
    files: dict[str, str | bytes] = {
        "params.json": '{"x": 0}\n',
        "autopilot.yaml": json.dumps(CONFIG),
        "test_obj.py": TEST,
        "conftest.py": CONFTEST,
        **extra,
    }
    return {k: v for k, v in files.items() if isinstance(v, str)}


GIT_ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}}
GIT_ENV["GIT_CONFIG_NOSYSTEM"] = "1"

STATE_COMMANDS = (
    "git symbolic-ref --quiet HEAD; git rev-parse HEAD; echo; "
    "git status --porcelain --untracked-files=all; echo; git ls-files --stage; echo; "
    "git stash list --format='%H %s'; echo; "
    "git for-each-ref --format='%(refname) %(objectname)' | grep -v ' refs/autopilot/' "
    "| grep -v '^refs/heads/autopilot/' | grep -v '^refs/autopilot/'"
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base project, committed once; each case starts from a copy."""
    return init_repo(tmp_path_factory.mktemp("template"), _project_files({})).path


def _build(root: Path, template: Path, case: Case) -> GitRepo:
    repo = GitRepo(root)
    if case.repo == "commit":
        shutil.copytree(template, root, symlinks=True, dirs_exist_ok=True)
    elif case.repo == "none" or case.repo == "custom":
        for rel, text in _project_files({}).items():
            (root / rel).write_text(text)
    for rel, data in case.files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            target.write_text(data)
    if case.repo == "commit" and case.files:
        _sh(root, "git add -A && git commit --quiet -m case")
    if case.setup is not None:
        case.setup(repo)
    return repo


def _sh(cwd: Path, command: str) -> str:
    return subprocess.run(
        ["sh", "-c", command], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=False
    ).stdout


def _state(root: Path) -> tuple[str, dict[str, str]]:
    """The user's git state (HEAD, status, index, stash, refs) and every file's digest."""
    git = _sh(root, STATE_COMMANDS) if (root / ".git").exists() else ""
    files = {}
    for path in sorted(root.rglob("*")):
        skipped = {".git", "__pycache__", ".autopilot", ".pytest_cache"}.intersection(path.parts)
        if path.is_file() and not path.is_symlink() and not skipped:
            files[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return git, files


def _id(case: Any) -> str:
    return str(case.values[0].id if hasattr(case, "values") else case.id)


@pytest.mark.parametrize("case", CASES, ids=[_id(case) for case in CASES])
def test_bad_input_is_refused_by_name(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, template: Path, case: Case
) -> None:
    repo = _build(pytester.path, template, case)
    before = _state(repo.path)
    try:
        with monkeypatch.context() as env:
            for name, value in case.env.items():
                env.setenv(name, value)
            result = pytester.runpytest(*case.args)
    finally:
        while HELD:
            HELD.pop().release()
    out = result.stdout.str() + "\n" + result.stderr.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    assert result.ret == case.ret, out
    for text in case.expect:
        assert text in out, f"{text!r} not in:\n{out}"
    assert _state(repo.path) == before


def test_the_suite_covers_every_kind_of_input() -> None:
    kinds = {
        "config": CONFIG_CASES,
        "datasets": DATASET_CASES,
        "baselines": BASELINE_CASES,
        "flags": FLAG_CASES,
        "output paths": OUTPUT_CASES,
        "git states": GIT_CASES,
    }
    assert all(len(cases) >= 5 for cases in kinds.values())
    assert len(CASES) >= 60
    assert len({_id(case) for case in CASES}) == len(CASES)


def test_a_failed_write_leaves_no_temp_file_and_names_the_path_given(tmp_path: Path) -> None:
    from pytest_autopilot.preflight import describe_write_error
    from pytest_autopilot.results import write_json

    target = tmp_path / "out"
    target.mkdir()  # replacing a directory with a file fails after the temp file is written
    with pytest.raises(OSError) as excinfo:
        write_json(target, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    message = describe_write_error(excinfo.value, [("--autopilot-json", "out", target)])
    assert message.startswith("cannot write --autopilot-json out: ")


def test_autopilot_off_posix_is_refused_before_any_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, template: Path
) -> None:
    repo = _build(pytester.path, template, Case("no-posix", (), USAGE, ()))
    before = _state(repo.path)
    monkeypatch.delattr(os, "killpg")  # what a Windows Python lacks
    result = pytester.runpytest("--autopilot")
    monkeypatch.undo()
    assert result.ret == USAGE
    result.stderr.fnmatch_lines(["*--autopilot needs a POSIX system*WSL*"])
    assert "Traceback" not in result.stderr.str() and "passed" not in result.stdout.str()
    assert _state(repo.path) == before
