"""The main job in one command: tune an SPDL data loader with ``pytest --autopilot``.

Copies ``example_suites/spdl_pipeline`` into a scratch git repository, commits it, and runs
``python -m pytest --autopilot`` there with the built-in search optimizer (no API key). Shows
the loop's progress as it goes and ends with the step time before and after, the speed-up,
how close the result is to this machine's lower bound, and the branch holding the result.

    python scripts/demo.py [--dir PATH] [-- extra pytest arguments]

``scripts/demo.sh`` sets up ``.venv`` first and then runs this.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "example_suites" / "spdl_pipeline"
IGNORE = shutil.ignore_patterns("__pycache__", ".*", "*.pyc")
GIT_ENV = {
    "GIT_AUTHOR_NAME": "autopilot demo",
    "GIT_AUTHOR_EMAIL": "demo@pytest-autopilot.invalid",
    "GIT_COMMITTER_NAME": "autopilot demo",
    "GIT_COMMITTER_EMAIL": "demo@pytest-autopilot.invalid",
}
SHOWN = "autopilot:"
"""Output lines worth showing live; the whole log is kept in the scratch directory."""
NOTE = "spdl_pipeline: bottleneck:"
"""The suite's summary line about where the default loader spends its time."""


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


def make_repository(workdir: Path) -> Path:
    repo = workdir / "repo"
    shutil.copytree(SUITE, repo, ignore=IGNORE)
    (repo / ".gitignore").write_text(".autopilot/\n__pycache__/\n.pytest_cache/\n.benchmarks/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "SPDL loader with its default loader.yaml")
    return repo


def run_loop(repo: Path, result: Path, log: Path, extra: list[str]) -> tuple[int, str]:
    """Run the loop, showing its progress; returns its exit status and the default's note."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--autopilot",
        "--autopilot-json",
        str(result),
        "-p",
        "no:cacheprovider",
        "-q",
        *extra,
    ]
    say(f"in {repo}: {' '.join(command[1:])}")
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        note = ""
        for line in proc.stdout:
            out.write(line)
            if line.startswith(SHOWN):
                print(line, end="", flush=True)
            elif line.startswith(NOTE):
                note = line[len("spdl_pipeline: ") :].strip()
        return proc.wait(), note


def metric(metrics: dict[str, Any], name: str) -> float | None:
    entry = metrics.get(name)
    return None if entry is None else float(entry["value"])


def versus_bound(ratio: float | None) -> str:
    return "" if ratio is None else f"  ({ratio:.2f}x the lower bound)"


def summarize(repo: Path, data: dict[str, Any], elapsed: float, note: str) -> None:
    before_metrics = data["baseline"]["metrics"]
    best = data["best"]
    after_metrics = best["metrics"]
    before = metric(before_metrics, "test_step_time")
    after = metric(after_metrics, "test_step_time")
    bound = metric(after_metrics, "loader.lower_bound")
    ratio_before = metric(before_metrics, "loader.bound_ratio")
    ratio_after = metric(after_metrics, "loader.bound_ratio")
    if before is None or after is None or bound is None:
        say("the sessions did not produce test_step_time and loader.lower_bound; see the log")
        return
    print()
    if note:
        say(f"the default loader's {note}")
    say(f"before: {before * 1e3:7.1f} ms per batch{versus_bound(ratio_before)}")
    say(f"after:  {after * 1e3:7.1f} ms per batch{versus_bound(ratio_after)}")
    say(
        f"speed-up {before / after:.2f}x in {elapsed / 60:.1f} minutes; lower bound on this "
        f"machine {bound * 1e3:.1f} ms per batch (CPU work of a batch over its cores)"
    )
    say(f"result: branch {best['branch']} ({best['commit'][:10]}) of {repo}")
    diff = git(repo, "diff", "main", best["branch"], "--", "loader.yaml")
    if diff:
        say("loader.yaml, default -> result:")
        for line in diff.splitlines():
            if line.startswith(("-", "+")) and not line.startswith(("---", "+++")):
                print(f"    {line}")
    gates = data.get("gates", [])
    failed = [g for g in gates if not g["passed"]]
    if failed:
        say(
            "gates still failing: "
            + "; ".join(
                f"{g['metric']} = {g['value']:.4g} ({g['kind']} {g['threshold']:g})" for g in failed
            )
        )
        if any(g["metric"] == "loader.bound_ratio" for g in failed):
            load = os.getloadavg()[1]
            say(
                f"(the bound counts only the loader's own CPU work; SPDL's work per task and "
                f"other processes on the {os.cpu_count()} cores add to the step time: the load "
                f"average over the last 5 minutes was {load:.1f})"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", type=Path, help="scratch directory to use (default: a new temporary one)"
    )
    parser.add_argument("extra", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)

    workdir = args.dir or Path(tempfile.mkdtemp(prefix="autopilot-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if (workdir / "repo").exists():
        parser.error(f"{workdir / 'repo'} exists already; pass another --dir")
    started = time.monotonic()
    repo = make_repository(workdir)
    say(
        f"tuning the SPDL loader of example_suites/spdl_pipeline in {repo} with the built-in "
        "search (no API key); each candidate is a commit evaluated by a full pytest session"
    )
    result = workdir / "result.json"
    log = workdir / "pytest.log"
    status, note = run_loop(repo, result, log, args.extra)
    elapsed = time.monotonic() - started
    if status not in (0, 1) or not result.is_file():
        say(f"pytest --autopilot exited with status {status}; full log: {log}")
        return status or 1
    summarize(repo, json.loads(result.read_text()), elapsed, note)
    say(f"full log: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
