"""The prompt shared by the ``anthropic`` and ``command`` optimizers.

Every call is stateless: the prompt alone tells the model everything it may know. It has two
parts. The *prefix* (instructions, the editing rules, the knowledge files) depends only on the
configuration, so it is byte-identical across rounds and candidates and prompt caching can
reuse it. The *task* carries what changes: objective and gates with their current values,
metrics of the incumbent and recent candidates, train feedback, the parameter files, a digest
of the history so that failed ideas are not repeated, and which idea this candidate should
pursue so that the K candidates of a round differ.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pytest_autopilot.config import AutopilotConfig, ChoiceDimension, Dimension, protected_globs
from pytest_autopilot.proposals import CandidateRecord, GateStatus, OptimizerContext
from pytest_autopilot.results import Metric, SessionResult

MAX_PARAMETER_CHARS = 60_000
"""Parameter file contents shown inline, in total; the model can view the rest."""
MAX_HISTORY = 40
MAX_FEEDBACK = 30
MAX_FEEDBACK_CHARS = 1_500
MAX_METRICS = 40

_TOOL_RULES = """\
You edit files only through the `str_replace_based_edit_tool` text editor tool. Paths are
relative to the repository root (a leading `/` also means the repository root).
- `view` shows a file with line numbers, or lists a directory. Dataset files and anything
  outside the repository cannot be viewed.
- `str_replace`, `insert` and `create` work only on the parameter files listed below.
- A refused or malformed call returns an error result; read it and adapt.
Make your edit in as few calls as you can. When you are done, reply with a short rationale
(one paragraph: what you changed and why you expect it to improve the objective) and stop
calling tools."""

_COMMAND_RULES = """\
Your working directory is the repository root of a scratch copy (a git worktree) made for
this candidate. Edit files there directly; whatever you change becomes the candidate.
- Change only the parameter files listed below. A change to any other file, to a protected
  path, or a symbolic link rejects the whole candidate before it is evaluated.
- Do not read dataset files: held-out labels are not for you.
- Do not commit, do not create branches, do not run the test suite: the optimizer measures
  the candidate itself, in its own session.
When you are done, print a short rationale (what you changed and why you expect it to help)
as the last lines of your output."""


@dataclass(frozen=True)
class Prompt:
    """A prompt in its two parts: the cacheable prefix and this candidate's task."""

    prefix: str
    task: str

    def text(self) -> str:
        """Both parts as one text, for agents that take a single prompt."""
        return f"{self.prefix}\n\n{self.task}"


def build_prompt(
    context: OptimizerContext, *, candidate: int, tool: bool, prefix: str = ""
) -> Prompt:
    """The prompt for candidate ``candidate`` (1-based) of this round.

    ``tool`` selects the editing rules: the text editor tool (``anthropic``) or direct edits
    in the working directory (``command``). ``prefix`` is the rootdir's place in the
    repository (``"sub/"``), prepended to the rootdir-relative paths of the configuration,
    since the model's paths are repository-relative.
    """
    return Prompt(
        prefix=stable_prefix(
            context.config, context.protected_files, context.knowledge, tool=tool, prefix=prefix
        ),
        task=task_text(context, candidate=candidate, prefix=prefix),
    )


def protected_patterns(config: AutopilotConfig, protected_files: Iterable[str]) -> list[str]:
    """:func:`~pytest_autopilot.config.protected_globs` in a stable order (session files
    sorted), so that the prompt prefix stays byte-identical."""
    return protected_globs(config, SessionResult(protected_files=sorted(set(protected_files))))


def stable_prefix(
    config: AutopilotConfig,
    protected_files: Iterable[str],
    knowledge: Sequence[tuple[str, str]],
    *,
    tool: bool,
    prefix: str = "",
) -> str:
    """Instructions, rules and knowledge: a function of the configuration only.

    Nothing here may depend on the round, the incumbent or the candidate, or prompt caching
    stops working; tests check that two calls give the same bytes.
    """
    parts = [
        "You are an optimizer in an automated experiment loop (pytest-autopilot). A pytest "
        "suite measures metrics; your change to the parameter files is committed as a "
        "candidate, measured by a full test session in its own git worktree, and kept only if "
        "it improves the objective without breaking tests that passed. Metric values are "
        "computed by code from what the tests measure: never claim numbers, make changes.",
        "## How to edit\n" + (_TOOL_RULES if tool else _COMMAND_RULES),
        "## Parameter files (the only files you may change)\n"
        + _bullets(prefix + spec.path for spec in config.parameters),
        "## Protected (never editable; dataset files are also never readable)\n"
        + _bullets(prefix + p for p in protected_patterns(config, protected_files)),
    ]
    if knowledge:
        docs = [
            f'<document path="{path}">\n{text.rstrip()}\n</document>' for path, text in knowledge
        ]
        parts.append("## Knowledge provided by the project\n" + "\n\n".join(docs))
    return "\n\n".join(parts) + "\n"


def task_text(context: OptimizerContext, *, candidate: int, prefix: str = "") -> str:
    """What changes from call to call: state of the experiment and this candidate's idea."""
    k = context.max_candidates
    objective = context.objective
    parts = [f"# Round {context.round}, candidate {candidate} of {k}"]
    if k > 1:
        parts.append(
            f"{k} candidates are made independently this round, each by a separate call like "
            f"this one. Rank the {k} most promising ideas that the history below has not "
            f"already tried, then implement idea number {candidate} of your ranking only, so "
            "that the candidates differ."
        )
    else:
        parts.append("Implement the single most promising idea that the history has not tried.")

    incumbent_value = context.incumbent.comparable_value(objective)
    baseline_value = context.baseline.comparable_value(objective)
    direction = "lower" if objective.goal == "min" else "higher"
    parts.append(
        "## Objective\n"
        f"`{objective.metric}`, {direction} is better. "
        f"Incumbent ({context.incumbent.id}): {_num(incumbent_value)}; "
        f"baseline: {_num(baseline_value)}{_change(baseline_value, incumbent_value)}."
    )
    if context.gates:
        parts.append(
            "## Gates (all must pass; the loop stops when they do)\n" + _gates(context.gates)
        )
    parts.append(
        f"## Metrics of the incumbent ({context.incumbent.id})\n"
        + _metrics(context.incumbent.metrics)
    )
    parts.append("## Feedback from failing train cases and tests\n" + _feedback(context))
    parts.append("## Parameter files as they are now\n" + _parameters(context, prefix))
    parts.append("## History (what was tried; do not repeat rejected ideas)\n" + _history(context))
    return "\n\n".join(parts) + "\n"


def _bullets(items: Iterable[str]) -> str:
    lines = [f"- `{item}`" for item in items]
    return "\n".join(lines) if lines else "- (none)"


def _num(value: float | None) -> str:
    if value is None:
        return "not measured"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.6g}"


def _change(before: float | None, after: float | None) -> str:
    if before is None or after is None or before == 0 or before == after:
        return ""
    return f" ({(after - before) / abs(before):+.1%} vs baseline)"


def _gates(gates: Sequence[GateStatus]) -> str:
    lines = []
    for gate in gates:
        state = "PASS" if gate.passed else "FAIL"
        line = f"- {state} `{gate.metric}` {gate.kind} {gate.threshold:g}: value {_num(gate.value)}"
        if gate.reason and not gate.passed:
            line += f" ({gate.reason})"
        lines.append(line)
    return "\n".join(lines)


def _metrics(metrics: dict[str, Metric]) -> str:
    if not metrics:
        return "(none measured)"
    names = sorted(metrics)
    lines = [f"- `{name}` = {_num(metrics[name].value)} ({metrics[name].goal})" for name in names]
    if len(lines) > MAX_METRICS:
        lines = [*lines[:MAX_METRICS], f"- ... and {len(lines) - MAX_METRICS} more"]
    return "\n".join(lines)


def _feedback(context: OptimizerContext) -> str:
    items = list(context.feedback)
    if not items:
        return "(no failing train cases or tests, and no notes)"
    lines = []
    for item in items[:MAX_FEEDBACK]:
        text = item.text.strip()
        if len(text) > MAX_FEEDBACK_CHARS:
            text = text[:MAX_FEEDBACK_CHARS] + " [...]"
        lines.append(f"- {item.kind} in `{item.nodeid}`:\n{_indent(text)}")
    if len(items) > MAX_FEEDBACK:
        lines.append(f"- ... and {len(items) - MAX_FEEDBACK} more")
    return "\n".join(lines)


def _parameters(context: OptimizerContext, prefix: str) -> str:
    blocks = []
    budget = MAX_PARAMETER_CHARS
    for param in context.parameters:
        path = param.path if param.path.startswith(prefix) else prefix + param.path
        header = f"### `{path}`"
        if param.space:
            header += "\nTyped search space: " + ", ".join(
                f"`{key}` {_dimension(dim)}" for key, dim in param.space.items()
            )
        if len(param.text) > budget:
            blocks.append(f"{header}\n({len(param.text)} characters: view it with the tool)")
            continue
        budget -= len(param.text)
        fence = "````" if "```" in param.text else "```"
        blocks.append(f"{header}\n{fence}\n{param.text.rstrip()}\n{fence}")
    return "\n\n".join(blocks) if blocks else "(no parameter file exists yet)"


def _dimension(dim: Dimension) -> str:
    if isinstance(dim, ChoiceDimension):
        return "one of " + ", ".join(repr(c) for c in dim.choices)
    log = ", log scale" if dim.log else ""
    return f"in [{dim.low}, {dim.high}]{log}"


def _history(context: OptimizerContext) -> str:
    records = [r for r in context.history if r.round > 0]
    if not records:
        return "(nothing tried yet: this is the first round)"
    lines = []
    if len(records) > MAX_HISTORY:
        lines.append(f"({len(records) - MAX_HISTORY} older candidates not shown)")
        records = records[-MAX_HISTORY:]
    for record in records:
        lines.append(_record(record, context))
    return "\n".join(lines)


def _record(record: CandidateRecord, context: OptimizerContext) -> str:
    value = record.comparable_value(context.objective)
    verdict = record.verdict or "pending"
    head = f"- {record.id}: {verdict}, `{context.objective.metric}` = {_num(value)}"
    if record.reason:
        head += f"; {_one_line(record.reason, 240)}"
    details = []
    if record.rationale:
        details.append(f"idea: {_one_line(record.rationale, 300)}")
    if record.diff_summary:
        details.append(f"diff: {_one_line(record.diff_summary, 300)}")
    if record.params:
        details.append(
            "params: " + ", ".join(f"{k}={v!r}" for k, v in sorted(record.params.items()))
        )
    return head + "".join(f"\n  {d}" for d in details)


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())
