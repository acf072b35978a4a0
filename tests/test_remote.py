"""Candidates evaluated on execnet gateways (``--tx``), on loopback: ``popen`` gateways and an
execnet socket server this module starts itself. Real git repositories, real child sessions.

The suite's test reads ``params.json`` and records ``loss``; environment variables set here
reach it through the gateway (a ``popen`` gateway and the socket server inherit this
process's environment), so a test can make it sleep, report its pid, or kill the gateway.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import execnet
import pytest
from gitrepo import GitRepo, init_repo

from pytest_autopilot.loop.child import ChildSpec, Evaluation, LocalExecutor
from pytest_autopilot.loop.journal import ExperimentStore, process_alive
from pytest_autopilot.loop.remote import ExecnetExecutor, expand_tx
from pytest_autopilot.loop.workspace import Workspace

SUITE_TEST = """\
import json, os, pathlib, signal, time

def test_loss(autopilot):
    params = json.loads((pathlib.Path(__file__).parent / "params.json").read_text())
    if os.environ.get("REMOTE_TEST_PID_FILE"):
        pathlib.Path(os.environ["REMOTE_TEST_PID_FILE"]).write_text(str(os.getpid()))
    die_once = os.environ.get("REMOTE_TEST_DIE_ONCE")
    if die_once and not os.path.exists(die_once):
        pathlib.Path(die_once).write_text("killed")
        # The worker runs the session as its child.
        victim = os.getppid() if os.environ["REMOTE_TEST_KILL"] == "worker" else os.getpid()
        os.kill(victim, signal.SIGKILL)
        return
    if os.environ.get("REMOTE_TEST_CWD_LOG"):
        with open(os.environ["REMOTE_TEST_CWD_LOG"], "a") as log:
            lock = os.environ.get("PYTEST_AUTOPILOT_TIMING_LOCK")
            log.write(f"{os.getcwd()} {__file__} {lock}\\n")
    time.sleep(params.get("sleep", 0))
    autopilot.record("loss", (params["x"] - 3) ** 2, goal="min")
"""


class Project:
    def __init__(self, root: Path) -> None:
        self.repo = init_repo(
            root,
            {
                "params.json": json.dumps({"x": 0}) + "\n",
                "test_obj.py": SUITE_TEST,
                "pytest.ini": "[pytest]\n",
            },
        )
        self.workspace = Workspace.discover(root, "demo")
        self.workspace.ensure_layout()
        self.store = ExperimentStore(self.workspace.experiment_dir)
        self.store.ensure()
        self.spec = ChildSpec(  # an absolute path into the checkout: mapped to the worktree
            args=(str(self.workspace.repo / "test_obj.py"),),
            repo=self.workspace.repo,
            invocation_rel="",
            rootdir_rel="",
            xdist=True,
        )

    def commit(self, x: int, sleep: float = 0.0) -> str:
        params = json.dumps({"x": x, "sleep": sleep}) + "\n"
        return self.repo.commit(f"x={x}", {"params.json": params})

    def executor(self, tx: list[str]) -> ExecnetExecutor:
        return ExecnetExecutor(self.workspace, self.store, self.spec, tx)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    remote_tmp = tmp_path / "remote-tmp"
    remote_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(remote_tmp))  # the workers' directories land here
    monkeypatch.setenv("REMOTE_TEST_PID_FILE", str(tmp_path / "session.pid"))
    monkeypatch.setenv("REMOTE_TEST_CWD_LOG", str(tmp_path / "sessions.log"))
    return Project(tmp_path / "repo")


@pytest.fixture
def executors() -> Iterator[list[ExecnetExecutor]]:
    made: list[ExecnetExecutor] = []
    yield made
    for executor in made:
        executor.close()


def loss(evaluation: Evaluation) -> float:
    assert evaluation.status == "ok", evaluation.reason
    assert evaluation.result is not None
    return evaluation.result.metrics["loss"].value


def worker_dirs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "remote-tmp").glob("pytest-autopilot-worker-*"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def socket_server(
    tmp_path: Path, project: Project
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """execnet's own socket server on a free loopback port, as a team would run it remotely."""
    script = Path(execnet.__file__).parent / "script" / "socketserver.py"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(script), f"127.0.0.1:{port}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("execnet's socket server did not start listening")
            time.sleep(0.05)
    # The probe connection above was served (and ended) by the server; it accepts the next.
    yield f"socket=127.0.0.1:{port}", server
    server.kill()
    server.wait()


# -- --tx values ---------------------------------------------------------------------------


def test_expand_tx_repeats_counted_specs_and_refuses_what_execnet_cannot_open() -> None:
    assert expand_tx(["2*popen", "socket=h:1", "ssh=me@box//python=/v/bin/python"]) == [
        "popen",
        "popen",
        "socket=h:1",
        "ssh=me@box//python=/v/bin/python",
    ]
    with pytest.raises(pytest.UsageError, match=r"--tx 'x\*popen': expected N\*SPEC"):
        expand_tx(["x*popen"])
    with pytest.raises(pytest.UsageError, match="--tx 'python=/usr/bin/python3': expected exactly"):
        expand_tx(["python=/usr/bin/python3"])
    with pytest.raises(pytest.UsageError, match="via= and id= are not supported"):
        expand_tx(["socket=h:1//via=gw0"])


# -- evaluation ----------------------------------------------------------------------------


def test_popen_gives_what_a_local_session_gives_and_two_gateways_run_at_once(
    project: Project, tmp_path: Path, executors: list[ExecnetExecutor]
) -> None:
    commit = project.commit(1)
    local = LocalExecutor(project.workspace, project.store, project.spec).evaluate(
        "local", commit, 60
    )
    executor = project.executor(["popen", "popen"])
    executors.append(executor)
    remote = executor.evaluate("remote", commit, 60)
    assert loss(remote) == loss(local) == 4
    assert remote.extra["worker"] == "popen"
    assert json.loads(project.store.result_path("remote").read_text())["metrics"]["loss"]
    assert "1 passed" in project.store.log_path("remote").read_text()

    slow = [project.commit(2, sleep=1.0), project.commit(4, sleep=1.0)]
    results: dict[str, Evaluation] = {}

    def run(label: str, commit: str) -> None:
        results[label] = executor.evaluate(label, commit, 60)

    threads = [threading.Thread(target=run, args=(f"c{i}", c)) for i, c in enumerate(slow)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    a, b = results["c0"], results["c1"]
    assert (loss(a), loss(b)) == (1, 1)
    assert float(a.extra["remote_started"]) < float(b.extra["remote_finished"])
    assert float(b.extra["remote_started"]) < float(a.extra["remote_finished"])
    assert a.extra["worktree"] != b.extra["worktree"]
    sessions = (tmp_path / "sessions.log").read_text().splitlines()
    assert len(sessions) == 4
    remote_dirs = {a.extra["worktree"], b.extra["worktree"], remote.extra["worktree"]}
    remote_lock = tmp_path / "remote-tmp" / f"pytest-autopilot-{os.getuid()}.timing.lock"
    for line in sessions[1:]:  # the local session, then the remote ones
        cwd, module, lock = line.split()
        assert cwd in remote_dirs
        assert module == f"{cwd}/test_obj.py"
        assert lock == str(remote_lock)  # the worker's own machine-wide lock
    assert not project.repo.refs("refs/autopilot/")  # the transfer refs are gone
    assert project.repo.worktrees() == [str(project.repo.path)]
    executor.close()
    assert worker_dirs(tmp_path) == []


def test_a_socket_server_evaluates_and_receives_only_new_commits(
    project: Project, socket_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    spec, _ = socket_server
    executor = project.executor([spec])
    try:
        first = executor.evaluate("r1c1", project.commit(1), 60)
        second = executor.evaluate("r2c1", project.commit(3), 60)
        again = executor.evaluate("r3c1", first.commit, 60)
    finally:
        executor.close()
    assert (loss(first), loss(second), loss(again)) == (4, 0, 4)
    assert first.extra["worker"] == second.extra["worker"] == spec
    assert first.extra["sent"].startswith("git bundle of 2 commit(s)")  # with the initial one
    assert second.extra["sent"].startswith("git bundle of 1 commit(s)")
    assert again.extra["sent"] == "nothing: the worker holds the commit"


@pytest.mark.parametrize(
    ("victim", "first_failure"),
    [
        ("worker", "worker popen died during r1c1: "),
        ("session", "session killed by signal 9: "),
    ],
)
def test_a_worker_or_session_that_dies_mid_candidate_costs_one_attempt(
    project: Project,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    executors: list[ExecnetExecutor],
    victim: str,
    first_failure: str,
) -> None:
    marker = tmp_path / "died"
    monkeypatch.setenv("REMOTE_TEST_DIE_ONCE", str(marker))
    monkeypatch.setenv("REMOTE_TEST_KILL", victim)
    executor = project.executor(["popen"])
    executors.append(executor)
    evaluation = executor.evaluate("r1c1", project.commit(2), 60)
    assert marker.exists()
    assert loss(evaluation) == 1
    assert evaluation.extra["retried"].startswith(first_failure)


def test_a_worker_that_stays_dead_fails_the_candidate_with_the_reason(
    project: Project,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    socket_server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    spec, server = socket_server
    pid_file = tmp_path / "session.pid"
    executor = project.executor([spec])
    outcome: list[Evaluation] = []
    thread = threading.Thread(
        target=lambda: outcome.append(executor.evaluate("r1c1", project.commit(2, 5.0), 60))
    )
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()  # the gateway runs inside the server process
        thread.join(30)
    finally:
        executor.close()
    (evaluation,) = outcome
    assert evaluation.status == "failed"
    assert evaluation.extra["retried"].startswith(f"worker {spec} died during r1c1: ")
    assert evaluation.reason.startswith(f"worker {spec} could not be started for r1c1: ")
    assert evaluation.reason.endswith(f"(also on the first attempt: {evaluation.extra['retried']})")


def test_a_gateway_that_cannot_be_made_fails_the_candidate_without_a_traceback(
    project: Project, executors: list[ExecnetExecutor]
) -> None:
    spec = f"socket=127.0.0.1:{free_port()}"
    executor = project.executor([spec])
    executors.append(executor)
    evaluation = executor.evaluate("r1c1", project.commit(1), 60)
    assert evaluation.status == "failed"
    assert evaluation.reason.startswith(f"worker {spec} could not be started for r1c1: ")
    assert evaluation.reason.endswith("(twice)")
    assert "Traceback" not in evaluation.reason


def test_the_worker_kills_a_session_past_its_timeout(
    project: Project,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    executors: list[ExecnetExecutor],
) -> None:
    pid_file = tmp_path / "session.pid"
    executor = project.executor(["popen"])
    executors.append(executor)
    evaluation = executor.evaluate("r1c1", project.commit(1, sleep=60), 4)
    assert evaluation.status == "timeout", evaluation.reason
    assert evaluation.duration < 15
    assert not process_alive(int(pid_file.read_text()))


def test_cancel_interrupts_the_session_in_flight_and_refuses_new_ones(
    project: Project,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    executors: list[ExecnetExecutor],
) -> None:
    pid_file = tmp_path / "session.pid"
    executor = project.executor(["popen"])
    executors.append(executor)
    commit = project.commit(1, sleep=60)
    outcome: list[Evaluation] = []
    thread = threading.Thread(target=lambda: outcome.append(executor.evaluate("r1c1", commit, 60)))
    thread.start()
    deadline = time.monotonic() + 20
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    executor.cancel()
    thread.join(10)
    (evaluation,) = outcome
    assert evaluation.status == "interrupted"
    assert not process_alive(int(pid_file.read_text()))
    refused = executor.evaluate("r1c2", commit, 60)
    assert (refused.status, refused.reason) == ("interrupted", "interrupted before it started")


# -- end to end ----------------------------------------------------------------------------


def test_pytest_autopilot_with_tx_popen_runs_the_loop_on_gateways(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd_log = pytester.path.parent / "cwd.log"
    monkeypatch.setenv("REMOTE_TEST_CWD_LOG", str(cwd_log))
    repo: GitRepo = init_repo(
        pytester.path,
        {
            "params.json": json.dumps({"x": 1}) + "\n",
            "test_obj.py": SUITE_TEST,
            "conftest.py": WALK_CONFTEST,
            "autopilot.yaml": json.dumps(
                {
                    "experiment": "demo",
                    "objective": {"metric": "loss", "goal": "min"},
                    "parameters": [{"path": "params.json"}],
                    "optimizer": "walk",
                    "budget": {"rounds": 4, "candidates": 2, "patience": 2},
                    "acceptance": {"min_effect": 0.0},
                    "gates": [{"metric": "loss", "max": 0.5}],
                }
            ),
            "pytest.ini": "[pytest]\n",
        },
    )
    result = pytester.runpytest_subprocess(
        "--autopilot", "--tx", "2*popen", "--autopilot-json=out.json", timeout=120
    )
    assert result.ret == 0, result.stdout.str()
    data = json.loads((pytester.path / "out.json").read_text())
    assert data["passed"] is True
    assert json.loads(repo.show("autopilot/demo", "params.json"))["x"] == 3
    sessions = [line.split()[0] for line in cwd_log.read_text().splitlines()]
    assert sessions[0] == str(pytester.path)  # round 0, the user's own session
    assert all("/pytest-autopilot-worker-" in cwd for cwd in sessions[1:]), sessions


WALK_CONFTEST = """\
import json
import os
from pytest_autopilot.proposals import Proposal

def pytest_autopilot_optimizer_names(config):
    return ["walk"]

def pytest_autopilot_propose(context):
    if context.optimizer != "walk":
        return None
    params = next(p for p in context.parameters if p.path.endswith("params.json"))
    x = json.loads(params.text)["x"]
    return [
        Proposal(rationale=f"x={x + step}", edits={params.path: json.dumps({"x": x + step})})
        for step in (1, -1)
    ][: context.max_candidates]
"""


def test_a_remote_worker_thaws_the_sessions_a_killed_session_had_frozen(tmp_path: Path) -> None:
    """A session killed while it held the timing lock cannot thaw the sessions it froze; the
    remote worker does, by pid and start time (a recycled pid is left alone)."""
    import signal

    from test_lockstep import reaches

    from pytest_autopilot import lockstep
    from pytest_autopilot.loop import remote_worker

    lock = tmp_path / "timing.lock"
    folder = Path(str(lock) + ".freezable")
    folder.mkdir()
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
                for _ in range(2)]  # fmt: skip
    try:
        frozen, recycled = (p.pid for p in sleepers)
        (folder / str(frozen)).write_text(lockstep._start_time(frozen) or "")
        (folder / str(recycled)).write_text("1")
        for pid in (frozen, recycled):
            os.kill(pid, signal.SIGSTOP)
        assert reaches(frozen, "T") and reaches(recycled, "T")
        remote_worker._thaw_frozen(str(lock))
        assert reaches(frozen, "S")
        assert not reaches(recycled, "S", tries=20)
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
