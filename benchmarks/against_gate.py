"""How often does ``--autopilot-gate --autopilot-against REF`` fail identical code, and catch 10%?

A real git repository holds a small pytest-benchmark suite (a busy loop, 30 pedantic rounds
of about 3 ms) and a ``max_regression: 0.05`` gate. Commit ``ref`` is tagged; branch ``same``
is identical code (A/A) and branch ``slower`` scales the loop's work by 1.1 (a 10%
regression). Each repetition runs the gate once on each branch, alternating, through the real
plugin: ``pytest --autopilot-gate --autopilot-against ref``, which runs REF's suite in its own
worktree beside this session's, rounds in lockstep, judged on the paired comparison.

Both conditions run quiet, then under a background CPU load the script starts itself (one
``python -c 'while True: pass'`` process at normal priority, killed at the end). Printed side
by side: A/A false-fail rate, 10%-regression catch rate, the spread of the A/A estimates (the
between-session noise that ``stats.PAIRED_SESSION_NOISE`` states as a 1% floor) and the median
10% estimate. Targets: false-fail <= 1%, caught >= 90% under the load.

Measured with ``--quick`` (4 gate runs per cell) on the shared 2-core machine while seven
other sessions kept its load average at 10-17, so "quiet" was not quiet:

    before child sessions kept this session's autogroup (REF in a new session via setsid):
    quiet   A/A false-fail 0%    10% caught 50%   A/A sd 35.3%   10% est. +10.2%
    loaded  A/A false-fail 100%  10% caught 100%  A/A sd 28.4%   10% est. +70.2%
    after (``loop.process.same_scheduling_group``):
    quiet   A/A false-fail 0%    10% caught 50%   A/A sd 10.1%   10% est. +20.2%
    loaded  A/A false-fail 0%    10% caught 0%    A/A sd 16.0%   10% est. +15.8%

At that load a 3 ms round is preempted at random and two sessions of identical code differ
by 10-16%: the 1% floor is far too small there, and ``acceptance.run_noise`` is the knob.

After rounds alternate by default with the waiting session frozen and the rounds on one CPU
(``--repetitions 12``, the machine otherwise idle; loaded = one busy process):

    quiet   A/A false-fail 0%    10% caught 75%   A/A sd 3.2%   10% est. +10.6%
    loaded  A/A false-fail 0%    10% caught 100%  A/A sd 2.2%   10% est. +13.6%

    PYTHONPATH=$PWD .venv/bin/python benchmarks/against_gate.py --quick     # 4 per cell
    PYTHONPATH=$PWD .venv/bin/python benchmarks/against_gate.py --repetitions 100
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from suite_repo import commit_suite

SUITE = """\
import json, pathlib

def work(n):
    total = 0
    for i in range(n):
        total += i * i
    return total

def test_step(benchmark):
    scale = json.loads((pathlib.Path(__file__).parent / "params.json").read_text())["scale"]
    benchmark.pedantic(work, args=(int(40_000 * scale),), rounds=30, iterations=1)
"""

GATES = {"gates": [{"metric": "test_step", "max_regression": 0.05}]}

ESTIMATE = re.compile(r"autopilot: (PASS|FAIL) test_step = .*?: ([+-][0-9.]+)% \(")


def git(repo: Path, *args: str) -> None:
    command = ["git", "-c", "user.name=b", "-c", "user.email=b@b", *args]
    subprocess.run(command, cwd=repo, check=True, capture_output=True)


def make_repo(root: Path) -> Path:
    """``ref`` (tag) = ``same`` (branch), and ``slower`` with the work scaled by 1.1."""
    files = {
        "test_bench.py": SUITE,
        "params.json": json.dumps({"scale": 1.0}),
        "autopilot.yaml": json.dumps(GATES),
    }
    commit_suite(root, files)
    git(root, "tag", "ref")
    git(root, "branch", "same")
    git(root, "checkout", "-q", "-b", "slower")
    (root / "params.json").write_text(json.dumps({"scale": 1.1}))
    git(root, "commit", "-qam", "10% more work")
    return root


def gate(repo: Path, branch: str) -> tuple[bool, float]:
    """One gate run on ``branch``: (failed, estimated change in percent)."""
    git(repo, "checkout", "-q", branch)
    command = [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider"]
    command += ["--autopilot-gate", "--autopilot-against", "ref"]
    proc = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=600)
    match = ESTIMATE.search(proc.stdout)
    if proc.returncode not in (0, 1) or match is None or "paired, " not in proc.stdout:
        raise SystemExit(f"gate run on {branch} did not give a paired verdict:\n{proc.stdout}")
    return match.group(1) == "FAIL", float(match.group(2))


def condition(repo: Path, repetitions: int) -> dict[str, float]:
    aa: list[tuple[bool, float]] = []
    ab: list[tuple[bool, float]] = []
    started = time.perf_counter()
    for _ in range(repetitions):
        aa.append(gate(repo, "same"))
        ab.append(gate(repo, "slower"))
    return {
        "false_fail": sum(f for f, _ in aa) / repetitions,
        "caught": sum(f for f, _ in ab) / repetitions,
        "aa_sd": statistics.stdev(e for _, e in aa) if repetitions > 1 else float("nan"),
        "ab_median": statistics.median(e for _, e in ab),
        "seconds_per_gate": (time.perf_counter() - started) / (2 * repetitions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=50, help="gate runs per cell")
    parser.add_argument("--quick", action="store_true", help="4 gate runs per cell")
    args = parser.parse_args()
    repetitions = 4 if args.quick else args.repetitions
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp))
        figures["quiet"] = condition(repo, repetitions)
        load = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            figures["loaded"] = condition(repo, repetitions)
        finally:
            load.kill()
            load.wait()
    print(
        f"--autopilot-against, max_regression 0.05, 30 paired rounds of ~3 ms, "
        f"{repetitions} gate runs per cell"
    )
    print(
        f"{'condition':<10} {'A/A false-fail':>15} {'10% caught':>11} {'A/A sd':>7} "
        f"{'10% est.':>9} {'s/gate':>7}"
    )
    for name, row in figures.items():
        print(
            f"{name:<10} {row['false_fail']:>15.0%} {row['caught']:>11.0%} "
            f"{row['aa_sd']:>6.1f}% {row['ab_median']:>+8.1f}% {row['seconds_per_gate']:>7.1f}"
        )


if __name__ == "__main__":
    main()
