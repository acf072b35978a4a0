"""Rootdir-relative globs: matching, expansion, and what an optimizer may never change.

Paths are POSIX and relative to the rootdir; ``**`` spans directories. The config parser
expands parameter globs with :func:`expand_glob`; the loop, the prompt and the editor tool
decide with :func:`is_protected` and :func:`matches`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_autopilot.config import AutopilotConfig
    from pytest_autopilot.results import SessionResult

ALWAYS_PROTECTED: tuple[str, ...] = (
    ".git/**",
    ".autopilot/**",
    "**/conftest.py",
    "**/test_*.py",
    "**/*_test.py",
)
"""Protected whatever the config says; test modules named otherwise, dataset files and the
config file itself are added per session from what pytest collected and what was loaded."""


def glob_match(pattern: str, path: str) -> bool:
    """Whether a rootdir-relative path matches a glob.

    ``**`` as a whole segment matches zero or more directories; ``*``, ``?`` and ``[...]``
    match within one segment (case-sensitive, like git). Patterns are anchored at the
    rootdir: ``*.csv`` matches ``a.csv`` only, ``**/*.csv`` matches at any depth.
    """
    return _match_parts(_glob_parts(pattern), tuple(_path_parts(path)))


def matches(path: str, globs: Iterable[str]) -> bool:
    """Whether a rootdir-relative path matches any of the globs."""
    parts = tuple(_path_parts(path))
    return any(_match_parts(_glob_parts(g), parts) for g in globs)


def is_protected(path: str, globs: Iterable[str]) -> bool:
    """Whether a change to ``path`` must be refused.

    Besides the globs matching the path itself, a glob matching one of its parent
    directories protects everything below (``data`` protects ``data/x.csv``). A path that
    leaves the rootdir (absolute, or through ``..``) or is empty is always protected.
    """
    text = path.replace("\\", "/")
    parts = _path_parts(text)
    if text.startswith("/") or not parts or ".." in parts:
        return True
    compiled = [_glob_parts(g) for g in globs]
    return any(
        _match_parts(pattern, tuple(parts[:end]))
        for end in range(len(parts), 0, -1)
        for pattern in compiled
    )


def protected_globs(config: AutopilotConfig, result: SessionResult) -> list[str]:
    """Everything an optimizer may never change, as globs for :func:`is_protected`.

    :data:`ALWAYS_PROTECTED`, the config's ``protected``, the config file itself and the test
    modules and dataset files the session used (``result.protected_files``).
    """
    globs = [*ALWAYS_PROTECTED, *config.protected]
    own = config.relpath()
    if own is not None:
        globs.append(own)
    globs.extend(result.protected_files)
    return list(dict.fromkeys(globs))


def _path_parts(path: str) -> list[str]:
    return [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]


@lru_cache(maxsize=1024)
def _glob_parts(pattern: str) -> tuple[str, ...]:
    parts: list[str] = []
    for part in _path_parts(pattern):
        if part == "**" and parts and parts[-1] == "**":
            continue
        parts.append(part)
    return tuple(parts)


@lru_cache(maxsize=4096)
def _match_parts(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match_parts(rest, parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], head) and _match_parts(rest, parts[1:])


_PRUNED = frozenset(
    {
        ".git",
        ".autopilot",
        "__pycache__",
        "node_modules",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
    }
)


def expand_glob(rootdir: Path, pattern: str) -> list[str]:
    """The files under ``rootdir`` matching ``pattern``, as sorted rootdir-relative paths.

    Walks only the directories the pattern can reach; ``**`` skips VCS, cache and
    virtualenv directories and does not follow symbolic links to directories.
    """
    found: set[str] = set()
    _expand(rootdir, _glob_parts(pattern), (), found)
    return sorted(found)


def _expand(root: Path, pattern: tuple[str, ...], rel: tuple[str, ...], found: set[str]) -> None:
    here = root.joinpath(*rel)
    if not pattern:
        if rel and here.is_file():
            found.add("/".join(rel))
        return
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        _expand(root, rest, rel, found)
        for child in _children(here):
            if child.is_dir():
                if not child.is_symlink() and not _pruned(child):
                    _expand(root, pattern, (*rel, child.name), found)
            elif not rest and child.is_file():
                found.add("/".join((*rel, child.name)))
    elif not _MAGIC.search(head):
        if (here / head).exists():
            _expand(root, rest, (*rel, head), found)
    else:
        for child in _children(here):
            if fnmatchcase(child.name, head) and not (rest and _pruned(child)):
                _expand(root, rest, (*rel, child.name), found)


def _children(directory: Path) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except OSError:
        return []


def _pruned(directory: Path) -> bool:
    return directory.name in _PRUNED or (directory / "pyvenv.cfg").is_file()


_MAGIC = re.compile(r"[*?\[]")
