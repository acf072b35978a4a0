"""``optimizer: optuna``: Optuna's samplers over the typed spaces, trials in a journal file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml  # noqa: F401  (in-process pytester runs must not re-import its C loader)
from gitrepo import init_repo

from pytest_autopilot.config import parse_config
from pytest_autopilot.optimizers import optuna_sampler

optuna = pytest.importorskip("optuna")

CONFIG = """\
experiment: tpe
objective: {metric: loss, goal: min}
parameters:
  - path: params.yaml
    space:
      x: {int: [0, 12]}
      mode: {choice: [slow, fast]}
optimizer: optuna
optuna: {sampler: tpe, seed: 3}
budget: {rounds: 3, candidates: 2, patience: 10}
acceptance: {min_effect: 0.0}
"""

TEST = """\
import pathlib, yaml

def test_loss(autopilot):
    p = yaml.safe_load((pathlib.Path(__file__).parent / "params.yaml").read_text())
    autopilot.record("loss", abs(p["x"] - 7) + (0 if p["mode"] == "fast" else 5), goal="min")
"""


def test_the_loop_runs_optuna_and_resumes_its_study(pytester: pytest.Pytester) -> None:
    init_repo(
        pytester.path,
        {
            "params.yaml": "x: 0\nmode: slow\n",
            "autopilot.yaml": CONFIG,
            "test_loss.py": TEST,
            "pytest.ini": "[pytest]\n",
        },
    )
    out = pytester.path.parent / "out.json"
    result = pytester.runpytest("--autopilot", f"--autopilot-json={out}")
    assert result.ret == 0, result.stdout.str()
    data = json.loads(out.read_text())
    tried = [c for r in data["rounds"] for c in r["candidates"]]
    assert len(tried) == 6
    assert all("Optuna tpe sampler, trial" in c["rationale"] for c in tried)
    assert data["best"]["metrics"]["loss"]["value"] < data["baseline"]["metrics"]["loss"]["value"]

    journal = pytester.path / ".autopilot" / "tpe" / "optuna.log"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    study = optuna.load_study(study_name="tpe", storage=storage)
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    by_id = {t.user_attrs["autopilot_candidate"]: t.value for t in finished}
    measured = {c["id"]: c["metrics"]["loss"]["value"] for c in tried[:-2] if c["metrics"]}
    assert measured and {k: by_id[k] for k in measured} == measured, "measured ones were told"
    assert by_id["r0"] == data["baseline"]["metrics"]["loss"]["value"]

    result = pytester.runpytest("--autopilot", "--autopilot-rounds=4")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    study = optuna.load_study(study_name="tpe", storage=storage)
    told = [t.user_attrs.get("autopilot_candidate") for t in study.trials]
    assert {"r3c1", "r3c2"} <= set(told), "the resumed run told the last round's results"
    assert len(study.trials) == 1 + 8, "one study across both runs: baseline and 8 candidates"

    result = pytester.runpytest("--autopilot", "--autopilot-fresh", "--autopilot-rounds=1")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    study = optuna.load_study(study_name="tpe", storage=storage)
    assert len(study.trials) == 1 + 2, "a fresh run starts a fresh study"


def test_missing_optuna_is_a_usage_error_saying_what_to_install(
    tmp_path: Path, pytestconfig: pytest.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "params.yaml").write_text("x: 0\n")
    data = {
        "objective": {"metric": "loss"},
        "parameters": [{"path": "params.yaml", "space": {"x": {"int": [0, 3]}}}],
        "optimizer": "optuna",
    }
    config = parse_config(data, tmp_path / "autopilot.yaml", tmp_path)
    optuna_sampler.pytest_autopilot_check(pytestconfig, config)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a)
    )
    with pytest.raises(pytest.UsageError, match=r"pip install 'pytest-autopilot\[optuna\]'"):
        optuna_sampler.pytest_autopilot_check(pytestconfig, config)


def test_an_unknown_sampler_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("x: 0\n")
    data = {"objective": {"metric": "loss"}, "optimizer": "optuna", "optuna": {"sampler": "x"}}
    with pytest.raises(pytest.UsageError, match=r"optuna\.sampler: expected one of tpe, gp, cmaes"):
        parse_config(data, tmp_path / "autopilot.yaml", tmp_path)


@pytest.mark.parametrize(
    ("sampler", "modules", "attr_prefix"),
    [("cmaes", ("cmaes",), "cma:"), ("gp", ("torch", "scipy"), "")],
)
def test_each_sampler_by_name_proposes_through_ask_and_tell(
    tmp_path: Path, sampler: str, modules: tuple[str, ...], attr_prefix: str
) -> None:
    """CMA-ES and the Gaussian-process sampler run on the same typed space (ints, a log
    int, a choice) and bring the objective down from the start. CMA-ES leaves its state in
    the trials' system attributes, which shows it, not TPE, did the sampling."""
    for module in modules:
        pytest.importorskip(module)
    from offline_search import drive

    from pytest_autopilot.config import ChoiceDimension, IntDimension

    space = {
        "x": IntDimension(0, 20),
        "workers": IntDimension(1, 64, log=True),
        "mode": ChoiceDimension(("slow", "fast")),
    }

    def loss(p: dict[str, object]) -> float:
        x, workers = int(p["x"]), int(p["workers"])  # type: ignore[call-overload]
        return float((x - 13) ** 2 + abs(workers - 16) + (0 if p["mode"] == "fast" else 9))

    start = {"x": 0, "workers": 1, "mode": "slow"}
    trials = drive(
        space, start, loss, evaluations=16, optimizer="optuna", rootdir=tmp_path, sampler=sampler
    )
    assert len(trials) == 17
    assert all(t.value is not None for t in trials)
    assert min(t.value for t in trials if t.value is not None) < loss(start) / 2
    journals = list((tmp_path / ".autopilot").rglob("optuna.log"))
    assert journals, "the study is stored for optuna-dashboard"
    if attr_prefix:
        import optuna

        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(journals[0]))
        )
        (summary,) = optuna.get_all_study_summaries(storage)
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        assert any(key.startswith(attr_prefix) for t in study.trials for key in t.system_attrs)
