"""The note under the loop's "against the baseline" table when it disagrees with the change
the loop measured side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_autopilot.comparison import paired_note
from pytest_autopilot.config import AutopilotConfig, Objective

CONFIG = AutopilotConfig(path=None, rootdir=Path("."), objective=Objective("loss"))


def loop_payload(measured: float, paired: float | None) -> dict[str, Any]:
    best: dict[str, Any] = {"id": "r1c1", "metrics": {"loss": {"value": measured, "goal": "min"}}}
    if paired is not None:
        best["paired_value"] = paired
    return {"best": best, "baseline": {"metrics": {"loss": {"value": 1.0, "goal": "min"}}}}


def test_a_table_that_differs_from_the_paired_change_gets_a_note() -> None:
    note = paired_note(CONFIG, loop_payload(0.65, 0.5))
    assert note is not None
    assert note.startswith("loss: the best is -50.0% against the baseline as measured side by")


@pytest.mark.parametrize(
    ("measured", "paired"), [(0.51, 0.5), (0.5, None), (0.0424, 0.0454)], ids=str
)
def test_no_note_when_they_agree_within_two_points_or_nothing_was_paired(
    measured: float, paired: float | None
) -> None:
    assert paired_note(CONFIG, loop_payload(measured, paired)) is None
