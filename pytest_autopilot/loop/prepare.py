"""Before the first test: check everything a loop needs and take the experiment.

:func:`prepare_loop` runs from ``pytest_configure`` and refuses early (no git repository, no
objective, unknown optimizer, a live run on the same experiment, a saved experiment that
started from other code or whose ``state.json`` is unreadable). It registers the built-in
optimizers and the acceptance policy as plugins (:data:`BUILTIN_PLUGINS`), takes the
experiment's lock, kills what a dead run left running, and snapshots the baseline (HEAD plus
uncommitted changes) before a single test runs. The result is a :class:`LoopRun` in
``config.stash`` for :func:`pytest_autopilot.loop.controller.run_loop`.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from pytest_autopilot import racing
from pytest_autopilot.config import AutopilotConfig
from pytest_autopilot.loop.child import CHILD_ENV, ChildSpec, Executor, LocalExecutor
from pytest_autopilot.loop.journal import ExperimentStore, Lock, kill_orphans
from pytest_autopilot.loop.state import RunState
from pytest_autopilot.loop.workspace import Workspace, validate_experiment

BUILTIN_PLUGINS = (
    ("autopilot-optimizer-search", "pytest_autopilot.optimizers.search"),
    ("autopilot-optimizer-anthropic", "pytest_autopilot.optimizers.anthropic_api"),
    ("autopilot-optimizer-command", "pytest_autopilot.optimizers.command"),
    ("autopilot-optimizer-optuna", "pytest_autopilot.optimizers.optuna_sampler"),
    ("autopilot-acceptance", "pytest_autopilot.loop.acceptance"),
)


class LoopRun:
    """What :func:`prepare_loop` set up for :func:`run_loop`; releases the lock at unconfigure."""

    def __init__(
        self,
        workspace: Workspace,
        store: ExperimentStore,
        lock: Lock,
        baseline_commit: str,
        state: RunState | None,
        pruned: list[str],
        orphans: list[str],
    ) -> None:
        self.workspace = workspace
        self.store = store
        self.lock = lock
        self.baseline_commit = baseline_commit
        self.baseline_tree = workspace.tree_of(baseline_commit)
        self.state = state
        self.pruned = pruned
        self.orphans = orphans

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.lock.release()


run_key = pytest.StashKey[LoopRun]()


def config_name(config: AutopilotConfig) -> str:
    return config.relpath() or (str(config.path) if config.path else "autopilot.yaml")


def _register_builtins(pytest_config: pytest.Config) -> None:
    pm = pytest_config.pluginmanager
    for name, module_name in BUILTIN_PLUGINS:
        if pm.get_plugin(name) is None:
            pm.register(importlib.import_module(module_name), name)


def optimizer_names(pytest_config: pytest.Config) -> list[str]:
    answers = pytest_config.hook.pytest_autopilot_optimizer_names(config=pytest_config)
    return sorted({name for names in answers for name in names})


def prepare_loop(pytest_config: pytest.Config, autopilot_config: AutopilotConfig) -> None:
    """Validate everything a loop needs and take the experiment, before any test runs."""
    if hasattr(pytest_config, "workerinput"):
        return
    config = autopilot_config
    _check_config(pytest_config, config)

    workspace = Workspace.discover(config.rootdir, config.experiment)
    if workspace.current_branch() == workspace.best_ref:
        raise pytest.UsageError(
            f"the current branch is {workspace.best_branch}, which the loop moves to its best "
            "commit; switch to another branch first"
        )
    workspace.ensure_layout()
    store = ExperimentStore(workspace.experiment_dir)
    store.ensure()
    lock = Lock(workspace.experiment_dir / "lock")
    lock.acquire()
    try:
        orphans = kill_orphans(store)
        pruned = workspace.prune_worktrees()
        fresh = bool(pytest_config.getoption("autopilot_fresh", False))
        state = None if fresh else RunState.load(store)
        if state is None:
            workspace.delete_experiment_refs()
            store.clear()
        else:
            workspace.delete_experiment_refs(under="transfer")  # a dead run's remote transfers
        baseline_commit = workspace.snapshot_baseline(
            f"autopilot: baseline of experiment {config.experiment}\n\n"
            "HEAD plus the uncommitted changes present when the run started.\n",
            exclude=_output_files(pytest_config, workspace),
        )
        run = LoopRun(workspace, store, lock, baseline_commit, state, pruned, orphans)
        if state is not None and state.baseline.tree != run.baseline_tree:
            changed = workspace.changed_paths(str(state.baseline.tree), run.baseline_tree)
            shown = ", ".join(changed[:8]) + (", ..." if len(changed) > 8 else "")
            raise pytest.UsageError(
                f"experiment {config.experiment!r} started from other code (its baseline "
                f"{str(state.baseline.commit)[:12]}; changed since: {shown or 'unknown'}); "
                "pass --autopilot-fresh to start it over from the current tree, or "
                "--autopilot-experiment NAME for a new one"
            )
    except BaseException:
        lock.release()
        raise
    pytest_config.stash[run_key] = run
    pytest_config.pluginmanager.register(run, "autopilot-loop")


def _output_files(pytest_config: pytest.Config, workspace: Workspace) -> list[str]:
    """Files this run writes into the tree (repository-relative): not part of any baseline."""
    from pytest_autopilot.preflight import output_paths

    written = [path for _, _, path in output_paths(pytest_config)]
    xml = pytest_config.getoption("xmlpath", None)
    if isinstance(xml, str) and xml:
        written.append(pytest_config.invocation_params.dir / xml)
    paths = []
    for path in written:
        try:
            paths.append(path.resolve().relative_to(workspace.repo).as_posix())
        except ValueError:
            continue
    return paths


def _check_config(pytest_config: pytest.Config, config: AutopilotConfig) -> None:
    """Refuse what makes a loop impossible: a nested run, no objective, an unknown optimizer."""
    if os.environ.get(CHILD_ENV):
        raise pytest.UsageError(
            f"--autopilot inside a candidate session ({os.environ[CHILD_ENV]}): remove "
            "--autopilot from addopts; give it on the command line"
        )
    where = config_name(config)
    if config.path is None:
        raise pytest.UsageError(
            f"--autopilot needs a configuration: no autopilot.yaml in the rootdir "
            f"{config.rootdir} (or give --autopilot-config PATH)"
        )
    if config.objective is None:
        raise pytest.UsageError(
            f"{where}: objective: expected {{metric: NAME, goal: min|max}} "
            "(required by --autopilot), got nothing"
        )
    if not config.parameters:
        raise pytest.UsageError(
            f"{where}: parameters: expected at least one file the optimizer may change "
            "(required by --autopilot), got none"
        )
    validate_experiment(config.experiment, where)
    _register_builtins(pytest_config)
    names = optimizer_names(pytest_config)
    if config.optimizer not in names:
        raise pytest.UsageError(
            f"{where}: optimizer: expected one of {', '.join(names) or '(none)'}, "
            f"got {config.optimizer!r}"
        )
    pytest_config.hook.pytest_autopilot_check(config=pytest_config, autopilot_config=config)


def local_workers(pytest_config: pytest.Config) -> int:
    """``-n N`` as xdist resolved it (``auto`` included); 0 without it."""
    numprocesses = pytest_config.getoption("numprocesses", None)
    return numprocesses if isinstance(numprocesses, int) and numprocesses > 0 else 0


def remote_specs(pytest_config: pytest.Config) -> list[str]:
    """``--tx`` execution specs given without ``-n`` (with ``-n``, xdist fills ``tx`` itself)."""
    tx = pytest_config.getoption("tx", None)
    if local_workers(pytest_config) or not tx:
        return []
    from pytest_autopilot.loop.remote import expand_tx

    return expand_tx([str(spec) for spec in tx])


def make_executor(pytest_config: pytest.Config, run: LoopRun, specs: Sequence[str]) -> Executor:
    """Local child sessions, or sessions on the execnet gateways of ``specs`` (``--tx``)."""
    spec = ChildSpec.from_config(pytest_config, run.workspace)
    if specs:
        from pytest_autopilot.loop.remote import ExecnetExecutor

        return ExecnetExecutor(run.workspace, run.store, spec, specs)
    return LocalExecutor(run.workspace, run.store, spec)


def make_racer(pytest_config: pytest.Config, config: AutopilotConfig) -> racing.Racer | None:
    """The run's sequential paired decisions, unless a plugin brings its own acceptance policy.

    The error budget ``1 - acceptance.confidence`` covers the whole run: it is split over the
    ``rounds * candidates`` the budget allows (:class:`~pytest_autopilot.racing.RacePlan`).
    """
    impls = pytest_config.pluginmanager.hook.pytest_autopilot_accept.get_hookimpls()
    if config.objective is None or any(i.plugin_name != "autopilot-acceptance" for i in impls):
        return None
    plan = racing.RacePlan(
        1.0 - config.acceptance.confidence, config.budget.rounds * config.budget.candidates
    )
    return racing.Racer(config.objective.goal, config.acceptance.min_effect, plan)


@contextmanager
def lockstep_batch(directory: Path, count: int) -> Iterator[None]:
    """Sessions started in this block wait for each other before their first timing test
    (:data:`pytest_autopilot.lockstep.BATCH_ENV`), so their rounds really alternate."""
    from pytest_autopilot.lockstep import BATCH_ENV

    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[BATCH_ENV] = f"{directory}|{count}"
    try:
        yield
    finally:
        os.environ.pop(BATCH_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)
