"""How often the loop accepts a candidate that is the same code: the A/A false-acceptance rate.

Builds a suite with one pytest-benchmark test (real timings, ``benchmark.pedantic`` with a
fixed number of rounds) in a temporary git repository, and a conftest.py optimizer that edits
a parameter file nothing reads: every candidate is a distinct commit whose code behaves
exactly like the incumbent's. Then it runs ``python -m pytest --autopilot`` for ``--rounds``
rounds of one candidate each, with the default acceptance settings (``min_effect`` 2%,
``confidence`` 0.95), so every round is one A/A comparison made exactly as the loop makes
them: the incumbent re-measured in a fresh worktree and child session, then the candidate,
decided by the run's race (:mod:`pytest_autopilot.racing`): kept, dropped, or measured again
side by side with the incumbent, up to three times.

The same is then done with ``-n 2``: two candidates per round evaluated at once, each in its
own worktree, their timing tests serialized by the timing lock (:mod:`pytest_autopilot.timing`)
while everything else runs in parallel; each candidate is one A/A comparison against the
incumbent, so half as many rounds give the same number of comparisons.

Printed per ``-n``: the false-acceptance rate (target <= 1%).

Usage: ``python benchmarks/false_accept.py [--comparisons N] [--workers 1,2] [--check]``
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from suite_repo import commit_suite

TARGET = 0.01

CONFTEST = """\
import json
from pytest_autopilot.proposals import Proposal

def pytest_autopilot_optimizer_names(config):
    return ["noop"]

def pytest_autopilot_propose(context):
    if context.optimizer != "noop":
        return None
    params = next(p for p in context.parameters if p.path == "params.json")
    first = len(context.history) + 1
    return [
        Proposal(f"n={n} (read by nothing)", edits={params.path: json.dumps({"n": n})})
        for n in range(first, first + context.max_candidates)
    ]
"""

TEST = """\
def work():
    return sum(i * i for i in range(3000))

def test_step_time(benchmark):
    benchmark.pedantic(work, rounds=30, iterations=3, warmup_rounds=3)
"""


def config(rounds: int, candidates: int) -> str:
    return (
        "experiment: aa\n"
        "objective: {metric: test_step_time, goal: min}\n"
        "parameters: [{path: params.json}]\n"
        "optimizer: noop\n"
        f"budget: {{rounds: {rounds}, candidates: {candidates}, patience: {rounds + 1}, "
        "minutes: 600}\n"
    )


def build_repo(root: Path, rounds: int, candidates: int) -> None:
    files = {
        "params.json": '{"n": 0}',
        "test_bench.py": TEST,
        "conftest.py": CONFTEST,
        "autopilot.yaml": config(rounds, candidates),
    }
    commit_suite(root, files)


def upper_bound(events: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a binomial rate (bisection on the CDF)."""
    if trials == 0:
        return 1.0
    low, high = events / trials, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        cdf = sum(
            math.comb(trials, k) * mid**k * (1 - mid) ** (trials - k) for k in range(events + 1)
        )
        low, high = (mid, high) if cdf > 1 - confidence else (low, mid)
    return high


def run(comparisons: int, workers: int) -> tuple[int, int, int, float]:
    """One loop of A/A rounds; returns (evaluated, accepted, skipped, seconds)."""
    with tempfile.TemporaryDirectory(prefix="autopilot-false-accept-") as tmp:
        root = Path(tmp)
        build_repo(root, max(1, comparisons // workers), workers)
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "--autopilot", "-n", str(workers)],
            cwd=root,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
        if proc.returncode not in (0, 1):
            raise SystemExit(f"the loop failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        journal = root / ".autopilot" / "aa" / "journal.jsonl"
        events = [json.loads(line) for line in journal.read_text().splitlines()]
    verdicts = [e for e in events if e["event"] == "candidate"]
    evaluated = [e for e in verdicts if e["verdict"] in ("accepted", "rejected")]
    accepted = [e for e in evaluated if e["verdict"] == "accepted"]
    return len(evaluated), len(accepted), len(verdicts) - len(evaluated), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--comparisons", type=int, default=100, help="A/A comparisons per -n (default 100)"
    )
    parser.add_argument("--workers", default="1,2", help="values of -n, comma-separated")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()
    missed = False
    for workers in [int(w) for w in args.workers.split(",")]:
        n, accepted, skipped, seconds = run(args.comparisons, workers)
        rate = accepted / n if n else math.nan
        print(f"-n {workers}: A/A comparisons: {n} ({skipped} not evaluated), {seconds:.0f} s")
        print(
            f"-n {workers}:   false-acceptance rate: {accepted}/{n} = {rate:.1%} "
            f"(95% upper bound {upper_bound(accepted, n):.1%}; target <= {TARGET:.0%})"
        )
        missed = missed or not rate <= TARGET
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
