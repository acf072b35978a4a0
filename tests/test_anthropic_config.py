"""The ``anthropic:`` section of ``autopilot.yaml``: prices, ``max_characters``, thinking and
effort, parsed and refused with the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_autopilot.config import AnthropicSettings, Price, parse_config


def anthropic(tmp_path: Path, section: Any) -> AnthropicSettings:
    return parse_config({"anthropic": section}, tmp_path / "autopilot.yaml", tmp_path).anthropic


def error(tmp_path: Path, section: Any) -> str:
    with pytest.raises(pytest.UsageError) as info:
        anthropic(tmp_path, section)
    return str(info.value)


def test_prices_of_the_configured_model(tmp_path: Path) -> None:
    prices = {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.3}
    settings = anthropic(tmp_path, {"model": "claude-fable-5", "prices": prices})
    assert settings.prices == {"claude-fable-5": Price(3.0, 15.0, 3.75, 0.3)}
    settings = anthropic(tmp_path, {"model": "m", "prices": {"input": 2, "output": 8}})
    price = settings.prices["m"]
    assert (price.cache_write_price, price.cache_read_price) == (2.5, pytest.approx(0.2))


def test_prices_of_several_models(tmp_path: Path) -> None:
    prices = {"a": [1, 2], "b": {"input": 3, "output": 4, "cache_read": 0.1}}
    settings = anthropic(tmp_path, {"prices": prices})
    assert settings.prices == {"a": Price(1.0, 2.0), "b": Price(3.0, 4.0, cache_read=0.1)}


def test_thinking_effort_and_max_characters(tmp_path: Path) -> None:
    settings = anthropic(
        tmp_path,
        {
            "max_tokens": 16000,
            "thinking": {"type": "enabled", "budget_tokens": 8000, "display": "summarized"},
            "effort": "medium",
            "max_characters": 20000,
        },
    )
    assert settings.thinking == {"type": "enabled", "budget_tokens": 8000, "display": "summarized"}
    assert settings.effort == "medium"
    assert settings.max_characters == 20000
    assert anthropic(tmp_path, {"thinking": {"type": "adaptive"}}).thinking == {"type": "adaptive"}
    defaults = anthropic(tmp_path, None)
    assert (defaults.thinking, defaults.effort, defaults.max_characters) == (None, None, 80_000)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"prices": {"input": 3}}, "anthropic.prices.output: missing"),
        ({"prices": {"input": 3, "output": -1}}, "anthropic.prices.output: expected a number"),
        ({"prices": {"input": 3, "output": 1, "x": 1}}, "anthropic.prices.x: unknown key"),
        ({"prices": {"m": [1]}}, "anthropic.prices.m: expected {input: N, output: N} or"),
        ({"prices": {}}, "anthropic.prices: expected {input: N"),
        ({"max_characters": 10}, "anthropic.max_characters: expected an integer >= 1000"),
        ({"effort": "extreme"}, "anthropic.effort: expected one of low, medium, high, xhigh, max"),
        ({"thinking": "on"}, "anthropic.thinking: expected a mapping with keys type"),
        ({"thinking": {"type": "on"}}, "anthropic.thinking.type: expected one of enabled"),
        ({"thinking": {"type": "enabled"}}, "budget_tokens: expected an integer >= 1024"),
        ({"thinking": {"type": "enabled", "budget_tokens": 512}}, "an integer >= 1024"),
        (
            {"max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 4096}},
            "budget_tokens: expected fewer tokens than anthropic.max_tokens (4096), got 4096",
        ),
        (
            {"thinking": {"type": "adaptive", "budget_tokens": 2048}},
            "budget_tokens: expected no budget_tokens unless type is enabled",
        ),
        ({"thinking": {"type": "disabled", "display": "omitted"}}, "thinking.display: expected"),
        (
            {"temperature": 0.5, "thinking": {"type": "adaptive"}},
            "anthropic.temperature: cannot be set together with anthropic.thinking",
        ),
    ],
)
def test_bad_values_name_the_file_and_key(tmp_path: Path, section: Any, expected: str) -> None:
    message = error(tmp_path, section)
    assert message.startswith("autopilot.yaml: anthropic."), message
    assert expected in message, message
