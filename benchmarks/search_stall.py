"""The built-in search next to the optimum: a three-knob discrete quadratic with a constraint.

Two ints 0-20 and a choice of three; the cost is a quadratic bowl (0 at the optimum) plus a
per-choice offset, and a "test" forbids one value next to the optimum (the candidate fails,
as a failing regular test makes it). From 20 seeded starting points, the search runs through
``drive`` of ``tests/offline_search.py`` (the real hook, two candidates per round), once
uninterrupted and once interrupted after the third candidate and resumed from the history as
it comes back from JSON. It reports, for each, how many starts reach the optimum within 40
evaluations and the evaluations each needed.

    python benchmarks/search_stall.py [--starts 20] [--budget 40]

Measured (defaults): the optimum within 40 evaluations in 20/20 starts uninterrupted and
20/20 interrupted and resumed, the same evaluations per start in both (median 21, max 35).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from offline_search import drive

from pytest_autopilot.config import ChoiceDimension, Dimension, IntDimension

SPACE: dict[str, Dimension] = {
    "x": IntDimension(0, 20),
    "y": IntDimension(0, 20),
    "mode": ChoiceDimension(("a", "b", "c")),
}
OPTIMUM = {"x": 13, "y": 6, "mode": "b"}
FORBIDDEN_X = 12
OFFSET = {"a": 3.0, "b": 0.0, "c": 7.0}


def cost(params: dict[str, Any]) -> float | None:
    if params["x"] == FORBIDDEN_X:
        return None
    return float(
        (params["x"] - OPTIMUM["x"]) ** 2
        + (params["y"] - OPTIMUM["y"]) ** 2
        + OFFSET[params["mode"]]
    )


def needed(start: dict[str, Any], seed: int, budget: int, interrupt: int | None) -> int | None:
    trials = drive(
        SPACE,
        start,
        cost,
        evaluations=budget,
        candidates=2,
        seed=seed,
        min_effect=0.0,
        interrupt_after=interrupt,
    )
    return next((n for n, t in enumerate(trials) if t.value == 0), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--budget", type=int, default=40)
    args = parser.parse_args()
    rng = random.Random(2024)
    starts: list[dict[str, Any]] = []
    while len(starts) < args.starts:
        start = {"x": rng.randint(0, 20), "y": rng.randint(0, 20), "mode": rng.choice("abc")}
        if cost(start) not in (None, 0):
            starts.append(start)
    for label, interrupt in (("uninterrupted", None), ("interrupted after 3, resumed", 3)):
        found = [needed(s, seed, args.budget, interrupt) for seed, s in enumerate(starts)]
        reached = [n for n in found if n is not None]
        print(
            f"{label:>30}: optimum within {args.budget} evaluations in "
            f"{len(reached)}/{len(starts)} starts; evaluations needed: median "
            f"{statistics.median(reached) if reached else '-'}, max {max(reached, default='-')}"
        )
        print(f"{'':>30}  per start: {['-' if n is None else n for n in found]}")


if __name__ == "__main__":
    main()
