"""What ``autopilot.yaml`` holds: one table per section, each key described once.

The defaults are the fields of the dataclasses in :mod:`pytest_autopilot.config`; a key the
file leaves out keeps its field's default. Keys whose value needs more than a type check
(parameters and their spaces, gates, prices, knowledge files) have their converters here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from pytest_autopilot.config import (
    OPTUNA_SAMPLERS,
    Acceptance,
    AutopilotConfig,
    Budget,
    ChoiceDimension,
    DatasetSettings,
    Dimension,
    FloatDimension,
    GateKind,
    GateSpec,
    IntDimension,
    Objective,
    OptunaSettings,
    ParameterSpec,
    SearchSettings,
)
from pytest_autopilot.config_anthropic import ANTHROPIC
from pytest_autopilot.config_parser import (
    Key,
    Parser,
    Section,
    integer,
    load_yaml,
    nested,
    number,
    show,
    text,
)
from pytest_autopilot.globs import ALWAYS_PROTECTED, expand_glob, is_protected
from pytest_autopilot.names import EXPERIMENT_EXPECTED, is_experiment_name

GATE_KINDS: tuple[GateKind, ...] = ("min", "max", "max_regression", "min_gain")
SPACE_SUFFIXES = (".yaml", ".yml", ".json")


def parse_config(data: object, path: Path, rootdir: Path) -> AutopilotConfig:
    """Validate parsed ``autopilot.yaml`` content into an :class:`AutopilotConfig`.

    Every error is a ``pytest.UsageError`` naming the file, the dotted key, what was
    expected and what was found. Parameter globs and knowledge files are checked against
    the files under ``rootdir``.
    """
    parser = Parser(path, rootdir)
    if data is not None and not isinstance(data, Mapping):
        raise pytest.UsageError(
            f"{parser.file}: expected a mapping of settings ({', '.join(TOP.names)}), "
            f"got {show(data)}"
        )
    return AutopilotConfig(path=path, rootdir=rootdir, **parser.fields(data, TOP, ""))


# -- converters of the keys that need more than a type ------------------------------------


def experiment(parser: Parser, value: object, key: str) -> str:
    name = parser.string(value, key, EXPERIMENT_EXPECTED)
    if not is_experiment_name(name):
        parser.fail(key, EXPERIMENT_EXPECTED, value)
    return name


def objective(parser: Parser, value: object, key: str) -> Objective:
    if isinstance(value, str):
        return Objective(metric=parser.string(value, key, "a metric name"))
    section = parser.mapping(value, key, ("metric", "goal"))
    if "metric" not in section:
        parser.fail(f"{key}.metric", "a metric name", None)
    metric = parser.string(section["metric"], f"{key}.metric", "a metric name")
    goal = section.get("goal", "min")
    if goal not in ("min", "max"):
        parser.fail(f"{key}.goal", "'min' or 'max'", goal)
    return Objective(metric=metric, goal=goal)


def parameters(parser: Parser, value: object, key: str) -> tuple[ParameterSpec, ...]:
    specs = []
    for i, item in enumerate(parser.items(value, key, "{path, space} mappings")):
        where = f"{key}[{i}]"
        if isinstance(item, str):
            item = {"path": item}
        section = parser.mapping(item, where, ("path", "space"))
        if "path" not in section:
            parser.fail(f"{where}.path", "a glob of files the optimizer may change", None)
        glob = parser.relative_glob(section["path"], f"{where}.path")
        files = expand_glob(parser.rootdir, glob)
        if not files:
            hint = ""
            if (parser.rootdir / glob).is_dir():
                hint = f" ({glob} is a directory: write {glob.rstrip('/')}/** for its files)"
            parser.fail(
                f"{where}.path",
                f"a glob matching at least one file under {parser.rootdir}{hint}",
                glob,
            )
        _refuse_only_symlinked(parser, f"{where}.path", glob, files)
        if all(is_protected(name, ALWAYS_PROTECTED) for name in files):
            parser.fail(
                f"{where}.path",
                "files the optimizer may change (every file this glob matches is always "
                f"protected: {', '.join(ALWAYS_PROTECTED)})",
                glob,
            )
        space: dict[str, Dimension] = {}
        if section.get("space") is not None:
            space = _space(parser, section["space"], f"{where}.space", glob, files)
        specs.append(ParameterSpec(path=glob, space=space))
    return tuple(specs)


def _refuse_only_symlinked(parser: Parser, key: str, glob: str, files: list[str]) -> None:
    """Refuse a glob whose every file is reached through a symbolic link.

    A candidate may not change a symlink, and a write through a linked directory lands on a
    path no parameter glob names: such a glob can never be changed, whatever the optimizer.
    """
    links = [_symlink_on_the_way(parser.rootdir, name) for name in files]
    link = links[0]
    if link is None or None in links:
        return
    try:
        target = str(link.readlink())
    except OSError:
        target = "?"
    leads = link.resolve()
    where = "inside" if leads.is_relative_to(parser.rootdir.resolve()) else "outside"
    parser.fail(
        key,
        "a glob matching files the optimizer can change, not reached through a symbolic link "
        f"(candidates may not change symlinks): {files[0]} goes through "
        f"{link.relative_to(parser.rootdir).as_posix()} -> {target}, {where} the rootdir",
        glob,
    )


def _symlink_on_the_way(rootdir: Path, name: str) -> Path | None:
    """The first symbolic link on the rootdir-relative path ``name``, if any."""
    path = rootdir
    for part in name.split("/"):
        path = path / part
        if path.is_symlink():
            return path
    return None


def _space(
    parser: Parser, value: object, key: str, glob: str, files: list[str]
) -> dict[str, Dimension]:
    if len(files) != 1:
        parser.fail(
            key,
            f"a path naming exactly one file when a space is given ({glob} matches "
            f"{len(files)}: {', '.join(files[:5])}{', ...' if len(files) > 5 else ''})",
            value,
        )
    target = files[0]
    if not target.endswith(SPACE_SUFFIXES):
        parser.fail(key, f"a .yaml, .yml or .json parameter file for a space ({target})", value)
    if not isinstance(value, Mapping) or not value:
        parser.fail(key, "a mapping of dotted keys to {int|float|choice} dimensions", value)
    content = _parameter_content(parser.rootdir, target)
    space: dict[str, Dimension] = {}
    for name, spec in value.items():
        dotted = f"{key}.{name}"
        if not isinstance(name, str) or not name.strip():
            parser.fail(dotted, "a dotted key of the parameter file", name)
        if not _has_dotted(content, name):
            parser.fail(dotted, f"a dotted key that exists in {target}", name)
        space[name] = dimension(parser, spec, dotted)
    return space


def _parameter_content(rootdir: Path, target: str) -> object:
    path = rootdir / target
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise pytest.UsageError(f"{target}: cannot read the parameter file: {exc}") from None
    if not target.endswith(".json"):
        return load_yaml(content, target)
    try:
        return json.loads(content)
    except json.JSONDecodeError as exc:
        raise pytest.UsageError(
            f"{target}:{exc.lineno}: invalid JSON in a parameter file: {exc.msg}"
        ) from None
    except RecursionError:
        raise pytest.UsageError(
            f"{target}: invalid JSON in a parameter file: nested too deeply to read"
        ) from None


def _has_dotted(content: object, dotted: str) -> bool:
    """Whether ``a.b.0.c`` names a value in nested mappings and lists."""
    node = content
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def dimension(parser: Parser, value: object, key: str) -> Dimension:
    section = parser.mapping(value, key, ("int", "float", "choice", "log"))
    kinds = [k for k in ("int", "float", "choice") if k in section]
    if len(kinds) != 1:
        parser.fail(
            key, "exactly one of int: [low, high], float: [low, high], choice: [...]", value
        )
    kind = kinds[0]
    if kind == "choice":
        if "log" in section:
            parser.fail(f"{key}.log", "no 'log' on a choice dimension", section["log"])
        return _choice(parser, section["choice"], f"{key}.choice")
    log = parser.boolean(section["log"], f"{key}.log") if "log" in section else False
    bounds = section[kind]
    where = f"{key}.{kind}"
    expected = f"[low, high] with {'integers' if kind == 'int' else 'numbers'} low < high"
    if not isinstance(bounds, list) or len(bounds) != 2:
        parser.fail(where, expected, bounds)
    if kind == "int":
        if not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
            parser.fail(where, expected, bounds)
        low_i, high_i = int(bounds[0]), int(bounds[1])
        if low_i >= high_i:
            parser.fail(where, expected, bounds)
        if log and low_i <= 0:
            parser.fail(where, "low > 0 with log: true", bounds)
        return IntDimension(low_i, high_i, log)
    low = parser.number(bounds[0], where, expected)
    high = parser.number(bounds[1], where, expected)
    if low >= high:
        parser.fail(where, expected, bounds)
    if log and low <= 0:
        parser.fail(where, "low > 0 with log: true", bounds)
    return FloatDimension(low, high, log)


def _choice(parser: Parser, choices: object, key: str) -> ChoiceDimension:
    if (
        not isinstance(choices, list)
        or not choices
        or not all(isinstance(c, (str, int, float, bool)) for c in choices)
    ):
        parser.fail(key, "a non-empty list of strings, numbers or booleans", choices)
    if len({(type(c), c) for c in choices}) != len(choices):
        parser.fail(key, "distinct choices", choices)
    if len(choices) == 1:
        parser.fail(
            key, "at least two choices (one leaves nothing to search: remove the key)", choices
        )
    return ChoiceDimension(tuple(choices))


def protected(parser: Parser, value: object, key: str) -> tuple[str, ...]:
    return tuple(
        parser.relative_glob(glob, f"{key}[{i}]")
        for i, glob in enumerate(parser.items(value, key, "globs"))
    )


def gates(parser: Parser, value: object, key: str) -> tuple[GateSpec, ...]:
    specs = []
    allowed = ("metric", *GATE_KINDS)
    for i, item in enumerate(parser.items(value, key, "{metric, min|max|...} mappings")):
        where = f"{key}[{i}]"
        section = parser.mapping(item, where, allowed)
        if "metric" not in section:
            parser.fail(f"{where}.metric", "a metric name", None)
        metric = parser.string(section["metric"], f"{where}.metric", "a metric name")
        kinds = [k for k in GATE_KINDS if k in section]
        if len(kinds) != 1:
            raise pytest.UsageError(
                f"{parser.file}: {where}: expected exactly one of min, max, max_regression, "
                f"min_gain, got {' and '.join(kinds) if kinds else 'none'}"
            )
        kind = kinds[0]
        if kind in ("max_regression", "min_gain"):
            threshold = parser.number(
                section[kind], f"{where}.{kind}", "a fraction >= 0 (0.05 means 5%)", _at_least_0
            )
        else:
            threshold = parser.number(section[kind], f"{where}.{kind}")
        specs.append(GateSpec(metric=metric, kind=kind, threshold=threshold))
    return tuple(specs)


def knowledge(parser: Parser, value: object, key: str) -> tuple[str, ...]:
    files = []
    for i, item in enumerate(parser.items(value, key, "files")):
        where = f"{key}[{i}]"
        name = parser.relative_glob(item, where)
        if not (parser.rootdir / name).is_file():
            parser.fail(where, f"an existing file under {parser.rootdir}", name)
        files.append(name)
    return tuple(files)


def benchmark_statistic(parser: Parser, value: object, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        parser.fail(key, "a mapping of metric name to median|min|mean", value)
    for name, stat in value.items():
        if stat not in ("median", "min", "mean"):
            parser.fail(f"{key}.{name}", "median, min or mean", stat)
    return {str(name): str(stat) for name, stat in value.items()}


def _fractions_leave_training(parser: Parser, key: str, settings: DatasetSettings) -> None:
    val, test = settings.val_fraction, settings.test_fraction
    if val + test >= 1:
        raise pytest.UsageError(
            f"{parser.file}: {key}: expected val_fraction + test_fraction < 1 (some cases "
            f"must train), got {val:g} + {test:g}"
        )


def _at_least_0(x: float) -> bool:
    return x >= 0


def _positive(x: float) -> bool:
    return x > 0


def _fraction(x: float) -> bool:
    return 0 <= x < 1


# -- the sections ---------------------------------------------------------------------------

BUDGET = Section(
    Budget,
    (
        Key("rounds", integer(1), "rounds of the loop at most"),
        Key("candidates", integer(1), "candidates proposed per round"),
        Key("patience", integer(1), "rounds without improvement before stopping"),
        Key(
            "minutes",
            number("a positive number of minutes", _positive),
            "wall-clock time of the loop",
        ),
        Key(
            "candidate_timeout",
            number("a positive number of seconds", _positive),
            "how long one candidate's session may run",
        ),
    ),
)

ACCEPTANCE = Section(
    Acceptance,
    (
        Key(
            "min_effect",
            number("a fraction >= 0 and < 1 (0.02 means 2%)", _fraction),
            "smallest relative improvement worth accepting",
        ),
        Key(
            "confidence",
            number("a probability between 0.5 and 1 (exclusive), e.g. 0.95", lambda x: 0.5 < x < 1),
            "confidence of comparisons and relative gates",
        ),
        Key(
            "run_noise",
            number("a fraction >= 0 and < 1 (0.02 means 2% between runs)", _fraction),
            "relative sd between runs of identical code (null: estimated)",
            nullable=True,
        ),
    ),
)

_SPLIT_FRACTION = "a fraction from 0 to 1 (1 excluded)"

DATASETS = Section(
    DatasetSettings,
    (
        Key("val_fraction", number(_SPLIT_FRACTION, _fraction), "share of unsplit cases in val"),
        Key("test_fraction", number(_SPLIT_FRACTION, _fraction), "share held out as test"),
    ),
    check=_fractions_leave_training,
)

SEARCH = Section(
    SearchSettings,
    (Key("seed", integer(), "seed of the built-in search"),),
)


def optuna_sampler(parser: Parser, value: object, key: str) -> str:
    if value not in OPTUNA_SAMPLERS:
        parser.fail(key, f"one of {', '.join(OPTUNA_SAMPLERS)}", value)
    return str(value)


OPTUNA = Section(
    OptunaSettings,
    (
        Key("sampler", optuna_sampler, "tpe, gp or cmaes: the Optuna sampler"),
        Key("seed", integer(), "the sampler's seed (default: search.seed)", nullable=True),
    ),
)

TOP = Section(
    AutopilotConfig,
    (
        Key("experiment", experiment, "names the branch autopilot/<name> and the state directory"),
        Key("objective", objective, "the metric the loop improves: {metric, goal: min|max}"),
        Key("parameters", parameters, "files the optimizer may change, with optional spaces"),
        Key("protected", protected, "globs the optimizer may never change"),
        Key("gates", gates, "conditions CI and the loop check: {metric, min|max|...}"),
        Key(
            "optimizer",
            text("an optimizer name such as search, anthropic or command"),
            "which pytest_autopilot_propose implementation proposes candidates",
        ),
        Key("anthropic", nested(ANTHROPIC), "settings of the anthropic optimizer"),
        Key("command", text("a shell command (a string)"), "what the command optimizer runs"),
        Key("knowledge", knowledge, "files given to LLM optimizers with every prompt"),
        Key("budget", nested(BUDGET), "how long the loop may run"),
        Key("acceptance", nested(ACCEPTANCE), "when a candidate beats the incumbent"),
        Key("datasets", nested(DATASETS), "how unsplit dataset cases are split"),
        Key("search", nested(SEARCH), "settings of the built-in search"),
        Key("optuna", nested(OPTUNA), "settings of the optuna optimizer ([optuna] extra)"),
        Key(
            "benchmark_statistic",
            benchmark_statistic,
            "metric -> median | min | mean: which statistic of a benchmark is its value",
        ),
    ),
)
"""The top of the file; ``path`` and ``rootdir`` are given by where the file was found."""
