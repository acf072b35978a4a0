"""The text editor tool executor: what the model may read and write inside a worktree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fake_messages_api import make_context

from pytest_autopilot.optimizers.editor_tool import EditorTool, EditPolicy
from pytest_autopilot.optimizers.prompt import protected_patterns


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "params.yaml").write_text("workers: 2\nbatch: 8\n")
    (root / "test_speed.py").write_text("def test_speed():\n    assert True\n")
    (root / "data" / "cases.yaml").write_text("- {id: a, label: secret-label}\n")
    (root / "src" / "pkg" / "mod.py").write_text("X = 1\n")
    (root / "autopilot.yaml").write_text("objective: {metric: speed}\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours\n")
    os.symlink(outside, root / "escape.txt")
    os.symlink("data/cases.yaml", root / "alias.yaml")
    return root


@pytest.fixture
def editor(repo: Path) -> EditorTool:
    context = make_context(repo)
    policy = EditPolicy.build(
        context.config,
        protected_patterns(context.config, context.protected_files),
        context.protected_files,
    )
    return EditorTool(repo, policy)


def test_str_replace_edits_a_parameter_file(editor: EditorTool, repo: Path) -> None:
    outcome = editor.run(
        {
            "command": "str_replace",
            "path": "params.yaml",
            "old_str": "workers: 2",
            "new_str": "workers: 6",
        }
    )
    assert not outcome.is_error, outcome.text
    assert (repo / "params.yaml").read_text() == "workers: 6\nbatch: 8\n"
    assert "workers: 6" in outcome.text
    assert editor.changed == {"params.yaml"}


def test_leading_slash_means_repository_root(editor: EditorTool, repo: Path) -> None:
    outcome = editor.run(
        {"command": "insert", "path": "/params.yaml", "insert_line": 2, "insert_text": "x: 1"}
    )
    assert not outcome.is_error, outcome.text
    assert (repo / "params.yaml").read_text() == "workers: 2\nbatch: 8\nx: 1\n"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("test_speed.py", "protected"),
        ("data/cases.yaml", "cannot be read"),
        ("autopilot.yaml", "protected"),
        ("src/pkg/mod.py", "not a parameter file"),
        ("../outside.txt", "outside the repository"),
        ("src/../../outside.txt", "outside the repository"),
        ("escape.txt", "outside the repository"),
        ("alias.yaml", "cannot be read"),
        (".git/config", "cannot be read"),
    ],
)
def test_edits_outside_the_parameters_are_refused(
    editor: EditorTool, repo: Path, tmp_path: Path, path: str, expected: str
) -> None:
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for call in (
        {"command": "str_replace", "path": path, "old_str": "a", "new_str": "b"},
        {"command": "create", "path": path, "file_text": "pwned\n"},
        {"command": "insert", "path": path, "insert_line": 0, "insert_text": "pwned"},
    ):
        outcome = editor.run(call)
        assert outcome.is_error
        assert expected in outcome.text, outcome.text
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert editor.changed == set()


def test_a_symlinked_parameter_is_not_written_through(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "real.yaml").write_text("a: 1\n")
    os.symlink("real.yaml", root / "params.yaml")
    context = make_context(root, parameters=("params.yaml",), protected_files=())
    policy = EditPolicy.build(context.config, protected_patterns(context.config, ()), ())
    outcome = EditorTool(root, policy).run(
        {"command": "create", "path": "params.yaml", "file_text": "b\n"}
    )
    assert outcome.is_error
    assert "symbolic link" in outcome.text
    assert (root / "real.yaml").read_text() == "a: 1\n"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data/cases.yaml", "dataset"),
        ("/data/cases.yaml", "dataset"),
        ("src/../data/cases.yaml", "dataset"),
        ("alias.yaml", "dataset"),
        ("escape.txt", "outside the repository"),
        ("../outside.txt", "outside the repository"),
        ("/../outside.txt", "outside the repository"),
    ],
)
def test_view_refuses_datasets_and_outside(editor: EditorTool, path: str, expected: str) -> None:
    outcome = editor.run({"command": "view", "path": path})
    assert outcome.is_error
    assert expected in outcome.text
    assert "secret-label" not in outcome.text and "not yours" not in outcome.text


def test_view_shows_sources_and_tests_with_line_numbers(editor: EditorTool) -> None:
    test_module = editor.run({"command": "view", "path": "test_speed.py"})
    assert not test_module.is_error
    assert test_module.text.splitlines()[1] == "     2\t    assert True"
    ranged = editor.run({"command": "view", "path": "params.yaml", "view_range": [2, -1]})
    assert ranged.text == "     2\tbatch: 8"


def test_directory_listing_hides_datasets_and_git(editor: EditorTool) -> None:
    outcome = editor.run({"command": "view", "path": "/"})
    assert not outcome.is_error
    listed = outcome.text.splitlines()[1:]
    assert "params.yaml" in listed and "src/pkg/" in listed and "data/" in listed
    assert "data/cases.yaml" not in listed
    assert not any(".git" in line for line in listed)


@pytest.mark.parametrize(
    ("tool_input", "expected"),
    [
        ("view params.yaml", "must be an object"),
        ({"path": "params.yaml"}, "unknown command None"),
        ({"command": "delete", "path": "params.yaml"}, "unknown command 'delete'"),
        ({"command": "view"}, "`path` must be a non-empty string"),
        ({"command": "view", "path": 3}, "`path` must be a non-empty string"),
        (
            {"command": "str_replace", "path": "params.yaml"},
            "`old_str` must be a string, got nothing",
        ),
        (
            {"command": "str_replace", "path": "params.yaml", "old_str": "nope"},
            "does not appear verbatim",
        ),
        (
            {"command": "str_replace", "path": "params.yaml", "old_str": ": "},
            "appears 2 times in params.yaml (lines [1, 2])",
        ),
        (
            {"command": "insert", "path": "params.yaml", "insert_line": "2", "insert_text": "x"},
            "`insert_line` must be an integer",
        ),
        (
            {"command": "insert", "path": "params.yaml", "insert_line": 9, "insert_text": "x"},
            "outside 0..2",
        ),
        (
            {"command": "create", "path": "params.yaml", "file_text": None},
            "`file_text` must be a string",
        ),
        ({"command": "view", "path": "params.yaml", "view_range": [0, 5]}, "outside lines 1..2"),
        ({"command": "view", "path": "params.yaml", "view_range": "1-2"}, "two integers"),
        ({"command": "view", "path": "nope.txt"}, "no such file"),
        ({"command": "undo_edit", "path": "params.yaml"}, "not available"),
    ],
)
def test_malformed_calls_are_error_results(
    editor: EditorTool, repo: Path, tool_input: object, expected: str
) -> None:
    outcome = editor.run(tool_input)
    assert outcome.is_error
    assert expected in outcome.text
    assert (repo / "params.yaml").read_text() == "workers: 2\nbatch: 8\n"


def test_create_makes_a_new_file_matching_a_parameter_glob(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.py").write_text("A = 1\n")
    context = make_context(root, parameters=("src/*.py",), protected_files=())
    policy = EditPolicy.build(context.config, protected_patterns(context.config, ()), ())
    editor = EditorTool(root, policy)
    assert not editor.run(
        {"command": "create", "path": "src/b.py", "file_text": "B = 2\n"}
    ).is_error
    assert (root / "src" / "b.py").read_text() == "B = 2\n"
    refused = editor.run({"command": "create", "path": "src/test_b.py", "file_text": "x\n"})
    assert refused.is_error and "protected" in refused.text


def test_rootdir_below_the_repository_root(tmp_path: Path) -> None:
    """Tool paths are repository-relative; configuration globs are rootdir-relative."""
    root = tmp_path / "repo"
    (root / "sub" / "data").mkdir(parents=True)
    (root / "sub" / "params.yaml").write_text("a: 1\n")
    (root / "sub" / "data" / "cases.jsonl").write_text('{"label": "x"}\n')
    context = make_context(root / "sub", protected_files=("data/cases.jsonl",))
    policy = EditPolicy.build(
        context.config,
        protected_patterns(context.config, context.protected_files),
        context.protected_files,
        prefix="sub/",
    )
    editor = EditorTool(root, policy)
    edit = {"command": "str_replace", "path": "sub/params.yaml", "old_str": "1", "new_str": "2"}
    assert not editor.run(edit).is_error
    assert editor.run({"command": "view", "path": "sub/data/cases.jsonl"}).is_error
    assert editor.run({"command": "create", "path": "params.yaml", "file_text": "x"}).is_error


def test_every_view_result_stays_within_max_characters(editor: EditorTool, repo: Path) -> None:
    editor.max_characters = 1000
    (repo / "long.txt").write_text("".join(f"line {i}\n" for i in range(1, 400)))
    (repo / "wide.txt").write_text("x" * 5000 + "\nshort\n")
    for i in range(200):
        (repo / "src" / f"module_with_a_long_name_{i:03}.py").write_text("")

    ranged = editor.run({"command": "view", "path": "long.txt", "view_range": [101, 300]})
    assert len(ranged.text) <= 1000 and not ranged.is_error
    assert ranged.text.splitlines()[0] == "   101\tline 101"
    shown = int(ranged.text.splitlines()[-2].split()[0])
    assert ranged.text.splitlines()[-1] == (
        f"[... truncated: lines {shown + 1}..300 not shown; "
        f"use view_range [{shown + 1}, 300] to see them]"
    )
    wide = editor.run({"command": "view", "path": "wide.txt", "max_characters": 10_000})
    assert len(wide.text) <= 1000
    assert wide.text.endswith("[... truncated: line 1 is longer than max_characters and is cut]")
    listing = editor.run({"command": "view", "path": "src"})
    assert len(listing.text) <= 1000
    assert listing.text.endswith("[... truncated at max_characters=1000: view a subdirectory]")
    short = editor.run({"command": "view", "path": "params.yaml"})
    assert short.text == "     1\tworkers: 2\n     2\tbatch: 8"


def test_a_cut_after_the_first_line_says_which_lines_follow(editor: EditorTool, repo: Path) -> None:
    editor.max_characters = 1000
    (repo / "two.txt").write_text("short\n" + "y" * 3000 + "\n")
    outcome = editor.run({"command": "view", "path": "two.txt"})
    assert outcome.text == (
        "     1\tshort\n[... truncated: lines 2..2 not shown; use view_range [2, 2] to see them]"
    )
