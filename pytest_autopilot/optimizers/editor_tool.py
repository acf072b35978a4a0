"""Executes Anthropic's text editor tool (``text_editor_20250728``) inside one worktree.

The model proposes, this module disposes: every path is resolved (``..`` and symbolic links
included) before anything is read or written, reading stops at dataset files (held-out
labels) and at the repository's edge, and writing is allowed only to parameter files that are
not protected. A refused or malformed call becomes an error tool result the model can read
and act on; nothing the model sends can raise out of :meth:`EditorTool.run`.

The loop checks the candidate's diff again after the conversation (a violation rejects it),
so these checks are the first of two fences: they keep a conversation from wasting turns and
from ever seeing what it must not.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_autopilot.config import AutopilotConfig, is_protected, matches

TOOL_TYPE = "text_editor_20250728"
TOOL_NAME = "str_replace_based_edit_tool"

MAX_VIEW_CHARS = 80_000
"""Default ``max_characters``: the tool definition carries it, every view result obeys it."""
MAX_LISTING = 400
SNIPPET_LINES = 4
ALWAYS_HIDDEN = (".git", ".git/**", "**/.git", "**/.git/**", ".autopilot", ".autopilot/**")
LISTING_SKIPPED = {"__pycache__", "node_modules", ".venv", "venv"}


@dataclass(frozen=True)
class EditPolicy:
    """What the model may read and write, in rootdir-relative globs.

    ``prefix`` is the rootdir's place in the repository (``""`` or ``"sub/dir/"``): tool paths
    are repository-relative, configuration globs rootdir-relative.
    """

    editable: tuple[str, ...]
    protected: tuple[str, ...]
    hidden: tuple[str, ...]
    prefix: str = ""

    @classmethod
    def build(
        cls,
        config: AutopilotConfig,
        protected: Iterable[str],
        protected_files: Iterable[str],
        prefix: str = "",
    ) -> EditPolicy:
        """Parameters are editable; ``protected`` globs never are; dataset files (the
        session's protected files that are not Python modules) are not even readable."""
        datasets = tuple(sorted(p for p in set(protected_files) if not p.endswith(".py")))
        return cls(
            editable=tuple(spec.path for spec in config.parameters),
            protected=tuple(protected),
            hidden=datasets,
            prefix=prefix,
        )

    def local(self, repo_path: str) -> str | None:
        """The rootdir-relative form of a repository path, or ``None`` outside the rootdir."""
        if not self.prefix:
            return repo_path
        if repo_path.startswith(self.prefix):
            return repo_path[len(self.prefix) :]
        return None

    def is_hidden(self, repo_path: str) -> bool:
        if repo_path in ("", "."):
            return False
        if matches(repo_path, ALWAYS_HIDDEN):
            return True
        local = self.local(repo_path)
        return local is not None and (matches(local, self.hidden) or local in self.hidden)

    def why_not_editable(self, repo_path: str) -> str | None:
        local = self.local(repo_path)
        if local is None:
            return "it is outside the test rootdir, so it is not a parameter file"
        if is_protected(local, self.protected) or self.is_hidden(repo_path):
            return (
                "it is protected (test modules, conftest.py files, datasets, the autopilot "
                "config and the config's `protected` globs are never editable)"
            )
        if not matches(local, self.editable):
            allowed = ", ".join(self.editable) or "(none)"
            return f"it is not a parameter file (editable: {allowed})"
        return None


@dataclass(frozen=True)
class ToolOutcome:
    """The ``tool_result`` to send back."""

    text: str
    is_error: bool = False


class Refused(Exception):
    """A call the model must correct; its message is the error tool result."""


@dataclass
class EditorTool:
    """The text editor tool bound to one worktree (``root``: the repository root there)."""

    root: Path
    policy: EditPolicy
    max_characters: int = MAX_VIEW_CHARS
    """The limit the tool definition announced; a ``max_characters`` in a call is ignored."""
    changed: set[str] = field(default_factory=set)
    """Repository paths written by successful calls."""

    def __post_init__(self) -> None:
        self.root = self.root.resolve()

    def run(self, tool_input: object) -> ToolOutcome:
        """Execute one call; every problem becomes an error result, never an exception."""
        try:
            return ToolOutcome(self._dispatch(tool_input))
        except Refused as exc:
            return ToolOutcome(f"Error: {exc}", is_error=True)
        except UnicodeDecodeError:
            return ToolOutcome("Error: the file is not UTF-8 text", is_error=True)
        except OSError as exc:
            return ToolOutcome(f"Error: {exc.strerror or exc}", is_error=True)

    def _dispatch(self, tool_input: object) -> str:
        if not isinstance(tool_input, dict):
            raise Refused(f"the tool input must be an object, got {type(tool_input).__name__}")
        command = tool_input.get("command")
        if command == "view":
            return self._view(tool_input)
        if command == "str_replace":
            return self._str_replace(tool_input)
        if command == "insert":
            return self._insert(tool_input)
        if command == "create":
            return self._create(tool_input)
        if command == "undo_edit":
            raise Refused(f"undo_edit is not available in {TOOL_TYPE}; use str_replace")
        raise Refused(
            f"unknown command {command!r}: expected one of view, str_replace, insert, create"
        )

    def _path(self, tool_input: dict[str, Any], *, write: bool) -> tuple[Path, str]:
        raw = tool_input.get("path")
        if not isinstance(raw, str) or not raw.strip():
            raise Refused("`path` must be a non-empty string, relative to the repository root")
        if "\x00" in raw or "\\" in raw:
            raise Refused(f"{raw}: use a plain POSIX path relative to the repository root")
        stripped = raw.strip().lstrip("/")
        rel = posixpath.normpath(stripped) if stripped else "."
        if rel == ".." or rel.startswith("../"):
            raise Refused(f"{raw}: outside the repository")
        target = self.root / rel
        try:
            real = target.resolve().relative_to(self.root)
        except ValueError:
            raise Refused(f"{raw}: leads outside the repository (symbolic link)") from None
        real_rel = real.as_posix()
        for candidate in {rel, real_rel}:
            if self.policy.is_hidden(candidate):
                raise Refused(f"{raw}: dataset and repository-internal files cannot be read")
        if write:
            if real_rel != rel or os.path.islink(target):
                raise Refused(f"{raw}: is or goes through a symbolic link; edit the real file")
            why = self.policy.why_not_editable(rel)
            if why is not None:
                raise Refused(f"{raw} cannot be changed: {why}")
        return target, rel

    def _view(self, tool_input: dict[str, Any]) -> str:
        target, rel = self._path(tool_input, write=False)
        if target.is_dir():
            if tool_input.get("view_range") is not None:
                raise Refused("`view_range` applies to files, not directories")
            return self._listing(target, rel)
        if not target.exists():
            raise Refused(f"{rel}: no such file or directory")
        lines = _read(target).splitlines()
        start, end = 1, len(lines)
        view_range = tool_input.get("view_range")
        if view_range is not None:
            if (
                not isinstance(view_range, list)
                or len(view_range) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in view_range)
            ):
                raise Refused("`view_range` must be two integers [start, end] (end -1: to the end)")
            start, end = view_range
            if end == -1:
                end = len(lines)
            if not 1 <= start <= max(end, 1) or end > len(lines):
                raise Refused(f"`view_range` {view_range} is outside lines 1..{len(lines)}")
        numbered = _numbered(lines[start - 1 : end], start)
        return self._cut(numbered, lambda shown: _view_hint(numbered, shown, start, end))

    def _cut(self, text: str, hint: Callable[[str], str]) -> str:
        """``text`` within ``max_characters``, the hint included, cut at a line boundary
        (within the first line when that alone is too long)."""
        if len(text) <= self.max_characters:
            return text
        room = max(self.max_characters - len(hint("")) - 40, 0)
        shown = text[:room]
        if "\n" in shown:
            shown = shown[: shown.rindex("\n")]
        return f"{shown}\n{hint(shown)}"[: self.max_characters]

    def _listing(self, directory: Path, rel: str) -> str:
        entries: list[str] = []
        base = "" if rel == "." else rel + "/"
        for dirpath, dirnames, filenames in os.walk(directory):
            depth = Path(dirpath).relative_to(directory).parts
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith(".") and d not in LISTING_SKIPPED
            )
            prefix = base + "".join(f"{p}/" for p in depth)
            for name in [*(d + "/" for d in dirnames), *sorted(filenames)]:
                path = prefix + name
                if name.startswith(".") or self.policy.is_hidden(path.rstrip("/")):
                    continue
                entries.append(path)
            if depth:
                dirnames[:] = []
            if len(entries) > MAX_LISTING:
                break
        shown = entries[:MAX_LISTING]
        more = f"\n[... {len(entries) - MAX_LISTING} more]" if len(entries) > MAX_LISTING else ""
        title = "the repository root" if rel == "." else rel
        listing = f"Files and directories in {title}, up to 2 levels deep:\n" + "\n".join(shown)
        return self._cut(
            listing + more,
            lambda _: (
                f"[... truncated at max_characters={self.max_characters}: view a subdirectory]"
            ),
        )

    def _str_replace(self, tool_input: dict[str, Any]) -> str:
        target, rel = self._path(tool_input, write=True)
        old = _string(tool_input, "old_str")
        new = _string(tool_input, "new_str", default="")
        if not old:
            raise Refused("`old_str` must not be empty")
        if not target.is_file():
            raise Refused(f"{rel}: no such file (use create)")
        content = _read(target)
        count = content.count(old)
        if count == 0:
            raise Refused(f"`old_str` does not appear verbatim in {rel}; view it and copy exactly")
        if count > 1:
            lines = sorted({content[:i].count("\n") + 1 for i in _find_all(content, old)})
            raise Refused(
                f"`old_str` appears {count} times in {rel} (lines {lines}); "
                "include more context to make it unique"
            )
        at = content.index(old)
        _write(target, content.replace(old, new, 1))
        self.changed.add(rel)
        first = content[:at].count("\n") + 1
        return f"Edited {rel}.\n" + _snippet(_read(target), first, first + new.count("\n"))

    def _insert(self, tool_input: dict[str, Any]) -> str:
        target, rel = self._path(tool_input, write=True)
        line = tool_input.get("insert_line")
        key = "insert_text" if "insert_text" in tool_input else "new_str"
        new = _string(tool_input, key)
        if not isinstance(line, int) or isinstance(line, bool):
            raise Refused("`insert_line` must be an integer (0 inserts at the top)")
        if not target.is_file():
            raise Refused(f"{rel}: no such file (use create)")
        content = _read(target)
        lines = content.splitlines(keepends=True)
        if not 0 <= line <= len(lines):
            raise Refused(f"`insert_line` {line} is outside 0..{len(lines)} for {rel}")
        if lines and line == len(lines) and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        added = new if new.endswith("\n") else new + "\n"
        lines.insert(line, added)
        _write(target, "".join(lines))
        self.changed.add(rel)
        return f"Inserted after line {line} of {rel}.\n" + _snippet(
            "".join(lines), line + 1, line + added.count("\n")
        )

    def _create(self, tool_input: dict[str, Any]) -> str:
        target, rel = self._path(tool_input, write=True)
        content = _string(tool_input, "file_text")
        if target.is_dir():
            raise Refused(f"{rel} is a directory")
        existed = target.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        _write(target, content)
        self.changed.add(rel)
        return f"{'Overwrote' if existed else 'Created'} {rel} ({len(content)} characters)."


def _string(tool_input: dict[str, Any], key: str, default: str | None = None) -> str:
    value = tool_input.get(key, default)
    if not isinstance(value, str):
        got = "nothing" if value is None else type(value).__name__
        raise Refused(f"`{key}` must be a string, got {got}")
    return value


def _read(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise Refused(f"{path.name} is a binary file")
    return data.decode("utf-8")


def _write(path: Path, content: str) -> None:
    path.write_bytes(content.encode("utf-8"))


def _numbered(lines: list[str], first: int) -> str:
    return "\n".join(f"{n:6}\t{line}" for n, line in enumerate(lines, first))


def _view_hint(numbered: str, shown: str, start: int, end: int) -> str:
    """Where a cut view stopped, so the model can ask for the rest with ``view_range``."""
    if shown and numbered[len(shown) : len(shown) + 1] != "\n":
        return f"[... truncated: line {start} is longer than max_characters and is cut]"
    last = start - 1 + shown.count("\n") + (1 if shown else 0)
    return (
        f"[... truncated: lines {last + 1}..{end} not shown; "
        f"use view_range [{last + 1}, {end}] to see them]"
    )


def _snippet(content: str, first: int, last: int) -> str:
    lines = content.splitlines()
    start = max(first - SNIPPET_LINES, 1)
    end = min(last + SNIPPET_LINES, len(lines))
    return _numbered(lines[start - 1 : end], start)


def _find_all(content: str, needle: str) -> Iterable[int]:
    at = content.find(needle)
    while at != -1:
        yield at
        at = content.find(needle, at + 1)
