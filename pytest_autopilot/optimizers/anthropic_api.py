"""``optimizer: anthropic``: candidates written by Claude through the text editor tool.

Each of a round's K candidates is its own stateless conversation (a :class:`Conversation`),
run by the loop inside that candidate's worktree, possibly in parallel threads. The model sees
the prompt of :mod:`.prompt` and edits through ``text_editor_20250728``, executed by
:mod:`.editor_tool`. The SDK is imported only when it is needed and resolves the credentials
itself (``ANTHROPIC_API_KEY``, ``ANTHROPIC_AUTH_TOKEN``, a profile, workload identity) and
``ANTHROPIC_BASE_URL``; this module never passes, stores or prints a key, and masks the
environment's keys out of what it records.

A reply is acted on by its ``stop_reason``: tool calls of a reply cut off at ``max_tokens`` are
not executed (the last one is incomplete), and a refusal or a full context window ends the
conversation with its own reason.

Money is tracked from each response's ``usage`` (cache writes and reads priced apart) into
``Proposal.usage``; the history's total stops the loop at ``anthropic.budget_usd`` and a
shared :class:`Ledger` stops a running conversation that crosses it. A model without a known
price records ``unpriced_requests`` instead of a cost.
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

from pytest_autopilot.config import AnthropicSettings, AutopilotConfig, Price
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

PRICES: dict[str, Price] = {
    "claude-opus-4-0": Price(15.0, 75.0),
    "claude-opus-4-1": Price(15.0, 75.0),
    "claude-opus": Price(5.0, 25.0),
    "claude-sonnet": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-3-5-haiku": Price(0.8, 4.0),
    "claude-3-haiku": Price(0.25, 1.25),
}
"""List prices in USD per million tokens when this was written, matched by the longest
model-name prefix. ``anthropic.prices`` overrides them: set it when prices change."""

USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
MAX_TRUNCATED_REPLIES = 2
"""Replies in a row cut off at ``max_tokens`` before the conversation gives up."""


def price_of(settings: AnthropicSettings) -> Price | None:
    """The configured model's price: from ``anthropic.prices``, else the table, else unknown."""
    if settings.model in settings.prices:
        return settings.prices[settings.model]
    matches = [prefix for prefix in PRICES if settings.model.startswith(prefix)]
    return PRICES[max(matches, key=len)] if matches else None


def cost_usd(usage: Mapping[str, float], price: Price) -> float:
    """What the tokens in ``usage`` cost."""
    return (
        usage.get("input_tokens", 0) * price.input
        + usage.get("cache_creation_input_tokens", 0) * price.cache_write_price
        + usage.get("cache_read_input_tokens", 0) * price.cache_read_price
        + usage.get("output_tokens", 0) * price.output
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
    """Refuse before the session when the SDK finds no credentials or the budget cannot be
    priced."""
    if autopilot_config.optimizer != NAME:
        return
    source = autopilot_config.relpath() or "autopilot.yaml"
    settings = autopilot_config.anthropic
    if settings.budget_usd is not None and price_of(settings) is None:
        raise pytest.UsageError(
            f"{source}: anthropic.budget_usd: no price is known for model {settings.model!r}, "
            "so the budget cannot be enforced; add its price in USD per million tokens, e.g. "
            "anthropic: {prices: {input: 3.0, output: 15.0, cache_write: 3.75, cache_read: 0.3}}"
        )
    import anthropic

    try:
        with anthropic.Anthropic(max_retries=0) as client:
            found = has_credentials(client)
    except anthropic.AnthropicError as exc:
        raise pytest.UsageError(f"optimizer 'anthropic': {redact(str(exc))}") from None
    if not found:
        raise pytest.UsageError(NO_CREDENTIALS)


NO_CREDENTIALS = (
    "optimizer 'anthropic' found no Anthropic credentials: set the ANTHROPIC_API_KEY "
    "environment variable (or ANTHROPIC_AUTH_TOKEN, or ANTHROPIC_PROFILE naming a profile "
    "under ANTHROPIC_CONFIG_DIR, default ~/.config/anthropic); ANTHROPIC_BASE_URL, if set, "
    "chooses the endpoint"
)


def has_credentials(client: anthropic.Anthropic) -> bool:
    """Whether the SDK resolved any credential (a key, a token or a credentials provider)."""
    return bool(client.api_key or client.auth_token or client.credentials is not None)


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


def tool_param(settings: AnthropicSettings, *, cache: bool) -> dict[str, Any]:
    """The text editor tool's definition; ``max_characters`` bounds every ``view`` result."""
    tool: dict[str, Any] = {
        "type": TOOL_TYPE,
        "name": TOOL_NAME,
        "max_characters": settings.max_characters,
    }
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

        editor = EditorTool(worktree, self.policy, max_characters=self.settings.max_characters)
        price = price_of(self.settings)
        for key in (*USAGE_KEYS, "requests", "cost_usd" if price else "unpriced_requests"):
            self.usage.setdefault(key, 0)
        self._record({"kind": "prompt", "prefix": self.prompt.prefix, "task": self.prompt.task})
        try:
            client = anthropic.Anthropic(
                max_retries=self.settings.max_retries, timeout=self.settings.timeout
            )
            with client:
                if not has_credentials(client):
                    self._record({"kind": "error", "message": NO_CREDENTIALS})
                    raise CandidateFailed(NO_CREDENTIALS)
                return self._converse(client, editor, price)
        except anthropic.AnthropicError as exc:
            reason = redact(self._describe(exc))
            self._record({"kind": "error", "message": reason})
            raise CandidateFailed(reason) from None

    def _converse(
        self, client: anthropic.Anthropic, editor: EditorTool, price: Price | None
    ) -> str:
        system = [{"type": "text", "text": self.prompt.prefix, "cache_control": _EPHEMERAL}]
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": [{"type": "text", "text": self.prompt.task}]}
        ]
        final, turn, truncated = "", 0, 0
        stopped, abnormal = "the model ended the conversation", False
        for turn in range(1, self.settings.max_turns + 1):
            if self._cancelled.is_set():
                raise CandidateFailed("cancelled")
            if self.ledger.exhausted():
                stopped = f"stopped: anthropic.budget_usd {self.ledger.budget:g} is spent"
                break
            response = self._request(client, system, messages)
            self._account(response.usage, price)
            content = self._reply(response, turn)
            replay = [_replayable(b) for b in content if b.get("type") != "text" or b.get("text")]
            if replay:
                messages.append({"role": "assistant", "content": replay})
            said = "\n".join(b["text"] for b in content if b.get("type") == "text").strip()
            final = said or final
            calls = [b for b in content if b.get("type") == "tool_use"]
            truncated = truncated + 1 if response.stop_reason == "max_tokens" else 0
            ended = self._ended_by(response.stop_reason, turn, truncated, bool(calls))
            if ended is not None:
                stopped, abnormal = ended, True
                break
            if not calls:
                break
            if truncated:
                results = [self._not_executed(call) for call in calls]
            else:
                results = [self._execute(editor, call) for call in calls]
            messages.append({"role": "user", "content": results})
        else:
            stopped = f"stopped after anthropic.max_turns={self.settings.max_turns} turns"
        self.usage["turns"] = turn
        if not editor.changed:
            if abnormal:
                raise CandidateFailed(redact(f"{stopped}, before changing any file"))
            raise CandidateFailed(f"the model changed no file ({stopped}): {_clip(final)}")
        files = ", ".join(sorted(editor.changed))
        rationale = f"{_clip(final) or '(no rationale given)'}\n[{files}; {stopped}]"
        return redact(rationale)

    def _request(
        self, client: anthropic.Anthropic, system: list[dict[str, Any]], messages: list[Any]
    ) -> anthropic.types.Message:
        extra: dict[str, Any] = {}
        if self.settings.temperature is not None:
            extra["temperature"] = self.settings.temperature
        if self.settings.thinking is not None:
            extra["thinking"] = dict(self.settings.thinking)
        if self.settings.effort is not None:
            extra["output_config"] = {"effort": self.settings.effort}
        return client.messages.create(
            model=self.settings.model,
            max_tokens=self.settings.max_tokens,
            system=system,  # type: ignore[arg-type]
            tools=[tool_param(self.settings, cache=True)],  # type: ignore[list-item]
            messages=_with_breakpoint(messages),  # type: ignore[arg-type]
            **extra,
        )

    def _reply(self, response: anthropic.types.Message, turn: int) -> list[dict[str, Any]]:
        """The reply's content blocks as JSON, recorded in the transcript."""
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
        return content

    def _ended_by(
        self, stop_reason: str | None, turn: int, truncated: int, calls: bool
    ) -> str | None:
        """Why a reply ends the conversation early, or ``None`` to go on."""
        if stop_reason == "refusal":
            return f"the model refused to continue (stop_reason: refusal) at turn {turn}"
        if stop_reason == "model_context_window_exceeded":
            return (
                "the conversation filled the model's context window (stop_reason: "
                f"model_context_window_exceeded) at turn {turn}; a lower "
                "anthropic.max_characters or anthropic.max_turns keeps it shorter"
            )
        limit = self.settings.max_tokens
        if truncated and not calls:
            return f"the model's reply was cut off at anthropic.max_tokens={limit}"
        if truncated >= MAX_TRUNCATED_REPLIES:
            return (
                f"{truncated} replies in a row were cut off at anthropic.max_tokens={limit} "
                "inside a tool call, which was not executed; raise anthropic.max_tokens"
            )
        return None

    def _not_executed(self, call: dict[str, Any]) -> dict[str, Any]:
        """The error result for a call in a reply cut off at ``max_tokens``: its input may be
        incomplete, so it is not run, and the model is asked for a smaller edit."""
        result = {
            "type": "tool_result",
            "tool_use_id": call.get("id", ""),
            "content": (
                f"Error: not executed. Your reply was cut off at max_tokens "
                f"({self.settings.max_tokens} tokens) while writing a tool call, so its input "
                "may be incomplete; no call of that reply was run. Make the edit in smaller "
                "calls: str_replace a few lines at a time rather than create a whole file."
            ),
            "is_error": True,
        }
        self._record({"kind": "tool_result", **result})
        return result

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

    def _account(self, usage: Any, price: Price | None) -> None:
        counts = {key: float(getattr(usage, key, 0) or 0) for key in USAGE_KEYS}
        for key, value in counts.items():
            self.usage[key] += value
        self.usage["requests"] += 1
        if price is None:
            self.usage["unpriced_requests"] += 1
            return
        cost = cost_usd(counts, price)
        self.usage["cost_usd"] += cost
        self.ledger.add(cost)

    def _record(self, entry: dict[str, Any]) -> None:
        self.transcript.append(_redacted({"time": round(time.time(), 3), **entry}))

    def _describe(self, exc: BaseException) -> str:
        import anthropic

        retries = self.settings.max_retries
        if isinstance(exc, anthropic.CredentialsError):
            return f"anthropic credentials: {exc}"
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
