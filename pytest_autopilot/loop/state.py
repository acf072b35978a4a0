"""The run's state in one object, and its JSON form in ``.autopilot/<experiment>/state.json``.

Everything a resumed run needs lives in :class:`RunState`: the baseline and incumbent records,
every decided candidate, the gate statuses, the trees already evaluated and the round
counters. The controller changes it and saves it after every candidate; ``state.json`` is its
:meth:`RunState.to_json`, replaced atomically by :class:`~pytest_autopilot.loop.journal.
ExperimentStore`. A file someone edited by hand is refused with the file's name and the way
out (``--autopilot-fresh``), never a traceback.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pytest_autopilot.proposals import CandidateRecord, GateStatus
from pytest_autopilot.results import Metric

if TYPE_CHECKING:
    from pytest_autopilot.loop.journal import ExperimentStore

VERDICTS = ("accepted", "rejected", "violation", "failed", "timeout", "duplicate")


class StateFormatError(ValueError):
    """``state.json`` parses but does not hold what :meth:`RunState.from_json` expects."""


def record_to_json(record: CandidateRecord) -> dict[str, Any]:
    """A candidate as ``state.json``, the journal and the ``--autopilot-json`` payload show it."""
    return {
        "id": record.id,
        "round": record.round,
        "commit": record.commit,
        "parent": record.parent,
        "rationale": record.rationale,
        "verdict": record.verdict,
        "reason": record.reason,
        "metrics": {name: m.to_json() for name, m in sorted(record.metrics.items())},
        "params": record.params,
        "diff_summary": record.diff_summary,
        "tree": record.tree,
        "usage": dict(record.usage),
        "paired_value": record.paired_value,
    }


def _typed(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = data.get(key, default)
    wrong = (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind)
    if value is not None and wrong:
        raise StateFormatError(f"{key!r} must be {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def record_from_json(data: Any, source: str) -> CandidateRecord:
    """The inverse of :func:`record_to_json`; a :class:`StateFormatError` names what is wrong."""
    if not isinstance(data, Mapping):
        raise StateFormatError(f"a candidate must be a mapping, got {data!r}")
    if not isinstance(data.get("id"), str) or not isinstance(data.get("round"), int):
        raise StateFormatError(f"a candidate needs a string 'id' and an integer 'round': {data!r}")
    verdict = data.get("verdict")
    if verdict is not None and verdict not in VERDICTS:
        raise StateFormatError(f"candidate {data['id']}: unknown verdict {verdict!r}")
    metrics = _typed(data, "metrics", dict, {}) or {}
    usage = _typed(data, "usage", dict, {}) or {}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in usage.values()):
        raise StateFormatError(f"candidate {data['id']}: 'usage' must map names to numbers")
    return CandidateRecord(
        id=data["id"],
        round=data["round"],
        commit=_typed(data, "commit", str, None),
        parent=_typed(data, "parent", str, None),
        rationale=_typed(data, "rationale", str, "") or "",
        verdict=verdict,
        reason=_typed(data, "reason", str, "") or "",
        metrics={
            str(name): Metric.from_json(str(name), entry, source=source)
            for name, entry in metrics.items()
        },
        params=_typed(data, "params", dict, None),
        diff_summary=_typed(data, "diff_summary", str, "") or "",
        tree=_typed(data, "tree", str, None),
        usage={str(k): float(v) for k, v in usage.items()},
        paired_value=_number(data, "paired_value"),
    )


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = _typed(data, key, (int, float), None)
    return None if value is None else float(value)


def frozen_copy(record: CandidateRecord) -> CandidateRecord:
    """A copy an optimizer or an observer may keep or change without touching the run."""
    return copy.deepcopy(record)


@dataclass
class RunState:
    """Baseline, incumbent, decided candidates, gates, evaluated trees and round counters."""

    experiment: str
    baseline: CandidateRecord
    incumbent: CandidateRecord
    records: list[CandidateRecord] = field(default_factory=list)
    gates: dict[str, list[GateStatus]] = field(default_factory=dict)
    trees: dict[str, str] = field(default_factory=dict)
    """Tree id -> the candidate that has it: the same tree is the same code, a duplicate."""
    rounds_done: int = 0
    stale_rounds: int = 0
    """Rounds in a row without an accepted candidate (the ``patience`` budget)."""
    elapsed_before: float = 0.0
    """Seconds spent by earlier (interrupted) runs of this experiment."""

    @classmethod
    def fresh(cls, experiment: str, baseline: CandidateRecord) -> RunState:
        state = cls(experiment=experiment, baseline=baseline, incumbent=baseline)
        if baseline.tree:
            state.trees[baseline.tree] = baseline.id
        return state

    # -- questions ----------------------------------------------------------------------

    def in_round(self, number: int) -> list[CandidateRecord]:
        return [r for r in self.records if r.round == number]

    def gates_pass(self, record: CandidateRecord) -> bool:
        return all(status.passed for status in self.gates.get(record.id, []))

    def known_commits(self) -> dict[str, str]:
        """Candidate id -> commit of the baseline and every candidate that has one."""
        return {r.id: r.commit for r in [self.baseline, *self.records] if r.commit}

    def history(self) -> tuple[CandidateRecord, ...]:
        """Every decided candidate, as copies: what an optimizer sees."""
        return tuple(frozen_copy(r) for r in self.records)

    def accepted_count(self) -> int:
        return sum(1 for r in self.records if r.verdict == "accepted")

    # -- changes ------------------------------------------------------------------------

    def add(self, record: CandidateRecord) -> None:
        self.records.append(record)

    def claim_tree(self, tree: str, cid: str) -> str | None:
        """Note that ``cid`` has ``tree``; the id that had it first when it is a duplicate."""
        same = self.trees.get(tree)
        if same is None:
            self.trees[tree] = cid
        return same

    def release_tree(self, tree: str | None) -> None:
        """Forget a tree that was never evaluated, so a later proposal may try it again."""
        self.trees.pop(str(tree), None)

    # -- JSON -----------------------------------------------------------------------------

    def to_json(self, elapsed: float) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "baseline_commit": self.baseline.commit,
            "baseline_tree": self.baseline.tree,
            "baseline": record_to_json(self.baseline),
            "incumbent": self.incumbent.id,
            "records": [record_to_json(r) for r in self.records],
            "gates": {cid: [asdict(s) for s in st] for cid, st in self.gates.items()},
            "rounds_done": self.rounds_done,
            "stale_rounds": self.stale_rounds,
            "elapsed": round(elapsed, 3),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str) -> RunState:
        """Parse ``state.json``; a :class:`StateFormatError` says which key is wrong."""
        for key in ("baseline", "records", "gates", "rounds_done", "stale_rounds", "elapsed"):
            if key not in data:
                raise StateFormatError(f"missing key {key!r}")
        baseline = record_from_json(data["baseline"], source)
        records = _typed(data, "records", list, [])
        state = cls(
            experiment=str(data.get("experiment", "")),
            baseline=baseline,
            incumbent=baseline,
            records=[record_from_json(r, source) for r in records],
            gates=_gates_from_json(_typed(data, "gates", dict, {})),
            rounds_done=_typed(data, "rounds_done", int, 0),
            stale_rounds=_typed(data, "stale_rounds", int, 0),
            elapsed_before=float(_typed(data, "elapsed", (int, float), 0.0)),
        )
        incumbent = _typed(data, "incumbent", str, "r0")
        state.incumbent = next((r for r in state.records if r.id == incumbent), baseline)
        for record in [baseline, *state.records]:
            if record.tree and record.tree not in state.trees:
                state.trees[record.tree] = record.id
        return state

    @classmethod
    def load(cls, store: ExperimentStore) -> RunState | None:
        """The saved state of the experiment, or None; a :class:`pytest.UsageError` when the
        file cannot be used (bad JSON, another format, wrong types, missing keys)."""
        data = store.load_state()
        if data is None:
            return None
        try:
            return cls.from_json(data, str(store.state_path))
        except (StateFormatError, TypeError, ValueError, pytest.UsageError) as exc:
            raise unreadable(store, str(exc).removeprefix(f"{store.state_path}: ")) from None

    def save(self, store: ExperimentStore, elapsed: float) -> None:
        store.save_state(self.to_json(elapsed))


def unreadable(store: ExperimentStore, detail: str) -> pytest.UsageError:
    return pytest.UsageError(
        f"{store.state_path}: unreadable resume state ({detail}); "
        "pass --autopilot-fresh to start the experiment over"
    )


def _gates_from_json(data: Mapping[str, Any]) -> dict[str, list[GateStatus]]:
    gates: dict[str, list[GateStatus]] = {}
    for cid, statuses in data.items():
        if not isinstance(statuses, list) or not all(isinstance(s, dict) for s in statuses):
            raise StateFormatError(f"gates of {cid!r} must be a list of mappings")
        gates[str(cid)] = [GateStatus(**s) for s in statuses]
    return gates
