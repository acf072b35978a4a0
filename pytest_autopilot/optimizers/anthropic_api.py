"""``optimizer: anthropic``: candidates written by Claude through the text editor tool.

Each of a round's K candidates is its own stateless conversation (a :class:`Conversation`),
run by the loop inside that candidate's worktree, possibly in parallel threads. The model sees
the prompt of :mod:`.prompt` and edits through ``text_editor_20250728``, executed by
:mod:`.editor_tool`. The SDK is imported only when a conversation starts; it reads
``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL`` itself, and this module never holds the key
beyond masking it out of what it records.

Money is tracked from each response's ``usage`` (cache writes and reads priced apart) into
``Proposal.usage``; the history's total stops the loop at ``anthropic.budget_usd`` and a
shared :class:`Ledger` stops a running conversation that crosses it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_autopilot.config import AnthropicSettings, AutopilotConfig
from pytest_autopilot.optimizers.editor_tool import TOOL_NAME, TOOL_TYPE, EditorTool, EditPolicy
from pytest_autopilot.optimizers.prompt import (
    Prompt,
    build_prompt,
    protected_patterns,
)
from pytest_autopilot.proposals import CandidateFailed, OptimizerContext, Proposal

if TYPE_CHECKING:
    import anthropic

NAME = "anthropic"
KEY_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
MAX_RATIONALE_CHARS = 2_000

CACHE_WRITE_FACTOR = 1.25
"""5-minute cache writes cost 1.25 times the input price."""
CACHE_READ_FACTOR = 0.1

PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-4-0": (15.0, 75.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus": (5.0, 25.0),
    "claude-sonnet": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-5-haiku": (0.8, 4.0),
    "claude-3-haiku": (0.25, 1.25),
}
"""List prices in USD per million (input, output) tokens when this was written, matched by the
longest model-name prefix. ``anthropic.prices`` overrides them: set it when prices change."""

USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


def price_of(settings: AnthropicSettings) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for the configured model, if known."""
    if settings.model in settings.prices:
        return settings.prices[settings.model]
    matches = [prefix for prefix in PRICES if settings.model.startswith(prefix)]
    return PRICES[max(matches, key=len)] if matches else None


def cost_usd(usage: Mapping[str, float], price: tuple[float, float] | None) -> float:
    """What the tokens in ``usage`` cost; 0 for a model without a known price."""
    if price is None:
        return 0.0
    inp, out = price
    return (
        usage.get("input_tokens", 0) * inp
        + usage.get("cache_creation_input_tokens", 0) * inp * CACHE_WRITE_FACTOR
        + usage.get("cache_read_input_tokens", 0) * inp * CACHE_READ_FACTOR
        + usage.get("output_tokens", 0) * out
    ) / 1e6


def redact(text: str) -> str:
    """Mask the credentials of the environment, wherever they might have crept in."""
    for variable in KEY_VARIABLES:
        secret = os.environ.get(variable)
        if secret and len(secret) >= 8:
            text = text.replace(secret, f"[{variable} redacted]")
    return text


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return value


@dataclass
class Ledger:
    """Money spent so far (history plus running conversations), shared by one round's threads."""

    budget: float | None
    spent: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, amount: float) -> None:
        with self._lock:
            self.spent += amount

    def exhausted(self) -> bool:
        with self._lock:
            return self.budget is not None and self.spent >= self.budget


@pytest.hookimpl
def pytest_autopilot_optimizer_names(config: pytest.Config) -> Sequence[str]:
    return [NAME]


@pytest.hookimpl
def pytest_autopilot_check(config: pytest.Config, autopilot_config: AutopilotConfig) -> None:
    """Refuse before the session when no key is set or the budget cannot be priced."""
    if autopilot_config.optimizer != NAME:
        return
    source = autopilot_config.relpath() or "autopilot.yaml"
    if not any(os.environ.get(variable) for variable in KEY_VARIABLES):
        raise pytest.UsageError(
            "optimizer 'anthropic' needs an API key: set the ANTHROPIC_API_KEY environment "
            "variable (ANTHROPIC_BASE_URL, if set, chooses the endpoint)"
        )
    settings = autopilot_config.anthropic
    if settings.budget_usd is not None and price_of(settings) is None:
        raise pytest.UsageError(
            f"{source}: anthropic.prices: no price is known for model {settings.model!r}, so "
            "anthropic.budget_usd cannot be enforced; expected an entry like "
            f"prices: {{{settings.model}: [3.0, 15.0]}} (USD per million input, output tokens)"
        )


@pytest.hookimpl
def pytest_autopilot_propose(context: OptimizerContext) -> Sequence[Proposal] | None:
    """K independent conversations, or none once ``anthropic.budget_usd`` is spent."""
    if context.optimizer != NAME:
        return None
    settings = context.config.anthropic
    ledger = Ledger(
        budget=settings.budget_usd,
        spent=sum(record.usage.get("cost_usd", 0.0) for record in context.history),
    )
    if ledger.exhausted():
        return []
    prefix = context.rootdir_prefix
    policy = EditPolicy.build(
        context.config,
        protected_patterns(context.config, context.protected_files),
        context.protected_files,
        prefix=prefix,
    )
    proposals = []
    for index in range(1, context.max_candidates + 1):
        proposal = Proposal(rationale=f"anthropic: idea {index} of {context.max_candidates}")
        proposal.apply = Conversation(
            settings=settings,
            prompt=build_prompt(context, candidate=index, tool=True, prefix=prefix),
            policy=policy,
            ledger=ledger,
            usage=proposal.usage,
            transcript=proposal.transcript,
        )
        proposals.append(proposal)
    return proposals


def tool_param(*, cache: bool) -> dict[str, Any]:
    tool: dict[str, Any] = {"type": TOOL_TYPE, "name": TOOL_NAME}
    if cache:
        tool["cache_control"] = {"type": "ephemeral"}
    return tool


@dataclass
class Conversation:
    """One candidate's tool-use conversation; called by the loop with the worktree root."""

    settings: AnthropicSettings
    prompt: Prompt
    policy: EditPolicy
    ledger: Ledger
    usage: dict[str, float]
    transcript: list[dict[str, Any]]
    _cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stop before the next request (the loop calls it on Ctrl+C)."""
        self._cancelled.set()

    def __call__(self, worktree: Path) -> str:
        """Run the conversation; return the rationale, or raise :class:`CandidateFailed`."""
        import anthropic

        editor = EditorTool(worktree, self.policy)
        price = price_of(self.settings)
        for key in (*USAGE_KEYS, "cost_usd", "requests"):
            self.usage.setdefault(key, 0)
        self._record({"kind": "prompt", "prefix": self.prompt.prefix, "task": self.prompt.task})
        try:
            client = anthropic.Anthropic(
                max_retries=self.settings.max_retries, timeout=self.settings.timeout
            )
            with client:
                return self._converse(client, editor, price)
        except anthropic.AnthropicError as exc:
            reason = redact(self._describe(exc))
            self._record({"kind": "error", "message": reason})
            raise CandidateFailed(reason) from None

    def _converse(
        self, client: anthropic.Anthropic, editor: EditorTool, price: tuple[float, float] | None
    ) -> str:
        system = [{"type": "text", "text": self.prompt.prefix, "cache_control": _EPHEMERAL}]
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": [{"type": "text", "text": self.prompt.task}]}
        ]
        final = ""
        turn = 0
        stopped = "the model ended the conversation"
        for turn in range(1, self.settings.max_turns + 1):
            if self._cancelled.is_set():
                raise CandidateFailed("cancelled")
            if self.ledger.exhausted():
                stopped = f"stopped: anthropic.budget_usd {self.ledger.budget:g} is spent"
                break
            extra: dict[str, Any] = {}
            if self.settings.temperature is not None:
                extra["temperature"] = self.settings.temperature
            response = client.messages.create(
                model=self.settings.model,
                max_tokens=self.settings.max_tokens,
                system=system,  # type: ignore[arg-type]
                tools=[tool_param(cache=True)],  # type: ignore[list-item]
                messages=_with_breakpoint(messages),  # type: ignore[arg-type]
                **extra,
            )
            self._account(response.usage, price)
            content = [
                block.model_dump(mode="json", exclude_none=True, warnings=False)
                for block in response.content
            ]
            self._record(
                {
                    "kind": "reply",
                    "turn": turn,
                    "stop_reason": response.stop_reason,
                    "content": content,
                    "usage": {k: getattr(response.usage, k) or 0 for k in USAGE_KEYS},
                }
            )
            replay = [_replayable(b) for b in content if b.get("type") != "text" or b.get("text")]
            if replay:
                messages.append({"role": "assistant", "content": replay})
            said = "\n".join(b["text"] for b in content if b.get("type") == "text").strip()
            final = said or final
            calls = [b for b in content if b.get("type") == "tool_use"]
            if not calls:
                break
            results = [self._execute(editor, call) for call in calls]
            messages.append({"role": "user", "content": results})
        else:
            stopped = f"stopped after anthropic.max_turns={self.settings.max_turns} turns"
        self.usage["turns"] = turn
        if not editor.changed:
            raise CandidateFailed(f"the model changed no file ({stopped}): {_clip(final)}")
        files = ", ".join(sorted(editor.changed))
        rationale = f"{_clip(final) or '(no rationale given)'}\n[{files}; {stopped}]"
        return redact(rationale)

    def _execute(self, editor: EditorTool, call: dict[str, Any]) -> dict[str, Any]:
        if call.get("name") != TOOL_NAME:
            outcome_text, is_error = f"Error: unknown tool {call.get('name')!r}", True
        else:
            outcome = editor.run(call.get("input"))
            outcome_text, is_error = outcome.text, outcome.is_error
        result = {
            "type": "tool_result",
            "tool_use_id": call.get("id", ""),
            "content": outcome_text,
            "is_error": is_error,
        }
        self._record({"kind": "tool_result", **result})
        return result

    def _account(self, usage: Any, price: tuple[float, float] | None) -> None:
        counts = {key: float(getattr(usage, key, 0) or 0) for key in USAGE_KEYS}
        cost = cost_usd(counts, price)
        for key, value in counts.items():
            self.usage[key] += value
        self.usage["requests"] += 1
        self.usage["cost_usd"] += cost
        self.ledger.add(cost)

    def _record(self, entry: dict[str, Any]) -> None:
        self.transcript.append(_redacted({"time": round(time.time(), 3), **entry}))

    def _describe(self, exc: BaseException) -> str:
        import anthropic

        retries = self.settings.max_retries
        if isinstance(exc, anthropic.APITimeoutError):
            return f"anthropic API timed out ({self.settings.timeout:g} s) after {retries} retries"
        if isinstance(exc, anthropic.APIConnectionError):
            return f"anthropic API unreachable after {retries} retries: {exc}"
        if isinstance(exc, anthropic.APIStatusError):
            body = exc.body if isinstance(exc.body, dict) else {}
            error = body.get("error", {}) if isinstance(body.get("error"), dict) else {}
            kind = error.get("type", "error")
            message = error.get("message", str(exc))
            retried = exc.status_code in (408, 409, 429) or exc.status_code >= 500
            after = f" after {retries} retries" if retried else ""
            return f"anthropic API {exc.status_code} {kind}{after}: {message}"
        return f"anthropic API error: {exc}"


_EPHEMERAL = {"type": "ephemeral"}


def _with_breakpoint(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy with one cache breakpoint on the last block, so each turn reads the previous one
    from the cache (tools, system and this one: three of the four breakpoints allowed)."""
    out = [dict(m) for m in messages]
    last = out[-1]
    blocks = [dict(b) for b in last["content"]]
    blocks[-1]["cache_control"] = _EPHEMERAL
    last["content"] = blocks
    return out


def _replayable(block: dict[str, Any]) -> dict[str, Any]:
    """The fields of a reply block that the API accepts back in the next request."""
    if block.get("type") == "text":
        return {"type": "text", "text": block.get("text", "")}
    if block.get("type") == "tool_use":
        return {k: block[k] for k in ("type", "id", "name", "input") if k in block}
    return block


def _clip(text: str) -> str:
    return text if len(text) <= MAX_RATIONALE_CHARS else text[: MAX_RATIONALE_CHARS - 3] + "..."
