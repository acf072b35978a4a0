"""The run's state (``state.json``): its JSON form round-trips, and a file someone broke by hand
is refused before any test runs, naming the file and the way out, never with a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from loophelpers import project

from pytest_autopilot.loop.journal import ExperimentStore
from pytest_autopilot.loop.state import RunState, StateFormatError
from pytest_autopilot.proposals import CandidateRecord, GateStatus
from pytest_autopilot.results import Metric


def sample_state() -> RunState:
    baseline = CandidateRecord("r0", 0, "a" * 40, None, "baseline", verdict="accepted", tree="t0")
    baseline.metrics = {"loss": Metric("loss", 9.0, "min", samples=[9.0, 9.5])}
    state = RunState.fresh("demo", baseline)
    winner = CandidateRecord(
        "r1c1", 1, "b" * 40, "a" * 40, "x=1", "accepted", "better", params={"x": 1}, tree="t1"
    )
    winner.usage = {"requests": 2.0, "cost_usd": 0.01}
    winner.paired_value = 4.5
    state.claim_tree("t1", winner.id)
    state.add(winner)
    state.incumbent = winner
    state.gates["r1c1"] = [GateStatus("loss", "max", 0.5, 4.0, False, "4 > 0.5")]
    state.rounds_done = state.stale_rounds = 1
    return state


def test_the_state_round_trips_through_json() -> None:
    state = sample_state()
    again = RunState.from_json(json.loads(json.dumps(state.to_json(12.5))), "state.json")
    assert again == RunState(
        experiment="demo",
        baseline=state.baseline,
        incumbent=state.records[0],
        records=state.records,
        gates=state.gates,
        trees={"t0": "r0", "t1": "r1c1"},
        rounds_done=1,
        stale_rounds=1,
        elapsed_before=12.5,
    )
    assert again.incumbent is again.records[0]
    assert again.incumbent.paired_value == 4.5


def test_a_state_saved_before_paired_values_loads_without_them() -> None:
    data = sample_state().to_json(0.0)
    for entry in [data["baseline"], *data["records"]]:
        entry.pop("paired_value")
    again = RunState.from_json(data, "state.json")
    assert again.incumbent.paired_value is None


def test_the_history_is_a_copy_the_optimizer_cannot_change_the_run_through() -> None:
    state = sample_state()
    history = state.history()
    assert isinstance(history, tuple)
    assert history == tuple(state.records)
    history[0].verdict = "rejected"
    history[0].metrics.clear()
    assert state.records[0].verdict == "accepted" and state.records[0].params == {"x": 1}
    assert state.claim_tree("t1", "r2c1") == "r1c1"
    assert state.claim_tree("t2", "r2c1") is None


def broken(data: dict[str, Any], change: str) -> dict[str, Any] | str:
    """``data`` with one thing broken as a person editing ``state.json`` by hand might."""
    if change == "bad json":
        return '{"version": 1, "records": ['
    if change == "a list":
        return "[1, 2]"
    if change == "missing records":
        data.pop("records")
    elif change == "rounds as text":
        data["rounds_done"] = "two"
    elif change == "record without id":
        del data["records"][0]["id"]
    elif change == "metric not a number":
        data["baseline"]["metrics"]["loss"]["value"] = "fast"
    elif change == "gate with an unknown key":
        data["gates"]["r1c1"][0]["colour"] = "red"
    elif change == "unknown verdict":
        data["records"][0]["verdict"] = "maybe"
    elif change == "usage not numbers":
        data["records"][0]["usage"] = {"requests": "many"}
    elif change == "paired value as text":
        data["records"][0]["paired_value"] = "4.5"
    return data


CHANGES = [
    "bad json",
    "a list",
    "missing records",
    "rounds as text",
    "record without id",
    "metric not a number",
    "gate with an unknown key",
    "unknown verdict",
    "usage not numbers",
    "paired value as text",
]


@pytest.mark.parametrize("change", CHANGES)
def test_a_broken_state_file_is_a_usage_error_naming_it(tmp_path: Path, change: str) -> None:
    store = ExperimentStore(tmp_path / "demo")
    store.ensure()
    data = broken({"version": 1, **sample_state().to_json(1.0)}, change)
    store.state_path.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(pytest.UsageError) as info:
        RunState.load(store)
    message = str(info.value)
    assert message.startswith(f"{store.state_path}: unreadable resume state (")
    assert message.endswith("pass --autopilot-fresh to start the experiment over")


def test_a_state_without_a_required_key_says_which() -> None:
    data = sample_state().to_json(0.0)
    del data["gates"]
    with pytest.raises(StateFormatError, match="missing key 'gates'"):
        RunState.from_json(data, "state.json")


@pytest.mark.parametrize("change", ["bad json", "missing records", "metric not a number"])
def test_a_hand_corrupted_state_json_stops_the_run_before_any_test(
    pytester: pytest.Pytester, change: str
) -> None:
    repo = project(pytester.path)
    store = ExperimentStore(repo.path / ".autopilot" / "demo")
    store.ensure()
    data = broken({"version": 1, **sample_state().to_json(1.0)}, change)
    store.state_path.write_text(data if isinstance(data, str) else json.dumps(data))
    result = pytester.runpytest_subprocess("--autopilot", "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: {store.state_path}: unreadable resume state (*--autopilot-fresh*"]
    )
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()
    assert "Traceback" not in result.stderr.str()
    assert "test_obj.py" not in result.stdout.str()  # refused before the session ran
    # The lock was released: the file stays (an flock is never unlinked) but names no owner.
    lock = store.directory / "lock"
    assert not lock.exists() or lock.read_text() == ""


def test_typed_journal_events_keep_the_keys_readers_use(tmp_path: Path) -> None:
    from pytest_autopilot.loop.journal import CandidateDecided, RoundDone, Superseded

    store = ExperimentStore(tmp_path / "demo")
    store.ensure()
    state = sample_state()
    refused = CandidateRecord("r2c1", 2, None, "b" * 40, "same", "duplicate", "same code as r1c1")
    store.record(CandidateDecided(refused))
    store.record(
        CandidateDecided(
            state.records[0],
            gates=state.gates["r1c1"],
            seconds=1.23456,
            started=10.0,
            finished=11.23456,
            exit_code=0,
            executor={"gateway": "gw0"},
        )
    )
    store.record(Superseded("r1c0", by="r1c1"))
    store.record(RoundDone(1, "r1c1", ["r1c0", "r1c1"]))
    first, second, third, fourth = store.events()
    assert set(first) == {
        "event",
        "time",
        *json.loads(json.dumps(sample_state().to_json(0)))["baseline"],
    }
    assert first["event"] == "candidate" and first["verdict"] == "duplicate"
    assert second["seconds"] == 1.235 and second["exit_code"] == 0
    assert second["gates"] == [
        {
            "metric": "loss",
            "kind": "max",
            "threshold": 0.5,
            "value": 4.0,
            "passed": False,
            "reason": "4 > 0.5",
        }
    ]
    assert second["executor"] == {"gateway": "gw0"} and second["params"] == {"x": 1}
    assert {k: third[k] for k in ("event", "id", "by")} == {
        "event": "superseded",
        "id": "r1c0",
        "by": "r1c1",
    }
    assert fourth["event"] == "round_done" and fourth["accepted"] == ["r1c0", "r1c1"]
