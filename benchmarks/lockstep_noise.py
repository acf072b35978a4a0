"""How far apart two sessions of identical code measure, as the loop runs them.

Runs the real loop (``pytest --autopilot``) on a suite with one pytest-benchmark test and a
scripted optimizer whose every candidate is a no-op (the code of the incumbent), and reads
back every pair of sessions the loop measured side by side: a round's incumbent and its
candidate, and each re-measurement with its incumbent. For each pair, the offset is the
trimmed mean of the round-by-round log-ratios (what :mod:`pytest_autopilot.racing` judges),
in percent. Identical code, so every offset is noise.

Side by side in one run, each quiet and under a background load this script starts itself
(one busy process at normal priority):

- ``tests``: whole timing tests take turns (``PYTEST_AUTOPILOT_LOCKSTEP=tests``);
- ``rounds``: rounds alternate, waiting sessions frozen, rounds on one CPU (the default);
- ``rounds-unpinned``: the same, the rounds on whatever CPU the scheduler picks.

``--save FILE`` writes every pair's samples as JSON (the input of
``racing_simulation.py --pairs FILE``, which replays real noise).

Measured on this 2-core VM (``--candidates 40``, 5-ms rounds; |offset| of each pair):

    quiet  12 rounds, turns by tests   median 5.5%  p95 45.6%  max 63.2%
    quiet  12 rounds, turns by rounds  median 1.5%  p95  5.6%  max 11.6%
    loaded 12 rounds, turns by tests   median 6.5%  p95 88.3%  max 115.1%
    loaded 12 rounds, turns by rounds  median 2.9%  p95 13.4%  max 17.9%
    loaded 12 rounds, rounds-unpinned  median 4.9%  p95 22.9%  max 51.5%

Usage: ``python benchmarks/lockstep_noise.py [--candidates N] [--rounds 5,12] [--save F]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

from decisions import CONFTEST, TEST, config, load
from suite_repo import commit_suite

from pytest_autopilot.racing import trimmed_location


def pairs_of(results: Path) -> list[tuple[list[float], list[float]]]:
    """(incumbent samples, candidate samples) of every side-by-side pair in a run."""

    def samples(label: str) -> list[float] | None:
        path = results / f"{label}.json"
        if not path.exists():
            return None
        metric = json.loads(path.read_text())["metrics"].get("test_step_time") or {}
        return metric.get("samples") or None

    found = []
    for path in sorted(results.glob("r*c*.json")):
        label = path.stem
        if label.endswith("-incumbent"):
            continue
        partner = f"{label}-incumbent" if "-m" in label else label.split("c")[0] + "i"
        inc, cand = samples(partner), samples(label)
        if inc and cand and len(inc) == len(cand):
            found.append((inc, cand))
    return found


def run(count: int, rounds: int, base: int, mode: str) -> list[tuple[list[float], list[float]]]:
    with tempfile.TemporaryDirectory(prefix="autopilot-noise-") as tmp:
        root = Path(tmp)
        commit_suite(root, {
            "params.json": json.dumps({"factor": 1.0, "n": 0}),
            "plan.json": json.dumps([1.0] * count),
            "test_bench.py": TEST.replace("{base}", str(base)).replace("{rounds}", str(rounds)),
            "conftest.py": CONFTEST,
            "autopilot.yaml": config(count, 1),
        })  # fmt: skip
        lockstep, _, pin = mode.partition("-")
        env = {**os.environ, "PYTEST_AUTOPILOT_LOCKSTEP": lockstep}
        if pin == "unpinned":
            env["PYTEST_AUTOPILOT_PIN"] = "0"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "--autopilot"]
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        if done.returncode not in (0, 1):
            raise SystemExit(f"the loop failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return pairs_of(root / ".autopilot" / "bench" / "results")


def offset(pair: tuple[list[float], list[float]]) -> float:
    inc, cand = pair
    return 100.0 * trimmed_location([math.log(c / i) for i, c in zip(inc, cand, strict=True)])[0]


def describe(pairs: list[tuple[list[float], list[float]]]) -> str:
    if not pairs:
        return "-"
    offsets = sorted(abs(offset(p)) for p in pairs)
    p95 = offsets[min(len(offsets) - 1, int(0.95 * len(offsets)))]
    over = sum(o > 5.0 for o in offsets)
    return (f"n {len(offsets):3d}  median |o| {median(offsets):4.1f}%  p95 {p95:5.1f}%  "
            f"max {offsets[-1]:5.1f}%  >5%: {over / len(offsets):4.0%}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=30, help="no-op candidates per run")
    parser.add_argument("--rounds", default="5,12", help="benchmark rounds, comma-separated")
    parser.add_argument("--base", type=int, default=100_000, help="work per round")
    parser.add_argument("--modes", default="tests,rounds")
    parser.add_argument("--save", type=Path, help="write every pair's samples here (JSON)")
    args = parser.parse_args()
    saved: dict[str, list[tuple[list[float], list[float]]]] = {}
    rows = []
    for busy in (False, True):
        with load(busy):
            for rounds in (int(r) for r in args.rounds.split(",")):
                for mode in args.modes.split(","):
                    pairs = run(args.candidates, rounds, args.base, mode)
                    key = f"{'loaded' if busy else 'quiet'} {rounds} rounds, turns by {mode}"
                    saved[key] = pairs
                    rows.append((key, describe(pairs)))
                    print(f"{key:40s} {rows[-1][1]}", flush=True)
    if args.save:
        args.save.write_text(json.dumps(saved))
    return 0


if __name__ == "__main__":
    sys.exit(main())
