"""``@pytest.mark.dataset``: cases as test items, splits, pass rates, and every bad-input error."""

from __future__ import annotations

import json
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml  # noqa: F401  (kept imported: pytester would drop and re-import its C extension)

from pytest_autopilot.datasets import hashed_split

CASES_YAML = """\
- id: greet
  input: hello
  expected: greeting
  split: train
- id: bye
  input: goodbye
  expected: farewell
  split: val
- id: thanks
  input: thank you
  expected: gratitude
  split: test
- id: wrong
  input: hm
  expected: nothing
  split: train
"""

CLASSIFY_TEST = """\
import pytest
import yaml  # noqa: F401  (kept imported: pytester would drop and re-import its C extension)

LABELS = {"hello": "greeting", "goodbye": "farewell", "thank you": "gratitude"}

@pytest.mark.dataset("data/intents.yaml")
def test_intent(case, autopilot):
    got = LABELS.get(case["input"])
    autopilot.score(1.0 if got == case["expected"] else 0.0)
    assert got == case["expected"], f"{case['input']!r}: got {got!r}"
"""


def saved_metrics(pytester: pytest.Pytester, *args: str) -> dict[str, object]:
    pytester.runpytest("--autopilot-save", "out.json", *args)
    data = json.loads((pytester.path / "out.json").read_text())
    assert isinstance(data, dict)
    return data


def test_yaml_cases_become_items_with_ids_splits_and_metrics(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", **{"data/intents": CASES_YAML})
    pytester.makepyfile(test_intents=CLASSIFY_TEST)
    result = pytester.runpytest("-v", "--autopilot-save", "out.json")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_intent[[]greet[]] PASSED*",
            "*test_intent[[]bye[]] PASSED*",
            "*test_intent[[]thanks[]] PASSED*",
            "*test_intent[[]wrong[]] FAILED*",
        ]
    )
    data = json.loads((pytester.path / "out.json").read_text())
    values = {name: m["value"] for name, m in data["metrics"].items()}
    assert values["intents.pass_rate"] == 0.75
    assert values["intents.train.pass_rate"] == 0.5
    assert values["intents.val.pass_rate"] == 1.0
    assert values["intents.test.pass_rate"] == 1.0
    assert values["intents.train.score"] == 0.5
    assert data["metrics"]["intents.train.score"]["samples"] == [1.0, 0.0]
    assert data["metrics"]["intents.val.pass_rate"]["goal"] == "max"
    wrong = data["tests"]["test_intents.py::test_intent[wrong]"]
    assert wrong["dataset"] == "intents"
    assert wrong["split"] == "train"
    assert wrong["case_id"] == "wrong"
    assert "'hm': got None" in wrong["message"]
    assert "data/intents.yaml" in data["protected_files"]
    assert "test_intents.py" in data["protected_files"]


def test_mapping_with_cases_and_ids_from_index(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yml", cases="cases:\n  - {x: 1}\n  - {x: 2}\n  - {x: 3, id: three}\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.dataset("cases.yml")
        def test_x(case):
            assert type(case) is not dict and isinstance(case, dict)
            assert case["x"] in (1, 2, 3)
        """
    )
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_x[[]0[]]", "*test_x[[]1[]]", "*test_x[[]three[]]"])
    pytester.runpytest().assert_outcomes(passed=3)


def test_jsonl_cases(pytester: pytest.Pytester) -> None:
    lines = [json.dumps({"id": f"c{i}", "n": i, "split": "train"}) for i in range(4)]
    pytester.makefile(".jsonl", numbers="\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]))
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.dataset("numbers.jsonl")
        def test_even(case):
            assert case["n"] % 2 == 0
        """
    )
    data = saved_metrics(pytester)
    assert data["metrics"]["numbers.pass_rate"]["value"] == 0.5
    assert data["metrics"]["numbers.train.pass_rate"]["value"] == 0.5
    assert set(data["tests"]) == {f"test_jsonl_cases.py::test_even[c{i}]" for i in range(4)}


def test_unsplit_cases_follow_the_hash_and_val_fraction(pytester: pytest.Pytester) -> None:
    ids = [f"case-{i}" for i in range(40)]
    pytester.makefile(".yaml", many="\n".join(f"- id: {i}" for i in ids) + "\n")
    pytester.makefile(".yaml", autopilot="datasets: {val_fraction: 0.5, test_fraction: 0.25}\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.dataset("many.yaml")
        def test_case(case):
            pass
        """
    )
    data = saved_metrics(pytester)
    splits = {t["case_id"]: t["split"] for t in data["tests"].values()}
    assert splits == {i: hashed_split(i, 0.5, 0.25) for i in ids}
    assert set(splits.values()) == {"train", "val", "test"}


def test_hashed_split_is_stable_and_follows_fractions() -> None:
    ids = [f"id{i}" for i in range(2000)]
    splits = [hashed_split(i, 0.3) for i in ids]
    assert splits == [hashed_split(i, 0.3) for i in ids]
    assert 0.25 < splits.count("val") / len(ids) < 0.35
    assert "test" not in splits
    assert hashed_split("anything", 0.0) == "train"


def test_skipped_cases_do_not_count_in_pass_rates(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", d="- {id: a, split: val}\n- {id: b, split: val}\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.dataset("d.yaml")
        def test_d(case):
            if case["id"] == "b":
                pytest.skip("not today")
        """
    )
    data = saved_metrics(pytester)
    assert data["metrics"]["d.val.pass_rate"]["value"] == 1.0
    assert data["metrics"]["tests.total"]["value"] == 2


def test_score_outside_a_dataset_test_is_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_plain(autopilot):
            autopilot.score(1.0)
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*autopilot.score() works only in a dataset test*"])


def collect_error(pytester: pytest.Pytester, dataset: str, marker_arg: str = '"data.yaml"') -> str:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.dataset({marker_arg})
        def test_d(case):
            pass
        """
    )
    if dataset:
        (pytester.path / "data.yaml").write_text(dataset)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)
    assert "Traceback" not in result.stdout.str()
    return result.stdout.str()


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("- {id: a}\n- {id: b\n- {id: c}\n", "data.yaml:3: YAML syntax error: *"),
        ("- {id: a}\n- just text\n", "data.yaml:2: a case must be a mapping, got str 'just text'"),
        (
            "- {id: a}\n- {id: b}\n- {id: a}\n",
            "data.yaml:3: duplicate case id 'a' (first used on line 1)*",
        ),
        (
            "- {id: a, split: holdout}\n",
            "data.yaml:1: case 'a': 'split' must be one of train, val, test, got 'holdout'",
        ),
        ("- {id: [1, 2]}\n", "data.yaml:1: 'id' must be a non-empty string or an integer*"),
        ("other: 1\n", "data.yaml:1: expected a list of cases or a mapping with a 'cases' key*"),
        ("cases: 3\n", "data.yaml:1: expected a list of cases, got int 3"),
        ("[]\n", "data.yaml: the dataset has no cases"),
    ],
    ids=[
        "syntax",
        "not-mapping",
        "duplicate",
        "split",
        "id-type",
        "no-cases-key",
        "not-list",
        "empty",
    ],
)
def test_bad_yaml_dataset_is_a_collection_error(
    pytester: pytest.Pytester, dataset: str, expected: str
) -> None:
    out = collect_error(pytester, dataset)
    assert any(fnmatch(line.strip(), f"*{expected}") for line in out.splitlines()), out


def test_bad_jsonl_line(pytester: pytest.Pytester) -> None:
    pytester.makefile(".jsonl", data='{"id": 1}\n[1, 2]\n')
    out = collect_error(pytester, "", '"data.jsonl"')
    assert "data.jsonl:2: a case must be a mapping (JSON object), got a list" in out
    pytester.makefile(".jsonl", data='{"id": 1}\n{"id": \n')
    out = collect_error(pytester, "", '"data.jsonl"')
    assert "data.jsonl:2: not valid JSON" in out


def test_missing_file_unknown_format_and_bad_marker(pytester: pytest.Pytester) -> None:
    assert "nope.yaml: dataset file does not exist" in collect_error(pytester, "", '"nope.yaml"')
    assert "unknown dataset format '.csv'" in collect_error(pytester, "", '"data.csv"')
    assert "takes one path" in collect_error(pytester, "", "1, 2")


def test_test_without_case_argument(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", data="- {id: a}\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.dataset("data.yaml")
        def test_d():
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_d*needs a test that takes a `case` argument*"])


def test_dataset_path_is_relative_to_rootdir(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makefile(".yaml", **{"data/d": "- {id: a, split: train}\n"})
    sub = pytester.mkpydir("sub")
    (sub / "test_sub.py").write_text(
        "import pytest\n\n"
        '@pytest.mark.dataset("data/d.yaml")\n'
        "def test_d(case):\n"
        '    assert case["id"] == "a"\n'
    )
    result = pytester.runpytest(str(Path("sub") / "test_sub.py"))
    result.assert_outcomes(passed=1)


def test_marker_on_module_and_class(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", d="- {id: a, split: train}\n- {id: b, split: val}\n")
    pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.dataset("d.yaml")

        def test_module_level(case):
            assert case["id"] in "ab"

        @pytest.mark.dataset("d.yaml")
        class TestGroup:
            def test_in_class(self, case):
                assert case.split in ("train", "val")
        """
    )
    pytester.runpytest().assert_outcomes(passed=4)


def test_jsonl_case_too_deep_names_file_and_line(pytester: pytest.Pytester) -> None:
    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    pytester.makefile(".jsonl", data='{"id": 1}\n' + deep + "\n")
    out = collect_error(pytester, "", '"data.jsonl"')
    assert "data.jsonl:2: nested too deeply to read; expected one JSON object per line" in out


def test_yaml_dataset_too_deep_names_file_and_line(pytester: pytest.Pytester) -> None:
    out = collect_error(pytester, "- {id: a}\n- x: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert "data.yaml:2: YAML syntax error: " in out


@pytest.mark.parametrize("how", ["dotdot", "symlink", "absolute"])
def test_dataset_outside_the_rootdir_is_refused(pytester: pytest.Pytester, how: str) -> None:
    """It would fail only later, in the candidate's copy of the repository."""
    outside = pytester.path.parent / f"{pytester.path.name}-outside.yaml"
    outside.write_text("- {id: a}\n")
    path = {"dotdot": f"../{outside.name}", "symlink": "data.yaml", "absolute": str(outside)}[how]
    if how == "symlink":
        (pytester.path / "data.yaml").symlink_to(outside)
    out = collect_error(pytester, "", repr(path)).replace("\n", "")
    assert (
        f".py::test_d: @pytest.mark.dataset({path!r}): expected a file inside the rootdir "
        f"{pytester.path} (candidates run in a copy of the repository), got {outside}"
    ) in out
