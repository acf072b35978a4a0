"""The built-in search against random search (and Optuna's TPE when installed) on synthetic
objectives over the SPDL example's space.

Each objective is a cheap model of a data-loading step time: a fetch stage bound by storage
latency and concurrency, a decode stage bound by cores and the GIL, a sink buffer that
stalls the pipeline when small, an executor kind and per-batch fetching, with contention
when threads outnumber cores. The true optimum is found by enumerating the whole space
(65536 points). Every method starts from the same poor default, evaluated for free, and
sees evaluations with multiplicative Gaussian noise (``--noise``); what counts is how many
evaluations it needs until it has *evaluated* a point whose true value is within 10% of the
optimum. The search runs through ``drive`` of ``tests/offline_search.py``, i.e. the
real hook with two candidates per round.

With ``--stages`` the search also gets each pipeline stage's busy time per batch
(``spdl.stage.<name>.busy_time``, with the same noise), as SPDL's statistics give it on a real
pipeline and as ``benchmarks/optimizer_efficiency.py`` feeds them; random search and TPE see
the step time only, as black-box samplers do. ``bowl`` has no stages.

    python benchmarks/search_synthetic.py [--seeds 20] [--budget 40] [--noise 0 0.05] [--stages]

About 20 seconds per seed and objective on one core; Optuna is optional (``pip install optuna``).

Measured (``--seeds 20 --budget 40``, with and without ``--stages``): median evaluations to
the target at noise 0 / 0.05, and in parentheses the search's over TPE's, which the issue
asks to be at most 0.5 (TPE's column is the ``--stages`` run's; Optuna's TPE gave 12.5
instead of 14.5 on latency-bound at noise 0.05 in the other run with the same seeds):

    objective      search with stages     search, step time only     TPE
    latency-bound  11 / 15 (0.81, 1.03)   10.5 / 11.5 (0.78, 0.92)   13.5 / 14.5
    cpu-bound      3 / 3 (0.27, 0.27)     6.5 / 6.5 (0.59, 0.59)     11 / 11
    contended      6 / 7 (0.43, 0.48)     8 / 8 (0.57, 0.57)         14 / 14.5
    bowl           19 / 18 (0.46, 0.44)   (no stages: the same)      41 / 41 (4, 5 of 20 hit)

With the stage statistics the search sees on a real SPDL pipeline, it needs at most half of
TPE's evaluations on 3 of 4 objectives (cpu-bound, contended, bowl), not on latency-bound;
best-so-far after 5 / 10 evaluations (times the optimum) is ahead of TPE's on those three
(cpu-bound 1.00/1.00 vs 1.20/1.11, contended 1.13/1.06 vs 1.20/1.19, bowl 4.07/2.50 vs
5.43/4.12) and behind on latency-bound (1.64/1.19 vs 1.34/1.12: the stage model's first move
assumes decoding scales to 8 threads, and it does not). With the step time only, it is ahead
at 5 on all four and at 10 on all but latency-bound at noise 0.05 (1.13 vs 1.12), but needs
half of TPE's evaluations on bowl only.

Five seeds are too few to tell: the same benchmark at ``--seeds 5`` once put TPE's median
on cpu-bound at 8 evaluations (11 at 20 seeds) and the search's with stages at 7 (3). On
cpu-bound the early hit is the first round's far point: with one measurement the model's
expected improvement is largest far from the poor start, and the opposite corner of this
space (many fetches in flight, decoding in processes, a deep buffer) is near the optimum.
TPE's first 10 trials are random (its startup), so it cannot go there on purpose. The share
of the space within 10% of the optimum (printed per row) is what a random draw hits:
latency-bound 5.42%, cpu-bound 9.07%, contended 6.96%, bowl 0.03%.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from offline_search import drive

from pytest_autopilot.config import ChoiceDimension, Dimension, IntDimension

SPACE: dict[str, Dimension] = {
    "fetch_concurrency": IntDimension(1, 64, log=True),
    "decode_concurrency": IntDimension(1, 8),
    "buffer_size": IntDimension(1, 32),
    "executor": ChoiceDimension(("thread", "process")),
    "batch_fetching": ChoiceDimension((False, True)),
}
START: dict[str, Any] = {
    "fetch_concurrency": 2,
    "decode_concurrency": 1,
    "buffer_size": 2,
    "executor": "thread",
    "batch_fetching": False,
}

Objective = Callable[[dict[str, Any]], float]
Stages = Callable[[dict[str, Any]], dict[str, float]]


def pipeline(
    latency: float,
    batch_latency: float,
    decode_cost: float,
    gil: float,
    ipc: float,
    contention: float,
    stall: float,
    cores: int = 2,
    items: int = 32,
) -> tuple[Objective, Stages]:
    """Step time of a fetch -> decode -> batch pipeline, with the bottleneck dominating, and
    each stage's busy time per batch."""

    def stages(p: dict[str, Any]) -> dict[str, float]:
        f, d = p["fetch_concurrency"], p["decode_concurrency"]
        per_item = batch_latency if p["batch_fetching"] else latency
        threads = f + (d if p["executor"] == "thread" else 0)
        fetch = items * per_item / f * (1 + contention * max(0, threads - 4))
        if p["executor"] == "thread":
            decode = items * decode_cost * (gil + (1 - gil) / min(d, cores))
        else:
            decode = items * (decode_cost + ipc) / min(d, cores)
        decode *= 1 + 0.05 * max(0, d - cores)
        return {"fetch": fetch, "decode": decode}

    def step(p: dict[str, Any]) -> float:
        busy = stages(p)
        slow, fast = max(busy.values()), min(busy.values())
        return float((slow + 0.15 * fast) * (1 + stall / p["buffer_size"]))

    return step, stages


def bowl(p: dict[str, Any]) -> float:
    """A smooth valley in log space with interacting knobs: not a bottleneck model."""
    lf = math.log2(p["fetch_concurrency"])
    x = (lf - 3.5) ** 2 + 0.6 * (p["decode_concurrency"] - 3) ** 2
    x += 0.02 * (p["buffer_size"] - 20) ** 2 + 0.3 * (lf - 3.5) * (p["decode_concurrency"] - 3)
    x += 0.8 if p["executor"] == "process" else 0.0
    x += 0.0 if p["batch_fetching"] else 0.5
    return float(0.01 * (1 + x))


PIPELINES: dict[str, tuple[Objective, Stages]] = {
    "latency-bound": pipeline(0.004, 0.0015, 0.0008, 0.6, 0.00015, 0.002, 1.5),
    "cpu-bound": pipeline(0.001, 0.0006, 0.003, 0.9, 0.0002, 0.004, 0.8),
    "contended": pipeline(0.003, 0.002, 0.001, 0.5, 0.0006, 0.03, 2.0),
}
OBJECTIVES: dict[str, Objective] = {name: step for name, (step, _) in PIPELINES.items()}
OBJECTIVES["bowl"] = bowl


def all_points() -> list[dict[str, Any]]:
    ranges: list[list[Any]] = []
    for dim in SPACE.values():
        if isinstance(dim, IntDimension):
            ranges.append(list(range(dim.low, dim.high + 1)))
        else:
            assert isinstance(dim, ChoiceDimension)
            ranges.append(list(dim.choices))
    return [dict(zip(SPACE, values, strict=True)) for values in itertools.product(*ranges)]


def noisy(f: Objective, noise: float, seed: int, stages: Stages | None = None) -> Objective:
    """``f`` with multiplicative noise; with ``stages`` a mapping of the noisy objective and
    each stage's noisy busy time (the search reads it, the black-box samplers get ``float``)."""
    rng = random.Random(seed)

    def measure(p: dict[str, Any]) -> Any:
        value = f(p) * math.exp(noise * rng.gauss(0, 1))
        if stages is None:
            return value
        busy = {
            f"spdl.stage.{name}.busy_time": t * math.exp(noise * rng.gauss(0, 1))
            for name, t in stages(p).items()
        }
        return {"objective": value, **busy}

    return measure


def run_search(f: Objective, budget: int, seed: int) -> list[dict[str, Any]]:
    trials = drive(SPACE, START, f, evaluations=budget - 1, candidates=2, seed=seed)
    return [t.params for t in trials]


def black_box(f: Objective) -> Objective:
    """The objective alone out of a measurement that may carry stage statistics."""

    def value(p: dict[str, Any]) -> float:
        measured = f(p)
        return float(measured["objective"]) if isinstance(measured, dict) else float(measured)

    return value


def run_random(f: Objective, budget: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    points = [dict(START)]
    for _ in range(budget - 1):
        point: dict[str, Any] = {}
        for name, dim in SPACE.items():
            if isinstance(dim, IntDimension):
                u = rng.random()
                if dim.log:
                    x = math.exp(math.log(dim.low) + u * math.log(dim.high / dim.low))
                else:
                    x = dim.low + u * (dim.high - dim.low)
                point[name] = min(dim.high, max(dim.low, round(x)))
            else:
                assert isinstance(dim, ChoiceDimension)
                point[name] = rng.choice(dim.choices)
        f(point)
        points.append(point)
    return points


def run_tpe(f: Objective, budget: int, seed: int) -> list[dict[str, Any]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(dict(START))
    points: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        point: dict[str, Any] = {}
        for name, dim in SPACE.items():
            if isinstance(dim, IntDimension):
                point[name] = trial.suggest_int(name, dim.low, dim.high, log=dim.log)
            else:
                assert isinstance(dim, ChoiceDimension)
                point[name] = trial.suggest_categorical(name, list(dim.choices))
        points.append(point)
        return f(point)

    study.optimize(objective, n_trials=budget)
    return points


def best_after(points: list[dict[str, Any]], f: Objective, n: int) -> float:
    """The true value of the best point among the first ``n`` evaluated."""
    return min(f(p) for p in points[:n])


def evaluations_to_target(points: list[dict[str, Any]], f: Objective, target: float) -> int | None:
    for index, point in enumerate(points, start=1):
        if f(point) <= target:
            return index
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.05])
    parser.add_argument(
        "--stages", action="store_true", help="give the search per-stage busy times too"
    )
    args = parser.parse_args()
    methods: dict[str, Callable[[Objective, int, int], list[dict[str, Any]]]] = {
        "search": run_search,
        "random": run_random,
    }
    try:
        import optuna  # noqa: F401

        methods["tpe"] = run_tpe
    except ImportError:
        print("(optuna is not installed: no TPE column; pip install optuna)")
    points = all_points()
    miss = args.budget + 1
    print(
        f"evaluations until a point within 10% of the true optimum is evaluated "
        f"(median over {args.seeds} seeds, start point included; >{args.budget} counts as "
        f"{miss}); [hits/seeds]; b5/b10: median best-so-far after 5 and 10 evaluations, "
        "as a multiple of the optimum"
    )
    width = 30
    header = f"{'objective':<14} {'noise':>5} " + " ".join(f"{m:>{width}}" for m in methods)
    if "tpe" in methods:
        header += f" {'search/tpe':>10}"
    print(header)
    for name, f in OBJECTIVES.items():
        values = [f(p) for p in points]
        best = min(values)
        start = f(START)
        share = sum(v <= 1.1 * best for v in values) / len(values)
        for noise in args.noise:
            medians: dict[str, float] = {}
            cells = []
            for method, run in methods.items():
                began = time.perf_counter()
                counts = []
                early: list[tuple[float, float]] = []
                for seed in range(args.seeds):
                    stages = PIPELINES[name][1] if args.stages and name in PIPELINES else None
                    measure = noisy(f, noise, 1000 + seed, stages)
                    if method != "search":
                        measure = black_box(measure)
                    tried = run(measure, args.budget, seed)
                    counts.append(evaluations_to_target(tried, f, 1.1 * best))
                    early.append((best_after(tried, f, 5) / best, best_after(tried, f, 10) / best))
                hits = sum(c is not None for c in counts)
                medians[method] = statistics.median(c or miss for c in counts)
                b5 = statistics.median(e[0] for e in early)
                b10 = statistics.median(e[1] for e in early)
                seconds = time.perf_counter() - began
                cells.append(
                    f"{medians[method]:>5g} [{hits:>2}/{args.seeds}] {b5:.2f}/{b10:.2f} "
                    f"{seconds:>3.0f}s"
                )
            line = f"{name:<14} {noise:>5g} " + " ".join(f"{c:>{width}}" for c in cells)
            if "tpe" in methods:
                line += f" {medians['search'] / medians['tpe']:>10.2f}"
            print(
                line + f"   (start {start / best:.1f}x the optimum; {share:.2%} of the space "
                "within 10%)"
            )


if __name__ == "__main__":
    main()
