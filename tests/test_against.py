"""``--autopilot-gate --autopilot-against REF``: REF's suite runs alongside, as the baseline.

Real git repositories in ``tmp_path``; REF is an earlier commit. What is checked: a large
regression against REF fails the gate, identical code passes, bad REFs are usage errors, and
the user's working tree, index, branches and stash are left as they were.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # noqa: F401  (in-process pytester runs must not re-import its C loader)
from gitrepo import GitRepo, init_repo

BENCH_TEST = """\
import json, pathlib

def work(n):
    total = 0
    for i in range(n):
        total += i * i
    return total

def test_step(benchmark):
    n = json.loads((pathlib.Path(__file__).parent / "params.json").read_text())["n"]
    benchmark.pedantic(work, args=(n,), rounds=30, iterations=1)
"""

GATES = {"gates": [{"metric": "test_step", "max_regression": 0.5}]}


def pytest_in(repo: GitRepo, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in the repository itself, so that nothing of pytester's lands in it."""
    command = [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*command, *args], cwd=repo.path, capture_output=True, text=True, timeout=300
    )


def suite(root: Path, n: int) -> GitRepo:
    return init_repo(
        root / "project",
        {
            "params.json": json.dumps({"n": n}),
            "test_bench.py": BENCH_TEST,
            "autopilot.yaml": json.dumps(GATES),
            "pytest.ini": "[pytest]\n",
        },
    )


def test_a_5x_regression_against_ref_fails_and_identical_code_passes(
    pytester: pytest.Pytester,
) -> None:
    repo = suite(pytester.path, 20_000)
    repo.git("tag", "v1")
    same = pytest_in(repo, "--autopilot-gate", "--autopilot-against", "v1")
    assert same.returncode == 0, same.stdout
    assert "autopilot: PASS test_step" in same.stdout
    repo.write({"params.json": json.dumps({"n": 100_000})})
    repo.commit("slower")
    before = repo.user_state()
    slow = pytest_in(repo, "--autopilot-gate", "--autopilot-against", "v1")
    assert slow.returncode == 1, slow.stdout
    assert "autopilot: FAIL test_step" in slow.stdout
    assert repo.user_state() == before
    assert repo.worktrees() == [str(repo.path)]


def test_a_ref_that_names_no_commit_is_a_usage_error_before_any_test(
    pytester: pytest.Pytester,
) -> None:
    repo = suite(pytester.path, 1000)
    before = repo.user_state()
    result = pytest_in(repo, "--autopilot-gate", "--autopilot-against", "nosuch")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--autopilot-against: 'nosuch' names no commit in " in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "test_bench.py" not in result.stdout  # no test ran
    assert repo.user_state() == before


def test_a_ref_whose_suite_does_not_run_is_a_usage_error_naming_its_log(
    pytester: pytest.Pytester,
) -> None:
    repo = suite(pytester.path, 1000)
    repo.write({"conftest.py": "raise RuntimeError('broken at REF')\n"})
    repo.commit("broken")
    repo.git("tag", "broken")
    repo.git("rm", "-q", "conftest.py")
    repo.commit("fixed")
    before = repo.user_state()
    result = pytest_in(repo, "--autopilot-gate", "--autopilot-against", "broken")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout
    output = result.stdout + result.stderr
    assert "--autopilot-against broken (" in output and "its suite did not run" in output
    assert ".autopilot/gate-against/logs/against.log" in output
    assert repo.user_state() == before
    assert repo.worktrees() == [str(repo.path)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--autopilot-against", "HEAD"], "works only with --autopilot-gate"),
        (
            ["--autopilot-gate", "--autopilot-against", "HEAD", "--autopilot-baseline", "b.json"],
            "both name the baseline",
        ),
    ],
)
def test_against_without_gate_or_with_a_baseline_file_is_refused(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    result = pytest_in(suite(pytester.path, 1000), *args)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr
