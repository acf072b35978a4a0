"""The ``anthropic:`` section of ``autopilot.yaml``: its table and the converters of the keys
that need more than a type (prices, thinking, effort), with the checks across keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from pytest_autopilot.config import (
    CONFIGURED_MODEL,
    EFFORTS,
    THINKING_TYPES,
    AnthropicSettings,
    Price,
)
from pytest_autopilot.config_parser import Key, Parser, Section, integer, number, text

PRICE_KEYS = ("input", "output", "cache_write", "cache_read")
_PRICES_EXPECTED = (
    "{input: N, output: N, cache_write: N, cache_read: N} in USD per million tokens "
    "(cache_* optional), or a mapping of model names to such prices"
)


def prices(parser: Parser, value: object, key: str) -> dict[str, Price]:
    """``{input, output, cache_write, cache_read}`` prices the configured model; a mapping of
    model names to such mappings (or to ``[input, output]``) prices several."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not value:
        parser.fail(key, _PRICES_EXPECTED, value)
    if set(value) & set(PRICE_KEYS):
        return {CONFIGURED_MODEL: price(parser, value, key)}
    return {str(name): price(parser, entry, f"{key}.{name}") for name, entry in value.items()}


def price(parser: Parser, value: object, key: str) -> Price:
    def usd(entry: object, where: str) -> float:
        return parser.number(entry, where, "a number of USD per million tokens >= 0", _at_least_0)

    if isinstance(value, list) and len(value) == 2:
        return Price(usd(value[0], f"{key}[0]"), usd(value[1], f"{key}[1]"))
    if not isinstance(value, Mapping):
        parser.fail(key, "{input: N, output: N} or [input, output] USD per million tokens", value)
    entry = parser.mapping(value, key, PRICE_KEYS)
    for required in ("input", "output"):
        if required not in entry:
            raise pytest.UsageError(
                f"{parser.file}: {key}.{required}: missing; expected USD per million tokens"
            )
    cache = {
        name: usd(entry[name], f"{key}.{name}")
        for name in ("cache_write", "cache_read")
        if entry.get(name) is not None
    }
    return Price(
        usd(entry["input"], f"{key}.input"), usd(entry["output"], f"{key}.output"), **cache
    )


def thinking(parser: Parser, value: object, key: str) -> dict[str, Any]:
    """The Messages API's ``thinking`` object; ``budget_tokens`` against ``max_tokens`` is
    checked across keys by :func:`_check`."""
    section = parser.mapping(value, key, ("type", "budget_tokens", "display"))
    kind = section.get("type")
    if kind not in THINKING_TYPES:
        parser.fail(f"{key}.type", f"one of {', '.join(THINKING_TYPES)}", kind)
    result: dict[str, Any] = {"type": kind}
    budget = section.get("budget_tokens")
    if kind == "enabled":
        result["budget_tokens"] = parser.integer(budget, f"{key}.budget_tokens", 1024)
    elif budget is not None:
        parser.fail(f"{key}.budget_tokens", "no budget_tokens unless type is enabled", budget)
    display = section.get("display")
    if display is not None:
        if kind == "disabled" or display not in ("summarized", "omitted"):
            parser.fail(f"{key}.display", "summarized or omitted (with thinking on)", display)
        result["display"] = display
    return result


def effort(parser: Parser, value: object, key: str) -> str:
    if value not in EFFORTS:
        parser.fail(key, f"one of {', '.join(EFFORTS)}", value)
    return str(value)


def _check(parser: Parser, key: str, settings: AnthropicSettings) -> None:
    thinking = settings.thinking
    if thinking is None:
        return
    budget = thinking.get("budget_tokens")
    if budget is not None and budget >= settings.max_tokens:
        parser.fail(
            f"{key}.thinking.budget_tokens",
            f"fewer tokens than {key}.max_tokens ({settings.max_tokens})",
            budget,
        )
    if settings.temperature is not None and thinking["type"] != "disabled":
        raise pytest.UsageError(
            f"{parser.file}: {key}.temperature: cannot be set together with {key}.thinking "
            f"(type {thinking['type']}): the API refuses the pair; remove one of them"
        )


def _at_least_0(x: float) -> bool:
    return x >= 0


def _positive(x: float) -> bool:
    return x > 0


ANTHROPIC = Section(
    AnthropicSettings,
    (
        Key("model", text("a model name"), "the Claude model that proposes edits"),
        Key("max_tokens", integer(1), "the most tokens one model reply may hold"),
        Key(
            "temperature",
            number("a number from 0 to 1", lambda x: 0 <= x <= 1),
            "sampling temperature (null: the model's default)",
            nullable=True,
        ),
        Key(
            "budget_usd",
            number("a positive number of USD", _positive),
            "stop proposing once the run has cost this much (null: no limit; needs a price)",
            nullable=True,
        ),
        Key("max_turns", integer(1), "tool-use turns per proposal"),
        Key("max_retries", integer(0), "retries of a failed API call"),
        Key("timeout", number("a positive number of seconds", _positive), "per API call"),
        Key(
            "prices",
            prices,
            "USD per million tokens of the model ({input, output, cache_write, cache_read}), "
            "or model -> such prices; overrides the built-in table",
        ),
        Key(
            "max_characters",
            integer(1000),
            "sent in the text editor tool's definition; every view result is cut to it",
        ),
        Key(
            "thinking",
            thinking,
            "the API's thinking object: {type: enabled, budget_tokens: N} or {type: adaptive}",
            nullable=True,
        ),
        Key(
            "effort",
            effort,
            "low, medium, high, xhigh or max, sent as output_config.effort",
            nullable=True,
        ),
    ),
    check=_check,
)
