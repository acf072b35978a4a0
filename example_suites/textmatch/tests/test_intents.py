"""Every case of ``data/intents.yaml`` is one test: the classifier must find its intent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from classifier import Rules, classify

RULES = Path(__file__).parent.parent / "rules.yaml"


@pytest.fixture(scope="session")
def rules() -> Rules:
    return Rules.load(RULES)


@pytest.mark.dataset("data/intents.yaml")
def test_intent(case: dict[str, Any], rules: Rules) -> None:
    intent, hits = classify(case["text"], rules)
    decided = f"matched {hits}" if hits else "no keyword matched"
    assert intent == case["intent"], (
        f"message {case['text']!r}: expected intent {case['intent']!r}, got {intent!r} ({decided})"
    )
