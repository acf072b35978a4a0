"""autopilot.yaml: every key, every error message, file discovery, and the glob matcher."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_autopilot.config import (
    ALWAYS_PROTECTED,
    Acceptance,
    AnthropicSettings,
    AutopilotConfig,
    Budget,
    ChoiceDimension,
    DatasetSettings,
    FloatDimension,
    GateSpec,
    IntDimension,
    Objective,
    Price,
    expand_glob,
    glob_match,
    is_protected,
    load_config,
    matches,
    parse_config,
    protected_globs,
)
from pytest_autopilot.config_parser import Section
from pytest_autopilot.config_schema import TOP
from pytest_autopilot.results import SessionResult


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A small project: a parameter file with nested keys, sources, data and docs."""
    (tmp_path / "loader.yaml").write_text(
        "fetch:\n  concurrency: 4\nstages:\n  - workers: 2\nexecutor: thread\n"
    )
    (tmp_path / "settings.json").write_text(json.dumps({"batch": {"size": 8}}))
    (tmp_path / "src" / "loader").mkdir(parents=True)
    (tmp_path / "src" / "loader" / "a.py").write_text("")
    (tmp_path / "src" / "loader" / "b.py").write_text("")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cases.csv").write_text("")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "tuning.md").write_text("tune")
    return tmp_path


def parse(root: Path, data: Any) -> AutopilotConfig:
    return parse_config(data, root / "autopilot.yaml", root)


def error(root: Path, data: Any) -> str:
    with pytest.raises(pytest.UsageError) as info:
        parse(root, data)
    return str(info.value)


FULL = {
    "experiment": "fast-loader",
    "objective": {"metric": "test_step_time", "goal": "min"},
    "parameters": [
        {
            "path": "loader.yaml",
            "space": {
                "fetch.concurrency": {"int": [1, 64], "log": True},
                "stages.0.workers": {"int": [1, 8]},
                "executor": {"choice": ["thread", "process"]},
            },
        },
        {"path": "settings.json", "space": {"batch.size": {"float": [0.5, 64], "log": True}}},
        {"path": "src/loader/*.py"},
        "docs/*.md",
    ],
    "protected": ["data/**"],
    "gates": [
        {"metric": "test_step_time", "max": 0.012},
        {"metric": "intents.val.pass_rate", "min": 0.95},
        {"metric": "test_step_time", "max_regression": 0.05},
        {"metric": "throughput", "min_gain": "1e-1"},
    ],
    "optimizer": "anthropic",
    "anthropic": {
        "model": "claude-x",
        "max_tokens": 1000,
        "temperature": 0.2,
        "budget_usd": 2.0,
        "max_turns": 5,
        "max_retries": 0,
        "timeout": 30,
        "prices": {"claude-x": [3, 15], "claude-y": {"input": 1, "output": 5}},
    },
    "command": "claude -p",
    "knowledge": ["docs/tuning.md"],
    "budget": {"rounds": 3, "candidates": 4, "patience": 2, "minutes": 1.5, "candidate_timeout": 9},
    "acceptance": {"min_effect": 0.01, "confidence": 0.99, "run_noise": 0.03},
    "datasets": {"val_fraction": 0.2, "test_fraction": 0.1},
    "search": {"seed": 7},
    "benchmark_statistic": {"test_step_time": "min"},
}


def test_every_key_is_read(root: Path) -> None:
    config = parse(root, FULL)
    assert config.path == root / "autopilot.yaml"
    assert config.relpath() == "autopilot.yaml"
    assert config.experiment == "fast-loader"
    assert config.objective == Objective("test_step_time", "min")
    loader, settings, sources, docs = config.parameters
    assert loader.space == {
        "fetch.concurrency": IntDimension(1, 64, log=True),
        "stages.0.workers": IntDimension(1, 8),
        "executor": ChoiceDimension(("thread", "process")),
    }
    assert settings.space == {"batch.size": FloatDimension(0.5, 64.0, log=True)}
    assert (sources.path, sources.space) == ("src/loader/*.py", {})
    assert docs.path == "docs/*.md"
    assert config.protected == ("data/**",)
    assert config.gates == (
        GateSpec("test_step_time", "max", 0.012),
        GateSpec("intents.val.pass_rate", "min", 0.95),
        GateSpec("test_step_time", "max_regression", 0.05),
        GateSpec("throughput", "min_gain", 0.1),
    )
    assert config.optimizer == "anthropic"
    assert config.anthropic == AnthropicSettings(
        model="claude-x",
        max_tokens=1000,
        temperature=0.2,
        budget_usd=2.0,
        max_turns=5,
        max_retries=0,
        timeout=30.0,
        prices={"claude-x": Price(3.0, 15.0), "claude-y": Price(1.0, 5.0)},
    )
    assert config.command == "claude -p"
    assert config.knowledge == ("docs/tuning.md",)
    assert config.budget == Budget(3, 4, 2, 1.5, 9.0)
    assert config.acceptance == Acceptance(0.01, 0.99, 0.03)
    assert config.datasets == DatasetSettings(0.2, 0.1)
    assert config.search.seed == 7
    assert config.benchmark_statistic == {"test_step_time": "min"}


@pytest.mark.parametrize("data", [None, {}, {"budget": None, "gates": None}])
def test_empty_file_and_empty_sections_give_defaults(root: Path, data: Any) -> None:
    config = parse(root, data)
    assert config == AutopilotConfig(path=root / "autopilot.yaml", rootdir=root)
    assert config.acceptance.run_noise is None
    assert Acceptance().min_effect == 0.02


def test_objective_shorthand(root: Path) -> None:
    assert parse(root, {"objective": "loss"}).objective == Objective("loss", "min")


# Each case: config data, the dotted key the message must name, and what it must expect.
ERRORS: list[tuple[Any, str, str]] = [
    ({"budget": {"round": 3}}, "budget.round: unknown key (did you mean 'rounds'?)", "rounds,"),
    ({"gate": []}, "gate: unknown key (did you mean 'gates'?)", "expected one of"),
    ({"anthropic": {"modle": "x"}}, "anthropic.modle: unknown key", "model"),
    ({"experiment": "a..b"}, "experiment:", "letters, digits"),
    ({"experiment": "x.lock"}, "experiment:", "autopilot/<name>"),
    ({"experiment": 3}, "experiment:", "got 3"),
    ({"objective": {"goal": "min"}}, "objective.metric:", "a metric name"),
    ({"objective": {"metric": "m", "goal": "up"}}, "objective.goal:", "'min' or 'max'"),
    ({"objective": {"metric": "m", "direction": "min"}}, "objective.direction: unknown", "goal"),
    ({"parameters": {"path": "loader.yaml"}}, "parameters:", "a list of"),
    ({"parameters": [{"space": {}}]}, "parameters[0].path:", "a glob of files"),
    ({"parameters": [{"path": "src/*.py"}]}, "parameters[0].path:", "at least one file"),
    ({"parameters": [{"path": "src"}]}, "parameters[0].path:", "write src/** for its files"),
    ({"parameters": [{"path": "../x.py"}]}, "parameters[0].path:", "no '..'"),
    ({"parameters": [{"path": "/etc/passwd"}]}, "parameters[0].path:", "relative to the rootdir"),
    (
        {"parameters": [{"path": "src/loader/*.py", "space": {"a": {"int": [1, 2]}}}]},
        "parameters[0].space:",
        "exactly one file when a space is given (src/loader/*.py matches 2",
    ),
    (
        {"parameters": [{"path": "docs/tuning.md", "space": {"a": {"int": [1, 2]}}}]},
        "parameters[0].space:",
        "a .yaml, .yml or .json parameter file",
    ),
    (
        {"parameters": [{"path": "loader.yaml", "space": {"fetch.conc": {"int": [1, 2]}}}]},
        "parameters[0].space.fetch.conc:",
        "a dotted key that exists in loader.yaml",
    ),
    (
        {"parameters": [{"path": "loader.yaml", "space": {"executor": {"int": [3, 3]}}}]},
        "parameters[0].space.executor.int:",
        "low < high",
    ),
    (
        {"parameters": [{"path": "loader.yaml", "space": {"executor": {"int": [1.5, 3]}}}]},
        "parameters[0].space.executor.int:",
        "integers",
    ),
    (
        {"parameters": [{"path": "loader.yaml", "space": {"executor": {"int": [0, 4], "log": 1}}}]},
        "parameters[0].space.executor.log:",
        "true or false",
    ),
    (
        {
            "parameters": [
                {"path": "loader.yaml", "space": {"executor": {"float": [0, 4], "log": True}}}
            ]
        },
        "parameters[0].space.executor.float:",
        "low > 0 with log: true",
    ),
    (
        {"parameters": [{"path": "loader.yaml", "space": {"executor": {"choice": []}}}]},
        "parameters[0].space.executor.choice:",
        "a non-empty list",
    ),
    (
        {"parameters": [{"path": "loader.yaml", "space": {"executor": {"choice": ["thread"]}}}]},
        "parameters[0].space.executor.choice:",
        "at least two choices (one leaves nothing to search: remove the key), got ['thread']",
    ),
    (
        {"parameters": [{"path": "loader.yaml", "space": {"executor": {"choice": ["a", "a"]}}}]},
        "parameters[0].space.executor.choice:",
        "distinct choices",
    ),
    (
        {
            "parameters": [
                {"path": "loader.yaml", "space": {"executor": {"int": [1, 2], "float": [1, 2]}}}
            ]
        },
        "parameters[0].space.executor:",
        "exactly one of int",
    ),
    (
        {"parameters": [{"path": "loader.yaml", "space": {"executor": {"range": [1, 2]}}}]},
        "parameters[0].space.executor.range: unknown key",
        "int, float, choice, log",
    ),
    ({"protected": "data/**"}, "protected:", "a list of globs"),
    ({"protected": ["data/**", 3]}, "protected[1]:", "a glob relative to the rootdir"),
    (
        {"gates": [{"metric": "m"}]},
        "gates[0]:",
        "exactly one of min, max, max_regression, min_gain, got none",
    ),
    ({"gates": [{"metric": "m", "min": 1, "max": 2}]}, "gates[0]:", "got min and max"),
    ({"gates": [{"max": 2}]}, "gates[0].metric:", "a metric name"),
    ({"gates": [{"metric": "m", "max": "fast"}]}, "gates[0].max:", "a number, got 'fast'"),
    ({"gates": [{"metric": "m", "max": True}]}, "gates[0].max:", "a number, got true"),
    ({"gates": [{"metric": "m", "max_regression": -0.1}]}, "gates[0].max_regression:", ">= 0"),
    ({"gates": [{"metric": "m", "maximum": 1}]}, "gates[0].maximum: unknown key", "max_regression"),
    ({"optimizer": ""}, "optimizer:", "an optimizer name"),
    ({"anthropic": {"max_tokens": 0}}, "anthropic.max_tokens:", "a positive integer"),
    ({"anthropic": {"temperature": 2}}, "anthropic.temperature:", "from 0 to 1"),
    ({"anthropic": {"budget_usd": 0}}, "anthropic.budget_usd:", "a positive number of USD"),
    ({"anthropic": {"max_retries": -1}}, "anthropic.max_retries:", "an integer >= 0"),
    ({"anthropic": {"timeout": 0}}, "anthropic.timeout:", "seconds"),
    ({"anthropic": {"prices": {"m": [1]}}}, "anthropic.prices.m:", "[input, output]"),
    ({"anthropic": {"prices": [1, 2]}}, "anthropic.prices:", "a mapping of model"),
    ({"command": ["claude"]}, "command:", "a shell command"),
    ({"knowledge": ["docs/missing.md"]}, "knowledge[0]:", "an existing file"),
    ({"knowledge": "docs/tuning.md"}, "knowledge:", "a list of files"),
    ({"budget": {"rounds": 0}}, "budget.rounds:", "a positive integer, got 0"),
    ({"budget": {"candidates": 1.5}}, "budget.candidates:", "a positive integer"),
    ({"budget": {"patience": -1}}, "budget.patience:", "a positive integer"),
    ({"budget": {"minutes": 0}}, "budget.minutes:", "a positive number of minutes"),
    ({"budget": {"candidate_timeout": "soon"}}, "budget.candidate_timeout:", "seconds"),
    ({"budget": [1]}, "budget:", "a mapping with keys rounds"),
    ({"acceptance": {"min_effect": -0.1}}, "acceptance.min_effect:", "a fraction >= 0"),
    ({"acceptance": {"confidence": 0.5}}, "acceptance.confidence:", "between 0.5 and 1"),
    ({"acceptance": {"confidence": 1}}, "acceptance.confidence:", "between 0.5 and 1"),
    ({"acceptance": {"run_noise": 1.5}}, "acceptance.run_noise:", "a fraction >= 0"),
    ({"datasets": {"val_fraction": 1}}, "datasets.val_fraction:", "from 0 to 1"),
    ({"datasets": {"test_fraction": -0.1}}, "datasets.test_fraction:", "from 0 to 1"),
    ({"datasets": {"val_fraction": 0.6, "test_fraction": 0.5}}, "datasets:", "got 0.6 + 0.5"),
    ({"search": {"seed": "x"}}, "search.seed:", "an integer"),
    ({"benchmark_statistic": ["min"]}, "benchmark_statistic:", "a mapping of metric name"),
    ({"benchmark_statistic": {"t": "max"}}, "benchmark_statistic.t:", "median, min or mean"),
]


@pytest.mark.parametrize(("data", "key", "expected"), ERRORS, ids=[e[1] for e in ERRORS])
def test_config_errors_name_file_key_and_expectation(
    root: Path, data: Any, key: str, expected: str
) -> None:
    message = error(root, data)
    assert message.startswith(f"autopilot.yaml: {key}"), message
    assert expected in message
    assert "expected" in message


def test_every_field_has_exactly_one_key_with_a_doc() -> None:
    """The tables and the dataclasses describe the same settings: no field is unreadable."""
    sections: list[tuple[str, Section[Any]]] = [("", TOP)]
    while sections:
        key, section = sections.pop()
        names = {f.name for f in dataclasses.fields(section.build)} - {"path", "rootdir"}
        assert set(section.names) == names, key
        assert len(section.names) == len(names), key
        for row in section.keys:
            assert row.doc.strip(), f"{key}.{row.name}"
            inner = getattr(row.convert, "section", None)
            if inner is not None:
                sections.append((f"{key}.{row.name}".lstrip("."), inner))


@pytest.mark.parametrize(
    "name", ["x" * 101, "a..b", "x.lock", "trailing.", "-dash", "sp ace", "\u00e9t\u00e9"]
)
def test_one_experiment_name_rule_blames_its_source(
    pytester: pytest.Pytester, root: Path, name: str
) -> None:
    from pytest_autopilot.loop.workspace import validate_experiment

    message = error(root, {"experiment": name})
    assert message.startswith("autopilot.yaml: experiment: expected a name of at most 100")
    with pytest.raises(pytest.UsageError, match=r"^ci\.yaml: experiment: expected a name"):
        validate_experiment(name, "ci.yaml")
    result = pytester.runpytest("--autopilot", f"--autopilot-experiment={name}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*argument --autopilot-experiment: expected a name of at most 100 *"]
    )
    assert "autopilot.yaml" not in result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_experiment_name_of_100_characters_is_accepted(root: Path) -> None:
    assert parse(root, {"experiment": "x" * 100}).experiment == "x" * 100


@pytest.mark.parametrize("where", ["outside", "inside"])
def test_parameter_reached_only_through_a_symlink_is_refused(
    root: Path, tmp_path_factory: Any, where: str
) -> None:
    """A candidate may not change a symlink, so such a parameter could never be changed."""
    target = tmp_path_factory.mktemp("elsewhere") if where == "outside" else root / "real"
    target.mkdir(exist_ok=True)
    (target / "params.yaml").write_text("workers: 2\n")
    (root / "link").symlink_to(target)
    message = error(root, {"parameters": ["link/params.yaml"]})
    assert message.startswith("autopilot.yaml: parameters[0].path: expected a glob matching")
    assert "not reached through a symbolic link" in message
    assert f"link/params.yaml goes through link -> {target}, {where} the rootdir" in message
    assert message.endswith("got 'link/params.yaml'")
    (root / "direct.yaml").symlink_to(target / "params.yaml")
    assert "goes through direct.yaml ->" in error(root, {"parameters": ["direct.yaml"]})
    mixed = parse(root, {"parameters": ["*.yaml"]})
    assert mixed.parameters[0].path == "*.yaml"


def run_gate(pytester: pytest.Pytester, config: str) -> str:
    """``pytest --autopilot-gate`` with this autopilot.yaml: a usage error, no traceback."""
    (pytester.path / "autopilot.yaml").write_text(config)
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--autopilot-gate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output
    assert "INTERNALERROR" not in output
    return result.stderr.str()


def test_config_nested_too_deep_is_a_usage_error(pytester: pytest.Pytester) -> None:
    flow = "experiment: x\nsearch: " + "[" * 20_000 + "]" * 20_000 + "\n"
    assert "autopilot.yaml:2: expected at most 100 levels of nesting, got deeper" in run_gate(
        pytester, flow
    )
    block = "search:\n" + "".join("  " * i + "-\n" for i in range(1, 150))
    assert "autopilot.yaml:101: expected at most 100 levels of nesting" in run_gate(pytester, block)


def test_parameter_file_nested_too_deep_is_a_usage_error(root: Path) -> None:
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    space = {"0": {"int": [1, 2]}}
    message = error(root, {"parameters": [{"path": "deep.json", "space": space}]})
    assert message == "deep.json: invalid JSON in a parameter file: nested too deeply to read"
    (root / "deep.yaml").write_text("a: " + "{b: " * 200 + "1" + "}" * 200 + "\n")
    message = error(root, {"parameters": [{"path": "deep.yaml", "space": {"a": {"int": [1, 2]}}}]})
    assert message == "deep.yaml:1: expected at most 100 levels of nesting, got deeper"


def test_configs_that_can_do_nothing_exit_4(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("loader.yaml").write_text("executor: thread\n")
    one_choice = "parameters:\n- path: loader.yaml\n  space: {executor: {choice: [thread]}}\n"
    pytester.makepyfile("def test_nothing():\n    pass\n")
    err = run_gate(pytester, one_choice)
    assert "autopilot.yaml: parameters[0].space.executor.choice: expected at least two" in err
    outside = pytester.path.parent / f"{pytester.path.name}-outside"
    outside.mkdir()
    (outside / "loader.yaml").write_text("executor: thread\n")
    (pytester.path / "conf").symlink_to(outside)
    err = run_gate(pytester, "parameters: [conf/loader.yaml]\n")
    assert "autopilot.yaml: parameters[0].path: expected a glob matching files" in err
    assert f"goes through conf -> {outside}, outside the rootdir, got 'conf/loader.yaml'" in err


def test_not_a_mapping(root: Path) -> None:
    message = error(root, ["experiment"])
    assert message.startswith("autopilot.yaml: expected a mapping of settings")
    assert "got ['experiment']" in message


def test_file_outside_rootdir_is_named_in_full(root: Path, tmp_path_factory: Any) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "ci.yaml"
    with pytest.raises(pytest.UsageError, match=rf"^{elsewhere}: budget.rounds: "):
        parse_config({"budget": {"rounds": 0}}, elsewhere, root)


def test_unreadable_parameter_file_is_named(root: Path) -> None:
    (root / "broken.json").write_text("{\n  'x': 1\n}")
    message = error(
        root, {"parameters": [{"path": "broken.json", "space": {"x": {"int": [1, 2]}}}]}
    )
    assert message.startswith("broken.json:2: invalid JSON in a parameter file")


# -- load_config: discovery through pytest ------------------------------------------------


def test_no_file_gives_defaults(pytester: pytest.Pytester) -> None:
    config = load_config(pytester.parseconfig())
    assert config.path is None
    assert config.rootdir == pytester.path
    assert config.gates == ()


def test_autopilot_yaml_at_rootdir(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", autopilot="experiment: found\n")
    assert load_config(pytester.parseconfig()).experiment == "found"


def test_command_line_wins_over_ini_and_default(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", autopilot="experiment: default-file\n")
    pytester.makefile(".yaml", ini_named="experiment: from-ini\n")
    (pytester.path / "ci").mkdir()
    (pytester.path / "ci" / "gate.yaml").write_text("experiment: from-flag\n")
    pytester.makeini("[pytest]\nautopilot_config = ini_named.yaml\n")
    assert load_config(pytester.parseconfig()).experiment == "from-ini"
    flagged = load_config(pytester.parseconfig("--autopilot-config", "ci/gate.yaml"))
    assert flagged.experiment == "from-flag"
    assert flagged.relpath() == "ci/gate.yaml"


def test_missing_named_files_are_errors(pytester: pytest.Pytester) -> None:
    with pytest.raises(
        pytest.UsageError, match=r"--autopilot-config nope\.yaml: expected an existing"
    ):
        load_config(pytester.parseconfig("--autopilot-config", "nope.yaml"))
    pytester.makeini("[pytest]\nautopilot_config = gone.yaml\n")
    with pytest.raises(pytest.UsageError, match=r"ini option autopilot_config = gone\.yaml"):
        load_config(pytester.parseconfig())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("budget:\n  rounds: [1,\n", r"^autopilot.yaml:2: invalid YAML: .*\(column \d+\)"),
        (
            "budget:\n  rounds: 2\n  rounds: 3\n",
            r"^autopilot.yaml:3: rounds: expected each key once",
        ),
        ("gates:\n- {metric: m, max: 1e-3}\n- metric: m\n   min: 1\n", r"^autopilot.yaml:4: "),
        ("budget:\n  rounds: 0\n", r"^autopilot.yaml: budget.rounds: expected a positive integer"),
    ],
)
def test_yaml_errors_give_file_and_line(pytester: pytest.Pytester, text: str, message: str) -> None:
    pytester.makefile(".yaml", autopilot=text)
    with pytest.raises(pytest.UsageError, match=message):
        load_config(pytester.parseconfig())


def test_yaml_exponent_without_dot_is_a_number(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", autopilot="gates:\n- {metric: m, max: 1e-3}\n")
    assert load_config(pytester.parseconfig()).gates[0].threshold == 0.001


# -- globs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("**/conftest.py", "conftest.py", True),
        ("**/conftest.py", "a/b/conftest.py", True),
        ("**/test_*.py", "tests/unit/test_x.py", True),
        ("**/test_*.py", "tests/unit/x_test.py", False),
        ("data/**", "data/x.csv", True),
        ("data/**", "data/a/b/x.csv", True),
        ("data/**", "database/x.csv", False),
        ("src/*.py", "src/a.py", True),
        ("src/*.py", "src/sub/a.py", False),
        ("src/**/*.py", "src/a.py", True),
        ("src/**/*.py", "src/a/b/c.py", True),
        ("*.csv", "a.csv", True),
        ("*.csv", "d/a.csv", False),
        ("a/**/b/**/c", "a/x/b/y/z/c", True),
        ("a/**/b/**/c", "a/c", False),
        ("a/**/**/c", "a/c", True),
        ("loader.yaml", "loader.yaml", True),
        ("./loader.yaml", "loader.yaml", True),
        ("loader.yaml", "./loader.yaml", True),
        ("Loader.yaml", "loader.yaml", False),
        ("src/[ab].py", "src/b.py", True),
        ("src/?.py", "src/ab.py", False),
        (".git/**", ".git/HEAD", True),
        ("**", "any/thing", True),
    ],
)
def test_glob_match(pattern: str, path: str, expected: bool) -> None:
    assert glob_match(pattern, path) is expected


def test_matches_any() -> None:
    assert matches("tests/test_a.py", ALWAYS_PROTECTED)
    assert matches("pkg/conftest.py", ALWAYS_PROTECTED)
    assert matches(".autopilot/state.json", ALWAYS_PROTECTED)
    assert not matches("src/loader.py", ALWAYS_PROTECTED)
    assert not matches("x", [])


def test_is_protected_covers_parents_and_paths_leaving_the_root() -> None:
    assert is_protected("data/sub/x.csv", ["data"])
    assert is_protected("data/sub/x.csv", ["data/*"])
    assert not is_protected("database.py", ["data"])
    assert is_protected("../outside.py", [])
    assert is_protected("/etc/passwd", [])
    assert is_protected("", [])
    assert is_protected("a/../../b", [])
    assert not is_protected("src/a.py", ALWAYS_PROTECTED)
    assert is_protected("src\\conftest.py", ALWAYS_PROTECTED)


def test_protected_globs(root: Path) -> None:
    config = parse_config({"protected": ["data/**"]}, root / "ci" / "auto.yaml", root)
    result = SessionResult(protected_files=["checks/cases.yaml", "checks/verify.py"])
    globs = protected_globs(config, result)
    assert globs[: len(ALWAYS_PROTECTED)] == list(ALWAYS_PROTECTED)
    assert globs[len(ALWAYS_PROTECTED) :] == [
        "data/**",
        "ci/auto.yaml",
        "checks/cases.yaml",
        "checks/verify.py",
    ]
    assert is_protected("checks/verify.py", globs)
    assert is_protected("ci/auto.yaml", globs)
    assert not is_protected("loader.yaml", globs)
    no_file = protected_globs(AutopilotConfig(path=None, rootdir=root), SessionResult())
    assert no_file == list(ALWAYS_PROTECTED)


def test_expand_glob_walks_only_what_it_must(root: Path) -> None:
    (root / ".git").mkdir()
    (root / ".git" / "x.py").write_text("")
    (root / "venv").mkdir()
    (root / "venv" / "pyvenv.cfg").write_text("")
    (root / "venv" / "site.py").write_text("")
    assert expand_glob(root, "**/*.py") == ["src/loader/a.py", "src/loader/b.py"]
    assert expand_glob(root, "src/**") == ["src/loader/a.py", "src/loader/b.py"]
    assert expand_glob(root, "*.yaml") == ["loader.yaml"]
    assert expand_glob(root, ".git/*.py") == [".git/x.py"]
    assert expand_glob(root, "src") == []
    assert expand_glob(root, "nowhere/**") == []
