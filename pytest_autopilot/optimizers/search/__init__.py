"""``optimizer: search``: deterministic, history-driven search over the typed parameter spaces.

The built-in optimizer for ``space:`` declarations (int and float with optional ``log``,
choice). It needs no API key and is meant for what such spaces usually hold: concurrency,
buffer sizes, executor kinds, where each evaluation is a noisy benchmark session costing
seconds to minutes, so every evaluation must count. Each round:

1. Scale. A numeric dimension maps to ``u`` in [0, 1], on the log scale with ``log: true``;
   ints round to the nearest value. The objective is compared on the log scale when every
   value seen is positive ("20% faster" weighs the same at 100 ms and at 5 ms), negated for
   ``goal: max``.
2. State comes from the history alone: every candidate with ``params`` is a point with its
   measured objective; a failed, timed-out or test-breaking candidate counts as clearly
   worse than anything measured. Candidates without ``params`` (the baseline once the
   incumbent moved, another optimizer's) are read back from their commits
   (``OptimizerContext.read_files``). Nothing is kept between rounds, so changing the seed
   or mixing optimizers just works, and a point already in the history (after
   normalization) is never proposed again. A resumed round (some of its candidates already
   evaluated before an interruption) is planned again from the history before that round,
   so it proposes what the uninterrupted run would have, minus what was done.
3. Candidates. First, while the history is only the starting point and its own design, a
   space-filling initial design (``design.py``: a Latin hypercube of six points, centred in
   the strata, log scale for ``log`` dimensions, the most spread of 32 seeded tries): with
   one or two points the model would only send the search to the corners. Then local moves
   around the three best points (the incumbent first unless another point beats it by more
   than the noise): along one dimension at a time, a line search on the normalized scale (a
   big first step toward the farther bound, twice the step further in a direction that
   improved, bisection toward the vertex of the parabola through the center and its
   neighbors once bracketed; ints stop at adjacent values, floats at 1% of the range); every
   other choice; a value that improved the objective from another point (transfer), all such
   values at once (a pattern move) and pairs of changes that each moved the objective
   (interactions). Plus 100 seeded points near each of the two best points with several
   knobs changed at once (Gaussian steps on the normalized scale), and 200 seeded random
   points of the whole space. Some moves go before the model's picks (half of each round
   until the search stalls, then all of it), in this order: when the history has SPDL's
   per-stage statistics (``spdl.stage.<name>.busy_time``), a model per stage that raises
   every scaling stage's concurrency to what the rate of the stages that cannot scale
   allows, and the executor's thread count to the tasks they may run at once, from the best
   point and from the best point of each other combination of choices within 30% of it
   (``stages.py``); every change that improved its parent beyond the noise,
   carried over to the best point when it lacks it (counts only in the direction that
   helped), so two winners of one round are combined in the next; every other value of
   each choice at the best point (an executor kind or per-batch work often decides more
   than any count), except values that measured 30% worse with everything else equal;
   after an improvement that moved one knob, the same step twice as far,
   as far, and one step (a pattern move with expansion). Local refinement joins them when
   the model's picks have stopped paying (three evaluations without an improvement beyond
   the noise): every untried one-knob neighbour of the best point (adjacent ints, stepping
   over values whose candidates failed; 25% on ``log`` ints), then the steps that did not
   make it worse beyond the noise one step further, and pairs of the best three (pattern
   moves).
4. Model. A Gaussian process (Matern 5/2, one length scale per dimension fitted by
   likelihood with a log-normal prior around the defaults, so a handful of points does not
   fit the grid's ends; noise never below the run-to-run noise ``acceptance.min_effect``)
   predicts
   the objective at every candidate; the value of a candidate is its expected improvement
   over the best predicted point. When a feedback note names a bottleneck (``bottleneck:
   stage 'decode' ...``), the round's next candidate after those above is the best one
   that changes only dimensions whose dotted key mentions that name, from the best point,
   never lowering a concurrency or thread count. Each chosen candidate is assumed to land
   on its prediction (kriging believer) before the next one is chosen, so a round's
   candidates explore different things. Ties, as in the first round, go to the local moves'
   own estimate, then to a seeded order of the dimensions.
5. A candidate generated around a point other than the incumbent branches from that point's
   commit (``Proposal.parent``). The rationale names each change from that point, the kind of
   move and what the model expects. The optimizer returns ``[]`` only when every point of a
   finite space has been tried.

Compared with Optuna's TPE and random search on synthetic models of the SPDL example's space
in ``benchmarks/search_synthetic.py``, on the real loader in
``benchmarks/optimizer_efficiency.py``, and next to a constrained optimum in
``benchmarks/search_stall.py``. It is pure Python: a round over 60 measured points takes a
fraction of a second (the model caches the pairwise distances of a round's fit). Modules:
``space`` (dimensions, points, moves), ``state`` (the history as points), ``design`` (the
initial design), ``moves`` (moves from one point), ``stages`` (per-stage concurrency),
``model`` (the Gaussian process), ``engine`` (one round).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pytest_autopilot.config import (
    AutopilotConfig,
    Dimension,
    FloatDimension,
    IntDimension,
    expand_glob,
)
from pytest_autopilot.optimizers.search.engine import Search
from pytest_autopilot.optimizers.search.space import Axis, axes_of
from pytest_autopilot.paramfiles import Scalar, file_format, read_values
from pytest_autopilot.proposals import OptimizerContext, Proposal

__all__ = [
    "NAME",
    "Axis",
    "Search",
    "axes_of",
    "check_spaces",
    "pytest_autopilot_check",
    "pytest_autopilot_optimizer_names",
    "pytest_autopilot_propose",
]

NAME = "search"


@pytest.hookimpl
def pytest_autopilot_optimizer_names(config: pytest.Config) -> Sequence[str]:
    return [NAME]


@pytest.hookimpl
def pytest_autopilot_check(config: pytest.Config, autopilot_config: AutopilotConfig) -> None:
    """Refuse before the session: no space to search, or a current value of the wrong type."""
    if autopilot_config.optimizer == NAME:
        check_spaces(autopilot_config, NAME)


def check_spaces(autopilot_config: AutopilotConfig, optimizer: str) -> None:
    """A typed space to search, and current values of the right types (for every optimizer
    that searches the typed spaces)."""
    source = autopilot_config.relpath() or "autopilot.yaml"
    spaced = [spec for spec in autopilot_config.parameters if spec.space]
    if not spaced:
        raise pytest.UsageError(
            f"{source}: parameters: optimizer '{optimizer}' needs a typed space, expected an "
            "entry such as {path: params.yaml, space: {workers: {int: [1, 16]}}}, got none"
        )
    for spec in spaced:
        files = expand_glob(autopilot_config.rootdir, spec.path)
        if len(files) != 1:
            continue
        path = autopilot_config.rootdir / files[0]
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise pytest.UsageError(f"{files[0]}: cannot read the parameter file: {exc}") from None
        values = read_values(text, list(spec.space), file_format(files[0]), files[0])
        for key, dim in spec.space.items():
            check_value(dim, values[key], f"{files[0]}: {key}")


@pytest.hookimpl(trylast=True)
def pytest_autopilot_propose(context: OptimizerContext) -> Sequence[Proposal] | None:
    if context.optimizer != NAME:
        return None
    return Search(context).propose()


def check_value(dim: Dimension, value: Scalar, where: str) -> None:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(dim, IntDimension) and not (numeric and float(value).is_integer()):  # type: ignore[arg-type]
        raise pytest.UsageError(f"{where}: expected an integer for an int dimension, got {value!r}")
    if isinstance(dim, FloatDimension) and not numeric:
        raise pytest.UsageError(f"{where}: expected a number for a float dimension, got {value!r}")
    if (
        isinstance(dim, (IntDimension, FloatDimension))
        and dim.log
        and numeric
        and float(value) <= 0  # type: ignore[arg-type]
    ):
        raise pytest.UsageError(
            f"{where}: expected a positive value for a log dimension, got {value!r}"
        )
