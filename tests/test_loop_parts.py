"""The loop's parts on their own: git workspace, diff protection, journal and lock, child
command lines, acceptance, and the refusals of ``prepare_loop``. No child sessions run here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gitrepo import GitRepo, init_repo

from pytest_autopilot.config import AutopilotConfig, Objective, ParameterSpec
from pytest_autopilot.loop import acceptance
from pytest_autopilot.loop.child import ChildSpec, child_args
from pytest_autopilot.loop.journal import ExperimentStore, Lock, process_alive
from pytest_autopilot.loop.protect import violations
from pytest_autopilot.loop.workspace import InvalidEdit, Workspace, normalize_edit_path
from pytest_autopilot.proposals import CandidateRecord
from pytest_autopilot.results import Metric, SessionResult, TestResult


def workspace(repo: GitRepo, rootdir: str = "") -> Workspace:
    ws = Workspace.discover(repo.path / rootdir if rootdir else repo.path, "demo")
    ws.ensure_layout()
    return ws


# -- child command lines -------------------------------------------------------------------


def test_child_args_drop_the_loop_xdist_cache_and_output_options() -> None:
    args = [
        "tests/test_a.py::test_x",
        "--autopilot",
        "--autopilot-rounds",
        "3",
        "--autopilot-json=out.json",
        "--autopilot-config",
        "cfg/autopilot.yaml",
        "-n",
        "4",
        "-nauto",
        "--dist=loadscope",
        "--tx",
        "popen",
        "--lf",
        "--basetemp=/tmp/x",
        "--junitxml",
        "report.xml",
        "-k",
        "fast",
        "-x",
        "--",
        "--autopilot",
    ]
    assert child_args(args) == [
        "tests/test_a.py::test_x",
        "--autopilot-config",
        "cfg/autopilot.yaml",
        "-k",
        "fast",
        "-x",
        "--",
        "--autopilot",
    ]


def test_a_child_runs_in_the_worktree_and_imports_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    worktree = tmp_path / "wt"
    spec = ChildSpec(
        args=(f"{repo}/proj/tests/test_a.py::test_x", f"--rootdir={repo}/proj", "/elsewhere/t.py"),
        repo=repo,
        invocation_rel="proj",
        rootdir_rel="proj",
        xdist=True,
    )
    command = spec.command(worktree, tmp_path / "result.json")
    assert command[:3] == [sys.executable, "-m", "pytest"]
    assert command[3:] == [
        f"{worktree}/proj/tests/test_a.py::test_x",
        f"--rootdir={worktree}/proj",
        "/elsewhere/t.py",
        "-p",
        "no:cacheprovider",
        f"--autopilot-json={tmp_path / 'result.json'}",
        "-n",
        "0",
    ]
    assert spec.cwd(worktree) == worktree / "proj"
    monkeypatch.setenv("PYTHONPATH", f"{repo}/src{os.pathsep}/opt/lib")
    monkeypatch.setenv("PYTEST_ADDOPTS", "--autopilot -n 2 -v")
    monkeypatch.setenv("GIT_INDEX_FILE", "/somewhere/index")
    env = spec.environment(worktree, "r1c1")
    assert env["PYTHONPATH"].split(os.pathsep) == [
        str(worktree),
        str(worktree / "proj"),
        f"{worktree}/src",
        "/opt/lib",
    ]
    assert env["PYTEST_ADDOPTS"] == "-v"
    assert env["PYTEST_AUTOPILOT_CHILD"] == "r1c1"
    assert "GIT_INDEX_FILE" not in env


# -- git workspace -----------------------------------------------------------------------


def test_the_baseline_snapshot_holds_every_uncommitted_change_and_touches_nothing(
    tmp_path: Path,
) -> None:
    repo = init_repo(
        tmp_path,
        {"a.txt": "a\n", "b.txt": "b\n", "gone.txt": "x\n"},
        gitignore="ignored.txt\n.autopilot/\n",
    )
    head = repo.head()
    repo.write({"a.txt": "a changed\n", "new.txt": "new\n", "ignored.txt": "secret\n"})
    repo.write({"b.txt": "b staged\n"})
    repo.git("add", "b.txt")
    repo.write({"b.txt": "b staged then changed\n", "out.json": "{}"})
    (repo.path / "gone.txt").unlink()
    before = repo.user_state()

    ws = workspace(repo)
    commit = ws.snapshot_baseline("baseline", exclude=["out.json"])

    assert repo.user_state() == before
    assert repo.rev(f"{commit}^") == head
    files = set(ws.list_files(commit))
    assert files == {".gitignore", "a.txt", "b.txt", "new.txt"}
    assert repo.show(commit, "a.txt") == "a changed\n"
    assert repo.show(commit, "b.txt") == "b staged then changed\n"
    # A clean tree is HEAD itself, so the best branch fast-forwards from it.
    clean = init_repo(tmp_path / "clean", {"a.txt": "a\n"})
    assert workspace(clean).snapshot_baseline("baseline") == clean.head()


def test_a_repository_without_commits_gets_a_root_baseline(tmp_path: Path) -> None:
    repo = init_repo(tmp_path, {"a.txt": "a\n"}, commit=False)
    ws = workspace(repo)
    commit = ws.snapshot_baseline("baseline")
    assert repo.git("rev-list", "--parents", "-n1", commit) == commit
    assert repo.show(commit, "a.txt") == "a\n"
    assert repo.git("status", "--porcelain").splitlines() == ["?? .gitignore", "?? a.txt"]


def test_trees_are_built_without_a_checkout_and_diffs_see_renames_modes_and_symlinks(
    tmp_path: Path,
) -> None:
    repo = init_repo(tmp_path, {"p/a.yaml": "a: 1\n", "p/run.sh": "echo\n", "src/x.py": "x\n"})
    (repo.path / "p" / "run.sh").chmod(0o755)
    head = repo.commit("exec bit")
    ws = workspace(repo)
    tree = ws.build_tree(head, {"p/run.sh": "echo hi\n", "/p/new.yaml": "b: 2\n"})
    assert repo.git("ls-tree", tree, "p/run.sh").split()[0] == "100755"
    assert [e.describe() for e in ws.diff(head, tree)] == ["A p/new.yaml", "M p/run.sh"]
    assert ws.diff_stat(head, tree) == "p/new.yaml +1 -0, p/run.sh +1 -1"

    def change(worktree: Path) -> str:
        (worktree / "p" / "a.yaml").rename(worktree / "p" / "b.yaml")
        (worktree / "src" / "x.py").chmod(0o755)
        (worktree / "link").symlink_to("p/b.yaml")
        return "moved"

    hook = repo.path / ".git" / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch {tmp_path / 'hook-ran'}\n")
    hook.chmod(0o755)
    tree, rationale = ws.tree_in_worktree(head, "r1c1", {}, change)
    assert rationale == "moved"
    assert not (tmp_path / "hook-ran").exists(), "the user's hooks never run in worktrees"
    entries = {e.describe(): (e.old_mode, e.new_mode) for e in ws.diff(head, tree)}
    assert entries == {
        "R p/a.yaml -> p/b.yaml": ("100644", "100644"),
        "M src/x.py": ("100644", "100755"),
        "A link": ("000000", "120000"),
    }
    assert repo.worktrees() == [str(repo.path)]

    config = AutopilotConfig(
        path=repo.path / "autopilot.yaml",
        rootdir=repo.path,
        parameters=(ParameterSpec("p/*.yaml"), ParameterSpec("src/*.py")),
    )
    problems = violations(ws.diff(head, tree), ws, config, SessionResult())
    assert problems == ["A link: symlinks may not be added, changed or removed"]
    protected = SessionResult(protected_files=["src/x.py"])
    assert violations(ws.diff(head, tree), ws, config, protected)[1:] == [
        "M src/x.py: src/x.py is protected"
    ]


def test_paths_are_checked_relative_to_a_rootdir_below_the_repository(tmp_path: Path) -> None:
    repo = init_repo(tmp_path, {"proj/params.yaml": "a: 1\n", "other/params.yaml": "a: 1\n"})
    ws = workspace(repo, "proj")
    head = repo.head()
    tree = ws.build_tree(head, {"proj/params.yaml": "a: 2\n", "other/params.yaml": "a: 2\n"})
    config = AutopilotConfig(
        path=repo.path / "proj" / "autopilot.yaml",
        rootdir=repo.path / "proj",
        parameters=(ParameterSpec("params.yaml"),),
    )
    assert violations(ws.diff(head, tree), ws, config, SessionResult()) == [
        "M other/params.yaml: other/params.yaml is outside the rootdir"
    ]


@pytest.mark.parametrize("path", ["../x", ".git/config", "a/../../b", ""])
def test_edits_cannot_leave_the_repository(path: str) -> None:
    with pytest.raises(InvalidEdit):
        normalize_edit_path(path)


# -- journal, state and lock -----------------------------------------------------------------


def test_the_journal_survives_a_torn_last_line_and_state_is_replaced_whole(
    tmp_path: Path,
) -> None:
    store = ExperimentStore(tmp_path / "demo")
    store.ensure()
    store.append("start", pid=1)
    store.append("candidate", id="r1c1")
    with open(store.journal_path, "a") as journal:
        journal.write('{"event": "candid')  # kill -9 in the middle of a write
    assert [e["event"] for e in store.events()] == ["start", "candidate"]
    store.save_state({"rounds_done": 2})
    assert store.load_state() == {"version": 1, "rounds_done": 2}
    assert sorted(p.name for p in store.directory.iterdir()) == [
        "journal.jsonl",
        "logs",
        "results",
        "running",
        "state.json",
    ]
    store.state_path.write_text("{not json")
    with pytest.raises(pytest.UsageError, match="--autopilot-fresh"):
        store.load_state()


def test_a_live_lock_refuses_and_a_dead_one_is_taken_over(tmp_path: Path) -> None:
    first = Lock(tmp_path / "lock")
    first.acquire()
    with pytest.raises(pytest.UsageError, match=f"process {os.getpid()}"):
        Lock(tmp_path / "lock").acquire()
    first.release()
    assert (tmp_path / "lock").read_text() == ""  # never unlinked: see Lock

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while process_alive(zombie.pid):  # exited but not waited for: a zombie keeps its pid
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (tmp_path / "lock").write_text(json.dumps({"pid": zombie.pid, "start": None}))
    second = Lock(tmp_path / "lock")
    second.acquire()
    assert json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()
    second.release()
    zombie.wait()
    # A recycled pid: same number, another process (its start time differs).
    (tmp_path / "lock").write_text(json.dumps({"pid": os.getpid(), "start": "1"}))
    Lock(tmp_path / "lock").acquire()


# -- acceptance -----------------------------------------------------------------------------


def session(tests: dict[str, str], metrics: dict[str, float]) -> SessionResult:
    return SessionResult(
        metrics={n: Metric(n, v, "max") for n, v in metrics.items()},
        tests={
            nodeid: TestResult(
                nodeid,
                outcome,  # type: ignore[arg-type]
                dataset="cases" if "cases" in nodeid else None,
            )
            for nodeid, outcome in tests.items()
        },
    )


def test_a_broken_test_or_a_falling_pass_rate_rejects() -> None:
    incumbent = session(
        {"t.py::a": "passed", "t.py::b": "failed", "t.py::c[cases-1]": "passed"},
        {"cases.pass_rate": 0.5, "cases.train.pass_rate": 0.5},
    )
    same = session(
        {"t.py::a": "passed", "t.py::b": "failed", "t.py::c[cases-1]": "failed"},
        {"cases.pass_rate": 0.5, "cases.train.pass_rate": 0.75},
    )
    assert acceptance.regressions(incumbent, same) == []
    worse = session({"t.py::b": "passed"}, {"cases.pass_rate": 0.25})
    assert acceptance.regressions(incumbent, worse) == [
        "broke 1 test(s) that passed on the incumbent: t.py::a did not run",
        "cases.pass_rate fell from 0.5 to 0.25",
        "cases.train.pass_rate was not measured",
    ]


def record(value: float, samples: list[float] | None = None) -> CandidateRecord:
    metric = Metric("t", value, "min", samples)
    return CandidateRecord("r1c1", 1, None, None, "", metrics={"t": metric})


CONFIG = AutopilotConfig(path=None, rootdir=Path("."), objective=Objective("t", "min"))


def test_acceptance_needs_a_confident_improvement_beyond_min_effect() -> None:
    base = [1.0 + 0.01 * (i % 7) for i in range(30)]
    faster = [x * 0.8 for x in base]
    slightly = [x * 0.99 for x in base]
    accept = acceptance.pytest_autopilot_accept
    ok, why = accept(record(0.8, faster), record(1.0, base), CONFIG) or (False, "")
    assert ok, why
    ok, why = accept(record(0.99, slightly), record(1.0, base), CONFIG) or (True, "")
    assert not ok and "not confidently better by more than 2%" in why
    ok, why = accept(record(0.5, [0.5, 0.5]), record(1.0, [1.0, 1.0]), CONFIG) or (True, "")
    assert not ok and "needs samples" in why
    assert (accept(record(0.9), record(1.0), CONFIG) or (False, ""))[0]
    assert not (accept(record(0.99), record(1.0), CONFIG) or (True, ""))[0]
    unmeasured = CandidateRecord("r0", 0, None, None, "")
    assert (accept(record(5.0), unmeasured, CONFIG) or (False, ""))[0]
    assert not (accept(unmeasured, record(5.0), CONFIG) or (True, ""))[0]


# -- refusals before the session runs -------------------------------------------------------

CONFTEST = """
def pytest_autopilot_optimizer_names(config):
    return ["mine"]
"""


def test_the_loop_refuses_early_with_a_precise_message(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", autopilot="objective: {metric: m}\nparameters: [{path: p.json}]\n")
    pytester.makepyfile(test_a="def test_a(): pass\n")
    pytester.makeconftest(CONFTEST)
    (pytester.path / "p.json").write_text("{}")
    result = pytester.runpytest("--autopilot", "--autopilot-optimizer=nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*autopilot.yaml: optimizer: expected one of *mine*, got 'nope'"])

    result = pytester.runpytest("--autopilot", "--autopilot-optimizer=mine")
    result.stderr.fnmatch_lines(["*--autopilot needs a git repository*"])

    repo = init_repo(pytester.path)
    repo.git("checkout", "--quiet", "-b", "autopilot/default")
    result = pytester.runpytest("--autopilot", "--autopilot-optimizer=mine")
    result.stderr.fnmatch_lines(["*the current branch is autopilot/default*"])
    assert not (pytester.path / ".autopilot" / "default" / "lock").exists()
