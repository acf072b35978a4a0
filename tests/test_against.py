"""``--autopilot-gate --autopilot-against REF``: REF's suite runs alongside, as the baseline.

Real git repositories in ``tmp_path``; REF is an earlier commit. What is checked: a large
regression against REF fails the gate on the paired comparison, identical code passes, bad
REFs are usage errors, and the user's working tree, index, branches and stash are left as they
were. The paired statistics themselves are checked on seeded simulations of drift, not timed.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # noqa: F401  (in-process pytester runs must not re-import its C loader)
from gitrepo import GitRepo, init_repo

from pytest_autopilot import stats
from pytest_autopilot.against import paired_statuses
from pytest_autopilot.config import Acceptance, AutopilotConfig, GateSpec
from pytest_autopilot.gates import evaluate_gates
from pytest_autopilot.results import Metric, SessionResult, TestResult

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
    assert "paired, 30 rounds" in same.stdout
    repo.write({"params.json": json.dumps({"n": 100_000})})
    repo.commit("slower")
    before = repo.user_state()
    slow = pytest_in(repo, "--autopilot-gate", "--autopilot-against", "v1")
    assert slow.returncode == 1, slow.stdout
    assert "autopilot: FAIL test_step" in slow.stdout
    assert "autopilot: this run against v1, measured beside it" in slow.stdout
    assert "vs v1: regression beyond the 50% allowed, beyond noise (paired, 30 rounds" in (
        slow.stdout
    )
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


def lockstep_sessions(
    rng: random.Random, rounds: int, slowdown: float
) -> tuple[list[float], list[float]]:
    """REF's and this session's round times under strong drift that both rounds of a pair share.

    The machine's load is a slow random walk that makes rounds up to several times slower;
    each round has its own 3% jitter, one round in twenty a 1.5x outlier on one side, and each
    session an offset of its own (0.5%: what pairing cannot remove).
    """
    load = 0.0
    offsets = [rng.gauss(0.0, 0.005) for _ in range(2)]
    ref, this = [], []
    for _ in range(rounds):
        load = 0.9 * load + rng.gauss(0.0, 0.3)
        shared = math.exp(abs(load))
        sides = []
        for offset, factor in zip(offsets, (1.0, slowdown), strict=True):
            outlier = 1.5 if rng.random() < 0.05 else 1.0
            sides.append(factor * shared * outlier * math.exp(offset + rng.gauss(0.0, 0.03)))
        ref.append(0.004 * sides[0])
        this.append(0.004 * sides[1])
    return ref, this


@pytest.mark.parametrize("rounds", [5, 12, 50])
def test_paired_comparison_cancels_shared_drift(rounds: int) -> None:
    """Identical code never fails a 5% gate; a 10% regression is caught (seeded, 300 pairs).

    With few rounds the rare A/A pair whose log-ratios all lean one way (jitter plus a 1.5x
    outlier) can fail: at most the 1% the benchmark targets; and 5 rounds of 3% jitter catch
    a 10% regression only about half the time. The drift alone never decides anything."""
    rng = random.Random(rounds)
    false_fails = caught = 0
    for _ in range(300):
        ref, same = lockstep_sessions(rng, rounds, 1.0)
        false_fails += stats.is_regression(stats.compare_paired(ref, same, 0.95), "min", 0.05)
        ref, slower = lockstep_sessions(rng, rounds, 1.1)
        caught += stats.is_regression(stats.compare_paired(ref, slower, 0.95), "min", 0.05)
    assert false_fails <= (0 if rounds == 50 else 3)
    assert caught >= {5: 150, 12: 255, 50: 295}[rounds]


def test_paired_comparison_interval_and_method() -> None:
    ref = [1.0, 1.2, 2.0, 1.1, 3.0, 1.0, 1.3, 2.2, 1.0, 1.1]
    this = [2.0 * x for x in ref]
    cmp = stats.compare_paired(ref, this, 0.95)
    assert cmp.ratio == pytest.approx(2.0)
    assert cmp.low < 2.0 < cmp.high
    assert cmp.high / cmp.low < 1.05  # only the 1% session noise widens it
    assert cmp.method.startswith("paired, 10 rounds, Hodges-Lehmann")
    cut = stats.compare_paired(ref, this[:7], 0.95)
    assert cut.n_baseline == cut.n_candidate == 7
    assert "paired, 7 rounds (the first 7: the baseline took 10 rounds and the candidate 7" in (
        cut.method
    )
    assert not stats.compare_paired([1.0], [5.0], 0.95).informative
    assert math.isnan(stats.compare_paired([1.0, 0.0], [1.0, 1.0], 0.95).ratio)


def session(*metrics: Metric) -> SessionResult:
    result = SessionResult(metrics={m.name: m for m in metrics})
    result.tests["t.py::test_ok"] = TestResult("t.py::test_ok", "passed")
    return result


def test_relative_gates_on_timing_metrics_are_judged_paired_and_others_keep_theirs(
    tmp_path: Path,
) -> None:
    """Drift that swamps the unpaired comparison is cancelled by pairing; a metric that is not
    a benchmark's (no node id) keeps the unpaired status from the gates module."""
    ref_times, this_times = lockstep_sessions(random.Random(7), 30, 1.3)
    config = AutopilotConfig(
        path=tmp_path / "autopilot.yaml",
        rootdir=tmp_path,
        gates=(
            GateSpec("test_step", "max_regression", 0.1),
            GateSpec("loss", "max_regression", 0.1),
            GateSpec("test_step", "min_gain", 0.1),
        ),
    )
    ref = session(
        Metric("test_step", 0.004, "min", ref_times, "t.py::test_step"), Metric("loss", 1.0)
    )
    this = session(
        Metric("test_step", 0.005, "min", this_times, "t.py::test_step"), Metric("loss", 1.0)
    )
    unpaired = evaluate_gates(config, this, ref)
    statuses = paired_statuses(config, this, ref, unpaired, "v1")
    step, loss, gain = statuses
    assert unpaired[0].passed and "within noise" in unpaired[0].reason
    assert not step.passed
    assert "vs v1: regression beyond the 10% allowed, beyond noise (paired, 30 rounds" in (
        step.reason
    )
    assert loss == unpaired[1]
    assert not gain.passed and "vs v1: gain below the 10% required" in gain.reason


def test_a_configured_run_noise_replaces_the_session_noise_floor(tmp_path: Path) -> None:
    """``acceptance.run_noise`` (per session) is how a user on a crowded machine widens it."""
    ref_times, this_times = lockstep_sessions(random.Random(7), 30, 1.3)
    ref = session(Metric("test_step", 0.004, "min", ref_times, "t.py::test_step"))
    this = session(Metric("test_step", 0.005, "min", this_times, "t.py::test_step"))
    gates = (GateSpec("test_step", "max_regression", 0.1),)
    verdicts = []
    for run_noise in (None, 0.2):
        config = AutopilotConfig(
            path=tmp_path / "autopilot.yaml",
            rootdir=tmp_path,
            gates=gates,
            acceptance=Acceptance(run_noise=run_noise),
        )
        (status,) = paired_statuses(config, this, ref, evaluate_gates(config, this, ref), "v1")
        verdicts.append(status.passed)
    assert verdicts == [False, True]
    assert "+ 28.3% session noise" in status.reason
