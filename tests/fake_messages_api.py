"""A scripted Messages API on 127.0.0.1, for testing the real ``anthropic`` client.

No Anthropic API is reachable from the tests, and mocking the client would test nothing of
what matters (retries, error bodies, headers, the shape of requests). This is a real HTTP
server in a thread. Each test scripts it with a queue of steps (replies, error statuses,
hangs) or with a function of the request, and reads back every request it received.

It also imitates prompt caching, so that the plugin's token accounting can be checked: the
request's tools, system and messages are serialized in the API's order, each
``cache_control`` breakpoint closes a prefix, a prefix seen before is a cache read and a new
one a cache write, and a token is four characters.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pytest_autopilot.config import (
    AnthropicSettings,
    AutopilotConfig,
    Budget,
    Objective,
    ParameterSpec,
)
from pytest_autopilot.proposals import (
    CandidateRecord,
    FeedbackItem,
    GateStatus,
    OptimizerContext,
    ParameterFile,
)
from pytest_autopilot.results import Metric

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class Reply:
    """A successful message: content blocks and a stop reason."""

    content: list[dict[str, Any]]
    stop_reason: str = "end_turn"
    output_tokens: int | None = None
    """Default: a quarter of the content's JSON length."""


@dataclass
class Error:
    """An error status with the API's JSON error body."""

    status: int
    message: str = "scripted error"
    retry_after_ms: int | None = 5
    """Sent as ``retry-after-ms`` (the SDK honours it), so retries stay fast in tests."""


@dataclass
class Hang:
    """Wait before answering ``then``: makes the client time out."""

    seconds: float
    then: Reply | Error | None = None


Step = Reply | Error | Hang


@dataclass
class Request:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes


CREDENTIAL_VARIABLES = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_PROFILE",
    "ANTHROPIC_CONFIG_DIR",
    "ANTHROPIC_FEDERATION_RULE_ID",
    "ANTHROPIC_ORGANIZATION_ID",
    "ANTHROPIC_IDENTITY_TOKEN",
    "ANTHROPIC_IDENTITY_TOKEN_FILE",
)


def isolate_credentials(monkeypatch: Any, home: Path) -> None:
    """No credential from the machine: every variable the SDK reads is unset and the home
    directory (where its profiles live by default) is ``home``."""
    for variable in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(home))


def write_profile(config_dir: Path, name: str, token: str) -> None:
    """An SDK profile (``user_oauth`` with an externally rotated access token)."""
    (config_dir / "configs").mkdir(parents=True, exist_ok=True)
    (config_dir / "credentials").mkdir(parents=True, exist_ok=True)
    config = config_dir / "configs" / f"{name}.json"
    config.write_text(json.dumps({"authentication": {"type": "user_oauth"}}))
    config.chmod(0o644)
    secret = config_dir / "credentials" / f"{name}.json"
    secret.write_text(json.dumps({"access_token": token}))
    secret.chmod(0o600)


def thinking(value: str = "Let me think.") -> dict[str, Any]:
    return {"type": "thinking", "thinking": value, "signature": "sig-" + value[:8]}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


_ids = itertools.count(1)


def tool_use(tool_input: Any, name: str = "str_replace_based_edit_tool") -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{next(_ids):04d}", "name": name, "input": tool_input}


def tool_reply(*inputs: Any, say: str = "Let me edit.") -> Reply:
    """A reply asking for one or more text-editor calls."""
    return Reply([text(say), *(tool_use(i) for i in inputs)], stop_reason="tool_use")


def done(say: str = "Done.") -> Reply:
    return Reply([text(say)])


@dataclass
class FakeMessagesAPI:
    """The server. Use as a context manager; ``url`` is the base URL for the client."""

    steps: deque[Step] = field(default_factory=deque)
    handler: Callable[[Request], Step] | None = None
    """When set, answers every request instead of the queue (for concurrent conversations)."""
    requests: list[Request] = field(default_factory=list)
    usage_log: list[dict[str, int]] = field(default_factory=list)
    _cache: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def script(self, *steps: Step) -> None:
        self.steps.extend(steps)

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def message_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path.startswith("/v1/messages")]

    def __enter__(self) -> FakeMessagesAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                request = Request(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw or b"{}"),
                    raw=raw,
                )
                with api._lock:
                    api.requests.append(request)
                status, headers, payload = api._answer(request)
                body = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.send_header("request-id", f"req_{len(api.requests):04d}")
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a scripted hang)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _next_step(self, request: Request) -> Step:
        if self.handler is not None:
            return self.handler(request)
        with self._lock:
            if not self.steps:
                return Error(400, "fake_messages_api: the test scripted no more replies", None)
            return self.steps.popleft()

    def _answer(self, request: Request) -> tuple[int, dict[str, str], dict[str, Any]]:
        step = self._next_step(request)
        if isinstance(step, Hang):
            time.sleep(step.seconds)
            step = step.then or done()
        if isinstance(step, Error):
            headers = {}
            if step.retry_after_ms is not None:
                headers["retry-after-ms"] = str(step.retry_after_ms)
                headers["retry-after"] = "0"
            if step.status in (429, 529, 500):
                headers["x-should-retry"] = "true"
            kind = ERROR_TYPES.get(step.status, "api_error")
            return (
                step.status,
                headers,
                {
                    "type": "error",
                    "error": {"type": kind, "message": step.message},
                },
            )
        usage = self._usage(request.body, step)
        with self._lock:
            self.usage_log.append(usage)
        return (
            200,
            {},
            {
                "id": f"msg_{len(self.requests):04d}",
                "type": "message",
                "role": "assistant",
                "model": request.body.get("model", "unknown"),
                "content": step.content,
                "stop_reason": step.stop_reason,
                "stop_sequence": None,
                "usage": usage,
            },
        )

    def _usage(self, body: dict[str, Any], reply: Reply) -> dict[str, int]:
        """Token counts with imitated prompt caching (4 characters per token).

        As in the API, a breakpoint writes the prefix that ends there, and a request reads the
        longest prefix written before, wherever its breakpoints are now; the markers
        themselves are not part of the content.
        """
        total = 0
        prefixes: list[tuple[str, int]] = []
        last_breakpoint = 0
        breakpoints: list[str] = []
        digest = hashlib.sha256()
        for block in _blocks_in_order(body):
            content = {k: v for k, v in block.items() if k != "cache_control"}
            encoded = json.dumps(content, sort_keys=True)
            digest.update(encoded.encode())
            total += len(encoded)
            prefixes.append((digest.hexdigest(), total))
            if block.get("cache_control"):
                last_breakpoint = total
                breakpoints.append(digest.hexdigest())
        with self._lock:
            read = max(
                (upto for key, upto in prefixes if upto <= last_breakpoint and key in self._cache),
                default=0,
            )
            self._cache.update(breakpoints)
        output = reply.output_tokens
        if output is None:
            output = len(json.dumps(reply.content)) // 4
        return {
            "input_tokens": (total - last_breakpoint) // 4,
            "output_tokens": output,
            "cache_creation_input_tokens": (last_breakpoint - read) // 4,
            "cache_read_input_tokens": read // 4,
        }


def _blocks_in_order(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Tools, then system, then messages: the order in which the API builds its cache prefix."""
    yield from body.get("tools", [])
    system = body.get("system", [])
    yield from [text(system)] if isinstance(system, str) else system
    for message in body.get("messages", []):
        content = message.get("content", [])
        yield from [text(content)] if isinstance(content, str) else content


def make_context(
    rootdir: Path,
    *,
    parameters: Sequence[str] = ("params.yaml",),
    protected_files: Sequence[str] = ("test_speed.py", "data/cases.yaml"),
    round: int = 1,
    candidates: int = 1,
    history: Sequence[CandidateRecord] = (),
    knowledge: Sequence[tuple[str, str]] = (),
    feedback: Sequence[FeedbackItem] = (),
    optimizer: str = "anthropic",
    anthropic: AnthropicSettings | None = None,
    command: str | None = None,
    candidate_timeout: float = 60.0,
) -> OptimizerContext:
    """An optimizer context as the loop builds it, for a small repository at ``rootdir``."""
    objective = Objective("speed", "min")
    config = AutopilotConfig(
        path=rootdir / "autopilot.yaml",
        rootdir=rootdir,
        objective=objective,
        parameters=tuple(ParameterSpec(p) for p in parameters),
        optimizer=optimizer,
        anthropic=anthropic or AnthropicSettings(max_retries=2, timeout=10.0),
        command=command,
        budget=Budget(candidates=candidates, candidate_timeout=candidate_timeout),
    )
    baseline = CandidateRecord(
        id="r0",
        round=0,
        commit="0" * 40,
        parent=None,
        rationale="baseline",
        metrics={"speed": Metric("speed", 2.0, "min"), "tests.failed": Metric("tests.failed", 1)},
    )
    files = [
        ParameterFile(p, (rootdir / p).read_text()) for p in parameters if (rootdir / p).is_file()
    ]
    return OptimizerContext(
        optimizer=optimizer,
        round=round,
        max_candidates=candidates,
        config=config,
        objective=objective,
        incumbent=baseline,
        baseline=baseline,
        gates=[GateStatus("speed", "max", 1.0, 2.0, False, "2 > 1")],
        feedback=list(feedback),
        history=[baseline, *history],
        parameters=files,
        knowledge=list(knowledge),
        protected_files=list(protected_files),
    )
