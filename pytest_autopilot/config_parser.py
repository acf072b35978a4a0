"""The machinery of the ``autopilot.yaml`` parser: YAML reading, checks and section tables.

A section is a table of :class:`Key` rows (name, converter, doc) building one dataclass of
:mod:`pytest_autopilot.config`, whose field defaults are the section's defaults. What each
section holds is in :mod:`pytest_autopilot.config_schema`. Every error is a
``pytest.UsageError`` naming the file, the dotted key, what was expected and what was found.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Generic, NoReturn, TypeVar

import pytest

T = TypeVar("T")

Convert = Callable[["Parser", Any, str], Any]
"""A key's converter: ``(parser, value, dotted key) -> value``, failing through the parser."""

MAX_DEPTH = 100
"""Deepest nesting read from a config or parameter file; deeper is refused before parsing."""

_TOO_DEEP = f"expected at most {MAX_DEPTH} levels of nesting, got deeper"

_NUMBER_TEXT = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+")
"""``1e-3``: YAML 1.1 (PyYAML) reads a float without a dot as a string; accept it as meant."""


@dataclass(frozen=True)
class Key:
    """One key of a section: how its value is checked and converted, and what it means."""

    name: str
    convert: Convert
    doc: str
    nullable: bool = False
    """``null`` stands for ``None`` (the field's default); otherwise ``null`` is refused."""


@dataclass(frozen=True)
class Section(Generic[T]):
    """A mapping of the config read into the dataclass ``build``; absent keys keep its defaults."""

    build: Callable[..., T]
    keys: tuple[Key, ...]
    check: Callable[[Parser, str, T], None] | None = None
    """A check across keys, given the parser, the section's dotted key and the result."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(key.name for key in self.keys)


def display_path(path: Path, rootdir: Path) -> str:
    """How errors name a file: rootdir-relative when inside, else in full."""
    try:
        return path.resolve().relative_to(rootdir.resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


def show(value: object) -> str:
    """A value as an error message quotes it, cut to 80 characters."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    try:
        text = repr(value)
    except RecursionError:
        text = f"a {type(value).__name__} nested too deeply to show"
    return text if len(text) <= 80 else text[:77] + "..."


def load_yaml(text: str, display: str) -> object:
    """Parse YAML safely, refusing duplicate keys (PyYAML would keep the last silently) and
    nesting deeper than :data:`MAX_DEPTH` (PyYAML would exhaust the recursion limit)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: Loader, node: yaml.MappingNode) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            if isinstance(key, Hashable):
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise pytest.UsageError(
                        f"{display}:{line}: {key}: expected each key once, got a duplicate"
                    )
                seen.add(key)
        return loader.construct_mapping(node)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    _refuse_deep_yaml(text, display)
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{display}:{mark.line + 1}" if mark is not None else display
        problem = exc.problem or exc.context or "syntax error"
        column = f" (column {mark.column + 1})" if mark is not None else ""
        raise pytest.UsageError(f"{where}: invalid YAML: {problem}{column}") from None
    except yaml.YAMLError as exc:
        raise pytest.UsageError(f"{display}: invalid YAML: {exc}") from None
    except RecursionError:
        raise pytest.UsageError(f"{display}: {_TOO_DEEP}") from None


def _refuse_deep_yaml(text: str, display: str) -> None:
    """Refuse too deep a nesting, with its line, from the parser's events (no recursion).

    libyaml's parser when there is one: the pure-Python scanner looks ahead quadratically
    through ``[[[[...`` before its first event. Syntax errors are left to the loader, whose
    messages do not depend on whether libyaml is installed.
    """
    import yaml

    depth = 0
    try:
        for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    _too_deep(display, event.start_mark)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        if "nesting depth" in str(exc.problem):  # libyaml's own limit (1000), reached first
            _too_deep(display, exc.problem_mark)
    except yaml.YAMLError:
        pass


def _too_deep(display: str, mark: Any) -> NoReturn:
    where = f"{display}:{mark.line + 1}" if mark is not None else display
    raise pytest.UsageError(f"{where}: {_TOO_DEEP}")


class Parser:
    """Validation of one config file; every check names the file and the dotted key."""

    def __init__(self, path: Path, rootdir: Path) -> None:
        self.path = path
        self.rootdir = rootdir
        self.file = display_path(path, rootdir)

    def fail(self, key: str, expected: str, got: object) -> NoReturn:
        raise pytest.UsageError(f"{self.file}: {key}: expected {expected}, got {show(got)}")

    def fields(self, value: object, section: Section[Any], key: str) -> dict[str, Any]:
        """The converted values of the keys given in ``value``, by field name."""
        given = self.mapping(value, key, section.names)
        converted: dict[str, Any] = {}
        for row in section.keys:
            if row.name in given:
                raw = given[row.name]
                dotted = f"{key}.{row.name}" if key else row.name
                converted[row.name] = (
                    None if raw is None and row.nullable else row.convert(self, raw, dotted)
                )
        return converted

    def section(self, value: object, section: Section[T], key: str) -> T:
        result = section.build(**self.fields(value, section, key))
        if section.check is not None:
            section.check(self, key, result)
        return result

    # -- generic checks ----------------------------------------------------------------

    def mapping(self, value: object, key: str, allowed: Sequence[str]) -> dict[str, Any]:
        """A mapping whose keys are all in ``allowed``; ``None`` (an empty section) is ``{}``."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(key, f"a mapping with keys {', '.join(allowed)}", value)
        for name in value:
            if name not in allowed:
                dotted = f"{key}.{name}" if key else str(name)
                close = get_close_matches(str(name), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise pytest.UsageError(
                    f"{self.file}: {dotted}: unknown key{hint}; expected one of: "
                    + ", ".join(allowed)
                )
        return {str(k): v for k, v in value.items()}

    def items(self, value: object, key: str, what: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(key, f"a list of {what}", value)
        return value

    def string(self, value: object, key: str, what: str = "a non-empty string") -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, what, value)
        return value

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, "true or false", value)
        return value

    def integer(self, value: object, key: str, minimum: int | None = None) -> int:
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (minimum is None or value >= minimum)
        ):
            return value
        if minimum == 1:
            what = "a positive integer"
        elif minimum is not None:
            what = f"an integer >= {minimum}"
        else:
            what = "an integer"
        self.fail(key, what, value)

    def number(
        self,
        value: object,
        key: str,
        what: str = "a number",
        valid: Callable[[float], bool] = lambda x: True,
    ) -> float:
        number: float | None = None
        if (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
            isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip())
        ):
            number = float(value)
        if number is None or not math.isfinite(number) or not valid(number):
            self.fail(key, what, value)
        return number

    def relative_glob(self, value: object, key: str) -> str:
        glob = self.string(value, key, "a glob relative to the rootdir")
        parts = glob.replace("\\", "/").split("/")
        if glob.startswith(("/", "\\")) or ".." in parts or Path(glob).is_absolute():
            self.fail(key, "a glob relative to the rootdir (no leading '/', no '..')", glob)
        return glob


# -- converters for the tables -----------------------------------------------------------


def text(what: str) -> Convert:
    return lambda parser, value, key: parser.string(value, key, what)


def integer(minimum: int | None = None) -> Convert:
    return lambda parser, value, key: parser.integer(value, key, minimum)


def number(what: str, valid: Callable[[float], bool]) -> Convert:
    return lambda parser, value, key: parser.number(value, key, what, valid)


def nested(section: Section[Any]) -> Convert:
    """A key holding a section of its own; ``convert.section`` is that section's table."""

    def convert(parser: Parser, value: object, key: str) -> Any:
        return parser.section(value, section, key)

    convert.section = section  # type: ignore[attr-defined]
    return convert
