"""``autopilot.yaml``: the typed configuration every other module reads.

This module holds the dataclasses, :func:`load_config` and :func:`parse_config`. Reading is
split by role, as pluggy 1.7 split its ``_hooks.py``: :mod:`pytest_autopilot.config_parser`
(YAML and the checks), :mod:`pytest_autopilot.config_schema` (what each section holds,
the ``anthropic:`` one in :mod:`pytest_autopilot.config_anthropic`) and
:mod:`pytest_autopilot.globs` (paths and protection), whose functions are re-exported here so
that ``from pytest_autopilot.config import is_protected`` keeps working. Importing this module
costs little: the parser and ``yaml`` are imported when a config is actually read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from pytest_autopilot.globs import (
    ALWAYS_PROTECTED,
    expand_glob,
    glob_match,
    is_protected,
    matches,
    protected_globs,
)
from pytest_autopilot.names import NAME_RE
from pytest_autopilot.results import Goal

__all__ = [
    "ALWAYS_PROTECTED",
    "CONFIG_NAME",
    "NAME_RE",
    "Acceptance",
    "AnthropicSettings",
    "AutopilotConfig",
    "Budget",
    "ChoiceDimension",
    "DatasetSettings",
    "Dimension",
    "FloatDimension",
    "GateKind",
    "GateSpec",
    "IntDimension",
    "Objective",
    "ParameterSpec",
    "Price",
    "SearchSettings",
    "expand_glob",
    "glob_match",
    "is_protected",
    "load_config",
    "matches",
    "parse_config",
    "protected_globs",
]

GateKind = Literal["min", "max", "max_regression", "min_gain"]

CONFIG_NAME = "autopilot.yaml"


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
class Price:
    """USD per million tokens of one model; cache prices default to the API's multipliers
    (5-minute cache writes 1.25 times the input price, cache reads 0.1 times)."""

    input: float
    output: float
    cache_write: float | None = None
    cache_read: float | None = None

    @property
    def cache_write_price(self) -> float:
        return self.input * 1.25 if self.cache_write is None else self.cache_write

    @property
    def cache_read_price(self) -> float:
        return self.input * 0.1 if self.cache_read is None else self.cache_read


CONFIGURED_MODEL = ""
"""The key in ``AnthropicSettings.prices`` of a price given for whatever ``model`` is: the
short form ``prices: {input: 3, output: 15}``. The settings re-key it to the model."""
EFFORTS = ("low", "medium", "high", "xhigh", "max")
THINKING_TYPES = ("enabled", "adaptive", "disabled")


@dataclass(frozen=True)
class AnthropicSettings:
    model: str = "claude-sonnet-5-5"
    max_tokens: int = 8192
    temperature: float | None = None
    budget_usd: float | None = None
    max_turns: int = 20
    max_retries: int = 4
    timeout: float = 300.0
    prices: dict[str, Price] = field(default_factory=dict)
    """Model -> price, overriding the built-in table."""
    max_characters: int = 80_000
    """Sent in the text editor tool's definition; every ``view`` result is cut to it."""
    thinking: dict[str, Any] | None = None
    """The Messages API's ``thinking`` object, validated, sent as is."""
    effort: str | None = None
    """Sent as ``output_config: {effort: ...}``."""

    def __post_init__(self) -> None:
        if CONFIGURED_MODEL in self.prices:
            prices = dict(self.prices)
            prices[self.model] = prices.pop(CONFIGURED_MODEL)
            object.__setattr__(self, "prices", prices)


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
    benchmark_statistic: Mapping[str, str] = field(default_factory=dict)
    """Metric -> median | min | mean: the statistic a benchmark metric's value uses."""

    def relpath(self) -> str | None:
        """The config file relative to the rootdir (it is always protected)."""
        if self.path is None:
            return None
        try:
            return self.path.resolve().relative_to(self.rootdir.resolve()).as_posix()
        except ValueError:
            return None


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
    from pytest_autopilot.config_parser import display_path, load_yaml

    data = load_yaml(text, display_path(path, rootdir))
    return parse_config(data, path, rootdir)


def parse_config(data: object, path: Path, rootdir: Path) -> AutopilotConfig:
    """Validate parsed ``autopilot.yaml`` content: see :mod:`pytest_autopilot.config_schema`."""
    from pytest_autopilot.config_schema import parse_config as parse

    return parse(data, path, rootdir)
