"""Past experiments as the ``pytest-autopilot`` command shows them, read from their record.

All knowledge of the files under ``.autopilot/<experiment>/`` that the command needs is in
:func:`read_experiment`: ``state.json`` first (what a resumed run would start from), the
journal's ``candidate`` events when there is no state yet, and the journal's last ``start``,
``resume`` and ``stop`` events for the status. Keys are read defensively: a field that is
missing or of another type shows as unknown rather than stopping the command.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESERVED = {"worktrees"}
"""Directories under ``.autopilot/`` that are not experiments."""


@dataclass
class Candidate:
    id: str
    round: int | None
    commit: str | None
    parent: str | None
    verdict: str
    reason: str
    rationale: str
    metrics: dict[str, Any]
    gates: list[dict[str, Any]] = field(default_factory=list)
    paired_value: float | None = None
    """The objective on the baseline's scale, measured beside its incumbent (see
    :attr:`pytest_autopilot.proposals.CandidateRecord.paired_value`)."""


@dataclass
class Experiment:
    name: str
    directory: Path
    status: str
    baseline: Candidate | None
    candidates: list[Candidate]
    best: str | None
    """Id of the incumbent (``r0`` when nothing beat the baseline)."""

    def find(self, cid: str) -> Candidate | None:
        if cid == "r0":
            return self.baseline
        return next((c for c in self.candidates if c.id == cid), None)

    def ids(self) -> list[str]:
        return (["r0"] if self.baseline is not None else []) + [c.id for c in self.candidates]

    def id_of_commit(self, commit: str | None) -> str | None:
        for cand in [self.baseline, *self.candidates]:
            if cand is not None and commit and cand.commit == commit:
                return cand.id
        return None


def experiment_dirs(autopilot_dir: Path) -> list[Path]:
    if not autopilot_dir.is_dir():
        return []
    return sorted(
        p
        for p in autopilot_dir.iterdir()
        if p.is_dir()
        and p.name not in RESERVED
        and ((p / "state.json").exists() or (p / "journal.jsonl").exists())
    )


def read_experiment(directory: Path) -> Experiment:
    """The experiment recorded in ``directory`` (``.autopilot/<name>/``)."""
    state = _json_file(directory / "state.json")
    events = _events(directory / "journal.jsonl")
    gates: dict[str, Any] = _mapping(state.get("gates"))
    records: list[Any] = _list(state.get("records"))
    if not records:
        records = [e for e in events if e.get("event") == "candidate"]
    candidates = [_candidate(r, gates) for r in records if isinstance(r, dict) and r.get("id")]
    baseline_data = state.get("baseline")
    if not isinstance(baseline_data, dict):
        baseline_data = next((e for e in events if e.get("event") == "baseline"), None)
        if baseline_data is not None:
            baseline_data = {**baseline_data, "id": "r0", "verdict": "baseline"}
    baseline = _candidate(baseline_data, gates) if isinstance(baseline_data, dict) else None
    if baseline is not None:
        baseline.id, baseline.verdict = "r0", "baseline"
    best = state.get("incumbent")
    if not isinstance(best, str):
        accepted = [c.id for c in candidates if c.verdict == "accepted"]
        best = accepted[-1] if accepted else ("r0" if baseline is not None else None)
    return Experiment(
        name=directory.name,
        directory=directory,
        status=_status(directory, events),
        baseline=baseline,
        candidates=candidates,
        best=best,
    )


def _candidate(data: dict[str, Any], gates: dict[str, Any]) -> Candidate:
    cid = str(data.get("id"))
    own_gates = data.get("gates") if isinstance(data.get("gates"), list) else gates.get(cid)
    metrics = data.get("metrics")
    return Candidate(
        id=cid,
        round=data["round"] if isinstance(data.get("round"), int) else None,
        commit=_text(data.get("commit")),
        parent=_text(data.get("parent")),
        verdict=str(data.get("verdict") or "unknown"),
        reason=str(data.get("reason") or ""),
        rationale=str(data.get("rationale") or ""),
        metrics=metrics if isinstance(metrics, dict) else {},
        gates=[g for g in own_gates or [] if isinstance(g, dict)],
        paired_value=paired_value_of(data),
    )


def paired_value_of(entry: Any) -> float | None:
    """A candidate's ``paired_value`` as the loop's JSON (state, journal, payload) holds it;
    ``None`` when it has none or it is not a number."""
    value = entry.get("paired_value") if isinstance(entry, Mapping) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _status(directory: Path, events: list[dict[str, Any]]) -> str:
    last = next(
        (e for e in reversed(events) if e.get("event") in ("start", "resume", "stop")), None
    )
    if _lock_alive(directory / "lock"):
        return "running"
    if last is None:
        return "no run recorded"
    if last.get("event") != "stop":
        return "unfinished (the run ended without a stop record)"
    if last.get("exit_status") == 2:
        return "interrupted (the same command resumes)"
    return f"stopped: {last.get('reason') or 'unknown reason'}"


def _lock_alive(path: Path) -> bool:
    owner = _json_file(path)
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    from pytest_autopilot.loop.journal import process_alive

    start = owner.get("start")
    return process_alive(pid, start if isinstance(start, str) else None)


def _json_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _events(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError:
        return []
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
