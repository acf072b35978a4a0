"""``pytest --autopilot-gate --autopilot-against REF``: a same-machine, same-time baseline.

A baseline file saved on another machine (or on the same one an hour earlier) differs from
this session by more than any code change worth gating: CI runners differ, load differs.
Here REF (any commit-ish: ``origin/main``, a tag, a sha) is checked out in its own worktree
under ``.autopilot/`` and its suite runs as a child session *while this session runs*. Both
sessions take the machine-wide timing lock (:mod:`pytest_autopilot.timing`), so their timing
tests take turns round by round (:mod:`pytest_autopilot.lockstep`): load and CPU-frequency
changes hit both sides alike. REF's metrics then become the baseline of the relative gates.

Relative gates on timing metrics are then judged on the *paired* comparison
(:func:`paired_statuses`): round i of this session against round i of REF's, which the
lockstep ran next to each other, so drift cancels in their ratio instead of widening an
interval (:func:`pytest_autopilot.stats.compare_paired`). What pairing cannot remove is what
differs between the two processes for their whole life: a stated floor
(:data:`pytest_autopilot.stats.PAIRED_SESSION_NOISE`, 1%), or ``acceptance.run_noise`` (per
session, so the pair's is sqrt(2) times it) when set: raise it on a machine loaded beyond
its cores, where two sessions of identical code differ by far more. Other metrics, and
every gate under ``--autopilot-baseline FILE``, keep the unpaired comparison of :mod:`gates`.

The user's working tree, index and branches are never touched: the worktree lives under the
self-ignoring ``.autopilot/`` directory and is removed at the end. A REF that names no commit
is refused before any test runs; a REF whose suite does not run is a usage error naming its
log.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from pytest_autopilot import stats, timing
from pytest_autopilot.results import Metric, SessionResult

if TYPE_CHECKING:
    from pytest_autopilot.config import AutopilotConfig, GateSpec
    from pytest_autopilot.proposals import GateStatus

EXPERIMENT = "gate-against"
"""Where REF's worktree, log and result live: ``.autopilot/worktrees/gate-against/`` etc."""


class AgainstRun:
    """REF's session, started before this session's tests and joined after them."""

    def __init__(self, pytest_config: pytest.Config, ref: str, timeout: float) -> None:
        from pytest_autopilot.loop.child import ChildSpec, LocalExecutor
        from pytest_autopilot.loop.journal import ExperimentStore
        from pytest_autopilot.loop.workspace import Workspace

        workspace = Workspace.discover(pytest_config.rootpath, EXPERIMENT)
        commit = workspace.resolve(f"{ref}^{{commit}}")
        if commit is None:
            raise pytest.UsageError(
                f"--autopilot-against: {ref!r} names no commit in {workspace.repo} "
                "(expected a branch, tag or sha, e.g. origin/main)"
            )
        workspace.ensure_layout()
        store = ExperimentStore(workspace.experiment_dir)
        store.ensure()
        self.ref = ref
        self.commit = commit
        self.executor = LocalExecutor(
            workspace, store, ChildSpec.from_config(pytest_config, workspace)
        )
        self.timeout = timeout
        self.ready = store.directory / "against.ready"
        self.lock: timing.TimingLock | None = None
        """This session's side of the timing lock; released before waiting for REF's session
        (a session that holds it shared while waiting would keep REF's timing tests out)."""
        self._result: SessionResult | None = None
        self._problem = ""
        self._thread = threading.Thread(target=self._run, name="autopilot-against", daemon=True)

    def start(self) -> None:
        self.ready.unlink(missing_ok=True)
        os.environ[timing.READY_ENV] = str(self.ready)  # REF's session inherits it
        self._thread.start()

    def wait_until_ready(self) -> None:
        """Wait until REF's session holds the timing lock (or ended): a timing test of this
        session must not run while REF's interpreter is still starting."""
        deadline = time.monotonic() + self.timeout
        while self._thread.is_alive() and not self.ready.exists():
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)

    def _run(self) -> None:
        evaluation = self.executor.evaluate("against", self.commit, self.timeout)
        self._result = evaluation.result
        if evaluation.result is None:
            log = f" (log: {evaluation.log})" if evaluation.log else ""
            self._problem = f"{evaluation.status}: {evaluation.reason}{log}"

    def result(self) -> SessionResult:
        """REF's session result; a UsageError when its suite did not run."""
        self.release_lock()
        self._thread.join()
        if self._result is None:
            raise pytest.UsageError(
                f"--autopilot-against {self.ref} ({self.commit[:10]}): its suite did not run "
                f"in a worktree: {self._problem}; everything its tests need must be committed"
            )
        return self._result

    def release_lock(self) -> None:
        os.environ.pop(timing.READY_ENV, None)
        if self.lock is not None:
            self.lock.close()

    def close(self) -> None:
        """Stop REF's session if it still runs (an interrupted session), then wait for it."""
        self.release_lock()
        if self._thread.is_alive():
            self.executor.cancel()
            self._thread.join()


def start(pytest_config: pytest.Config, ref: str, timeout: float) -> AgainstRun:
    """Resolve REF, take this session's turn in the timing lock, and start REF's session."""
    run = AgainstRun(pytest_config, ref, timeout)
    if os.name == "posix" and not pytest_config.pluginmanager.has_plugin(timing.PLUGIN_NAME):
        run.lock = timing.TimingLock(timing.default_lock_path(), run.wait_until_ready)
        pytest_config.pluginmanager.register(run.lock, timing.PLUGIN_NAME)
    run.start()
    return run


def paired_statuses(
    config: AutopilotConfig,
    result: SessionResult,
    against: SessionResult,
    statuses: Sequence[GateStatus],
    ref: str,
) -> list[GateStatus]:
    """``statuses`` with each relative gate on a timing metric judged on the paired rounds.

    A timing metric is one a benchmark produced (it has a node id and samples, in the order
    of its rounds) on both sides. Everything else keeps its status from :mod:`gates`.
    """
    judged = []
    for gate, status in zip(config.gates, statuses, strict=True):
        pair = _timing_pair(gate, result, against) if gate.relative else None
        if pair is None:
            judged.append(status)
        else:
            judged.append(_paired_status(config, gate, status, *pair, ref))
    return judged


def _timing_pair(
    gate: GateSpec, result: SessionResult, against: SessionResult
) -> tuple[Metric, Metric] | None:
    current = result.resolve(gate.metric)
    if current is None or current.nodeid is None or not current.samples:
        return None
    for key in (gate.metric, current.name, current.nodeid):
        base = against.resolve(key)
        if base is not None:
            break
    if base is None or base.nodeid is None or not base.samples:
        return None
    return base, current


def _paired_status(
    config: AutopilotConfig,
    gate: GateSpec,
    status: GateStatus,
    base: Metric,
    current: Metric,
    ref: str,
) -> GateStatus:
    assert base.samples is not None and current.samples is not None
    configured = config.acceptance.run_noise
    noise = stats.PAIRED_SESSION_NOISE if configured is None else math.sqrt(2.0) * configured
    cmp = stats.compare_paired(
        base.samples, current.samples, config.acceptance.confidence, session_noise=noise
    )
    allowed = f"{gate.threshold * 100:g}%"
    if math.isnan(cmp.ratio):
        return replace(status, passed=False, reason=f"cannot compare with {ref}: {cmp.method}")
    worse = cmp.ratio - 1.0 if current.goal == "min" else 1.0 - cmp.ratio
    if gate.kind == "max_regression":
        passed = not stats.is_regression(cmp, current.goal, gate.threshold)
        if not passed:
            verdict = f"regression beyond the {allowed} allowed, beyond noise"
        elif worse > gate.threshold:
            verdict = f"worse by more than {allowed}, but within noise"
        else:
            verdict = f"within the {allowed} allowed" if worse > 0 else "no regression"
    else:
        passed = stats.has_gain(cmp, current.goal, gate.threshold)
        if passed:
            verdict = f"gain of at least the {allowed} required, beyond noise"
        elif -worse >= gate.threshold:
            verdict = f"gain of {allowed} or more estimated, but within noise"
        else:
            verdict = f"gain below the {allowed} required"
    reason = f"{cmp.describe()} vs {ref}: {verdict}"
    if cmp.informative:
        reason += f" ({cmp.method})"
    return replace(status, passed=passed, reason=reason)
