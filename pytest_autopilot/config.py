"""``autopilot.yaml``: the typed configuration every other module reads.

Only the dataclasses live at the top of this module so that importing it costs nothing;
:func:`load_config` imports ``yaml`` when a config is actually read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pytest_autopilot.results import Goal

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
    min_effect: float = 0.02
    confidence: float = 0.95


@dataclass(frozen=True)
class DatasetSettings:
    val_fraction: float = 0.3
    test_fraction: float = 0.0


@dataclass(frozen=True)
class SearchSettings:
    seed: int = 0


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

    def relpath(self) -> str | None:
        """The config file relative to the rootdir (it is always protected)."""
        if self.path is None:
            return None
        try:
            return self.path.resolve().relative_to(self.rootdir.resolve()).as_posix()
        except ValueError:
            return None
