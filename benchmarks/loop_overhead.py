"""What the optimization loop adds to the child sessions it must run.

Builds a one-test suite in a temporary git repository (the objective is recorded from a
parameter file, a conftest.py optimizer proposes one edit per round, no gates so the round
always runs) and times, interleaved in the same run so that machine load affects both alike:

- ``bare``: ``python -m pytest`` on the suite;
- ``round``: one round with one candidate of ``python -m pytest --autopilot``, from the
  journal's ``round`` event to its ``round_done`` event. That is everything the loop does
  for a candidate: ask the optimizer, build the tree and commit, check the diff, add a
  worktree, run the child session there, read its result, decide, write the final commit,
  refs, journal and state, remove the worktree.

The ratio round/bare (medians, target <= 1.5) is what the loop costs beyond the one pytest
session a candidate needs anyway. The whole ``--autopilot`` command is printed too: it also
runs the user's own session and the baseline's session in its worktree (three sessions for
one candidate), so expect about 3x there.

Usage: ``python benchmarks/loop_overhead.py [--repeat N] [--check]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from suite_repo import commit_suite

TARGET = 1.5

CONFTEST = """\
import json
from pytest_autopilot.proposals import Proposal

def pytest_autopilot_optimizer_names(config):
    return ["step"]

def pytest_autopilot_propose(context):
    if context.optimizer != "step":
        return None
    params = next(p for p in context.parameters if p.path == "params.json")
    x = json.loads(params.text)["x"] + 1
    return [Proposal(f"x={x}", edits={params.path: json.dumps({"x": x})}, params={"x": x})]
"""

TEST = """\
import json, pathlib

def test_loss(autopilot):
    x = json.loads((pathlib.Path(__file__).parent / "params.json").read_text())["x"]
    autopilot.record("loss", (x - 3) ** 2, goal="min")
"""

CONFIG = """\
experiment: overhead
objective: {metric: loss, goal: min}
parameters: [{path: params.json}]
optimizer: step
budget: {rounds: 1, candidates: 1}
"""


def build_repo(root: Path) -> None:
    files = {"params.json": '{"x": 0}', "test_obj.py": TEST, "conftest.py": CONFTEST}
    commit_suite(root, {**files, "autopilot.yaml": CONFIG})


def bare(root: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q"], cwd=root, check=True, capture_output=True
    )
    return time.perf_counter() - started


def loop(root: Path) -> tuple[float, float]:
    """(seconds of round 1, seconds of the whole command)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--autopilot", "--autopilot-fresh"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the loop failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    events = [
        json.loads(line)
        for line in (root / ".autopilot" / "overhead" / "journal.jsonl").read_text().splitlines()
    ]
    start = next(e["time"] for e in events if e["event"] == "round")
    end = next(e["time"] for e in events if e["event"] == "round_done")
    return end - start, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="runs per mode (default 9)")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autopilot-loop-overhead-") as tmp:
        root = Path(tmp)
        build_repo(root)
        bare(root)  # warm the file cache and bytecode
        loop(root)
        bares, rounds, totals = [], [], []
        for _ in range(args.repeat):
            bares.append(bare(root))
            round_time, total = loop(root)
            rounds.append(round_time)
            totals.append(total)
    b, r, t = (statistics.median(x) for x in (bares, rounds, totals))
    ratio = r / b
    print(f"bare python -m pytest:             {b:.3f} s (median of {args.repeat})")
    print(f"one round, one candidate:          {r:.3f} s")
    print(f"whole --autopilot command:         {t:.3f} s ({t / b:.2f}x bare; 3 sessions)")
    print(f"round / bare: {ratio:.2f} (target <= {TARGET})")
    return 1 if args.check and ratio > TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
