"""``optimizer: anthropic`` with the real ``anthropic`` client against a local scripted server."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fake_messages_api import (
    Error,
    FakeMessagesAPI,
    Hang,
    Reply,
    Request,
    done,
    isolate_credentials,
    make_context,
    text,
    thinking,
    tool_reply,
    tool_use,
    write_profile,
)

from pytest_autopilot.config import AnthropicSettings, AutopilotConfig, Price
from pytest_autopilot.optimizers import anthropic_api
from pytest_autopilot.optimizers.anthropic_api import Conversation, cost_usd, price_of
from pytest_autopilot.proposals import CandidateFailed, CandidateRecord, Proposal

FAKE_KEY = "sk-ant-fake-0123456789abcdef"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as server:
        isolate_credentials(monkeypatch, tmp_path / "home")
        monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        yield server


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    (root / "params.yaml").write_text("workers: 2\n")
    (root / "test_speed.py").write_text("def test_speed():\n    pass\n")
    (root / "data" / "cases.yaml").write_text("- {id: a, label: secret-label}\n")
    (tmp_path / "outside.txt").write_text("not yours\n")
    (root / "escape.txt").symlink_to(tmp_path / "outside.txt")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def propose(repo: Path, **kwargs: Any) -> list[Proposal]:
    proposals = anthropic_api.pytest_autopilot_propose(make_context(repo, **kwargs))
    assert proposals is not None
    return list(proposals)


def run(proposal: Proposal, worktree: Path) -> str | None:
    assert isinstance(proposal.apply, Conversation)
    return proposal.apply(worktree)


def tool_results(request: Request) -> list[dict[str, Any]]:
    last = request.body["messages"][-1]
    return [b for b in last["content"] if b["type"] == "tool_result"]


EDIT = {
    "command": "str_replace",
    "path": "params.yaml",
    "old_str": "workers: 2",
    "new_str": "workers: 8",
}


def test_a_conversation_edits_a_parameter_and_ends(api: FakeMessagesAPI, repo: Path) -> None:
    api.script(tool_reply(EDIT), done("More workers overlap the I/O waits."))
    [proposal] = propose(repo)
    rationale = run(proposal, repo)

    assert (repo / "params.yaml").read_text() == "workers: 8\n"
    assert rationale is not None and rationale.startswith("More workers overlap the I/O waits.")
    first, second = api.message_requests
    assert FAKE_KEY in first.headers.get("x-api-key", first.headers.get("authorization", ""))
    assert first.body["tools"][0]["type"] == "text_editor_20250728"
    assert first.body["tools"][0]["name"] == "str_replace_based_edit_tool"
    assert first.body["model"] == AnthropicSettings().model
    [result] = tool_results(second)
    assert result["is_error"] is False
    assert result["tool_use_id"] == first_tool_id(api, 0)
    assert proposal.usage["requests"] == 2
    assert proposal.usage["output_tokens"] == sum(u["output_tokens"] for u in api.usage_log)
    kinds = [entry["kind"] for entry in proposal.transcript]
    assert kinds == ["prompt", "reply", "tool_result", "reply"]


def first_tool_id(api: FakeMessagesAPI, request_index: int) -> str:
    later = api.message_requests[request_index + 1].body["messages"]
    assistant = later[-2]
    return str(next(b["id"] for b in assistant["content"] if b["type"] == "tool_use"))


def test_refused_edits_are_error_results_and_the_conversation_goes_on(
    api: FakeMessagesAPI, repo: Path
) -> None:
    refused = [
        {"command": "str_replace", "path": "test_speed.py", "old_str": "pass", "new_str": "1"},
        {"command": "create", "path": "data/cases.yaml", "file_text": "- {id: a}\n"},
        {"command": "create", "path": "../outside.txt", "file_text": "pwned\n"},
        {"command": "create", "path": "escape.txt", "file_text": "pwned\n"},
        {"command": "view", "path": "data/cases.yaml"},
    ]
    api.script(tool_reply(*refused), tool_reply(EDIT), done())
    [proposal] = propose(repo)
    run(proposal, repo)

    results = tool_results(api.message_requests[1])
    assert [r["is_error"] for r in results] == [True] * 5
    assert "protected" in results[0]["content"]
    assert "cannot be read" in results[1]["content"]
    assert "outside the repository" in results[2]["content"]
    assert "outside the repository" in results[3]["content"]
    assert "cannot be read" in results[4]["content"]
    assert all("secret-label" not in json.dumps(r.body) for r in api.message_requests)
    assert (repo / "test_speed.py").read_text() == "def test_speed():\n    pass\n"
    assert (repo.parent / "outside.txt").read_text() == "not yours\n"
    assert (repo / "params.yaml").read_text() == "workers: 8\n"


def test_malformed_tool_input_gets_an_error_result(api: FakeMessagesAPI, repo: Path) -> None:
    api.script(
        Reply(
            [text("hmm"), tool_use({"command": "str_replace", "path": ["params.yaml"]})],
            stop_reason="tool_use",
        ),
        Reply([tool_use("not an object")], stop_reason="tool_use"),
        Reply([tool_use({"command": "view"}, name="bash")], stop_reason="tool_use"),
        tool_reply(EDIT),
        done(),
    )
    [proposal] = propose(repo)
    run(proposal, repo)
    errors = [tool_results(r)[0] for r in api.message_requests[1:4]]
    assert [e["is_error"] for e in errors] == [True, True, True]
    assert "`path` must be a non-empty string" in errors[0]["content"]
    assert "must be an object" in errors[1]["content"]
    assert "unknown tool 'bash'" in errors[2]["content"]
    assert (repo / "params.yaml").read_text() == "workers: 8\n"


def test_rate_limit_is_retried(api: FakeMessagesAPI, repo: Path) -> None:
    api.script(Error(429, "slow down"), tool_reply(EDIT), done())
    [proposal] = propose(repo)
    run(proposal, repo)
    assert len(api.message_requests) == 3
    assert api.message_requests[1].headers["x-stainless-retry-count"] == "1"
    assert (repo / "params.yaml").read_text() == "workers: 8\n"


def test_overload_past_the_retries_fails_the_candidate(api: FakeMessagesAPI, repo: Path) -> None:
    api.script(*[Error(529, "Overloaded")] * 3)
    [proposal] = propose(repo, anthropic=AnthropicSettings(max_retries=2))
    with pytest.raises(CandidateFailed) as failure:
        run(proposal, repo)
    assert str(failure.value) == "anthropic API 529 overloaded_error after 2 retries: Overloaded"
    assert len(api.message_requests) == 3
    assert proposal.transcript[-1] == {**proposal.transcript[-1], "kind": "error"}


def test_a_hanging_server_times_out_and_fails(api: FakeMessagesAPI, repo: Path) -> None:
    api.script(Hang(2.0), Hang(2.0))
    [proposal] = propose(repo, anthropic=AnthropicSettings(max_retries=1, timeout=0.3))
    start = time.monotonic()
    with pytest.raises(CandidateFailed, match=r"timed out \(0.3 s\) after 1 retries"):
        run(proposal, repo)
    assert time.monotonic() - start < 3


def test_a_conversation_without_edits_fails_with_the_reply(
    api: FakeMessagesAPI, repo: Path
) -> None:
    api.script(done("I see nothing to improve."))
    [proposal] = propose(repo)
    with pytest.raises(CandidateFailed, match=r"changed no file.*I see nothing to improve"):
        run(proposal, repo)


def test_turn_limit_bounds_the_conversation(api: FakeMessagesAPI, repo: Path) -> None:
    api.handler = lambda request: tool_reply({"command": "view", "path": "params.yaml"}, EDIT)
    [proposal] = propose(repo, anthropic=AnthropicSettings(max_turns=3))
    rationale = run(proposal, repo)
    assert len(api.message_requests) == 3
    assert rationale is not None and "max_turns=3" in rationale


def test_prefix_is_byte_identical_and_cached(api: FakeMessagesAPI, repo: Path) -> None:
    """Two candidates of one round and a candidate of a later round share the prefix."""
    api.handler = lambda request: tool_reply(EDIT) if len(request.body["messages"]) == 1 else done()
    knowledge = [("docs/tuning.md", "Workers help until the disk saturates.\n" * 200)]
    first_round = propose(repo, candidates=2, knowledge=knowledge)
    for proposal in first_round:
        (repo / "params.yaml").write_text("workers: 2\n")
        run(proposal, repo)
    history = [
        CandidateRecord("r1c1", 1, "1" * 40, "0" * 40, "more workers", "rejected", "no gain")
    ]
    [later] = propose(repo, round=2, history=history, knowledge=knowledge)
    (repo / "params.yaml").write_text("workers: 2\n")
    run(later, repo)

    requests = api.message_requests
    openers = [r for r in requests if len(r.body["messages"]) == 1]
    assert len(openers) == 3
    prefixes = {json.dumps([r.body["tools"], r.body["system"]]).encode() for r in requests}
    assert len(prefixes) == 1
    assert requests[0].body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert requests[0].body["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert "Workers help" in requests[0].body["system"][0]["text"]
    tasks = {r.body["messages"][0]["content"][0]["text"] for r in openers}
    assert len(tasks) == 3, "each candidate gets its own task"
    # The first request writes the cache; every later one reads the prefix back.
    assert api.usage_log[0]["cache_read_input_tokens"] == 0
    assert api.usage_log[0]["cache_creation_input_tokens"] > 1000
    assert all(u["cache_read_input_tokens"] > 1000 for u in api.usage_log[1:])
    # The second turn reads the whole first request back (the moving message breakpoint).
    assert (
        api.usage_log[1]["cache_read_input_tokens"]
        == sum(api.usage_log[0].values()) - (api.usage_log[0]["output_tokens"])
    )
    total = {k: sum(p.usage[k] for p in [*first_round, later]) for k in later.usage}
    assert total["cache_read_input_tokens"] == sum(
        u["cache_read_input_tokens"] for u in api.usage_log
    )
    assert total["cost_usd"] == pytest.approx(
        sum(cost_usd(u, price_of(AnthropicSettings())) for u in api.usage_log)
    )


def test_budget_spent_in_history_ends_the_loop(api: FakeMessagesAPI, repo: Path) -> None:
    spent = CandidateRecord("r1c1", 1, None, None, "x", "failed", usage={"cost_usd": 0.6})
    settings = AnthropicSettings(budget_usd=1.0)
    assert len(propose(repo, anthropic=settings, history=[spent])) == 1
    assert propose(repo, anthropic=settings, history=[spent, spent]) == []
    assert api.requests == []


def test_budget_crossed_mid_conversation_stops_it(api: FakeMessagesAPI, repo: Path) -> None:
    # 1 M output tokens of the default model cost 15 USD: one reply crosses a 10 USD budget.
    api.script(Reply(tool_reply(EDIT).content, "tool_use", output_tokens=1_000_000), done())
    [proposal] = propose(repo, anthropic=AnthropicSettings(budget_usd=10.0))
    rationale = run(proposal, repo)
    assert len(api.message_requests) == 1
    assert rationale is not None and "budget_usd 10 is spent" in rationale
    assert proposal.usage["cost_usd"] >= 15.0
    assert (repo / "params.yaml").read_text() == "workers: 8\n"


def test_prices_follow_the_table_and_the_config() -> None:
    assert price_of(AnthropicSettings(model="claude-opus-4-1-20250805")) == Price(15.0, 75.0)
    assert price_of(AnthropicSettings(model="claude-opus-4-8")) == Price(5.0, 25.0)
    assert price_of(AnthropicSettings(model="claude-haiku-4-5")) == Price(1.0, 5.0)
    mine = Price(2.0, 4.0, cache_write=1.0, cache_read=0.5)
    assert price_of(AnthropicSettings(model="mine", prices={"mine": mine})) == mine
    assert price_of(AnthropicSettings(model="claude-fable-5")) is None
    usage = {
        "input_tokens": 1e6,
        "output_tokens": 1e6,
        "cache_creation_input_tokens": 1e6,
        "cache_read_input_tokens": 1e6,
    }
    assert cost_usd(usage, Price(3.0, 15.0)) == pytest.approx(3 + 15 + 3.75 + 0.3)
    assert cost_usd(usage, mine) == pytest.approx(2 + 4 + 1 + 0.5)


def test_the_default_model_is_not_deprecated() -> None:
    from anthropic.resources.messages.messages import DEPRECATED_MODELS

    assert AnthropicSettings().model not in DEPRECATED_MODELS
    assert price_of(AnthropicSettings()) is not None


def test_an_unpriced_model_with_a_budget_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    settings = AnthropicSettings(model="claude-fable-5", budget_usd=1.0)
    config = AutopilotConfig(
        path=tmp_path / "autopilot.yaml",
        rootdir=tmp_path,
        optimizer="anthropic",
        anthropic=settings,
    )
    with pytest.raises(pytest.UsageError) as error:
        anthropic_api.pytest_autopilot_check(None, config)  # type: ignore[arg-type]
    assert str(error.value).startswith(
        "autopilot.yaml: anthropic.budget_usd: no price is known for model 'claude-fable-5'"
    )
    assert "prices: {input: 3.0, output: 15.0" in str(error.value)
    priced = AnthropicSettings(
        model="claude-fable-5", budget_usd=1.0, prices={"claude-fable-5": Price(3.0, 15.0)}
    )
    config = AutopilotConfig(path=None, rootdir=tmp_path, optimizer="anthropic", anthropic=priced)
    anthropic_api.pytest_autopilot_check(None, config)  # type: ignore[arg-type]


def test_an_unpriced_model_records_an_unknown_cost(api: FakeMessagesAPI, repo: Path) -> None:
    api.script(tool_reply(EDIT), done())
    [proposal] = propose(repo, anthropic=AnthropicSettings(model="claude-fable-5"))
    run(proposal, repo)
    assert proposal.usage["unpriced_requests"] == 2
    assert "cost_usd" not in proposal.usage, "an unknown cost is not a cost of 0"
    assert proposal.usage["output_tokens"] == sum(u["output_tokens"] for u in api.usage_log)


def test_prices_from_the_config_price_the_tokens(api: FakeMessagesAPI, repo: Path) -> None:
    price = Price(2.0, 8.0, cache_write=4.0, cache_read=0.5)
    settings = AnthropicSettings(model="claude-fable-5", prices={"claude-fable-5": price})
    api.script(tool_reply(EDIT), done())
    [proposal] = propose(repo, anthropic=settings)
    run(proposal, repo)
    assert "unpriced_requests" not in proposal.usage
    expected = sum(cost_usd(u, price) for u in api.usage_log)
    assert expected > 0
    assert proposal.usage["cost_usd"] == pytest.approx(expected)


def test_the_key_is_never_recorded(api: FakeMessagesAPI, repo: Path) -> None:
    """Even when a file the model views holds the key, the transcript masks it."""
    (repo / "notes.txt").write_text(f"ANTHROPIC_API_KEY={FAKE_KEY}\n")
    api.script(
        tool_reply({"command": "view", "path": "notes.txt"}, EDIT),
        done(f"The key is {FAKE_KEY}"),
    )
    [proposal] = propose(repo)
    rationale = run(proposal, repo)
    assert FAKE_KEY in json.dumps(api.message_requests[1].body)  # the model did see the file
    assert rationale is not None and FAKE_KEY not in rationale
    assert FAKE_KEY not in json.dumps(proposal.transcript)
    assert "[ANTHROPIC_API_KEY redacted]" in json.dumps(proposal.transcript)


def test_candidates_run_concurrently_with_different_ideas(
    api: FakeMessagesAPI, repo: Path, tmp_path: Path
) -> None:
    """The loop may call the K ``apply``s at once, one thread and worktree per candidate."""
    both_in_flight = threading.Barrier(2, timeout=10)

    def answer(request: Request) -> Reply:
        task = request.body["messages"][0]["content"][0]["text"]
        idea = 3 if "implement idea number 1" in task else 9
        if len(request.body["messages"]) > 1:
            return done(f"idea with {idea} workers")
        both_in_flight.wait()  # raises, failing the request, unless both are concurrent
        return tool_reply({**EDIT, "new_str": f"workers: {idea}"})

    api.handler = answer
    worktrees = []
    for name in ("c1", "c2"):
        worktree = tmp_path / name
        shutil.copytree(repo, worktree, symlinks=True)
        worktrees.append(worktree)
    proposals = propose(repo, candidates=2, anthropic=AnthropicSettings(max_retries=0))
    with ThreadPoolExecutor(2) as pool:
        rationales = list(pool.map(run, proposals, worktrees))
    assert [(w / "params.yaml").read_text() for w in worktrees] == ["workers: 3\n", "workers: 9\n"]
    assert [r.splitlines()[0] for r in rationales if r] == [
        "idea with 3 workers",
        "idea with 9 workers",
    ]
    assert (repo / "params.yaml").read_text() == "workers: 2\n"


# -- stop reasons ----------------------------------------------------------------------------

CUT_OFF_CREATE = {"command": "create", "path": "params.yaml", "file_text": "workers: 8\nbat"}


def test_a_tool_call_cut_off_at_max_tokens_is_not_executed(
    api: FakeMessagesAPI, repo: Path
) -> None:
    api.script(
        Reply([text("Rewriting."), tool_use(CUT_OFF_CREATE)], stop_reason="max_tokens"),
        tool_reply(EDIT),
        done("Smaller edit."),
    )
    [proposal] = propose(repo)
    rationale = run(proposal, repo)

    assert (repo / "params.yaml").read_text() == "workers: 8\n", "only the complete edit ran"
    [result] = tool_results(api.message_requests[1])
    assert result["is_error"] is True
    assert result["tool_use_id"] == first_tool_id(api, 0)
    assert "not executed" in result["content"] and "max_tokens (8192 tokens)" in result["content"]
    assert "smaller calls" in result["content"]
    assert rationale is not None and rationale.startswith("Smaller edit.")
    assert [e["kind"] for e in proposal.transcript] == [
        "prompt",
        "reply",
        "tool_result",
        "reply",
        "tool_result",
        "reply",
    ]


def test_replies_cut_off_again_and_again_end_the_candidate(
    api: FakeMessagesAPI, repo: Path
) -> None:
    cut = Reply([tool_use(CUT_OFF_CREATE)], stop_reason="max_tokens")
    api.script(cut, cut, tool_reply(EDIT))
    [proposal] = propose(repo, anthropic=AnthropicSettings(max_tokens=2000))
    with pytest.raises(CandidateFailed) as failure:
        run(proposal, repo)
    assert str(failure.value) == (
        "2 replies in a row were cut off at anthropic.max_tokens=2000 inside a tool call, "
        "which was not executed; raise anthropic.max_tokens, before changing any file"
    )
    assert len(api.message_requests) == 2
    assert (repo / "params.yaml").read_text() == "workers: 2\n"


def test_a_refusal_fails_the_candidate_with_its_own_reason(
    api: FakeMessagesAPI, repo: Path
) -> None:
    api.script(Reply([text("I can't help with that.")], stop_reason="refusal"))
    [proposal] = propose(repo)
    with pytest.raises(CandidateFailed) as failure:
        run(proposal, repo)
    assert str(failure.value) == (
        "the model refused to continue (stop_reason: refusal) at turn 1, before changing any file"
    )
    assert proposal.transcript[-1]["stop_reason"] == "refusal"


def test_a_refusal_after_an_edit_keeps_the_edit_and_says_so(
    api: FakeMessagesAPI, repo: Path
) -> None:
    api.script(tool_reply(EDIT), Reply([], stop_reason="refusal"))
    [proposal] = propose(repo)
    rationale = run(proposal, repo)
    assert rationale is not None
    assert rationale.endswith(
        "[params.yaml; the model refused to continue (stop_reason: refusal) at turn 2]"
    )


def test_a_full_context_window_is_told_apart_from_a_refusal(
    api: FakeMessagesAPI, repo: Path
) -> None:
    full = Reply([text("Let me look at")], stop_reason="model_context_window_exceeded")
    api.script(full, tool_reply(EDIT), full)
    [first, second] = propose(repo, candidates=2)
    with pytest.raises(CandidateFailed, match=r"^the conversation filled the model's context"):
        run(first, repo)
    rationale = run(second, repo)
    assert rationale is not None
    assert "[params.yaml; the conversation filled the model's context window" in rationale
    assert "(stop_reason: model_context_window_exceeded) at turn 2" in rationale
    assert "refused" not in rationale


# -- the tool definition, thinking and effort ------------------------------------------------


def test_view_results_obey_max_characters_of_the_tool_definition(
    api: FakeMessagesAPI, repo: Path
) -> None:
    (repo / "notes.txt").write_text("".join(f"note number {i}\n" for i in range(1, 501)))
    view = {"command": "view", "path": "notes.txt", "max_characters": 1_000_000}
    api.script(tool_reply(view), tool_reply(EDIT), done())
    [proposal] = propose(repo, anthropic=AnthropicSettings(max_characters=1000))
    run(proposal, repo)

    tool = api.message_requests[0].body["tools"][0]
    assert tool["max_characters"] == 1000
    assert tool["type"] == "text_editor_20250728"
    [result] = tool_results(api.message_requests[1])
    shown = result["content"]
    assert result["is_error"] is False
    assert len(shown) <= 1000, "a max_characters in the call does not lift the limit"
    last = shown.splitlines()[-2]
    assert last.endswith(f"note number {int(last.split()[0])}"), "cut at a line boundary"
    hidden = int(last.split()[0]) + 1
    assert shown.splitlines()[-1] == (
        f"[... truncated: lines {hidden}..500 not shown; "
        f"use view_range [{hidden}, 500] to see them]"
    )


def test_thinking_and_effort_are_sent_and_thinking_is_replayed(
    api: FakeMessagesAPI, repo: Path
) -> None:
    settings = AnthropicSettings(
        max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 2048}, effort="high"
    )
    api.script(Reply([thinking("Workers first."), tool_use(EDIT)], "tool_use"), done())
    [proposal] = propose(repo, anthropic=settings)
    run(proposal, repo)

    first, second = api.message_requests
    for request in (first, second):
        assert request.body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        assert request.body["output_config"] == {"effort": "high"}
        assert "temperature" not in request.body
    assistant = second.body["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"][0] == thinking("Workers first."), "replayed with its signature"
    assert (repo / "params.yaml").read_text() == "workers: 8\n"


def test_without_thinking_or_effort_neither_is_sent(api: FakeMessagesAPI, repo: Path) -> None:
    api.script(tool_reply(EDIT), done())
    [proposal] = propose(repo)
    run(proposal, repo)
    body = api.message_requests[0].body
    assert "thinking" not in body and "output_config" not in body


# -- credentials -----------------------------------------------------------------------------


def check(tmp_path: Path) -> None:
    config = AutopilotConfig(path=None, rootdir=tmp_path, optimizer="anthropic")
    anthropic_api.pytest_autopilot_check(None, config)  # type: ignore[arg-type]


def test_without_any_credential_the_check_and_the_candidate_say_what_to_set(
    api: FakeMessagesAPI, repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(pytest.UsageError) as error:
        check(tmp_path)
    message = str(error.value)
    assert message.startswith("optimizer 'anthropic' found no Anthropic credentials")
    assert "ANTHROPIC_API_KEY" in message and "ANTHROPIC_PROFILE" in message
    [proposal] = propose(repo)
    with pytest.raises(CandidateFailed, match="found no Anthropic credentials"):
        run(proposal, repo)
    assert api.requests == []
    assert proposal.transcript[-1]["kind"] == "error"


def test_an_auth_token_is_used_without_an_api_key(
    api: FakeMessagesAPI, repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "token-0123456789")
    check(tmp_path)
    api.script(tool_reply(EDIT), done())
    [proposal] = propose(repo)
    run(proposal, repo)
    assert api.message_requests[0].headers["authorization"] == "Bearer token-0123456789"
    assert "x-api-key" not in api.message_requests[0].headers


def test_an_sdk_profile_supplies_the_credentials(
    api: FakeMessagesAPI, repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    write_profile(tmp_path / "anthropic-config", "dev", "profile-token-0123456789")
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path / "anthropic-config"))
    monkeypatch.setenv("ANTHROPIC_PROFILE", "dev")
    check(tmp_path)
    api.script(tool_reply(EDIT), done())
    [proposal] = propose(repo)
    run(proposal, repo)
    assert api.message_requests[0].headers["authorization"] == "Bearer profile-token-0123456789"
    assert "profile-token-0123456789" not in json.dumps(proposal.transcript)


def test_a_broken_profile_is_a_usage_error_with_the_sdk_reason(
    api: FakeMessagesAPI, repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path / "anthropic-config"))
    monkeypatch.setenv("ANTHROPIC_PROFILE", "missing")
    with pytest.raises(pytest.UsageError, match=r"^optimizer 'anthropic': Config file not found"):
        check(tmp_path)
    [proposal] = propose(repo)
    with pytest.raises(CandidateFailed, match=r"^anthropic credentials: Config file not found"):
        run(proposal, repo)
    assert api.requests == []
