"""Files Python and pytest generate never reach a snapshot, a resume check or a commit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gitrepo import init_repo

CONFTEST = """\
import json
from pytest_autopilot.proposals import Proposal

def pytest_autopilot_optimizer_names(config):
    return ["walk"]

def pytest_autopilot_propose(context):
    if context.optimizer != "walk":
        return None
    params = next(p for p in context.parameters if p.path.endswith("params.json"))
    x = json.loads(params.text)["x"] + 1
    edits = {params.path: json.dumps({"x": x})}
    return [Proposal(rationale=f"x={x}", edits=edits, params={"x": x})]
"""

TEST = """\
import json, pathlib, time

def test_loss(autopilot):
    x = json.loads((pathlib.Path(__file__).parent / "params.json").read_text())["x"]
    if x == 2:
        time.sleep(1)
    autopilot.record("loss", (x - 3) ** 2, goal="min")
"""

CONFIG = {
    "experiment": "demo",
    "objective": {"metric": "loss", "goal": "min"},
    "parameters": [{"path": "params.json"}],
    "optimizer": "walk",
    "budget": {"rounds": 4, "candidates": 1, "patience": 2},
    "acceptance": {"min_effect": 0.0},
    "gates": [{"metric": "loss", "max": 0.5}],
}

GENERATED_PARTS = ("__pycache__", ".pyc", ".pytest_cache", ".benchmarks", "out.json")


def test_ctrl_c_then_the_same_command_resumes_without_a_gitignore(tmp_path: Path) -> None:
    repo = init_repo(
        tmp_path / "repo",
        {
            "params.json": '{"x": 0}\n',
            "autopilot.yaml": json.dumps(CONFIG),
            "tests/test_obj.py": TEST.replace('parent / "params', 'parent.parent / "params'),
            "conftest.py": CONFTEST,
        },
        gitignore="",
    )
    before = repo.user_state()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTEST_ADDOPTS", "PYTHONDONTWRITEBYTECODE")
    }
    command = [sys.executable, "-m", "pytest", "--autopilot", "--autopilot-json=out.json"]
    proc = subprocess.Popen(
        command, cwd=repo.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    journal = repo.path / ".autopilot" / "demo" / "journal.jsonl"
    deadline = time.monotonic() + 60
    while not (journal.exists() and '"event": "candidate"' in journal.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, "no candidate in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out.decode()
    assert list(repo.path.glob("tests/__pycache__/*.pyc")), "the run wrote no bytecode"

    resumed = subprocess.run(command, cwd=repo.path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming experiment demo" in resumed.stdout
    assert "started from other code" not in resumed.stdout + resumed.stderr

    committed = repo.git("ls-tree", "-r", "--name-only", "autopilot/demo").splitlines()
    assert sorted(committed) == [
        "autopilot.yaml",
        "conftest.py",
        "params.json",
        "tests/test_obj.py",
    ]
    history = repo.git("log", "--format=", "--name-only", "autopilot/demo").splitlines()
    assert not [p for p in history if any(part in p for part in GENERATED_PARTS)]
    after = repo.user_state()
    assert (after.head, after.index, after.stash, after.refs) == (
        before.head,
        before.index,
        before.stash,
        before.refs,
    )
