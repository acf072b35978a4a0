"""``pytest --autopilot`` with ``optimizer: anthropic`` (real client, local scripted server)
and ``optimizer: command`` (a small script as the agent), end to end in real git repos."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # noqa: F401
from fake_messages_api import (
    Error,
    FakeMessagesAPI,
    Reply,
    Request,
    done,
    isolate_credentials,
    tool_reply,
)
from gitrepo import GitRepo, init_repo

# ``yaml`` is imported here on purpose: in-process pytester runs drop the modules they imported
# when they end, and a later run that re-imports ``yaml`` gets a CSafeLoader (C extension,
# loaded once) that builds nodes of the dropped module, so dataset files fail to parse.

FAKE_KEY = "sk-ant-e2e-fedcba9876543210"

OBJECTIVE_TEST = """\
import json, pathlib

def test_loss(autopilot):
    x = json.loads((pathlib.Path(__file__).parent / "params.json").read_text())["x"]
    autopilot.record("loss", (x - 3) ** 2, goal="min")
"""


def project(root: Path, **config: Any) -> GitRepo:
    data: dict[str, Any] = {
        "experiment": "llm",
        "objective": {"metric": "loss", "goal": "min"},
        "parameters": [{"path": "params.json"}],
        "gates": [{"metric": "loss", "max": 0.5}],
        "budget": {"rounds": 2, "candidates": 1, "patience": 2},
        "acceptance": {"min_effect": 0.0},
        "knowledge": ["notes.md"],
        **config,
    }
    return init_repo(
        root,
        {
            "params.json": '{"x": 0}\n',
            "autopilot.yaml": json.dumps(data),
            "test_obj.py": OBJECTIVE_TEST,
            "notes.md": "The loss is lowest at x = 3.\n",
            "pytest.ini": "[pytest]\n",
        },
    )


@pytest.fixture
def api(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as server:
        isolate_credentials(monkeypatch, tmp_path_factory.mktemp("home"))
        monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        yield server


def everything_written(repo: GitRepo) -> str:
    """The run's files (journal, transcripts, state, reports) and every git object."""
    texts = [
        p.read_text(errors="replace")
        for p in repo.path.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(repo.path).parts
    ]
    objects = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch"],
        cwd=repo.path,
        capture_output=True,
        check=True,
    ).stdout.decode(errors="replace")
    return "\n".join([*texts, objects])


def test_an_improving_edit_is_accepted(
    pytester: pytest.Pytester, api: FakeMessagesAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = project(pytester.path, optimizer="anthropic")

    def answer(request: Request) -> Reply:
        if len(request.body["messages"]) == 1:
            edit = {
                "command": "str_replace",
                "path": "/params.json",
                "old_str": "0",
                "new_str": "3",
            }
            return tool_reply(edit, say=f"The notes say x = 3. {FAKE_KEY[:6]}")
        return done("Moved x to 3, where the notes say the loss is lowest.")

    api.handler = answer
    result = pytester.runpytest(
        "--autopilot", "--autopilot-json=out.json", "--autopilot-report=report.md"
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "autopilot: r1c1 * loss 9 -> 0 (-100%) accepted ?2 requests, * output tokens, $0.0*",
            "autopilot: anthropic usage: 2 requests, * input + * cache-read + * cache-write*",
        ]
    )

    data = json.loads((pytester.path / "out.json").read_text())
    [candidate] = [c for r in data["rounds"] for c in r["candidates"]]
    assert candidate["verdict"] == "accepted"
    assert repo.show("autopilot/llm", "params.json") == '{"x": 3}\n'
    assert "Moved x to 3" in repo.message("autopilot/llm")
    assert repo.read("params.json") == '{"x": 0}\n', "the user's tree is untouched"

    [opener, closer] = api.message_requests
    assert "The loss is lowest at x = 3." in opener.body["system"][0]["text"]
    assert "`params.json`" in opener.body["system"][0]["text"]
    assert "`test_obj.py`" in opener.body["system"][0]["text"]
    assert '{"x": 0}' in opener.body["messages"][0]["content"][0]["text"]
    assert closer.body["messages"][-1]["content"][0]["is_error"] is False

    transcripts = list((repo.path / ".autopilot").rglob("*transcript*"))
    assert transcripts, "the conversation is journaled"
    logged = json.loads(transcripts[0].read_text())
    assert [e["kind"] for e in logged] == ["prompt", "reply", "tool_result", "reply"]
    usage = candidate["usage"]
    assert usage["requests"] == 2
    assert usage["output_tokens"] == sum(u["output_tokens"] for u in api.usage_log)
    assert usage["cost_usd"] > 0
    assert data["usage"]["requests"] == 2
    assert data["usage"]["cost_usd"] == pytest.approx(usage["cost_usd"], abs=1e-6)

    assert FAKE_KEY not in everything_written(repo)
    assert FAKE_KEY not in result.stdout.str() + result.stderr.str()


def test_missing_credentials_stop_before_the_session(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    isolate_credentials(monkeypatch, tmp_path_factory.mktemp("home"))
    project(pytester.path, optimizer="anthropic")
    result = pytester.runpytest("--autopilot")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*optimizer 'anthropic' found no Anthropic credentials: set the ANTHROPIC_API_KEY*"]
    )
    assert "Traceback" not in result.stderr.str()
    result.stdout.no_fnmatch_line("*test_obj.py*")


def test_a_budget_for_an_unpriced_model_stops_before_the_session(
    pytester: pytest.Pytester, api: FakeMessagesAPI
) -> None:
    project(
        pytester.path, optimizer="anthropic", anthropic={"model": "claude-fable-5", "budget_usd": 1}
    )
    result = pytester.runpytest("--autopilot")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*autopilot.yaml: anthropic.budget_usd: no price is known for model 'claude-fable-5'*"]
    )
    assert api.requests == []

    prices = {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.3}
    anthropic = {"model": "claude-fable-5", "budget_usd": 1, "prices": prices}
    project(pytester.path, optimizer="anthropic", anthropic=anthropic)
    edit = {"command": "str_replace", "path": "params.json", "old_str": "0", "new_str": "3"}
    api.script(tool_reply(edit), done("x = 3"))
    result = pytester.runpytest("--autopilot", "--autopilot-json=out.json")
    assert result.ret == 0, result.stdout.str()
    usage = json.loads((pytester.path / "out.json").read_text())["usage"]
    assert usage["cost_usd"] > 0 and "unpriced_requests" not in usage


def test_an_unpriced_model_shows_an_unknown_cost(
    pytester: pytest.Pytester, api: FakeMessagesAPI
) -> None:
    project(pytester.path, optimizer="anthropic", anthropic={"model": "claude-fable-5"})
    edit = {"command": "str_replace", "path": "params.json", "old_str": "0", "new_str": "3"}
    api.handler = lambda r: tool_reply(edit) if len(r.body["messages"]) == 1 else done("x = 3")
    result = pytester.runpytest("--autopilot", "--autopilot-json=out.json")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "autopilot: anthropic usage: 2 requests, * output tokens, cost unknown (2 requests to "
            "a model without a price: set anthropic.prices)"
        ]
    )
    result.stdout.no_fnmatch_line("*$0.0000*")
    usage = json.loads((pytester.path / "out.json").read_text())["usage"]
    assert usage["unpriced_requests"] == 2 and "cost_usd" not in usage


def test_api_failures_fail_the_candidate_and_the_loop_goes_on(
    pytester: pytest.Pytester, api: FakeMessagesAPI
) -> None:
    project(
        pytester.path,
        optimizer="anthropic",
        anthropic={"max_retries": 1},
    )
    api.script(Error(529, "Overloaded"), Error(529, "Overloaded"))
    result = pytester.runpytest("--autopilot", "--autopilot-json=out.json")
    assert result.ret == 1, result.stdout.str()
    data = json.loads((pytester.path / "out.json").read_text())
    candidates = [c for r in data["rounds"] for c in r["candidates"]]
    assert candidates[0]["verdict"] == "failed"
    assert candidates[0]["reason"] == (
        "anthropic API 529 overloaded_error after 1 retries: Overloaded"
    )
    # The queue is empty now: round 2's request gets a 400 and fails at once, and no third
    # round runs (rounds: 2), so the loop ends with the gate still failing.
    assert len(candidates) == 2 and candidates[1]["verdict"] == "failed"


def test_the_budget_stops_the_loop(pytester: pytest.Pytester, api: FakeMessagesAPI) -> None:
    """A reply that costs more than ``budget_usd`` ends its conversation and the loop."""
    project(pytester.path, optimizer="anthropic", anthropic={"budget_usd": 0.01})
    edit = {"command": "str_replace", "path": "params.json", "old_str": "0", "new_str": "1"}
    api.script(Reply(tool_reply(edit).content, "tool_use", output_tokens=2_000))
    result = pytester.runpytest("--autopilot", "--autopilot-json=out.json")
    assert result.ret == 1, result.stdout.str()
    data = json.loads((pytester.path / "out.json").read_text())
    [candidate] = [c for r in data["rounds"] for c in r["candidates"]]
    assert candidate["verdict"] == "accepted"
    assert "budget_usd 0.01 is spent" in candidate["rationale"]
    assert candidate["usage"]["cost_usd"] >= 0.01
    assert len(api.message_requests) == 1, "no request once the budget is spent"


AGENT = """\
import os, pathlib, sys
prompt = sys.stdin.read()
assert "The loss is lowest at x = 3." in prompt
assert pathlib.Path(os.environ["AUTOPILOT_PROMPT_FILE"]).read_text() == prompt
pathlib.Path("params.json").write_text('{"x": 3}\\n')
print("Set x to 3 as the notes suggest.")
"""

CHEATER = """\
import pathlib
fake = "def test_loss(autopilot):\\n    autopilot.record('loss', 0)\\n"
pathlib.Path("test_obj.py").write_text(fake)
print("made the loss zero")
"""


def test_a_command_agent_makes_the_candidate(pytester: pytest.Pytester) -> None:
    agent = pytester.path.parent / "agent.py"
    agent.write_text(AGENT)
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(agent))}"
    repo = project(pytester.path, optimizer="command", command=command)
    result = pytester.runpytest("--autopilot", "--autopilot-json=out.json")
    assert result.ret == 0, result.stdout.str()
    data = json.loads((pytester.path / "out.json").read_text())
    [candidate] = [c for r in data["rounds"] for c in r["candidates"]]
    assert candidate["verdict"] == "accepted"
    assert repo.show("autopilot/llm", "params.json") == '{"x": 3}\n'
    assert "Set x to 3 as the notes suggest." in repo.message("autopilot/llm")
    assert not list(repo.path.rglob("prompt.md")), "the prompt file stays outside the repo"


def test_a_command_agent_editing_a_test_is_a_violation(pytester: pytest.Pytester) -> None:
    agent = pytester.path.parent / "cheater.py"
    agent.write_text(CHEATER)
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(agent))}"
    project(
        pytester.path, optimizer="command", command=command, budget={"rounds": 1, "candidates": 1}
    )
    result = pytester.runpytest("--autopilot", "--autopilot-json=out.json")
    assert result.ret == 1, result.stdout.str()
    data = json.loads((pytester.path / "out.json").read_text())
    [candidate] = [c for r in data["rounds"] for c in r["candidates"]]
    assert candidate["verdict"] == "violation"
    assert "test_obj.py" in candidate["reason"]


FIXED_SLUGIFY = """\
    import re
    import unicodedata

    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower().replace("'", ""))
    return "-".join(words)"""


def test_the_llm_quickstart_example(pytester: pytest.Pytester, api: FakeMessagesAPI) -> None:
    """The example suite, as its README runs it, with the server standing in for Claude."""
    example = Path(__file__).parent.parent / "example_suites" / "llm_quickstart"
    shutil.copytree(example, pytester.path, dirs_exist_ok=True)
    repo = init_repo(pytester.path)
    held_out = ("Don't panic", "Über cool", "Top 10 tips", "snake_case_title", "Input/Output")

    def answer(request: Request) -> Reply:
        turn = len(request.body["messages"])
        if turn == 1:
            return tool_reply(
                {"command": "view", "path": "data/titles.yaml"},
                {"command": "view", "path": "slugs/slugify.py"},
            )
        if turn == 3:
            old = '    return "-".join(title.lower().split())'
            edit = {"command": "str_replace", "path": "slugs/slugify.py", "old_str": old}
            return tool_reply({**edit, "new_str": FIXED_SLUGIFY})
        return done("Strip accents, keep ASCII letters and digits, join with dashes.")

    api.handler = answer
    result = pytester.runpytest("--autopilot", "--autopilot-json=out.json")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["autopilot: r1c1 * accepted*", "autopilot: PASS titles.val*"])

    opener = api.message_requests[0].body
    prompt = opener["system"][0]["text"] + opener["messages"][0]["content"][0]["text"]
    assert "Crème brûlée recipe" in prompt, "train failures are fed back"
    assert "Words are runs of letters and digits" in prompt, "knowledge is in the prefix"
    assert not [t for t in held_out if t in prompt], "val and test cases are not"
    second_turn = next(r for r in api.message_requests if len(r.body["messages"]) == 3)
    dataset_view, source_view = tool_results(second_turn)
    assert dataset_view["is_error"] and "cannot be read" in dataset_view["content"]
    assert not source_view["is_error"]
    sent = json.dumps([r.body for r in api.message_requests])
    assert not [t for t in held_out if t in sent]
    assert "import unicodedata" in repo.show("autopilot/slugs", "slugs/slugify.py")


def tool_results(request: Request) -> list[dict[str, Any]]:
    return [b for b in request.body["messages"][-1]["content"] if b["type"] == "tool_result"]
