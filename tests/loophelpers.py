"""What the loop's end-to-end tests share: a tiny project whose objective a conftest optimizer
walks, and readers of the run's JSON payload and journal."""

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
    tried = [r.params for r in context.history]
    out = []
    for step in STEPS:
        point = {"x": x + step}
        if point not in tried and len(out) < context.max_candidates:
            out.append(Proposal(
                rationale=f"move x to {x + step}",
                edits={params.path: json.dumps(point) + "\\n"},
                params=point,
            ))
    return out

STEPS = (1, -1)
"""

OBJECTIVE_TEST = """\
import json, pathlib

def test_loss(autopilot):
    x = json.loads((pathlib.Path(__file__).parent / "params.json").read_text())["x"]
    autopilot.record("loss", (x - 3) ** 2, goal="min")
"""


def config_text(**overrides: Any) -> str:
    budget = {"rounds": 5, "candidates": 1, "patience": 3, **overrides.pop("budget", {})}
    data: dict[str, Any] = {
        "experiment": "demo",
        "objective": {"metric": "loss", "goal": "min"},
        "parameters": [{"path": "params.json"}],
        "optimizer": "walk",
        "budget": budget,
        "acceptance": {"min_effect": 0.0},
        "gates": [{"metric": "loss", "max": 0.5}],
        **overrides,
    }
    return json.dumps(data)  # JSON is YAML


def project(
    root: Path,
    *,
    conftest: str = WALK_CONFTEST,
    test: str = OBJECTIVE_TEST,
    x: int = 0,
    subdir: str = "",
    **config: Any,
) -> GitRepo:
    base = f"{subdir}/" if subdir else ""
    files = {
        f"{base}params.json": json.dumps({"x": x}) + "\n",
        f"{base}autopilot.yaml": config_text(**config),
        f"{base}test_obj.py": test,
        f"{base}conftest.py": conftest,
        f"{base}pytest.ini": "[pytest]\n",
    }
    return init_repo(root, files)


def payload(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def candidates(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for r in data["rounds"] for c in r["candidates"]]


def journal(repo: GitRepo, experiment: str = "demo") -> list[dict[str, Any]]:
    path = repo.path / ".autopilot" / experiment / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]
