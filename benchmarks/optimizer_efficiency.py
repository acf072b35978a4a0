"""The built-in search versus random search and Optuna's TPE on the real SPDL loader.

The space is the one ``example_suites/spdl_pipeline/autopilot.yaml`` declares, the start point
its default ``loader.yaml``, and the objective the loader's real steady-state step time,
measured in this process as the suite measures it: the pipeline of ``loader.py`` on the
suite's generated data, the median over ``--rounds`` rounds (after ``--warmup`` untimed ones)
of the mean time per batch in rounds of ``--batches-per-round`` batches.

Every configuration is measured once and cached, and every method and seed reads the same
cache: all methods see the same numbers (noise included), and a point two methods visit
costs one measurement. Each run starts from the default, which counts as evaluation 0, and
gets ``--budget`` evaluations after it. The built-in search runs through
``drive`` of ``tests/offline_search.py`` (the real ``pytest_autopilot_propose`` hook,
two candidates per round) and gets the suite's bottleneck note of its incumbent as feedback,
as it does in the loop. Random search draws uniformly (log-uniformly for ``log: true``
dimensions). TPE is ``optuna.samplers.TPESampler(seed=...)`` with the default enqueued first;
``optuna`` is the plugin's ``optimizer: optuna`` (TPE through ask/tell, two per round). The
search also gets each stage's busy time per batch (SPDL's statistics), as the suite records
them, for its per-stage concurrency model.

Reported, per method over the seeds, in three tables. The first counts what each method
*read*: evaluations until one single reading was within 10% of the best known step time, and
its best reading so far as a ratio of the machine's lower bound (the suite's CPU work per
batch over the cores). Single readings of one configuration range over 42-90 ms here, so
that table rewards lucky readings. The second counts what each method would hand the user:
after each evaluation, its choice (its best reading so far; Optuna's ``best_trial``) is
measured ``--remeasure-times`` more times, in turns with every other choice, and the median
of those readings (not the first, which picked it and is biased low) is its step time. The
best known step time is the smallest such median; its finalists are read again, fresh, as a
check. The cache gathers re-measurements over several runs, and this machine drifts by more
than the methods differ (the bound read 39.0, 41.1 and 49.3 ms in three runs within an hour;
the finalists' fresh medians came out 5-46% above their cached ones), so the third table is
the one to trust for "ahead at n evaluations": for every seed, the search's choice after 5
and 10 evaluations and the other method's are measured alternately (a b b a ..., ``--paired``
readings each) and compared as a ratio of medians.

    python benchmarks/optimizer_efficiency.py [--seeds 5] [--budget 30] [--cache FILE] [--busy]

Measured (``--seeds 10 --budget 30 --methods search random tpe``, 2 cores, quiet, 13 min
on a warm cache; best known 52.4 ms, target 57.7 ms, bound 41.1 ms). Paired, the search's
choice over TPE's: after 5 evaluations median 0.98 (geometric mean 0.94), the search's faster
on 5 of 10 seeds; after 10, 0.97 (0.95), 6 of 10. Over random: 1.01 (0.92), 4 of 10; 1.04
(0.99), 4 of 10. By re-measured choices no method is within 10% of the best in 30
evaluations on more than 1 of 10 seeds; after 5/10/20/30 the choice over the bound is search
1.89/1.74/1.64/1.67, random 2.05/1.72/1.73/1.67, TPE 1.89/1.74/1.68/1.67. The target (within
10% of the best in at most half of TPE's evaluations, ahead at 5 and 10) is not met: the
search is ahead of TPE by 3-5% at 5 and 10 evaluations, on half the seeds, which a sign test
cannot tell from chance; within 10% of the best is inside one configuration's spread.

With ``--busy`` (one busy Python process beside every measurement; the bound measured before
it starts; its own cache) and ``--seeds 5 --budget 20 --methods search random tpe`` (26 min):
best known 80.5 ms, bound 45.5 ms. Paired over TPE: after 5 evaluations median 1.00
(geometric mean 0.93), faster on 2 of 5 seeds; after 10, 0.91 (0.90), 3 of 5. Over random:
0.96 (0.99), 3 of 5; 0.91 (0.94), 4 of 5. Re-measured choice over the bound after 5/10/20:
search 2.57/2.12/2.07, random 2.04/2.04/2.10, TPE 2.32/2.32/2.08.

Needs the ``[spdl]`` and ``[optuna]`` extras. Takes about 10 minutes per seed on a cold
cache, nearly all of it measuring configurations (``--cache FILE`` keeps first readings and
re-measurements for the next run on the same machine; the paired readings are always fresh,
2-3 seconds each).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "example_suites" / "spdl_pipeline"
sys.path[:0] = [str(SUITE), str(SUITE / "tests")]
sys.path.append(str(ROOT / "tests"))

import loader  # noqa: E402
import synthetic  # noqa: E402
from decisions import load as background_load  # noqa: E402
from offline_search import drive  # noqa: E402
from test_loader import cpu_per_batch, usable_cores  # noqa: E402

from pytest_autopilot.config import (  # noqa: E402
    ChoiceDimension,
    Dimension,
    FloatDimension,
    IntDimension,
    parse_config,
)
from pytest_autopilot.spdl import (  # noqa: E402
    PipelineStats,
    benchmark_pipeline,
    describe_bottleneck,
    stage_metric_names,
)

Params = dict[str, Any]
WITHIN = 0.10


def suite_space() -> tuple[dict[str, Dimension], Params]:
    """The typed space of ``loader.yaml`` in the suite's config, and its default point."""
    path = SUITE / "autopilot.yaml"
    config = parse_config(yaml.safe_load(path.read_text()), path, SUITE)
    spec = next(p for p in config.parameters if p.path == "loader.yaml")
    defaults = yaml.safe_load((SUITE / "loader.yaml").read_text())
    start = {}
    for dotted in spec.space:
        node: Any = defaults
        for part in dotted.split("."):
            node = node[part]
        start[dotted] = node
    return dict(spec.space), start


def loader_config(params: Mapping[str, Any]) -> loader.LoaderConfig:
    return loader.LoaderConfig(
        num_threads=int(params["num_threads"]),
        sink_buffer=int(params["sink_buffer"]),
        fetch_mode=str(params["fetch.mode"]),
        fetch_concurrency=int(params["fetch.concurrency"]),
        decode_mode=str(params["decode.mode"]),
        decode_concurrency=int(params["decode.concurrency"]),
        decode_executor=str(params["decode.executor"]),
        transform_concurrency=int(params["transform.concurrency"]),
    )


def key_of(params: Mapping[str, Any]) -> str:
    return json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True)


class _Pedantic:
    """pytest-benchmark's ``pedantic`` outside pytest: time each round, keep the samples."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def pedantic(
        self, target: Callable[[], Any], *, rounds: int, warmup_rounds: int, iterations: int
    ) -> Any:
        for _ in range(warmup_rounds * iterations):
            target()
        for _ in range(rounds):
            began = time.perf_counter()
            for _ in range(iterations):
                target()
            self.samples.append((time.perf_counter() - began) / iterations)


class Evaluator:
    """Measures configurations of the real loader, each once, for every method to share."""

    def __init__(self, rounds: int, warmup: int, per_round: int, cache: Path | None) -> None:
        text = (SUITE / "dataset.yaml").read_text()
        self.spec = synthetic.Spec.from_yaml(yaml.safe_load(text))
        self.rounds = rounds
        self.warmup = warmup
        self.per_round = per_round
        self.cache_path = cache
        self.cache: dict[str, dict[str, Any]] = {}
        if cache is not None and cache.is_file():
            self.cache = json.loads(cache.read_text())
        fields = dataclasses.asdict(self.spec) | {"version": synthetic.VERSION}
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
        base = os.environ.get("AUTOPILOT_SPDL_DATA") or str(
            Path(tempfile.gettempdir()) / "pytest-autopilot-spdl"
        )
        self.data = Path(base) / digest
        if not (self.data / "DONE").is_file():
            print(f"generating {self.spec.num_samples} samples in {self.data}", flush=True)
            synthetic.write_dataset(self.spec, self.data)
            (self.data / "DONE").write_text(json.dumps(fields) + "\n")
        self.measured = 0

    def lower_bound(self) -> float:
        return sum(cpu_per_batch(self.spec, self.data).values()) / usable_cores()

    def _measure(self, params: Params) -> dict[str, Any]:
        spec = self.spec
        storage = loader.Storage(self.data, spec.latency)
        shape = loader.Shape(spec.height, spec.width, spec.channels, spec.crop)
        stats = PipelineStats()
        bench = _Pedantic()
        with loader.running_loader(
            loader_config(params),
            storage,
            shape,
            num_samples=spec.num_samples,
            batch_size=spec.batch_size,
            seed=spec.seed,
            epochs=None,
            **stats.build_options(),
        ) as pipeline:
            state = benchmark_pipeline(
                bench,
                pipeline,
                rounds=self.rounds,
                warmup_rounds=self.warmup,
                batches_per_round=self.per_round,
                stats=stats,
                timeout=60,
            )
        names = stage_metric_names(state.stages)
        busy = {
            f"spdl.stage.{names[stage.stage_id]}.busy_time": stage.busy_per_batch
            for stage in state.stages
            if stage.busy_per_batch is not None
        }
        return {
            "value": statistics.median(bench.samples),
            "note": describe_bottleneck(state),
            "stages": busy,
        }

    def entry(self, params: Params) -> dict[str, Any]:
        key = key_of(params)
        if key not in self.cache:
            self.cache[key] = self._measure(params)
            self.measured += 1
            if self.cache_path is not None:
                self.cache_path.write_text(json.dumps(self.cache, indent=1) + "\n")
            print(
                f"  measured #{self.measured}: {self.cache[key]['value'] * 1e3:7.1f} ms  {key}",
                flush=True,
            )
        return self.cache[key]

    def value(self, params: Params) -> float:
        return float(self.entry(params)["value"])

    def remeasure(self, keys: list[str], times: int, field: str = "again") -> None:
        """Measure each configuration until it has ``times`` readings under ``field`` (beside
        its first), in turns (one reading of each, then the next), so a drift of the machine
        touches all alike."""
        for turn in range(times):
            pending = [k for k in keys if len(self.cache[k].get(field, [])) <= turn]
            for number, key in enumerate(pending, start=1):
                reading = self._measure(json.loads(key))["value"]
                self.cache[key].setdefault(field, []).append(reading)
                if self.cache_path is not None:
                    self.cache_path.write_text(json.dumps(self.cache, indent=1) + "\n")
                print(f"  {field} turn {turn + 1}/{times}, {number}/{len(pending)}", flush=True)

    def truth(self, key: str, times: int) -> float:
        """A configuration's step time: the median of its ``times`` readings after the first.
        Every method picks its choice by first readings, so the first reading of a choice is
        biased low (it was picked for being low) and is left out."""
        return float(statistics.median(self.cache[key]["again"][:times]))

    def pair(self, a: str, b: str, times: int) -> float:
        """``a``'s step time over ``b``'s, from ``times`` readings of each taken alternately
        (a b b a a b ...): a drift of the machine between runs, or within one, touches both
        alike, where readings cached at different times differ by more than the methods do."""
        readings: dict[str, list[float]] = {a: [], b: []}
        order = [a, b, b, a] * ((times + 1) // 2)
        for key in order[: 2 * times]:
            readings[key].append(self._measure(json.loads(key))["value"])
        return statistics.median(readings[a]) / statistics.median(readings[b])

    def confirm(self, keys: list[str], times: int) -> dict[str, float]:
        """The median of ``times`` fresh readings of each configuration (in turns), kept
        apart from its other readings. The best known step time is the lowest of many
        medians, biased low by being picked (the winner's curse); readings of the finalists
        taken again, in one pass, say by how much, together with any drift of the machine
        since the re-measurements (which the cache mixes from several runs)."""
        self.remeasure(keys, times, "confirm")
        return {k: float(statistics.median(self.cache[k]["confirm"][:times])) for k in keys}


# --------------------------------------------------------------------------------------------
# The methods. Each returns every evaluation in order, the start first: the point and its
# (single) measured step time.

Evaluations = list[tuple[Params, float]]


def run_search(
    space: dict[str, Dimension], start: Params, ev: Evaluator, budget: int, seed: int
) -> Evaluations:
    def measured(params: Params) -> dict[str, float]:
        entry = ev.entry(params)
        return {"objective": float(entry["value"]), **entry.get("stages", {})}

    trials = drive(
        space,
        start,
        measured,
        evaluations=budget,
        candidates=2,
        seed=seed,
        notes=lambda params: [ev.entry(params)["note"]],
    )
    return [(t.params, t.value) for t in trials if t.value is not None]


def run_optuna_plugin(
    space: dict[str, Dimension], start: Params, ev: Evaluator, budget: int, seed: int
) -> Evaluations:
    """``optimizer: optuna`` (TPE) through the plugin's own hook, two candidates per round."""
    with tempfile.TemporaryDirectory() as rootdir:
        trials = drive(
            space,
            start,
            ev.value,
            evaluations=budget,
            candidates=2,
            seed=seed,
            optimizer="optuna",
            rootdir=Path(rootdir),
        )
    return [(t.params, t.value) for t in trials if t.value is not None]


def random_point(space: Mapping[str, Dimension], rng: random.Random) -> Params:
    point: Params = {}
    for name, dim in space.items():
        if isinstance(dim, ChoiceDimension):
            point[name] = rng.choice(dim.choices)
        elif isinstance(dim, IntDimension):
            if dim.log:
                u = rng.uniform(math.log(dim.low), math.log(dim.high + 1))
                point[name] = min(dim.high, int(math.exp(u)))
            else:
                point[name] = rng.randint(dim.low, dim.high)
        elif isinstance(dim, FloatDimension):
            if dim.log:
                point[name] = math.exp(rng.uniform(math.log(dim.low), math.log(dim.high)))
            else:
                point[name] = rng.uniform(dim.low, dim.high)
    return point


def run_random(
    space: dict[str, Dimension], start: Params, ev: Evaluator, budget: int, seed: int
) -> Evaluations:
    rng = random.Random(seed)
    points = [dict(start)] + [random_point(space, rng) for _ in range(budget)]
    return [(point, ev.value(point)) for point in points]


def run_tpe(
    space: dict[str, Dimension], start: Params, ev: Evaluator, budget: int, seed: int
) -> Evaluations:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(dict(start))

    def objective(trial: Any) -> float:
        params: Params = {}
        for name, dim in space.items():
            if isinstance(dim, ChoiceDimension):
                params[name] = trial.suggest_categorical(name, list(dim.choices))
            elif isinstance(dim, IntDimension):
                params[name] = trial.suggest_int(name, dim.low, dim.high, log=dim.log)
            else:
                params[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
        return ev.value(params)

    study.optimize(objective, n_trials=budget + 1)
    return [(dict(t.params), float(t.value)) for t in study.trials if t.value is not None]


METHODS: dict[str, Callable[..., Evaluations]] = {
    "search": run_search,
    "random": run_random,
    "tpe": run_tpe,
    "optuna": run_optuna_plugin,
}


def chosen_keys(run: Evaluations) -> list[str]:
    """After each evaluation, the configuration the method would hand the user: its best
    reading so far (``study.best_trial`` for Optuna)."""
    keys: list[str] = []
    best = math.inf
    for params, value in run:
        if value < best or not keys:
            best, key = value, key_of(params)
        keys.append(key)
    return keys


def after(values: list[float], n: int, running_min: bool) -> float:
    """The value after ``n`` evaluations: the best so far, or the ``n``-th itself."""
    return min(values[: n + 1]) if running_min else values[min(n, len(values) - 1)]


def evaluations_to_reach(values: list[float], target: float) -> int | None:
    """Evaluations after the start until one is within the target (``None``: never)."""
    for index, value in enumerate(values):
        if value <= target:
            return index
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=30, help="evaluations after the start")
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds per evaluation")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds per evaluation")
    parser.add_argument("--batches-per-round", type=int, default=4)
    parser.add_argument("--cache", type=Path, help="JSON file of measured configurations")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument(
        "--remeasure-top", type=int, default=8, help="best configurations measured again"
    )
    parser.add_argument("--remeasure-times", type=int, default=4, help="times each")
    parser.add_argument(
        "--paired",
        type=int,
        default=3,
        metavar="TIMES",
        help="readings of each side when the search's choice is measured alternately with "
        "each other method's after 5 and 10 evaluations (0: no paired table)",
    )
    parser.add_argument(
        "--busy",
        action="store_true",
        help="measure beside one busy process (readings cached in <cache>.busy.json)",
    )
    args = parser.parse_args(argv)

    cache = args.cache
    if args.busy and cache is not None:
        cache = cache.with_suffix(".busy.json")
    ev = Evaluator(args.rounds, args.warmup, args.batches_per_round, cache)
    bound = ev.lower_bound()
    with background_load(args.busy):
        return compare(args, ev, bound)


def compare(args: argparse.Namespace, ev: Evaluator, bound: float) -> int:
    """Run every method on every seed and print the three tables; ``bound`` is measured
    quiet."""
    space, start = suite_space()
    began = time.monotonic()
    print(
        f"space: {len(space)} dimensions of example_suites/spdl_pipeline/autopilot.yaml; "
        f"lower bound {bound * 1e3:.1f} ms per batch on {usable_cores()} cores (measured "
        f"quiet); {'beside one busy process' if args.busy else 'quiet'}",
        flush=True,
    )
    print(f"default: {ev.value(start) * 1e3:.1f} ms per batch", flush=True)
    runs: dict[str, list[Evaluations]] = {m: [] for m in args.methods}
    for seed in range(args.seeds):
        for method in args.methods:
            print(f"{method}, seed {seed}:", flush=True)
            runs[method].append(METHODS[method](space, start, ev, args.budget, seed))
    readings = {m: [[v for _, v in run] for run in per_seed] for m, per_seed in runs.items()}
    choices = {m: [chosen_keys(run) for run in per_seed] for m, per_seed in runs.items()}
    lucky = min(min(values) for per_seed in readings.values() for values in per_seed)
    top = sorted(ev.cache, key=lambda k: ev.cache[k]["value"])[: args.remeasure_top]
    chosen = {key for per_seed in choices.values() for keys in per_seed for key in keys}
    times = args.remeasure_times
    print(
        f"re-measuring {len(set(top) | chosen)} configurations {times} more times each: the "
        f"{len(top)} best single readings and every configuration a method chose",
        flush=True,
    )
    ev.remeasure(sorted(set(top) | chosen), times)
    finalists = sorted(set(top) | chosen, key=lambda k: ev.truth(k, times))[: args.remeasure_top]
    print(
        f"confirming the {len(finalists)} best re-measured configurations with {times} fresh "
        "readings each, as a check of the best known",
        flush=True,
    )
    confirmed = ev.confirm(finalists, times)
    best = min(ev.truth(key, times) for key in finalists)
    target = best * (1 + WITHIN)
    censored = float(args.budget + 1)

    def needed(values: list[float]) -> float:
        """Evaluations to the target; a run that never got there needed more than its budget."""
        reached = evaluations_to_reach(values, target)
        return censored if reached is None else float(reached)

    def show(count: float) -> str:
        return f">{args.budget}" if count >= censored else f"{count:g}"

    print()
    default = ev.value(start)
    print(
        f"default loader.yaml: {default * 1e3:.1f} ms per batch ({default / bound:.2f}x the "
        f"lower bound of {bound * 1e3:.1f} ms on {usable_cores()} cores)"
    )
    print(
        f"best single reading: {lucky * 1e3:.1f} ms; best known: {best * 1e3:.1f} ms, the "
        f"lowest median of {times} re-measurements ({best / bound:.2f}x the bound, "
        f"{default / best:.2f}x faster than the default); target: within {WITHIN:.0%}, "
        f"{target * 1e3:.1f} ms. The finalists, first reading -> median of {times} more -> "
        f"median of {times} fresh readings now (a check: the lowest of many medians is biased "
        "low, and readings taken at another time of the machine differ):"
    )
    for key in finalists:
        first, median = ev.cache[key]["value"], ev.truth(key, times)
        print(
            f"  {first * 1e3:6.1f} -> {median * 1e3:6.1f} -> {confirmed[key] * 1e3:6.1f} ms  {key}"
        )
    print(
        f"{args.seeds} seeds x {args.budget} evaluations after the default; "
        f"{ev.measured} configurations measured in {(time.monotonic() - began) / 60:.1f} min"
    )
    checkpoints = [n for n in (5, 10, 20) if n < args.budget] + [args.budget]
    truths = {
        m: [[ev.truth(key, times) for key in keys] for keys in per_seed]
        for m, per_seed in choices.items()
    }
    tables = (
        ("by single readings: has a method *read* a step time within the target?", readings, True),
        (
            f"by re-measured step time of each method's choice (its best reading so far, "
            f"measured {times} more times): is what it would hand the user within the target?",
            truths,
            False,
        ),
    )
    for title, series, running_min in tables:
        print()
        print(title)
        header = (
            f"{'method':8} {'evals to target, per seed':26} {'median':>7} "
            f"{'final ms':>9} {'evals vs search':>16}   best/bound after "
            + " ".join(f"{n:>5}" for n in checkpoints)
        )
        print(header)
        print("-" * len(header))
        counts = {m: [needed(v) for v in values] for m, values in series.items()}
        medians = {m: statistics.median(c) for m, c in counts.items()}
        for method, values_per_seed in series.items():
            final = statistics.median(after(v, args.budget, running_min) for v in values_per_seed)
            median = medians[method]
            versus = "-"
            reference = medians.get("search")
            if reference is not None and reference < censored:
                prefix = ">=" if median >= censored else ""
                versus = f"{prefix}{median / max(reference, 1.0):.2f}x"
            progress = [
                statistics.median(after(v, n, running_min) for v in values_per_seed) / bound
                for n in checkpoints
            ]
            print(
                f"{method:8} {' '.join(show(c) for c in counts[method]):26} {show(median):>7} "
                f"{final * 1e3:9.1f} {versus:>16}   {'':16}"
                + " ".join(f"{p:5.2f}" for p in progress)
            )
    if args.paired and "search" in choices:
        paired_table(ev, choices, [n for n in (5, 10) if n <= args.budget], args.paired)
    print(
        f"(>{args.budget}: not within {WITHIN:.0%} of the best within the budget; "
        "'evals vs search': ratio of the medians, a lower bound when the method never got there;"
        " best/bound: median over seeds of the step time after n evaluations over the lower "
        "bound, the best reading so far in the first table and the choice's re-measured step "
        "time in the second)"
    )
    return 0


def paired_table(
    ev: Evaluator, choices: dict[str, list[list[str]]], checkpoints: list[int], times: int
) -> None:
    """Is the search ahead of each other method after n evaluations? For every seed, the
    search's choice and the other method's are measured alternately, fresh, and compared as
    a ratio of medians (below 1: the search's choice is faster). Drift-proof, unlike the
    tables above, whose re-measurements the cache gathers over several runs."""
    print()
    print(
        f"paired: the search's choice over each method's after n evaluations, {times} "
        "readings of each measured alternately per seed (below 1: the search's is faster)"
    )
    ratios: dict[tuple[str, str], float] = {}
    for method in choices:
        if method == "search":
            continue
        for n in checkpoints:
            per_seed = []
            for ours, theirs in zip(choices["search"], choices[method], strict=True):
                a, b = ours[min(n, len(ours) - 1)], theirs[min(n, len(theirs) - 1)]
                if a == b:
                    per_seed.append(1.0)
                    continue
                if (a, b) not in ratios:
                    ratios[(a, b)] = ev.pair(a, b, times)
                per_seed.append(ratios[(a, b)])
            ahead = sum(r < 1 for r in per_seed)
            geo = math.exp(statistics.fmean(math.log(r) for r in per_seed))
            print(
                f"  vs {method:7} after {n:>2}: median {statistics.median(per_seed):.3f}, "
                f"geometric mean {geo:.3f}, search faster on {ahead} of {len(per_seed)} seeds "
                f"({' '.join(f'{r:.2f}' for r in per_seed)})",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
