"""What ``-n 2`` buys: one round of two candidates, evaluated at once versus one after the other.

Builds a CPU-bound suite without timing tests in a temporary git repository (each session
spins the CPU for about a second in pure Python and records a deterministic objective read
from a parameter file) with a conftest.py optimizer that proposes two candidates per round,
and times round 1 of ``python -m pytest --autopilot`` (from the journal's ``round`` event to
its ``round_done`` event) with ``-n 1`` and with ``-n 2``, interleaved in the same run so that
machine load affects both alike.

The ratio n2/n1 (medians, target <= 0.6 on 2 cores) is the wall time of a round with the
candidates' sessions in parallel over the same round with them in series; 0.5 is the ideal.

Usage: ``python benchmarks/parallel_speedup.py [--repeat N] [--check]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from suite_repo import commit_suite

TARGET = 0.6

CONFTEST = """\
import json
from pytest_autopilot.proposals import Proposal

def pytest_autopilot_optimizer_names(config):
    return ["pair"]

def pytest_autopilot_propose(context):
    if context.optimizer != "pair":
        return None
    params = next(p for p in context.parameters if p.path == "params.json")
    x = json.loads(params.text)["x"]
    return [
        Proposal(f"x={x + d}", edits={params.path: json.dumps({"x": x + d})}, params={"x": x + d})
        for d in (1, -1)
    ][: context.max_candidates]
"""

TEST = """\
import json, pathlib

def spin(n):
    total = 0
    for i in range(n):
        total += i * i
    return total

def test_work():
    spin(SPINS)

def test_loss(autopilot):
    x = json.loads((pathlib.Path(__file__).parent / "params.json").read_text())["x"]
    autopilot.record("loss", (x - 3) ** 2, goal="min")
"""

CONFIG = """\
experiment: speedup
objective: {metric: loss, goal: min}
parameters: [{path: params.json}]
optimizer: pair
budget: {rounds: 1, candidates: 2}
"""


def build_repo(root: Path, spins: int) -> None:
    files = {
        "params.json": '{"x": 0}',
        "test_obj.py": TEST.replace("SPINS", str(spins)),
        "conftest.py": CONFTEST,
        "autopilot.yaml": CONFIG,
    }
    commit_suite(root, files)


def round_seconds(root: Path, workers: int) -> float:
    """Seconds of round 1 (ask, build, evaluate both candidates, decide, record)."""
    command = ["-m", "pytest", "-q", "--autopilot", "--autopilot-fresh", "-n", str(workers)]
    proc = subprocess.run(
        [sys.executable, *command],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if proc.returncode not in (0, 1):
        raise SystemExit(f"the loop failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    events = [
        json.loads(line)
        for line in (root / ".autopilot" / "speedup" / "journal.jsonl").read_text().splitlines()
    ]
    verdicts = [e["verdict"] for e in events if e["event"] == "candidate"]
    if sorted(verdicts) != ["accepted", "rejected"]:
        raise SystemExit(f"unexpected verdicts {verdicts}: see {root}")
    start = next(e["time"] for e in events if e["event"] == "round")
    end = next(e["time"] for e in events if e["event"] == "round_done")
    return float(end - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per -n (default 5)")
    parser.add_argument("--spins", type=int, default=15_000_000, help="loop iterations per test")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autopilot-parallel-speedup-") as tmp:
        root = Path(tmp)
        build_repo(root, args.spins)
        round_seconds(root, 1)  # warm the file cache and bytecode
        serial, parallel = [], []
        for _ in range(args.repeat):
            serial.append(round_seconds(root, 1))
            parallel.append(round_seconds(root, 2))
    one, two = statistics.median(serial), statistics.median(parallel)
    ratio = two / one
    print(f"cores: {os.cpu_count()}")
    print(f"round of 2 candidates, -n 1: {one:.2f} s (median of {args.repeat})")
    print(f"round of 2 candidates, -n 2: {two:.2f} s")
    print(f"-n 2 / -n 1: {ratio:.2f} (target <= {TARGET}; ideal 0.5)")
    return 1 if args.check and ratio > TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
