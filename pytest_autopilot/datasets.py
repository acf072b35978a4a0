"""Dataset files turned into test cases: ``@pytest.mark.dataset("path/cases.yaml")``.

A dataset is a YAML file (a list of mappings, or a mapping with ``cases:``) or a JSON Lines
file (one object per line). Every case becomes one test item whose ``case`` argument is the
case mapping. Cases carry a split (``train``, ``val`` or ``test``): given in the file, or drawn
deterministically from a hash of the case id, so that the same case always lands in the same
split on every machine and in every run. Only train failures reach the optimizer as feedback.

Every problem with a file is a :class:`DatasetError` whose message starts with
``<file>:<line>:`` so that the user can jump straight to it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_autopilot.results import Split

if TYPE_CHECKING:
    from pytest_autopilot.config import DatasetSettings

SPLITS: tuple[Split, ...] = ("train", "val", "test")
YAML_SUFFIXES = (".yaml", ".yml")
JSONL_SUFFIXES = (".jsonl", ".ndjson")


class DatasetError(Exception):
    """A dataset file or marker that cannot be used; the message names the file and line."""


class Case(dict[str, Any]):
    """One case of a dataset: the mapping from the file, plus where it belongs.

    It is a plain ``dict`` to the test; the attributes let the recorder attribute the test's
    outcome to its dataset and split without looking at the case's keys.
    """

    __slots__ = ("case_id", "dataset", "line", "split")

    def __init__(
        self, data: dict[str, Any], *, dataset: str, split: Split, case_id: str, line: int
    ) -> None:
        super().__init__(data)
        self.dataset = dataset
        self.split: Split = split
        self.case_id = case_id
        self.line = line


@dataclass(frozen=True)
class RawCase:
    data: dict[str, Any]
    line: int
    """1-based line of the case in its file."""


def hashed_split(case_id: str, val_fraction: float, test_fraction: float = 0.0) -> Split:
    """The split of a case without an explicit one: stable across runs, machines and Pythons."""
    digest = hashlib.sha256(case_id.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def read_cases(path: Path, display: str) -> list[RawCase]:
    """Read the cases of a dataset file; ``display`` is how errors name the file."""
    suffix = path.suffix.lower()
    if suffix not in YAML_SUFFIXES + JSONL_SUFFIXES:
        raise DatasetError(
            f"{display}: unknown dataset format {path.suffix or '(no suffix)'!r} "
            "(expected .yaml, .yml, .jsonl or .ndjson)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{display}: dataset file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{display}: dataset file cannot be read: {exc}") from None
    if suffix in YAML_SUFFIXES:
        return _read_yaml(text, display)
    return _read_jsonl(text, display)


def _read_jsonl(text: str, display: str) -> list[RawCase]:
    cases: list[RawCase] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{display}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                "expected one JSON object per line"
            ) from None
        except RecursionError:
            raise DatasetError(
                f"{display}:{lineno}: nested too deeply to read; expected one JSON object "
                "per line, nested less than Python's recursion limit"
            ) from None
        if not isinstance(data, dict):
            raise DatasetError(
                f"{display}:{lineno}: a case must be a mapping (JSON object), got {_kind(data)}"
            )
        cases.append(RawCase(data, lineno))
    return cases


def _read_yaml(text: str, display: str) -> list[RawCase]:
    import yaml

    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{display}:{mark.line + 1}" if mark is not None else display
        problem = exc.problem or exc.context or "invalid YAML"
        raise DatasetError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise DatasetError(f"{display}: YAML syntax error: {exc}") from None
    except RecursionError:  # PyYAML without libyaml: its composer recurses per level
        raise DatasetError(f"{display}: YAML nested too deeply to read") from None
    finally:
        loader.dispose()

    items_node: Any = root
    if isinstance(data, dict):
        if "cases" not in data:
            raise DatasetError(
                f"{display}:1: expected a list of cases or a mapping with a 'cases' key, "
                f"got a mapping with keys {sorted(map(str, data))}"
            )
        items_node = _mapping_value_node(root, "cases")
        data = data["cases"]
    if not isinstance(data, list):
        line = items_node.start_mark.line + 1 if items_node is not None else 1
        raise DatasetError(f"{display}:{line}: expected a list of cases, got {_kind(data)}")
    cases: list[RawCase] = []
    for node, item in zip(items_node.value, data, strict=True):
        line = node.start_mark.line + 1
        if not isinstance(item, dict):
            raise DatasetError(f"{display}:{line}: a case must be a mapping, got {_kind(item)}")
        cases.append(RawCase(item, line))
    return cases


def _mapping_value_node(mapping_node: Any, key: str) -> Any:
    for key_node, value_node in mapping_node.value:
        if getattr(key_node, "value", None) == key:
            return value_node
    return None


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {value!r}"


def build_cases(
    raw: Sequence[RawCase],
    display: str,
    *,
    val_fraction: float,
    test_fraction: float = 0.0,
) -> list[Case]:
    """Give every case its id and split, refusing duplicate ids and unknown splits."""
    if not raw:
        raise DatasetError(f"{display}: the dataset has no cases")
    dataset = Path(display).stem
    seen: dict[str, int] = {}
    cases: list[Case] = []
    for index, item in enumerate(raw):
        where = f"{display}:{item.line}"
        raw_id = item.data.get("id", index)
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
            raise DatasetError(
                f"{where}: 'id' must be a non-empty string or an integer, got {raw_id!r}"
            )
        case_id = str(raw_id)
        if case_id in seen:
            raise DatasetError(
                f"{where}: duplicate case id {case_id!r} (first used on line {seen[case_id]}); "
                "every case needs a unique 'id'"
            )
        seen[case_id] = item.line
        split = item.data.get("split")
        if split is None:
            split = hashed_split(case_id, val_fraction, test_fraction)
        elif split not in SPLITS:
            raise DatasetError(
                f"{where}: case {case_id!r}: 'split' must be one of train, val, test, got {split!r}"
            )
        cases.append(Case(item.data, dataset=dataset, split=split, case_id=case_id, line=item.line))
    return cases


def marker_path(args: tuple[Any, ...], kwargs: dict[str, Any], test: str) -> str:
    """The dataset path of a ``dataset`` marker, or an error naming the test."""
    if len(args) == 1 and not kwargs and isinstance(args[0], str) and args[0]:
        return args[0]
    if not args and set(kwargs) == {"path"} and isinstance(kwargs["path"], str):
        return str(kwargs["path"])
    raise DatasetError(
        f"{test}: @pytest.mark.dataset takes one path (a string relative to the rootdir), "
        f"got args={args!r} kwargs={kwargs!r}"
    )


def display_path(path: Path, rootdir: Path) -> str:
    """Rootdir-relative POSIX path when the file is inside the rootdir, else the full path."""
    try:
        return path.resolve().relative_to(rootdir.resolve()).as_posix()
    except ValueError:
        return str(path)


class DatasetCatalog:
    """Dataset files of one session: each read once, and the set of files used.

    ``settings`` is called only when the first dataset is loaded, so that a suite without
    datasets never reads ``autopilot.yaml`` (nor imports ``yaml``).
    """

    def __init__(self, rootdir: Path, settings: Callable[[], DatasetSettings]) -> None:
        self.rootdir = rootdir
        self._settings = settings
        self._raw: dict[Path, list[RawCase]] = {}
        self.used: set[str] = set()
        """Rootdir-relative paths of the dataset files the session parametrized tests with."""

    def cases(self, relpath: str) -> list[Case]:
        path = self.rootdir / relpath
        display = display_path(path, self.rootdir)
        raw = self._raw.get(path)
        if raw is None:
            raw = self._raw[path] = read_cases(path, display)
        settings = self._settings()
        cases = build_cases(
            raw,
            display,
            val_fraction=settings.val_fraction,
            test_fraction=settings.test_fraction,
        )
        self.used.add(display)
        return cases

    def refuse_outside(self, relpath: str, test: str) -> None:
        """A dataset must be inside the rootdir: candidates run in a copy of the repository,
        where a file outside it is missing, and only files inside it can be protected."""
        path = (self.rootdir / relpath).resolve()
        if not path.is_relative_to(self.rootdir.resolve()):
            raise DatasetError(
                f"{test}: @pytest.mark.dataset({relpath!r}): expected a file inside the rootdir "
                f"{self.rootdir} (candidates run in a copy of the repository), got {path}"
            )

    def parametrize(self, metafunc: pytest.Metafunc, marker: pytest.Mark) -> None:
        """Turn one test function into one item per case of its dataset."""
        test = metafunc.definition.nodeid
        relpath = marker_path(marker.args, dict(marker.kwargs), test)
        if "case" not in metafunc.fixturenames:
            raise DatasetError(
                f"{test}: @pytest.mark.dataset({relpath!r}) needs a test that takes a "
                "`case` argument (the case mapping)"
            )
        self.refuse_outside(relpath, test)
        cases = self.cases(relpath)
        metafunc.parametrize("case", cases, ids=[case.case_id for case in cases])
