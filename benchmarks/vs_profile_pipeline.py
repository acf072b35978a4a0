"""The loop's result versus the configuration ``spdl.pipeline.profile_pipeline`` points to.

The pipeline is ``example_suites/spdl_profile``: a GIL-free 10 ms stage (``load``), a GIL-free
3 ms stage (``prep``), a GIL-bound pure-Python stage (``python``, about 1 ms of CPU), batches
of 16; knobs in ``pipeline.yaml``: each stage's concurrency, the executor's thread count and
the sink buffer. The script

1. copies the suite into a scratch git repository and commits it;
2. runs ``profile_pipeline`` on the pipeline (each stage alone at concurrency 32/16/8/4/1,
   ``--profile-inputs`` items) and reads it as a user would: each stage gets the concurrency
   with its best QPS; ``num_threads`` is the largest of those (each stage was profiled with
   as many threads as its concurrency, so every stage keeps at least the threads it had);
   ``sink_buffer`` stays at the default;
3. runs ``pytest --autopilot`` with the built-in search in the repository (the suite's
   ``autopilot.yaml``, rounds and minutes capped by ``--rounds`` and ``--minutes``) and takes
   ``pipeline.yaml`` from the best commit;
4. measures both configurations alternately in this process (``--pairs`` pairs, the order
   flipped every pair: AB BA AB ...): a sample is the mean time per batch over ``--batches``
   batches after ``--warmup`` untimed ones, on a freshly built pipeline. Printed: each side's
   median, the ratio of medians (profile / loop: above 1 means the loop's result is faster)
   and a 95% bootstrap interval of the median of the per-pair ratios.

    python benchmarks/vs_profile_pipeline.py [--quick] [--busy] [--grid N] [--dir PATH]

Measured with ``--quick`` (2 cores, nothing else running; then ``--busy``): the loop's result
5 rounds in, ``num_threads=55 load=32 prep=14 python=8``, against profile_pipeline's reading,
which changes from run to run as its QPS ties are noisy (``32 threads, 32/32/1``; ``32,
16/32/16``; busy ``16, 16/8/8``): profile / loop 1.072 (per-pair 1.114, interval
1.025-1.129), 1.025 (1.051, 0.995-1.094), busy 0.941 (0.987, 0.916-1.047). Before the stage
model sized the executor, the loop stayed at 4-5 threads and lost (0.761, default sizes,
load average 6-12). The 1.10 target is
not reachable here: both sides keep 1.03-1.06 cores busy on 2 cores (CPU time per batch equals
wall time), the GIL-bound stage's pure-Python work alone is 17-27 ms of the 45-50 ms per
batch, and the best of the ``--grid 4`` configurations was 1.13x profile's weakest reading
(``32, 32/32/1``, whose GIL-bound stage has one task) and 1.05x its others (a 12-config
grid of 6 repeats, run separately: every well-threaded configuration 43-48 ms).

Needs the ``[spdl]`` extra. ``--quick`` takes about 4 minutes, the default about 11.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from decisions import load as background_load

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "example_suites" / "spdl_profile"
STAGES = ("load", "prep", "python")
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@invalid",
}


def make_repository(workdir: Path) -> Path:
    repo = workdir / "repo"
    shutil.copytree(SUITE, repo, ignore=shutil.ignore_patterns("__pycache__", ".*", "*.pyc"))
    (repo / ".gitignore").write_text(".autopilot/\n__pycache__/\n.pytest_cache/\n.benchmarks/\n")
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "suite"]):
        subprocess.run(["git", "-C", str(repo), *args], env=env, check=True, capture_output=True)
    return repo


def profile_choice(stages: Any, inputs: int) -> tuple[dict[str, Any], list[str]]:
    """Run ``profile_pipeline``; return the knobs it points to and its table as lines."""
    from spdl.pipeline import profile_pipeline

    default = stages.PipelineKnobs.load(SUITE / "pipeline.yaml")
    config = stages.builder(default, range(inputs)).get_config()
    results = profile_pipeline(config, num_inputs=inputs, callback=lambda _: None)
    knobs: dict[str, Any] = {"sink_buffer": default.sink_buffer}
    lines = []
    for result in results:
        if result.name not in STAGES:
            continue
        best = max(result.stats, key=lambda s: s.qps)
        knobs[result.name] = {"concurrency": best.concurrency}
        lines.append(
            f"  {result.name:7s} "
            + "  ".join(f"c={s.concurrency}: {s.qps:7.1f}/s" for s in result.stats)
            + f"  -> {best.concurrency}"
        )
    knobs["num_threads"] = max(knobs[name]["concurrency"] for name in STAGES)
    return knobs, lines


def run_loop(repo: Path, rounds: int, minutes: float, env: dict[str, str]) -> dict[str, Any]:
    config_path = repo / "autopilot.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["budget"].update(rounds=rounds, minutes=minutes)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    git_env = {**os.environ, **GIT_ENV}
    subprocess.run(
        ["git", "-C", str(repo), "commit", "-qam", f"budget: {rounds} rounds"],
        env=git_env,
        check=True,
    )
    result = repo.parent / "result.json"
    log = repo.parent / "pytest.log"
    command = [sys.executable, "-m", "pytest", "--autopilot", "--autopilot-json", str(result)]
    command += ["-p", "no:cacheprovider", "-q"]
    with log.open("w") as out:
        status = subprocess.run(command, cwd=repo, stdout=out, stderr=subprocess.STDOUT, env=env)
    if status.returncode not in (0, 1) or not result.is_file():
        raise SystemExit(f"pytest --autopilot exited with {status.returncode}; see {log}")
    data: dict[str, Any] = json.loads(result.read_text())
    best = data["best"]
    text = subprocess.run(
        ["git", "-C", str(repo), "show", f"{best['commit']}:pipeline.yaml"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    data["knobs"] = yaml.safe_load(text)
    return data


def time_per_batch(stages: Any, knobs: Any, warmup: int, batches: int) -> tuple[float, float]:
    """Wall time and this process's CPU time per batch."""
    import itertools

    pipeline = stages.builder(knobs, itertools.count()).build(num_threads=knobs.num_threads)
    with pipeline.auto_stop():
        iterator = pipeline.get_iterator(timeout=60.0)
        for _ in range(warmup):
            next(iterator)
        began, cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            next(iterator)
        return (
            (time.perf_counter() - began) / batches,
            (time.process_time() - cpu) / batches,
        )


def python_floor(stages: Any) -> float:
    """CPU seconds per batch of the GIL-bound stage alone, in this thread."""
    began = time.process_time()
    for key in range(4 * stages.BATCH_SIZE):
        stages.python(key)
    return (time.process_time() - began) / 4


def bootstrap_median(
    values: list[float], rng: random.Random, draws: int = 4000
) -> tuple[float, float]:
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws) - 1]


def describe(knobs: dict[str, Any]) -> str:
    return f"num_threads={knobs['num_threads']} sink_buffer={knobs['sink_buffer']} " + " ".join(
        f"{name}={knobs[name]['concurrency']}" for name in STAGES
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about 3 minutes)")
    parser.add_argument("--dir", type=Path, help="scratch directory (default: a new one)")
    parser.add_argument("--rounds", type=int, help="loop rounds (default 12, quick 8)")
    parser.add_argument("--minutes", type=float, help="loop minutes (default 6, quick 2.5)")
    parser.add_argument("--pairs", type=int, help="alternating pairs (default 20, quick 10)")
    parser.add_argument("--batches", type=int, help="timed batches per sample (default 30, 15)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches per sample")
    parser.add_argument("--profile-inputs", type=int, help="profile_pipeline's num_inputs")
    parser.add_argument(
        "--grid",
        type=int,
        default=0,
        metavar="N",
        help="also measure a grid of configurations near the plateau, N shuffled repeats",
    )
    parser.add_argument(
        "--busy",
        action="store_true",
        help="one busy process at normal priority beside the whole run (a user's machine)",
    )
    args = parser.parse_args(argv)
    with background_load(args.busy):
        return compare(args)


def compare(args: argparse.Namespace) -> int:
    """Profile, run the loop, measure both results alternately (and the grid)."""
    quick = args.quick
    rounds = args.rounds or (8 if quick else 12)
    minutes = args.minutes or (2.5 if quick else 6.0)
    pairs = args.pairs or (10 if quick else 20)
    batches = args.batches or (15 if quick else 30)
    inputs = args.profile_inputs or (256 if quick else 1000)

    workdir = args.dir or Path(tempfile.mkdtemp(prefix="vs-profile-"))
    workdir.mkdir(parents=True, exist_ok=True)
    repo = make_repository(workdir)
    sys.path.insert(0, str(repo))
    stages: Any = importlib.import_module("stages")  # the copy in the scratch repository

    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"
        + (", one busy process beside the run" if args.busy else "")
    )
    started = time.monotonic()
    profiled, table = profile_choice(stages, inputs)
    print(f"profile_pipeline (num_inputs={inputs}, {time.monotonic() - started:.0f} s), QPS:")
    print("\n".join(table))
    print(f"profile's configuration: {describe(profiled)}")

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    started = time.monotonic()
    data = run_loop(repo, rounds, minutes, env)
    looped = data["knobs"]
    evaluated = sum(len(r.get("candidates", [])) for r in data.get("rounds", []))
    print(
        f"pytest --autopilot (search, {rounds} rounds max, {minutes:g} min max): "
        f"{time.monotonic() - started:.0f} s, {len(data.get('rounds', []))} rounds, "
        f"{evaluated} candidates, stopped: {data.get('stop_reason')}; best test_step_time "
        f"{data['best']['metrics']['test_step_time']['value'] * 1e3:.1f} ms"
    )
    print(f"loop's configuration:    {describe(looped)}")

    sides = {
        "profile": stages.PipelineKnobs.from_mapping(profiled),
        "loop": stages.PipelineKnobs.from_mapping(looped),
    }
    samples: dict[str, list[float]] = {"profile": [], "loop": []}
    cpu: dict[str, list[float]] = {"profile": [], "loop": []}
    for pair in range(pairs):
        order = ("profile", "loop") if pair % 2 == 0 else ("loop", "profile")
        for side in order:
            wall, used = time_per_batch(stages, sides[side], args.warmup, batches)
            samples[side].append(wall)
            cpu[side].append(used)
    ratios = [p / q for p, q in zip(samples["profile"], samples["loop"], strict=True)]
    low, high = bootstrap_median(ratios, random.Random(0))
    med_p = statistics.median(samples["profile"])
    med_l = statistics.median(samples["loop"])
    print(
        f"alternating, {pairs} pairs x {batches} batches of {stages.BATCH_SIZE} "
        f"(load average {os.getloadavg()[0]:.1f} at the end):"
    )
    for side, med in (("profile", med_p), ("loop", med_l)):
        used = statistics.median(cpu[side])
        print(
            f"  {side + chr(39) + 's configuration:':24s} median {med * 1e3:.2f} ms per batch, "
            f"CPU {used * 1e3:.2f} ms per batch ({used / med:.2f} cores busy)"
        )
    print(
        f"  pure-Python work of the GIL-bound stage alone: {python_floor(stages) * 1e3:.2f} ms "
        "per batch; a process whose CPU time per batch matches its wall time on one core is "
        "bound by the GIL: no thread or concurrency setting makes it faster"
    )
    print(
        f"  profile / loop: ratio of medians {med_p / med_l:.3f}; median per-pair ratio "
        f"{statistics.median(ratios):.3f}, 95% bootstrap interval [{low:.3f}, {high:.3f}]"
    )
    print(
        f"  target (loop at least 10% faster, ratio >= 1.10): "
        f"{'met' if low >= 1.10 else 'not met'} (judged on the interval's lower end)"
    )
    if args.grid:
        grid(stages, profiled, args.grid, args.warmup, batches)
    print(f"scratch: {workdir}")
    return 0


GRID = [
    (40, 2, 32, 8, 1),
    (40, 2, 32, 8, 2),
    (40, 8, 32, 8, 2),
    (24, 2, 16, 6, 2),
    (16, 2, 12, 3, 1),
    (12, 2, 8, 3, 1),
    (20, 4, 12, 4, 2),
    (64, 8, 32, 32, 32),
    (48, 2, 32, 8, 8),
    (8, 4, 5, 2, 1),
]
"""Configurations around the plateau (num_threads, sink_buffer, load, prep, python)."""


def grid(stages: Any, profiled: dict[str, Any], repeats: int, warmup: int, batches: int) -> None:
    """How much faster than profile's configuration any of ``GRID`` is: each measured
    ``repeats`` times in a shuffled order with profile's, the ratio of medians."""
    configs: dict[str, Any] = {"profile": stages.PipelineKnobs.from_mapping(profiled)}
    for threads, sink, load, prep, python in GRID:
        configs[f"{threads}/{sink}/{load}/{prep}/{python}"] = stages.PipelineKnobs(
            threads, sink, load, prep, python
        )
    samples: dict[str, list[float]] = {name: [] for name in configs}
    rng = random.Random(0)
    for _ in range(repeats):
        order = list(configs)
        rng.shuffle(order)
        for name in order:
            samples[name].append(time_per_batch(stages, configs[name], warmup, batches)[0])
    reference = statistics.median(samples["profile"])
    print(
        f"grid, {repeats} shuffled repeats (num_threads/sink_buffer/load/prep/python), "
        "profile's median over each:"
    )
    for name, values in sorted(samples.items(), key=lambda kv: statistics.median(kv[1])):
        med = statistics.median(values)
        print(f"  {name:16s} {med * 1e3:6.2f} ms  profile / this {reference / med:.3f}")


if __name__ == "__main__":
    sys.exit(main())
