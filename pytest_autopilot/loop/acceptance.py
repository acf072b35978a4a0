"""The built-in acceptance policy: no broken test, and a real improvement of the objective.

Two questions, asked in this order by the controller:

1. :func:`regressions`: did the candidate break anything that worked on the incumbent? A test
   that passed there and fails (or is gone) here rejects it. Dataset cases count through their
   pass rates instead (every ``*.pass_rate`` metric must not fall), so a change that fixes
   three cases and breaks one is judged by the aggregate, and held-out cases are never named.
2. :func:`pytest_autopilot_accept` (a ``trylast`` hook implementation, so a conftest.py or a
   plugin can replace it): does the objective improve by more than ``acceptance.min_effect``
   with confidence ``acceptance.confidence``? With samples on both sides the whole confidence
   interval of the ratio must lie beyond the minimum effect (:func:`stats.is_improvement`);
   plain values (a deterministic metric) are compared directly. A sampled metric with too
   few samples for a noise test is never accepted: noise must not pass for progress.
"""

from __future__ import annotations

import pytest

from pytest_autopilot import stats
from pytest_autopilot.config import AutopilotConfig
from pytest_autopilot.proposals import CandidateRecord
from pytest_autopilot.results import SessionResult

PASS_RATE_TOLERANCE = 1e-9
MAX_NAMED = 5


def regressions(
    incumbent: SessionResult, candidate: SessionResult, *, where: str = "on the incumbent"
) -> list[str]:
    """What worked on the incumbent and does not on the candidate; empty when nothing."""
    broken: list[str] = []
    for nodeid, before in incumbent.tests.items():
        if before.dataset is not None or before.outcome != "passed":
            continue
        after = candidate.tests.get(nodeid)
        if after is None:
            broken.append(f"{nodeid} did not run")
        elif after.outcome in ("failed", "error"):
            broken.append(f"{nodeid} {after.outcome}")
    problems = []
    if broken:
        shown = "; ".join(broken[:MAX_NAMED])
        more = f" (and {len(broken) - MAX_NAMED} more)" if len(broken) > MAX_NAMED else ""
        problems.append(f"broke {len(broken)} test(s) that passed {where}: {shown}{more}")
    for name, metric in sorted(incumbent.metrics.items()):
        if not name.endswith(".pass_rate"):
            continue
        after_metric = candidate.metrics.get(name)
        if after_metric is None:
            problems.append(f"{name} was not measured")
        elif after_metric.value < metric.value - PASS_RATE_TOLERANCE:
            problems.append(f"{name} fell from {metric.value:.4g} to {after_metric.value:.4g}")
    return problems


@pytest.hookimpl(trylast=True)
def pytest_autopilot_accept(
    candidate: CandidateRecord,
    incumbent: CandidateRecord,
    config: AutopilotConfig,
) -> tuple[bool, str] | None:
    objective = config.objective
    if objective is None:
        return False, "no objective configured"
    name = objective.metric
    before = incumbent.metrics.get(name)
    after = candidate.metrics.get(name)
    if after is None:
        return False, f"objective {name} was not measured"
    if before is None:
        return True, f"objective {name} measured, where the incumbent did not measure it"
    acceptance = config.acceptance
    cmp = stats.compare_metrics(before, after, acceptance.confidence)
    sampled = bool(before.samples) or bool(after.samples)
    if sampled and not cmp.with_samples:
        return False, f"{name}: {cmp.method}; a noisy metric needs samples to be accepted"
    if sampled and not cmp.informative:
        return False, f"{name}: cannot tell ({cmp.method})"
    change = cmp.describe()
    need = f"{acceptance.min_effect * 100:g}%"
    if stats.is_improvement(cmp, objective.goal, acceptance.min_effect):
        return True, f"{name} {change}: better by more than {need}"
    if sampled:
        return False, f"{name} {change}: not confidently better by more than {need}"
    return False, f"{name} {change}: not better by more than {need}"
