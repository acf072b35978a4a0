"""Read and write values at dotted keys of YAML and JSON parameter files, keeping the rest.

A tuned file stays the user's file: comments, key order, quoting and indentation survive,
because a write replaces only the characters of each changed scalar. For YAML the spans come
from PyYAML's composed nodes (``start_mark``/``end_mark``); for JSON from a small scanner.

Dotted keys walk mappings by key and lists by index: ``pipeline.stages.0.workers``. A key
with a dot in its own name cannot be addressed. Anchored, aliased and tagged YAML scalars are
refused for writing: changing one would silently change the others, or fight the tag.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pytest

if TYPE_CHECKING:
    import yaml

Format = Literal["yaml", "json"]
Scalar = str | int | float | bool | None


def file_format(path: str) -> Format:
    """The format of a parameter file, from its suffix (``.json``, else YAML)."""
    return "json" if path.lower().endswith(".json") else "yaml"


def read_values(
    text: str, keys: Iterable[str], fmt: Format, source: str = "<text>"
) -> dict[str, Scalar]:
    """The scalar values at ``keys``, in the order given.

    :raises pytest.UsageError: the file is malformed, a key is missing, or its value is not
        a scalar; the message names ``source`` and the key.
    """
    document = _parse(text, fmt, source)
    return {key: document.find(key).value for key in keys}


def write_values(
    text: str, values: Mapping[str, Scalar], fmt: Format, source: str = "<text>"
) -> str:
    """``text`` with the scalars at the dotted keys of ``values`` replaced, nothing else.

    A value already written the same way keeps its original spelling (``1.0`` stays ``1.0``).

    :raises pytest.UsageError: as :func:`read_values`, and for YAML scalars that carry an
        anchor, an alias or a tag.
    """
    document = _parse(text, fmt, source)
    replacements: list[tuple[int, int, str]] = []
    for key, value in values.items():
        found = document.find(key)
        if _same(found.value, value):
            continue
        replacements.append((found.start, found.end, document.render(found, value)))
    replacements.sort()
    for (_, end, _), (start, _, _) in itertools.pairwise(replacements):
        if start < end:
            raise pytest.UsageError(f"{source}: two keys name the same value")
    out = text
    for start, end, new in reversed(replacements):
        rest = out[end:]
        if fmt == "yaml":
            rest = _keep_comment_column(rest, len(new) - (end - start))
        out = out[:start] + new + rest
    check = _parse(out, fmt, source)
    for key, value in values.items():
        if not _same(check.find(key).value, value):
            raise pytest.UsageError(
                f"{source}: {key}: cannot write {value!r} so that it reads back the same"
            )
    return out


def _keep_comment_column(rest: str, growth: int) -> str:
    """Keep an aligned end-of-line comment where it was when a value grows or shrinks."""
    padding = len(rest) - len(rest.lstrip(" "))
    if not padding or not rest[padding:].startswith("#") or not growth:
        return rest
    return " " * max(1, padding - growth) + rest[padding:]


def _same(a: object, b: object) -> bool:
    """Equal and of the same type: ``1`` and ``1.0`` and ``True`` are spelled differently."""
    return type(a) is type(b) and a == b


@dataclass
class _Found:
    key: str
    value: Scalar
    start: int
    end: int
    line: int
    style: str | None = None


@dataclass
class _Document:
    fmt: Format
    source: str
    text: str
    root: Any
    """YAML: the composed node; JSON: a :class:`_JsonNode`."""
    shared: set[int] = field(default_factory=set)
    """YAML: start offsets of scalars that aliases make reachable by more than one key."""

    def find(self, key: str) -> _Found:
        if self.fmt == "json":
            return self._find_json(key)
        return self._find_yaml(key)

    def fail(self, key: str, line: int | None, what: str) -> pytest.UsageError:
        where = self.source if line is None else f"{self.source}:{line}"
        return pytest.UsageError(f"{where}: {key}: {what}")

    # -- YAML ------------------------------------------------------------------------------

    def _find_yaml(self, key: str) -> _Found:
        import yaml

        node = self.root
        line = 1
        walked: list[str] = []
        for part in key.split("."):
            walked.append(part)
            here = ".".join(walked)
            if isinstance(node, yaml.MappingNode):
                pairs = [
                    (k, v)
                    for k, v in node.value
                    if isinstance(k, yaml.ScalarNode) and k.value == part
                ]
                if not pairs:
                    merge = any(k.tag == "tag:yaml.org,2002:merge" for k, _ in node.value)
                    hint = " (keys from a '<<' merge cannot be tuned)" if merge else ""
                    raise self.fail(key, _line(node), f"expected key {here!r} in the file{hint}")
                if len(pairs) > 1:
                    raise self.fail(key, _line(pairs[1][0]), f"key {here!r} appears twice")
                line, node = _line(pairs[0][0]), pairs[0][1]
            elif isinstance(node, yaml.SequenceNode):
                if not part.isdigit() or int(part) >= len(node.value):
                    raise self.fail(
                        key,
                        _line(node),
                        f"expected an index below {len(node.value)} for the list at "
                        f"{'.'.join(walked[:-1]) or 'the top'}, got {part!r}",
                    )
                node = node.value[int(part)]
                line = _line(node)
            else:
                raise self.fail(
                    key,
                    _line(node) if node is not None else None,
                    f"expected a mapping or list at {'.'.join(walked[:-1]) or 'the top'}",
                )
        if not isinstance(node, yaml.ScalarNode):
            kind = "a mapping" if isinstance(node, yaml.MappingNode) else "a list"
            raise self.fail(key, line, f"expected a scalar value, got {kind}")
        start, end = node.start_mark.index, node.end_mark.index
        constructor = yaml.SafeLoader("")
        try:
            value = constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self.fail(key, _line(node), f"cannot read the value: {exc}") from None
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            raise self.fail(
                key,
                _line(node),
                f"expected a string, number or boolean, got {type(value).__name__}",
            )
        return _Found(key, value, start, end, _line(node), node.style)

    def _check_yaml_writable(self, found: _Found) -> None:
        span = self.text[found.start : found.end]
        if span.startswith(("&", "*", "!")) or found.start in self.shared:
            raise self.fail(
                found.key,
                found.line,
                "expected a plain value to edit, got a YAML anchor, alias or tag "
                "(write the value itself to make it tunable)",
            )

    # -- JSON ------------------------------------------------------------------------------

    def _find_json(self, key: str) -> _Found:
        node: _JsonNode = self.root
        walked: list[str] = []
        for part in key.split("."):
            walked.append(part)
            here = ".".join(walked)
            line = _line_at(self.text, node.start)
            if node.kind == "object":
                matches = [child for name, child in node.items if name == part]
                if not matches:
                    raise self.fail(key, line, f"expected key {here!r} in the file")
                if len(matches) > 1:
                    raise self.fail(
                        key, _line_at(self.text, matches[1].start), f"key {here!r} appears twice"
                    )
                node = matches[0]
            elif node.kind == "array":
                if not part.isdigit() or int(part) >= len(node.items):
                    raise self.fail(
                        key,
                        line,
                        f"expected an index below {len(node.items)} for the list at "
                        f"{'.'.join(walked[:-1]) or 'the top'}, got {part!r}",
                    )
                node = node.items[int(part)][1]
            else:
                raise self.fail(
                    key,
                    line,
                    f"expected an object or array at {'.'.join(walked[:-1]) or 'the top'}",
                )
        line = _line_at(self.text, node.start)
        if node.kind in ("object", "array"):
            kind = "an object" if node.kind == "object" else "an array"
            raise self.fail(key, line, f"expected a scalar value, got {kind}")
        value = json.loads(self.text[node.start : node.end])
        return _Found(key, value, node.start, node.end, line)

    # -- writing ---------------------------------------------------------------------------

    def render(self, found: _Found, value: Scalar) -> str:
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            raise self.fail(
                found.key,
                found.line,
                f"expected a string, number or boolean to write, got {value!r}",
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(found.key, found.line, f"expected a finite number, got {value!r}")
        if self.fmt == "json":
            return json.dumps(value, ensure_ascii=False)
        self._check_yaml_writable(found)
        span = self.text[found.start : found.end]
        trailing = span[len(span.rstrip()) :]
        return _yaml_scalar(value, found.style) + trailing


def _yaml_scalar(value: Scalar, style: str | None) -> str:
    """A YAML 1.1 spelling of ``value`` that PyYAML reads back as the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _yaml_float(value)
    if style == "'" and value.isprintable():
        return "'" + value.replace("'", "''") + "'"
    if style != '"' and _plain_ok(value):
        return value
    return json.dumps(value, ensure_ascii=False)


def _yaml_float(value: float) -> str:
    text = repr(value)
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return text


_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./+-]*")


def _plain_ok(value: str) -> bool:
    """Whether a string can be written unquoted, in block and flow context alike."""
    if not _PLAIN.fullmatch(value):
        return False
    import yaml

    try:
        return bool(yaml.safe_load(value) == value)
    except yaml.YAMLError:
        return False


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _line_at(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _parse(text: str, fmt: Format, source: str) -> _Document:
    if fmt == "json":
        try:
            json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise pytest.UsageError(
                f"{source}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})"
            ) from None
        return _Document("json", source, text, _JsonScanner(text).document())
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = exc.problem or exc.context or "syntax error"
        raise pytest.UsageError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise pytest.UsageError(f"{source}: invalid YAML: {exc}") from None
    return _Document("yaml", source, text, root, _shared_scalars(root))


def _shared_scalars(root: yaml.Node | None) -> set[int]:
    """Start offsets of the scalars reachable by more than one path (through aliases)."""
    import yaml

    visits: dict[int, int] = {}
    nodes: dict[int, yaml.Node] = {}

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        return []

    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        visits[id(node)] = visits.get(id(node), 0) + 1
        if visits[id(node)] == 1:
            nodes[id(node)] = node
            stack.extend(children(node))
    shared: set[int] = set()
    done: set[int] = set()
    stack = [n for i, n in nodes.items() if visits[i] > 1]
    while stack:
        node = stack.pop()
        if id(node) in done:
            continue
        done.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            shared.add(node.start_mark.index)
        stack.extend(children(node))
    return shared


def _no_constant(name: str) -> None:
    raise json.JSONDecodeError(f"{name} is not standard JSON", "", 0)


@dataclass
class _JsonNode:
    kind: Literal["object", "array", "scalar"]
    start: int
    end: int = 0
    items: list[tuple[str, _JsonNode]] = field(default_factory=list)
    """Objects: (key, value); arrays: ("", value)."""


class _JsonScanner:
    """Spans of the values of a JSON text already known to be valid."""

    _NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")
    _STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
    _SPACE = re.compile(r"\s*")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def document(self) -> _JsonNode:
        return self.value()

    def skip(self) -> None:
        match = self._SPACE.match(self.text, self.pos)
        assert match is not None
        self.pos = match.end()

    def value(self) -> _JsonNode:
        self.skip()
        char = self.text[self.pos]
        node = _JsonNode("scalar", self.pos)
        if char == "{":
            node.kind = "object"
            self.pos += 1
            self.skip()
            while self.text[self.pos] != "}":
                key_match = self._STRING.match(self.text, self.pos)
                assert key_match is not None
                key = json.loads(key_match.group())
                self.pos = key_match.end()
                self.skip()
                self.pos += 1  # the colon
                node.items.append((key, self.value()))
                self.skip()
                if self.text[self.pos] == ",":
                    self.pos += 1
                    self.skip()
            self.pos += 1
        elif char == "[":
            node.kind = "array"
            self.pos += 1
            self.skip()
            while self.text[self.pos] != "]":
                node.items.append(("", self.value()))
                self.skip()
                if self.text[self.pos] == ",":
                    self.pos += 1
                    self.skip()
            self.pos += 1
        elif char == '"':
            match = self._STRING.match(self.text, self.pos)
            assert match is not None
            self.pos = match.end()
        elif char in "-0123456789":
            match = self._NUMBER.match(self.text, self.pos)
            assert match is not None
            self.pos = match.end()
        else:
            for literal in ("true", "false", "null"):
                if self.text.startswith(literal, self.pos):
                    self.pos += len(literal)
                    break
        node.end = self.pos
        return node
