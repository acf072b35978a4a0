"""The race (:mod:`pytest_autopilot.racing`) on seeded simulations of lockstep sessions.

No pytest session is started: each measurement is two simulated sessions whose benchmark
rounds alternate (incumbent round 1, candidate round 1, incumbent round 2, ...), as
:mod:`pytest_autopilot.lockstep` runs them. What the simulated machine does to a round:

- a *drift* (load, CPU frequency, heat): an AR(1) process advanced at every round of every
  session, so adjacent rounds of the two sessions share most of it, and it carries over from
  one measurement to the next (sessions run minutes apart see different levels);
- a per-session *offset* (process layout, address-space randomization), invisible from inside
  a session, and a slow per-session AR(1) *wander* that pairing does not cancel;
- Gaussian jitter, and heavy-tailed outliers (a GC pause, a context switch: ``x * (1 + E)``
  with ``E`` exponential).

Each run is what the loop does with one candidate per round: the incumbent re-measured beside
the round's candidate (so the incumbent's consecutive sessions are free null pairs), more
side-by-side pairs while the race says "more". Printed per noise level and benchmark length:

- A/A: no-op candidates kept (target <= 1% per candidate), and the share of runs of 100
  no-ops that keep any (target <= 5%); "A/A@5%": no-ops kept at a 5% level per candidate and
  no ``min_effect``, a sharp check that the intervals are honest (must stay <= 5%);
- power: the share of 2x, 25%, 10% and 5% wins kept (targets 100%, >= 99%, >= 90%, >= 50%
  quiet; 10% >= 80% loaded);
- cost: mean measurements per candidate (a measurement is two sessions: with one candidate
  per round, ``2 * m`` child sessions per candidate).

``--pairs FILE`` replays *real* noise instead: the pairs of sessions of identical code that
``lockstep_noise.py --save FILE`` measured through the real loop, drawn at random (either way
round) for every measurement, the candidate's samples scaled by the win. Per condition of the
file (quiet or loaded, benchmark length, how turns were taken) it prints the same columns.

Usage: ``python benchmarks/racing_simulation.py [--quick] [--seed N] [--pairs FILE]``
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from pytest_autopilot import racing
from pytest_autopilot.results import Metric


@dataclass(frozen=True)
class Noise:
    jitter: float
    offset: float
    drift: float
    wander: float
    outliers: float
    ar: float = 0.9
    wander_ar: float = 0.8


QUIET = Noise(jitter=0.02, offset=0.01, drift=0.03, wander=0.005, outliers=0.03)
LOADED = Noise(jitter=0.06, offset=0.02, drift=0.15, wander=0.015, outliers=0.08)


class Machine:
    """A simulated machine whose drift carries over from one pair of sessions to the next."""

    def __init__(self, rng: random.Random, noise: Noise) -> None:
        self.rng = rng
        self.noise = noise
        self.level = rng.gauss(0.0, noise.drift)

    def sessions(self, factors: list[float], rounds: int) -> list[Metric]:
        rng, n = self.rng, self.noise
        offsets = [rng.gauss(0.0, n.offset) for _ in factors]
        wander = [rng.gauss(0.0, n.wander) for _ in factors]
        samples: list[list[float]] = [[] for _ in factors]
        step = math.sqrt(1.0 - n.ar * n.ar)
        wstep = math.sqrt(1.0 - n.wander_ar * n.wander_ar)
        for _ in range(rounds):
            for i, factor in enumerate(factors):
                self.level = n.ar * self.level + step * rng.gauss(0.0, n.drift)
                wander[i] = n.wander_ar * wander[i] + wstep * rng.gauss(0.0, n.wander)
                noise = offsets[i] + self.level + wander[i] + rng.gauss(0.0, n.jitter)
                x = 0.01 * factor * math.exp(noise)
                if rng.random() < n.outliers:
                    x *= 1.0 + rng.expovariate(1.0)
                samples[i].append(x)
        return [Metric("t", median(s), samples=s) for s in samples]


def race_run(
    baseline: list[float],
    measure: Callable[[], racing.Pair],
    candidates: int,
    calibration: bool = False,
) -> list[racing.Decision]:
    """One loop of ``candidates`` rounds, one candidate each, against an unchanged incumbent:
    ``measure`` gives each paired measurement, ``baseline`` the run's first session.

    ``calibration``: no ``min_effect`` and a 5% level per candidate, so that the rate at which
    no-ops are kept checks the intervals themselves (it must stay <= 5%).
    """
    if calibration:
        racer = racing.Racer("min", 0.0, racing.RacePlan(0.05, 1))
    else:
        racer = racing.Racer("min", 0.02, racing.RacePlan(0.05, candidates))
    racer.prime(baseline)
    decisions = []
    for _ in range(candidates):
        pairs: list[racing.Pair] = []
        while True:
            pairs.append(measure())
            decision = racer.decide(pairs)
            if decision.verdict != "more":
                racer.finished(pairs)
                decisions.append(decision)
                break
    return decisions


def loop_run(
    rng: random.Random,
    noise: Noise,
    factor: float,
    rounds: int,
    candidates: int,
    calibration: bool = False,
) -> list[racing.Decision]:
    """:func:`race_run` on a simulated machine whose drift carries over between pairs."""
    machine = Machine(rng, noise)
    (first,) = machine.sessions([1.0], rounds)

    def measure() -> racing.Pair:
        observed = racing.pair(*machine.sessions([1.0, factor], rounds))
        assert observed is not None
        return observed

    return race_run(first.samples, measure, candidates, calibration)


WINS = {"2x": 0.5, "25%": 0.8, "10%": 1 / 1.1, "5%": 1 / 1.05}

Sessions = tuple[list[float], list[float]]


def replay_run(
    rng: random.Random,
    pool: list[Sessions],
    factor: float,
    candidates: int,
    calibration: bool = False,
) -> list[racing.Decision]:
    """:func:`race_run` on real pairs: each measurement is a pair drawn from ``pool`` (either
    way round), the candidate's samples scaled by ``factor``."""
    baseline = rng.choice(pool)[0]

    def measure() -> racing.Pair:
        inc, cand = rng.choice(pool)
        if rng.random() < 0.5:
            inc, cand = cand, inc
        observed = racing.pair(
            Metric("t", median(inc), samples=inc),
            Metric("t", median(cand) * factor, samples=[x * factor for x in cand]),
        )
        assert observed is not None
        return observed

    return race_run(baseline, measure, candidates, calibration)


Run = Callable[[float, int, bool], list[racing.Decision]]
"""``(factor, candidates, calibration) -> decisions`` of one loop."""


def figures(run: Run, null_runs: int, win_runs: int) -> list[str]:
    """A row: no-ops kept, runs that kept any, the calibration rate, power per win size and
    measurements per candidate."""
    kept, total, any_kept, measurements = 0, 0, 0, 0
    for _ in range(null_runs):
        decisions = run(1.0, 100, False)
        hits = sum(d.verdict == "keep" for d in decisions)
        kept += hits
        any_kept += hits > 0
        total += len(decisions)
        measurements += sum(d.measurements for d in decisions)
    row = [f"{kept}/{total}", f"{any_kept}/{null_runs}"]
    calibrated = [d for _ in range(win_runs) for d in run(1.0, 40, True)]
    row.append(f"{100 * sum(d.verdict == 'keep' for d in calibrated) / len(calibrated):.1f}%")
    for factor in WINS.values():
        decisions = [d for _ in range(win_runs) for d in run(factor, 40, False)]
        row.append(f"{100 * sum(d.verdict == 'keep' for d in decisions) / len(decisions):.0f}%")
        measurements += sum(d.measurements for d in decisions)
        total += len(decisions)
    row.append(f"{measurements / total:.2f}")
    return row


def replay_cell(pool: list[Sessions], seed: int, null_runs: int, win_runs: int) -> list[str]:
    rng = random.Random(seed)
    return figures(lambda f, n, c: replay_run(rng, pool, f, n, c), null_runs, win_runs)


def cell(noise: Noise, rounds: int, seed: int, null_runs: int, win_runs: int) -> list[str]:
    rng = random.Random(seed)
    return figures(lambda f, n, c: loop_run(rng, noise, f, rounds, n, c), null_runs, win_runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs per cell")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pairs", type=Path, help="replay the real pairs in this file")
    args = parser.parse_args()
    null_runs, win_runs = (4, 2) if args.quick else (40, 10)
    header = ["noise", "rounds", "A/A kept", "runs any", "A/A@5%", *WINS, "meas/cand"]
    widths = [7, 7, 11, 9, 8, 6, 6, 6, 6, 10]
    started = time.perf_counter()
    if args.pairs is not None:
        columns = list(zip(header[2:], widths[2:], strict=True))
        print(f"{'real pairs':44}" + "".join(h.rjust(w) for h, w in columns))
        for condition, pool in json.loads(args.pairs.read_text()).items():
            if pool:
                row = replay_cell([tuple(p) for p in pool], args.seed, null_runs, win_runs)
                cells = zip(row, widths[2:], strict=True)
                print(f"{condition:44}" + "".join(c.rjust(w) for c, w in cells))
        print(f"({null_runs} runs of 100 no-ops, {win_runs} runs of 40 per win size, per "
              f"condition, seed {args.seed}; {time.perf_counter() - started:.0f} s)")  # fmt: skip
        return
    print("".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for name, noise in (("quiet", QUIET), ("loaded", LOADED)):
        for rounds in (5, 12, 50):
            row = [name, str(rounds), *cell(noise, rounds, args.seed, null_runs, win_runs)]
            print("".join(c.rjust(w) for c, w in zip(row, widths, strict=True)), flush=True)
    print(
        f"({null_runs} runs of 100 no-ops, {win_runs} runs of 40 calibration no-ops and of 40 "
        "wins per size, per cell, "
        f"seed {args.seed}; {time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
