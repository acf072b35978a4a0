"""How often do relative gates and the acceptance rule act on noise, with real timings?

Runs a small pytest-benchmark suite in separate pytest sessions (each saved with
``--autopilot-save``, exactly what a baseline holds): ``--runs`` sessions of code A and as
many of code B, which does 10% more work. A and B sessions alternate so that a slow drift
of the machine hits both alike. Then, for every benchmark:

- A/A pairs (identical code, two sessions): how often the 95% interval excludes "no change",
  how often a ``max_regression: 0.05`` gate fails, and how often the acceptance rule
  (``min_effect: 0.02``) would accept the second run as an improvement;
- A/B pairs: how often the gate catches the 10% regression and the acceptance rule accepts
  the 10% speed-up (A measured after B).

Each figure is given without a run-to-run noise floor (samples only) and with the default.

    .venv/bin/python benchmarks/gate_noise.py --runs 8
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_autopilot import stats
from pytest_autopilot.results import SessionResult

SUITE = """
import os

SCALE = float(os.environ["GATE_NOISE_SCALE"])
LOOP = int(3000 * SCALE)
BIG = int(60000 * SCALE)
DATA = list(range(int(5000 * SCALE), 0, -1))


def loop(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


def test_loop_100us(benchmark):
    benchmark(loop, LOOP)


def test_sort_20us(benchmark):
    benchmark(sorted, DATA)


def test_pedantic_3ms(benchmark):
    benchmark.pedantic(loop, args=(BIG,), rounds=30, warmup_rounds=2, iterations=1)
"""


def run_session(suite: Path, out: Path, scale: float) -> SessionResult:
    env = {**os.environ, "GATE_NOISE_SCALE": str(scale)}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--autopilot-save",
        str(out),
        str(suite),
    ]
    subprocess.run(cmd, check=True, env=env, capture_output=True, cwd=suite.parent)
    return SessionResult.from_json(json.loads(out.read_text()), source=str(out))


def rates(pairs: list[tuple[list[float], list[float]]], run_noise: float) -> dict[str, float]:
    excluded = regressions = accepted = 0
    for base, cand in pairs:
        cmp = stats.compare(base, cand, 0.95, run_noise=run_noise)
        excluded += not cmp.low <= 1.0 <= cmp.high
        regressions += stats.is_regression(cmp, "min", 0.05)
        accepted += stats.is_improvement(cmp, "min", 0.02)
    n = len(pairs)
    return {"ci_excludes_1": excluded / n, "gate_fails": regressions / n, "accepted": accepted / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="sessions per side (default 8)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "test_noise.py"
        suite.write_text(SUITE)
        a_runs: list[SessionResult] = []
        b_runs: list[SessionResult] = []
        for i in range(args.runs):
            a_runs.append(run_session(suite, Path(tmp) / f"a{i}.json", 1.0))
            b_runs.append(run_session(suite, Path(tmp) / f"b{i}.json", 1.1))
    elapsed = time.perf_counter() - started

    figures: dict[str, dict[str, object]] = {}
    names = sorted(name for name, m in a_runs[0].metrics.items() if m.samples)
    for name in names:
        a = [r.metrics[name].samples or [] for r in a_runs]
        b = [r.metrics[name].samples or [] for r in b_runs]
        aa = list(itertools.permutations(a, 2))
        slower = [(x, y) for x in a for y in b]
        faster = [(y, x) for x in a for y in b]
        entry: dict[str, object] = {
            "samples_per_run": sorted(len(s) for s in a)[len(a) // 2],
            "run_noise_estimate": stats.estimate_run_noise(a),
        }
        for label, noise in (("samples_only", 0.0), ("default_floor", stats.DEFAULT_RUN_NOISE)):
            entry[label] = {
                "aa": rates(aa, noise),
                "ab_gate_catches_10pct": rates(slower, noise)["gate_fails"],
                "ba_accepts_10pct_speedup": rates(faster, noise)["accepted"],
            }
        figures[name] = entry

    print(
        f"{2 * args.runs} sessions in {elapsed:.0f} s; 95% intervals, gate max_regression "
        f"0.05, acceptance min_effect 0.02; default floor {stats.DEFAULT_RUN_NOISE:.0%}"
    )
    header = (
        f"{'benchmark':<44} {'n':>6} {'noise':>6} {'floor':>6} {'AA CI':>6} "
        f"{'AA gate':>7} {'AA acc':>6} {'AB gate':>7} {'BA acc':>6}"
    )
    print(header)
    for name, entry in figures.items():
        for label in ("samples_only", "default_floor"):
            row = entry[label]
            assert isinstance(row, dict)
            aa = row["aa"]
            noise = entry["run_noise_estimate"]
            print(
                f"{name[-44:]:<44} {entry['samples_per_run']:>6} "
                f"{(noise or 0):>6.1%} {'none' if label == 'samples_only' else 'dflt':>6} "
                f"{aa['ci_excludes_1']:>6.1%} {aa['gate_fails']:>7.1%} {aa['accepted']:>6.1%} "
                f"{row['ab_gate_catches_10pct']:>7.1%} {row['ba_accepts_10pct_speedup']:>6.1%}"
            )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
