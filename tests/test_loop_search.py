"""The built-in ``search`` optimizer driven by the real loop: typed spaces in a YAML file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml  # noqa: F401  (in-process pytester runs must not re-import its C loader)
from gitrepo import init_repo

PARAMS = """\
# loader settings, tuned by pytest-autopilot
workers: 1    # threads fetching
executor: process
"""

CONFIG = """\
experiment: tune
objective: {metric: loss, goal: min}
parameters:
  - path: params.yaml
    space:
      workers: {int: [1, 64], log: true}
      executor: {choice: [thread, process]}
optimizer: search
budget: {rounds: 8, candidates: 2, patience: 4}
acceptance: {min_effect: 0.0}
gates:
  - {metric: loss, max: 0.1}
"""

TEST = """\
import math, pathlib, yaml

def test_loss(autopilot):
    params = yaml.safe_load((pathlib.Path(__file__).parent / "params.yaml").read_text())
    loss = abs(math.log2(params["workers"] / 8)) + (0 if params["executor"] == "thread" else 1)
    autopilot.record("loss", loss, goal="min")
"""


def test_search_converges_on_a_yaml_space_and_keeps_the_comments(
    pytester: pytest.Pytester,
) -> None:
    repo = init_repo(
        pytester.path,
        {
            "params.yaml": PARAMS,
            "autopilot.yaml": CONFIG,
            "test_loss.py": TEST,
            "pytest.ini": "[pytest]\n",
        },
    )
    result = pytester.runpytest("--autopilot", "--autopilot-json=out.json")
    assert result.ret == 0, result.stdout.str()
    data = json.loads(Path(pytester.path, "out.json").read_text())
    assert data["best"]["metrics"]["loss"]["value"] == 0
    best = repo.show("autopilot/tune", "params.yaml")
    assert best == PARAMS.replace("workers: 1 ", "workers: 8 ").replace("process", "thread")
    points = [
        json.dumps(c["params"], sort_keys=True) for r in data["rounds"] for c in r["candidates"]
    ]
    assert len(points) == len(set(points)), "a point already evaluated is never proposed again"
