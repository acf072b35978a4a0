"""The ``pytest-autopilot`` command on a real experiment: list, show, diff, apply, clean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ci_project import loop_project
from gitrepo import GitRepo

ROOT = Path(__file__).resolve().parents[1]


def command(repo: GitRepo, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest_autopilot.cli", *args],
        cwd=repo.path,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_the_console_script_is_declared() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert 'pytest-autopilot = "pytest_autopilot.cli:main"' in scripts


def test_inspect_apply_and_clean_an_experiment(pytester: pytest.Pytester) -> None:
    repo = loop_project(pytester.path, budget={"rounds": 2, "candidates": 1, "patience": 3})
    run = pytester.runpytest("--autopilot")
    assert run.ret == 1, run.stdout.str()
    head = repo.head()

    listed = command(repo, "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("demo: stopped: "), listed.stdout
    assert listed.stdout.endswith("; 2 candidates; best r2c1 loss 1.5; branch autopilot/demo\n")

    shown = command(repo, "show", "r2c1")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:3] == [
        "r2c1 of experiment demo, round 2",
        "verdict: accepted (best)",
        "reason: loss -66.7%: better by more than 0%",
    ]
    assert lines[4].startswith("parent: r1c1 (")
    assert "  loss = 1.5" in lines
    assert "  FAIL loss: 1.5 > max 0.6" in lines

    diff = command(repo, "diff", "r1c1")
    assert diff.returncode == 0, diff.stderr
    assert '-{"x": 0}\n+{"x": 1}' in diff.stdout

    missing = command(repo, "show", "r7c1")
    assert missing.returncode == 2
    assert "no candidate 'r7c1' in experiment demo: r0, r1c1, r2c1" in missing.stderr
    other = command(repo, "list", "--experiment", "nope")
    assert other.returncode == 0  # list shows every experiment; --experiment is for the others
    wrong = command(repo, "show", "r1c1", "--experiment", "nope")
    assert wrong.returncode == 2
    assert "no experiment 'nope'" in wrong.stderr and "experiments: demo" in wrong.stderr

    (repo.path / "params.json").write_text('{"x": 9}\n')
    dirty = command(repo, "apply")
    assert dirty.returncode == 2 and "uncommitted changes" in dirty.stderr
    assert repo.head() == head
    repo.git("checkout", "--", "params.json")
    applied = command(repo, "apply")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.startswith("merged r2c1 (")
    assert repo.head() == repo.rev("autopilot/demo")
    assert command(repo, "apply").stdout.startswith("r2c1 (")  # already part of HEAD

    refused = command(repo, "clean")
    assert refused.returncode == 2 and "confirm with --yes" in refused.stderr
    assert (repo.path / ".autopilot" / "demo").exists()
    cleaned = command(repo, "clean", "--yes")
    assert cleaned.returncode == 0, cleaned.stderr
    assert not (repo.path / ".autopilot" / "demo").exists()
    assert repo.git("for-each-ref", "refs/autopilot/", "refs/heads/autopilot/") == ""
    assert command(repo, "list").stdout.startswith("no experiment recorded")


def test_the_record_is_read_defensively(tmp_path: Path) -> None:
    from pytest_autopilot.experiments import experiment_dirs, read_experiment

    record = tmp_path / ".autopilot" / "old"
    record.mkdir(parents=True)
    (tmp_path / ".autopilot" / "worktrees").mkdir()
    (record / "state.json").write_text('{"records": "not a list", "gates": []}')
    (record / "journal.jsonl").write_text(
        '{"event": "start"}\n'
        '{"event": "baseline", "commit": "abc", "metrics": {"loss": {"value": 2}}}\n'
        '{"event": "candidate", "id": "r1c1", "round": "one", "commit": "def", '
        '"parent": "abc", "verdict": "accepted", "metrics": []}\n'
        '{"event": "stop", "reason": "interrupted", "exit_status": 2}\n'
        '{"event": "candid'
    )
    (dirs,) = experiment_dirs(tmp_path / ".autopilot")
    experiment = read_experiment(dirs)
    assert experiment.ids() == ["r0", "r1c1"]
    assert experiment.status == "interrupted (the same command resumes)"
    assert experiment.best == "r1c1"
    cand = experiment.find("r1c1")
    assert cand is not None and cand.round is None and cand.metrics == {}
    assert experiment.id_of_commit("abc") == "r0"


def test_list_and_show_give_the_paired_value_the_loop_decided_on(tmp_path: Path) -> None:
    """Candidates are measured beside their incumbent, the baseline alone: ``list`` gives the
    best at its paired value, ``show`` gives both."""
    from gitrepo import init_repo

    config = '{"experiment": "demo", "objective": {"metric": "t"}, "parameters": []}'
    repo = init_repo(tmp_path, {"autopilot.yaml": config})
    record = repo.path / ".autopilot" / "demo"
    record.mkdir(parents=True)
    (record / "journal.jsonl").write_text(
        '{"event": "baseline", "commit": "abc", "metrics": {"t": {"value": 1.0}}}\n'
        '{"event": "candidate", "id": "r1c1", "round": 1, "commit": "def", "parent": "abc", '
        '"verdict": "accepted", "metrics": {"t": {"value": 0.65}}, "paired_value": 0.5}\n'
    )
    listed = command(repo, "list")
    assert listed.returncode == 0, listed.stderr
    assert "best r1c1 t 0.5 (paired, on the baseline's scale)" in listed.stdout
    shown = command(repo, "show", "r1c1")
    assert shown.returncode == 0, shown.stderr
    assert "paired value: t 0.5 (its incumbent's times the ratio measured beside it" in (
        shown.stdout
    )
    assert "  t = 0.65" in shown.stdout.splitlines()
