from __future__ import annotations

import json
import random

import pytest
import yaml

from pytest_autopilot.paramfiles import Scalar, file_format, read_values, write_values

LOADER_YAML = """\
# Loader settings: tuned by autopilot, read by src/loader.py
pipeline:
  fetch:
    concurrency: 4      # threads waiting on storage
    per_batch: false
  decode: {concurrency: 1, executor: 'thread'}   # flow style stays flow style
  buffer_size: 2
  timeout: 1.5e+00

stages:
  - name: fetch
    retries: 3
  - name: decode
    retries: 0
note: |
  free text
  over two lines
"""

LOADER_JSON = """\
{
    "pipeline": {
        "fetch": {"concurrency": 4, "per_batch": false},
        "buffer_size": 2,
        "ratio": 0.5
    },
    "stages": [ {"name": "fetch"}, {"name": "decode", "retries": 0} ]
}
"""


def test_file_format_from_suffix() -> None:
    assert file_format("params/loader.json") == "json"
    assert file_format("Loader.JSON") == "json"
    assert file_format("loader.yaml") == "yaml"
    assert file_format("loader.yml") == "yaml"


def test_read_yaml_values_of_every_kind() -> None:
    values = read_values(
        LOADER_YAML,
        [
            "pipeline.fetch.concurrency",
            "pipeline.fetch.per_batch",
            "pipeline.decode.executor",
            "pipeline.timeout",
            "stages.1.retries",
            "note",
        ],
        "yaml",
    )
    assert values == {
        "pipeline.fetch.concurrency": 4,
        "pipeline.fetch.per_batch": False,
        "pipeline.decode.executor": "thread",
        "pipeline.timeout": 1.5,
        "stages.1.retries": 0,
        "note": "free text\nover two lines\n",
    }


def test_yaml_write_changes_only_the_scalars() -> None:
    out = write_values(
        LOADER_YAML,
        {
            "pipeline.fetch.concurrency": 16,
            "pipeline.fetch.per_batch": True,
            "pipeline.decode.concurrency": 3,
            "pipeline.decode.executor": "process",
            "stages.1.retries": 2,
        },
        "yaml",
    )
    expected = (
        LOADER_YAML.replace("concurrency: 4      #", "concurrency: 16     #")
        .replace("per_batch: false", "per_batch: true")
        .replace("{concurrency: 1, executor: 'thread'}", "{concurrency: 3, executor: 'process'}")
        .replace("retries: 0", "retries: 2")
    )
    assert out == expected


def test_aligned_end_of_line_comments_stay_in_their_column() -> None:
    text = "a: 4       # threads\nb: 100     # buffer\nc: 7 # tight\n"
    out = write_values(text, {"a": 24, "b": 1, "c": 700}, "yaml")
    assert out == "a: 24      # threads\nb: 1       # buffer\nc: 700 # tight\n"


def test_unchanged_values_keep_their_spelling() -> None:
    assert write_values(LOADER_YAML, {"pipeline.timeout": 1.5}, "yaml") == LOADER_YAML
    assert write_values(LOADER_JSON, {"pipeline.ratio": 0.5}, "json") == LOADER_JSON
    changed = write_values(LOADER_YAML, {"pipeline.buffer_size": 2.0}, "yaml")
    assert "buffer_size: 2.0\n" in changed
    assert read_values(changed, ["pipeline.buffer_size"], "yaml") == {"pipeline.buffer_size": 2.0}


@pytest.mark.parametrize(
    "value",
    [
        "process",
        "yes",
        "no",
        "null",
        "123",
        "1e3",
        "a: b",
        "x # y",
        "",
        " padded ",
        "it's",
        'say "hi"',
        "line\nbreak",
        "[list]",
        "{map}",
        "comma, separated",
        "über",
        "-dash",
        "0x1F",
        "~",
    ],
)
def test_yaml_strings_read_back_the_same_in_block_and_flow(value: str) -> None:
    for key in ("pipeline.decode.executor", "stages.0.name"):
        out = write_values(LOADER_YAML, {key: value}, "yaml")
        assert read_values(out, [key], "yaml") == {key: value}
        assert yaml.safe_load(out)["pipeline"]["fetch"]["concurrency"] == 4


def test_yaml_quote_style_is_kept() -> None:
    text = "a: 'one'\nb: \"two\"\nc: three\n"
    out = write_values(text, {"a": "uno", "b": "dos", "c": "tres"}, "yaml")
    assert out == "a: 'uno'\nb: \"dos\"\nc: tres\n"


def test_yaml_floats_stay_floats_under_yaml_1_1() -> None:
    text = "lr: 0.1\n"
    for value in (1e-05, 3e20, 0.25, 2.0, 1234.5):
        out = write_values(text, {"lr": value}, "yaml")
        assert yaml.safe_load(out) == {"lr": value}, out


def test_yaml_block_scalar_is_replaced_without_eating_the_next_key() -> None:
    text = "note: |\n  hello\n  world\nafter: 1\n"
    out = write_values(text, {"note": "bye"}, "yaml")
    assert out == "note: bye\nafter: 1\n"


def test_random_yaml_round_trips_keep_every_other_line() -> None:
    rng = random.Random(7)
    keys = ["pipeline.fetch.concurrency", "pipeline.buffer_size", "stages.0.retries"]
    lines = LOADER_YAML.splitlines()
    for _ in range(30):
        choices: list[Scalar] = [rng.randint(-5, 500), True, "w", rng.random()]
        values = {k: rng.choice(choices) for k in keys}
        out = write_values(LOADER_YAML, values, "yaml")
        assert read_values(out, keys, "yaml") == values
        changed = [
            i for i, (a, b) in enumerate(zip(lines, out.splitlines(), strict=True)) if a != b
        ]
        assert set(changed) <= {3, 6, 11}


def test_json_write_changes_only_the_scalars() -> None:
    out = write_values(
        LOADER_JSON,
        {
            "pipeline.fetch.concurrency": 32,
            "pipeline.fetch.per_batch": True,
            "pipeline.ratio": 0.125,
            "stages.1.name": 'de"code',
        },
        "json",
    )
    expected = (
        LOADER_JSON.replace('"concurrency": 4', '"concurrency": 32')
        .replace('"per_batch": false', '"per_batch": true')
        .replace('"ratio": 0.5', '"ratio": 0.125')
        .replace('"name": "decode"', '"name": "de\\"code"')
    )
    assert out == expected
    assert json.loads(out)["stages"][1]["name"] == 'de"code'


def test_json_scanner_handles_escapes_and_nesting() -> None:
    text = '{"a\\"b": {"c": "x}\\\\", "d": [1, -2.5e3, null]}, "e": -0}'
    assert read_values(text, ['a"b.d.1', "e"], "json") == {'a"b.d.1': -2500.0, "e": 0}
    out = write_values(text, {'a"b.d.0': 9, "e": 1.5}, "json")
    assert json.loads(out) == {'a"b': {"c": "x}\\", "d": [9, -2500.0, None]}, "e": 1.5}


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (LOADER_YAML, "pipeline.fetch.threads", "f.yaml:4: pipeline.fetch.threads: expected key"),
        (
            LOADER_YAML,
            "pipeline.fetch",
            "f.yaml:3: pipeline.fetch: expected a scalar value, got a mapping",
        ),
        (LOADER_YAML, "stages", "stages: expected a scalar value, got a list"),
        (LOADER_YAML, "stages.2.name", "expected an index below 2 for the list at stages, got '2'"),
        (LOADER_YAML, "stages.first", "got 'first'"),
        (
            LOADER_YAML,
            "pipeline.buffer_size.x",
            "expected a mapping or list at pipeline.buffer_size",
        ),
        ("", "a", "f.yaml: a: expected a mapping or list at the top"),
        ("a: 1\na: 2\n", "a", "f.yaml:2: a: key 'a' appears twice"),
        ("base: &b {x: 1}\n<<: *b\n", "x", "keys from a '<<' merge cannot be tuned"),
        ("a: [1\n", "a", "f.yaml:2: invalid YAML"),
        ("a: 1\n---\nb: 2\n", "a", "f.yaml:2: invalid YAML"),
        ("a: 2020-01-01\n", "a", "a: expected a string, number or boolean, got date"),
    ],
)
def test_yaml_errors_name_file_and_key(text: str, key: str, message: str) -> None:
    with pytest.raises(pytest.UsageError) as info:
        read_values(text, [key], "yaml", "f.yaml")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (LOADER_JSON, "pipeline.size", "p.json:2: pipeline.size: expected key 'pipeline.size'"),
        (LOADER_JSON, "pipeline", "pipeline: expected a scalar value, got an object"),
        (LOADER_JSON, "stages", "got an array"),
        (LOADER_JSON, "stages.9", "expected an index below 2"),
        (LOADER_JSON, "pipeline.ratio.x", "expected an object or array at pipeline.ratio"),
        ('{"a": 1, "a": 2}', "a", "key 'a' appears twice"),
        ('{"a": 1,}', "a", "p.json:1: invalid JSON"),
        ('{"a": NaN}', "a", "NaN is not standard JSON"),
    ],
)
def test_json_errors_name_file_and_key(text: str, key: str, message: str) -> None:
    with pytest.raises(pytest.UsageError) as info:
        read_values(text, [key], "json", "p.json")
    assert message in str(info.value)


@pytest.mark.parametrize(
    "text",
    ["a: &x 1\nb: *x\n", "a: !!int 1\n", "base: &b {x: 1}\nother: *b\n"],
)
def test_yaml_anchors_aliases_and_tags_are_not_edited(text: str) -> None:
    key = "other.x" if "other" in text else "a"
    with pytest.raises(pytest.UsageError, match="anchor, alias or tag"):
        write_values(text, {key: 5}, "yaml", "f.yaml")


def test_unwritable_values_are_refused() -> None:
    with pytest.raises(pytest.UsageError, match="expected a finite number"):
        write_values("a: 1\n", {"a": float("inf")}, "yaml", "f.yaml")
    with pytest.raises(pytest.UsageError, match="expected a string, number or boolean"):
        write_values("a: 1\n", {"a": [1]}, "yaml", "f.yaml")  # type: ignore[dict-item]
