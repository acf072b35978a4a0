"""What pytest-autopilot costs a suite that does not use it, and what the CI gate costs.

Builds a 2000-test suite in a temporary directory and times, interleaved in the same run so
that machine load affects every mode alike, three ways of running it:

- ``off``: ``pytest -p no:autopilot`` (the plugin not loaded at all);
- ``idle``: ``pytest`` (the plugin installed, no autopilot flag: it only records in memory);
- ``gate``: ``pytest --autopilot-gate`` with a small ``autopilot.yaml`` (one gate on
  ``tests.passed``).

Each mode runs ``--repeat`` times (default 21) in rotating order; the medians of the wall times
give the ratios idle/off (target <= 1.02) and gate/off (target <= 1.05). The CPU-time ratios
(user + system of the pytest process) and the median of the per-repetition ratios (each mode
against the ``off`` run of the same repetition, which cancels slow drifts of the machine's
load) are printed too: on a shared machine they are less noisy views of the same cost.
``--check`` makes the exit status 1 when a target is missed.

Usage: ``python benchmarks/idle_overhead.py [--repeat N] [--tests N] [--check]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"idle": 1.02, "gate": 1.05}
MODULES = 20


def build_suite(root: Path, tests: int) -> None:
    """``tests`` tests over 20 modules: plain functions, parametrized ones and a class."""
    per_module = tests // MODULES
    for index in range(MODULES):
        plain = per_module // 2
        params = per_module - plain - 10
        lines = ["import pytest", ""]
        lines += [f"def test_plain_{i}():\n    assert {i} + 1 > {i}\n" for i in range(plain)]
        lines += [
            f"@pytest.mark.parametrize('n', range({params}))",
            "def test_param(n):",
            "    assert n * 2 == n + n",
            "",
            "class TestGroup:",
        ]
        lines += [f"    def test_method_{i}(self):\n        assert True\n" for i in range(10)]
        (root / f"test_module_{index:02d}.py").write_text("\n".join(lines) + "\n")
    (root / "autopilot.yaml").write_text(f"gates:\n  - {{metric: tests.passed, min: {tests}}}\n")
    (root / "pytest.ini").write_text("[pytest]\n")


def bytecode_env(root: Path) -> dict[str, str]:
    """Let every run use cached bytecode, as installed packages do, without touching the repo.

    With ``PYTHONDONTWRITEBYTECODE`` set, an editable install recompiles the plugin on every
    run while site-packages have their ``.pyc`` files: that would measure the compiler.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(root / ".pycache")
    return env


def run(root: Path, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one pytest run."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    with tempfile.TemporaryFile() as output:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=root, env=env, stdout=output, stderr=output)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            output.seek(0)
            tail = output.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{tail}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    options = parser.parse_args()

    modes = {"off": ["-p", "no:autopilot"], "idle": [], "gate": ["--autopilot-gate"]}
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    cpus: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="autopilot-idle-") as tmp:
        root = Path(tmp)
        build_suite(root, options.tests)
        env = bytecode_env(root)
        for args in modes.values():  # warm the file system cache and the bytecode cache
            run(root, args, env)
        names = list(modes)
        for rep in range(options.repeat):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for mode in order:
                wall, cpu = run(root, modes[mode], env)
                walls[mode].append(wall)
                cpus[mode].append(cpu)

    wall_median = {mode: statistics.median(values) for mode, values in walls.items()}
    cpu_median = {mode: statistics.median(values) for mode, values in cpus.items()}
    print(
        f"{options.tests} tests, {options.repeat} interleaved runs per mode, cpus={os.cpu_count()}"
    )
    for mode, values in walls.items():
        spread = f"min {min(values):.3f}s max {max(values):.3f}s"
        print(
            f"  {mode:5s} wall median {wall_median[mode]:.3f}s ({spread}), "
            f"cpu median {cpu_median[mode]:.3f}s"
        )
    missed = False
    for mode, target in TARGETS.items():
        ratio = wall_median[mode] / wall_median["off"]
        paired = statistics.median(m / o for m, o in zip(walls[mode], walls["off"], strict=True))
        cpu_ratio = cpu_median[mode] / cpu_median["off"]
        verdict = "ok" if ratio <= target else "MISSED"
        missed |= ratio > target
        print(
            f"  {mode}/off = {ratio:.3f} wall (target <= {target}) {verdict}; "
            f"median of paired ratios {paired:.3f}; {cpu_ratio:.3f} cpu"
        )
    return 1 if options.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
