"""A tiny real optimization project for the CI, report and command tests.

The objective is ``(x - 3) ** 2`` read from ``params.json``; a conftest optimizer walks x up
by one per round, so a run of a few rounds is deterministic and takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gitrepo import GitRepo, init_repo

WALK_CONFTEST = """\
import json
from pytest_autopilot.proposals import Proposal

def pytest_autopilot_optimizer_names(config):
    return ["walk"]

def pytest_autopilot_propose(context):
    if context.optimizer != "walk":
        return None
    params = next(p for p in context.parameters if p.path.endswith("params.json"))
    x = json.loads(params.text)["x"]
    return [Proposal(
        rationale=f"move x to {x + step}",
        edits={params.path: json.dumps({"x": x + step}) + "\\n"},
        params={"x": x + step},
    ) for step in STEPS[: context.max_candidates]]

STEPS = (1, -1)
"""

OBJECTIVE_TEST = """\
import json, pathlib

def test_loss(autopilot):
    x = json.loads((pathlib.Path(__file__).parent / "params.json").read_text())["x"]
    autopilot.record("loss", (x - 3) ** 2 + 0.5, goal="min")
"""


def loop_project(root: Path, *, candidates: int = 1, **overrides: Any) -> GitRepo:
    config: dict[str, Any] = {
        "experiment": "demo",
        "objective": {"metric": "loss", "goal": "min"},
        "parameters": [{"path": "params.json"}],
        "optimizer": "walk",
        "budget": {"rounds": 3, "candidates": candidates, "patience": 3},
        "acceptance": {"min_effect": 0.0},
        "gates": [{"metric": "loss", "max": 0.6}],
        **overrides,
    }
    files = {
        "params.json": json.dumps({"x": 0}) + "\n",
        "autopilot.yaml": json.dumps(config),
        "test_obj.py": OBJECTIVE_TEST,
        "conftest.py": WALK_CONFTEST,
        "pytest.ini": "[pytest]\n",
    }
    return init_repo(root, files)
