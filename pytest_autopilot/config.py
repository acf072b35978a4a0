"""``autopilot.yaml``: the typed configuration every other module reads.

Only the dataclasses live at the top of this module so that importing it costs nothing;
:func:`load_config` imports ``yaml`` when a config is actually read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import pytest

from pytest_autopilot.results import Goal

if TYPE_CHECKING:
    from pytest_autopilot.results import SessionResult

GateKind = Literal["min", "max", "max_regression", "min_gain"]

ALWAYS_PROTECTED: tuple[str, ...] = (
    ".git/**",
    ".autopilot/**",
    "**/conftest.py",
    "**/test_*.py",
    "**/*_test.py",
)
"""Protected whatever the config says; test modules named otherwise, dataset files and the
config file itself are added per session from what pytest collected and what was loaded."""


@dataclass(frozen=True)
class IntDimension:
    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class FloatDimension:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class ChoiceDimension:
    choices: tuple[str | int | float | bool, ...]


Dimension = IntDimension | FloatDimension | ChoiceDimension


@dataclass(frozen=True)
class ParameterSpec:
    """A glob of files the optimizer may change, with an optional typed search space.

    Space keys are dotted paths into the (YAML or JSON) file: ``pipeline.fetch.concurrency``.
    A space is allowed only when the glob names exactly one file.
    """

    path: str
    space: dict[str, Dimension] = field(default_factory=dict)


@dataclass(frozen=True)
class Objective:
    metric: str
    goal: Goal = "min"


@dataclass(frozen=True)
class GateSpec:
    metric: str
    kind: GateKind
    threshold: float

    @property
    def relative(self) -> bool:
        return self.kind in ("max_regression", "min_gain")


@dataclass(frozen=True)
class AnthropicSettings:
    model: str = "claude-sonnet-5-5"
    max_tokens: int = 8192
    temperature: float | None = None
    budget_usd: float | None = None
    max_turns: int = 20
    max_retries: int = 4
    timeout: float = 300.0
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Model -> (input, output) USD per million tokens, overriding the built-in table."""


@dataclass(frozen=True)
class Budget:
    rounds: int = 20
    candidates: int = 2
    patience: int = 5
    minutes: float = 60.0
    candidate_timeout: float = 600.0


@dataclass(frozen=True)
class Acceptance:
    """When a candidate beats the incumbent; ``confidence`` also sets the relative gates'."""

    min_effect: float = 0.02
    confidence: float = 0.95
    run_noise: float | None = None
    """Relative sd of a metric between runs of identical code, which samples of one run
    cannot show; ``None``: estimated from repeated runs when there are some, else
    :data:`pytest_autopilot.stats.DEFAULT_RUN_NOISE`."""


@dataclass(frozen=True)
class DatasetSettings:
    val_fraction: float = 0.3
    test_fraction: float = 0.0


@dataclass(frozen=True)
class SearchSettings:
    seed: int = 0


OPTUNA_SAMPLERS = ("tpe", "gp", "cmaes")


@dataclass(frozen=True)
class OptunaSettings:
    """``optimizer: optuna``: which Optuna sampler, and its seed (``None``: ``search.seed``)."""

    sampler: str = "tpe"
    seed: int | None = None


@dataclass(frozen=True)
class AutopilotConfig:
    path: Path | None
    """The file it was read from; ``None`` when there is no config (metrics only)."""
    rootdir: Path
    experiment: str = "default"
    objective: Objective | None = None
    parameters: tuple[ParameterSpec, ...] = ()
    protected: tuple[str, ...] = ()
    gates: tuple[GateSpec, ...] = ()
    optimizer: str = "search"
    anthropic: AnthropicSettings = field(default_factory=AnthropicSettings)
    command: str | None = None
    knowledge: tuple[str, ...] = ()
    budget: Budget = field(default_factory=Budget)
    acceptance: Acceptance = field(default_factory=Acceptance)
    datasets: DatasetSettings = field(default_factory=DatasetSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    optuna: OptunaSettings = field(default_factory=OptunaSettings)

    def relpath(self) -> str | None:
        """The config file relative to the rootdir (it is always protected)."""
        if self.path is None:
            return None
        try:
            return self.path.resolve().relative_to(self.rootdir.resolve()).as_posix()
        except ValueError:
            return None


# --------------------------------------------------------------------------------------------
# Loading and validation.

CONFIG_NAME = "autopilot.yaml"

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""Experiment and optimizer names: safe in a git ref and a directory name."""

_NUMBER_TEXT = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+")
"""``1e-3``: YAML 1.1 (PyYAML) reads a float without a dot as a string; accept it as meant."""

_TOP_KEYS = (
    "experiment",
    "objective",
    "parameters",
    "protected",
    "gates",
    "optimizer",
    "anthropic",
    "command",
    "knowledge",
    "budget",
    "acceptance",
    "datasets",
    "search",
    "optuna",
)
_GATE_KINDS: tuple[GateKind, ...] = ("min", "max", "max_regression", "min_gain")
_SPACE_SUFFIXES = (".yaml", ".yml", ".json")


def load_config(pytest_config: pytest.Config) -> AutopilotConfig:
    """Read and validate the autopilot config of this pytest run.

    The file is ``--autopilot-config PATH`` (relative to the invocation directory), else the
    ini option ``autopilot_config`` (relative to the rootdir), else ``autopilot.yaml`` at the
    rootdir. Without any, the defaults apply (``path`` is ``None``). A named file that does
    not exist is an error: a typo must not silently disable the gates.
    """
    rootdir = Path(pytest_config.rootpath)
    option = pytest_config.getoption("autopilot_config", None)
    if option:
        path = Path(pytest_config.invocation_params.dir) / str(option)
        source = f"--autopilot-config {option}"
    else:
        try:
            ini = str(pytest_config.getini("autopilot_config") or "")
        except ValueError:
            ini = ""
        if ini:
            path = rootdir / ini
            source = f"ini option autopilot_config = {ini}"
        else:
            path = rootdir / CONFIG_NAME
            if not path.is_file():
                return AutopilotConfig(path=None, rootdir=rootdir)
            source = str(path)
    if not path.is_file():
        raise pytest.UsageError(f"{source}: expected an existing config file, got {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise pytest.UsageError(f"{path}: cannot read the config: {exc}") from None
    data = _load_yaml(text, _display(path, rootdir))
    return parse_config(data, path, rootdir)


def parse_config(data: object, path: Path, rootdir: Path) -> AutopilotConfig:
    """Validate parsed ``autopilot.yaml`` content into an :class:`AutopilotConfig`.

    Every error is a ``pytest.UsageError`` naming the file, the dotted key, what was
    expected and what was found. Parameter globs and knowledge files are checked against
    the files under ``rootdir``.
    """
    return _Parser(path, rootdir).config(data)


def _display(path: Path, rootdir: Path) -> str:
    try:
        return path.resolve().relative_to(rootdir.resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


def _load_yaml(text: str, display: str) -> object:
    """Parse YAML safely, refusing duplicate keys (PyYAML would keep the last silently)."""
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


def _show(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Parser:
    """Validation of one config file; every check names the file and the dotted key."""

    def __init__(self, path: Path, rootdir: Path) -> None:
        self.path = path
        self.rootdir = rootdir
        self.file = _display(path, rootdir)

    def fail(self, key: str, expected: str, got: object) -> NoReturn:
        raise pytest.UsageError(f"{self.file}: {key}: expected {expected}, got {_show(got)}")

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

    # -- sections ----------------------------------------------------------------------

    def config(self, data: object) -> AutopilotConfig:
        if data is not None and not isinstance(data, Mapping):
            raise pytest.UsageError(
                f"{self.file}: expected a mapping of settings ({', '.join(_TOP_KEYS)}), "
                f"got {_show(data)}"
            )
        top = self.mapping(data, "", _TOP_KEYS)
        defaults = AutopilotConfig(path=self.path, rootdir=self.rootdir)
        return AutopilotConfig(
            path=self.path,
            rootdir=self.rootdir,
            experiment=self.experiment(top["experiment"])
            if "experiment" in top
            else defaults.experiment,
            objective=self.objective(top["objective"]) if "objective" in top else None,
            parameters=self.parameters(top.get("parameters")),
            protected=tuple(
                self.relative_glob(g, f"protected[{i}]")
                for i, g in enumerate(self.items(top.get("protected"), "protected", "globs"))
            ),
            gates=self.gates(top.get("gates")),
            optimizer=self.string(
                top["optimizer"],
                "optimizer",
                "an optimizer name such as search, anthropic or command",
            )
            if "optimizer" in top
            else defaults.optimizer,
            anthropic=self.anthropic(top.get("anthropic")),
            command=self.string(top["command"], "command", "a shell command (a string)")
            if "command" in top
            else None,
            knowledge=self.knowledge(top.get("knowledge")),
            budget=self.budget(top.get("budget")),
            acceptance=self.acceptance(top.get("acceptance")),
            datasets=self.datasets(top.get("datasets")),
            search=self.search(top.get("search")),
            optuna=self.optuna(top.get("optuna")),
        )

    def experiment(self, value: object) -> str:
        what = (
            "a name of letters, digits, '.', '_' and '-' (it becomes the git branch "
            "autopilot/<name>)"
        )
        name = self.string(value, "experiment", what)
        if not NAME_RE.fullmatch(name) or ".." in name or name.endswith((".", ".lock")):
            self.fail("experiment", what, value)
        return name

    def objective(self, value: object) -> Objective:
        if isinstance(value, str):
            return Objective(metric=self.string(value, "objective", "a metric name"))
        section = self.mapping(value, "objective", ("metric", "goal"))
        if "metric" not in section:
            self.fail("objective.metric", "a metric name", None)
        metric = self.string(section["metric"], "objective.metric", "a metric name")
        goal = section.get("goal", "min")
        if goal not in ("min", "max"):
            self.fail("objective.goal", "'min' or 'max'", goal)
        return Objective(metric=metric, goal=goal)

    def parameters(self, value: object) -> tuple[ParameterSpec, ...]:
        specs = []
        for i, item in enumerate(self.items(value, "parameters", "{path, space} mappings")):
            key = f"parameters[{i}]"
            if isinstance(item, str):
                item = {"path": item}
            section = self.mapping(item, key, ("path", "space"))
            if "path" not in section:
                self.fail(f"{key}.path", "a glob of files the optimizer may change", None)
            glob = self.relative_glob(section["path"], f"{key}.path")
            files = expand_glob(self.rootdir, glob)
            if not files:
                hint = ""
                if (self.rootdir / glob).is_dir():
                    hint = f" ({glob} is a directory: write {glob.rstrip('/')}/** for its files)"
                self.fail(
                    f"{key}.path",
                    f"a glob matching at least one file under {self.rootdir}{hint}",
                    glob,
                )
            space: dict[str, Dimension] = {}
            if section.get("space") is not None:
                space = self.space(section["space"], f"{key}.space", glob, files)
            specs.append(ParameterSpec(path=glob, space=space))
        return tuple(specs)

    def space(self, value: object, key: str, glob: str, files: list[str]) -> dict[str, Dimension]:
        if len(files) != 1:
            self.fail(
                key,
                f"a path naming exactly one file when a space is given ({glob} matches "
                f"{len(files)}: {', '.join(files[:5])}{', ...' if len(files) > 5 else ''})",
                value,
            )
        target = files[0]
        if not target.endswith(_SPACE_SUFFIXES):
            self.fail(key, f"a .yaml, .yml or .json parameter file for a space ({target})", value)
        if not isinstance(value, Mapping) or not value:
            self.fail(key, "a mapping of dotted keys to {int|float|choice} dimensions", value)
        content = self.parameter_content(target)
        space: dict[str, Dimension] = {}
        for name, spec in value.items():
            dotted = f"{key}.{name}"
            if not isinstance(name, str) or not name.strip():
                self.fail(dotted, "a dotted key of the parameter file", name)
            if not _has_dotted(content, name):
                self.fail(dotted, f"a dotted key that exists in {target}", name)
            space[name] = self.dimension(spec, dotted)
        return space

    def parameter_content(self, target: str) -> object:
        path = self.rootdir / target
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise pytest.UsageError(f"{target}: cannot read the parameter file: {exc}") from None
        if target.endswith(".json"):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise pytest.UsageError(
                    f"{target}:{exc.lineno}: invalid JSON in a parameter file: {exc.msg}"
                ) from None
        return _load_yaml(text, target)

    def dimension(self, value: object, key: str) -> Dimension:
        section = self.mapping(value, key, ("int", "float", "choice", "log"))
        kinds = [k for k in ("int", "float", "choice") if k in section]
        if len(kinds) != 1:
            self.fail(
                key, "exactly one of int: [low, high], float: [low, high], choice: [...]", value
            )
        kind = kinds[0]
        if kind == "choice":
            if "log" in section:
                self.fail(f"{key}.log", "no 'log' on a choice dimension", section["log"])
            choices = section["choice"]
            if (
                not isinstance(choices, list)
                or not choices
                or not all(isinstance(c, (str, int, float, bool)) for c in choices)
            ):
                self.fail(
                    f"{key}.choice", "a non-empty list of strings, numbers or booleans", choices
                )
            if len({(type(c), c) for c in choices}) != len(choices):
                self.fail(f"{key}.choice", "distinct choices", choices)
            return ChoiceDimension(tuple(choices))
        log = self.boolean(section["log"], f"{key}.log") if "log" in section else False
        bounds = section[kind]
        where = f"{key}.{kind}"
        expected = f"[low, high] with {'integers' if kind == 'int' else 'numbers'} low < high"
        if not isinstance(bounds, list) or len(bounds) != 2:
            self.fail(where, expected, bounds)
        if kind == "int":
            if not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
                self.fail(where, expected, bounds)
            low_i, high_i = int(bounds[0]), int(bounds[1])
            if low_i >= high_i:
                self.fail(where, expected, bounds)
            if log and low_i <= 0:
                self.fail(where, "low > 0 with log: true", bounds)
            return IntDimension(low_i, high_i, log)
        low = self.number(bounds[0], where, expected)
        high = self.number(bounds[1], where, expected)
        if low >= high:
            self.fail(where, expected, bounds)
        if log and low <= 0:
            self.fail(where, "low > 0 with log: true", bounds)
        return FloatDimension(low, high, log)

    def gates(self, value: object) -> tuple[GateSpec, ...]:
        gates = []
        allowed = ("metric", *_GATE_KINDS)
        for i, item in enumerate(self.items(value, "gates", "{metric, min|max|...} mappings")):
            key = f"gates[{i}]"
            section = self.mapping(item, key, allowed)
            if "metric" not in section:
                self.fail(f"{key}.metric", "a metric name", None)
            metric = self.string(section["metric"], f"{key}.metric", "a metric name")
            kinds = [k for k in _GATE_KINDS if k in section]
            if len(kinds) != 1:
                raise pytest.UsageError(
                    f"{self.file}: {key}: expected exactly one of min, max, max_regression, "
                    f"min_gain, got {' and '.join(kinds) if kinds else 'none'}"
                )
            kind = kinds[0]
            if kind in ("max_regression", "min_gain"):
                threshold = self.number(
                    section[kind],
                    f"{key}.{kind}",
                    "a fraction >= 0 (0.05 means 5%)",
                    lambda x: x >= 0,
                )
            else:
                threshold = self.number(section[kind], f"{key}.{kind}")
            gates.append(GateSpec(metric=metric, kind=kind, threshold=threshold))
        return tuple(gates)

    def anthropic(self, value: object) -> AnthropicSettings:
        default = AnthropicSettings()
        keys = (
            "model",
            "max_tokens",
            "temperature",
            "budget_usd",
            "max_turns",
            "max_retries",
            "timeout",
            "prices",
        )
        s = self.mapping(value, "anthropic", keys)
        temperature = s.get("temperature", default.temperature)
        budget_usd = s.get("budget_usd", default.budget_usd)
        return AnthropicSettings(
            model=self.string(s.get("model", default.model), "anthropic.model", "a model name"),
            max_tokens=self.integer(
                s.get("max_tokens", default.max_tokens), "anthropic.max_tokens", 1
            ),
            temperature=None
            if temperature is None
            else self.number(
                temperature, "anthropic.temperature", "a number from 0 to 1", lambda x: 0 <= x <= 1
            ),
            budget_usd=None
            if budget_usd is None
            else self.number(
                budget_usd, "anthropic.budget_usd", "a positive number of USD", lambda x: x > 0
            ),
            max_turns=self.integer(s.get("max_turns", default.max_turns), "anthropic.max_turns", 1),
            max_retries=self.integer(
                s.get("max_retries", default.max_retries), "anthropic.max_retries", 0
            ),
            timeout=self.number(
                s.get("timeout", default.timeout),
                "anthropic.timeout",
                "a positive number of seconds",
                lambda x: x > 0,
            ),
            prices=self.prices(s.get("prices")),
        )

    def prices(self, value: object) -> dict[str, tuple[float, float]]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(
                "anthropic.prices",
                "a mapping of model -> [input, output] USD per million tokens",
                value,
            )
        prices = {}
        for model, pair in value.items():
            key = f"anthropic.prices.{model}"
            what = "[input, output] USD per million tokens (numbers >= 0)"
            if isinstance(pair, Mapping):
                pair = [
                    self.mapping(pair, key, ("input", "output")).get(k) for k in ("input", "output")
                ]
            if not isinstance(pair, list) or len(pair) != 2:
                self.fail(key, what, pair)
            low, high = (self.number(p, key, what, lambda x: x >= 0) for p in pair)
            prices[str(model)] = (low, high)
        return prices

    def knowledge(self, value: object) -> tuple[str, ...]:
        files = []
        for i, item in enumerate(self.items(value, "knowledge", "files")):
            key = f"knowledge[{i}]"
            name = self.relative_glob(item, key)
            if not (self.rootdir / name).is_file():
                self.fail(key, f"an existing file under {self.rootdir}", name)
            files.append(name)
        return tuple(files)

    def budget(self, value: object) -> Budget:
        d = Budget()
        s = self.mapping(
            value, "budget", ("rounds", "candidates", "patience", "minutes", "candidate_timeout")
        )
        positive = "a positive number"
        return Budget(
            rounds=self.integer(s.get("rounds", d.rounds), "budget.rounds", 1),
            candidates=self.integer(s.get("candidates", d.candidates), "budget.candidates", 1),
            patience=self.integer(s.get("patience", d.patience), "budget.patience", 1),
            minutes=self.number(
                s.get("minutes", d.minutes),
                "budget.minutes",
                f"{positive} of minutes",
                lambda x: x > 0,
            ),
            candidate_timeout=self.number(
                s.get("candidate_timeout", d.candidate_timeout),
                "budget.candidate_timeout",
                f"{positive} of seconds",
                lambda x: x > 0,
            ),
        )

    def acceptance(self, value: object) -> Acceptance:
        d = Acceptance()
        s = self.mapping(value, "acceptance", ("min_effect", "confidence", "run_noise"))
        run_noise = s.get("run_noise", d.run_noise)
        return Acceptance(
            min_effect=self.number(
                s.get("min_effect", d.min_effect),
                "acceptance.min_effect",
                "a fraction >= 0 and < 1 (0.02 means 2%)",
                lambda x: 0 <= x < 1,
            ),
            confidence=self.number(
                s.get("confidence", d.confidence),
                "acceptance.confidence",
                "a probability between 0.5 and 1 (exclusive), e.g. 0.95",
                lambda x: 0.5 < x < 1,
            ),
            run_noise=None
            if run_noise is None
            else self.number(
                run_noise,
                "acceptance.run_noise",
                "a fraction >= 0 and < 1 (0.02 means 2% between runs)",
                lambda x: 0 <= x < 1,
            ),
        )

    def datasets(self, value: object) -> DatasetSettings:
        d = DatasetSettings()
        s = self.mapping(value, "datasets", ("val_fraction", "test_fraction"))
        what = "a fraction from 0 to 1 (1 excluded)"
        val = self.number(
            s.get("val_fraction", d.val_fraction),
            "datasets.val_fraction",
            what,
            lambda x: 0 <= x < 1,
        )
        test = self.number(
            s.get("test_fraction", d.test_fraction),
            "datasets.test_fraction",
            what,
            lambda x: 0 <= x < 1,
        )
        if val + test >= 1:
            raise pytest.UsageError(
                f"{self.file}: datasets: expected val_fraction + test_fraction < 1 (some cases "
                f"must train), got {val:g} + {test:g}"
            )
        return DatasetSettings(val_fraction=val, test_fraction=test)

    def search(self, value: object) -> SearchSettings:
        s = self.mapping(value, "search", ("seed",))
        return SearchSettings(
            seed=self.integer(s.get("seed", SearchSettings().seed), "search.seed")
        )

    def optuna(self, value: object) -> OptunaSettings:
        s = self.mapping(value, "optuna", ("sampler", "seed"))
        sampler = s.get("sampler", OptunaSettings.sampler)
        if sampler not in OPTUNA_SAMPLERS:
            self.fail("optuna.sampler", f"one of {', '.join(OPTUNA_SAMPLERS)}", sampler)
        seed = s.get("seed")
        return OptunaSettings(
            sampler=str(sampler),
            seed=None if seed is None else self.integer(seed, "optuna.seed"),
        )


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


# --------------------------------------------------------------------------------------------
# Globs: rootdir-relative POSIX paths, ``**`` spanning directories.


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
