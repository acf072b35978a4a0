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
   incumbent moved, another optimizer's) are read back from their commits. Nothing is kept
   between rounds, so resuming, changing the seed or mixing optimizers just works, and a
   point already in the history (after normalization) is never proposed again.
3. Candidates. Local moves around the three best points (the incumbent first unless another
   point beats it by more than the noise): along one dimension at a time, a line search on
   the normalized scale (a big first step toward the farther bound, twice the step further
   in a direction that improved, bisection toward the vertex of the parabola through the
   center and its neighbors once bracketed; ints stop at adjacent values, floats at 1% of
   the range); every other choice; a value that improved the objective from another point
   (transfer), all such values at once (a pattern move) and pairs of changes that each
   moved the objective (interactions). Plus 200 seeded random points of the whole space.
4. Model. A Gaussian process (Matern 5/2, one length scale per dimension fitted by
   likelihood, noise never below the run-to-run noise ``acceptance.min_effect``) predicts
   the objective at every candidate; the value of a candidate is its expected improvement
   over the best predicted point. When a feedback note names a bottleneck (``bottleneck:
   stage 'decode' ...``), the round's first candidate is the best one that changes only
   dimensions whose dotted key mentions that name. Each chosen candidate is assumed to land
   on its prediction (kriging believer) before the next one is chosen, so a round's
   candidates explore different things. Ties, as in the first round, go to the local moves'
   own estimate, then to a seeded order of the dimensions.
5. A candidate generated around a point other than the incumbent branches from that point's
   commit (``Proposal.parent``). The rationale names each change from that point, the kind of
   move and what the model expects. The optimizer returns ``[]`` only when every point of a
   finite space has been tried.

On synthetic models of the SPDL example's space (``benchmarks/search_synthetic.py``, 10
seeds, evaluations until a point within 10% of the optimum) it needs 0.4-0.5x the
evaluations of Optuna's TPE on a smooth valley with interactions, about as many (0.9-1.1x)
on three bottleneck models, and up to 2.3x on one noise-free CPU-bound model; random search
needs about twice as many as either except where the good region is large. It is pure
Python: a round over 60 measured points takes a fraction of a second.
"""

from __future__ import annotations

import itertools
import math
import operator
import random
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pytest_autopilot.config import (
    AutopilotConfig,
    ChoiceDimension,
    Dimension,
    FloatDimension,
    IntDimension,
    expand_glob,
)
from pytest_autopilot.paramfiles import Scalar, file_format, read_values, write_values
from pytest_autopilot.proposals import (
    CandidateRecord,
    FeedbackItem,
    OptimizerContext,
    ParameterFile,
    Proposal,
)

if TYPE_CHECKING:
    from pytest_autopilot.config import Objective
    from pytest_autopilot.results import Goal

NAME = "search"

EXPLORE = 0.3
"""Value (in log-objective units, about a 26% improvement) of probing a dimension that was
never probed: a move along a dimension that has shown a bigger effect goes first."""

FLOAT_RESOLUTION = 0.01
"""A float line search stops when its neighbors are this close on the normalized scale."""

HINT_FACTOR = 1.5
HINT_BONUS = 0.15
"""A dimension named by a bottleneck note: local moves along it are worth value * factor +
bonus, and the first candidate of the round changes only such dimensions."""

FAILED_PENALTY = 1.0
"""How much worse than the center a failed point counts when valuing moves toward it."""

MAX_GIT_READS = 64
"""Candidates without ``params`` whose parameter files are read back from git, at most."""

PATTERN, PAIR, RANDOM = -1, -2, -3
"""``Move.axis`` of moves along several dimensions."""

POOL_CENTERS = 3
"""Local moves are generated around this many of the best points."""

POOL_RANDOM = 200
"""Random points added to the candidate pool, so the model can send the search far away."""

ENUMERATE_LIMIT = 200_000


# --------------------------------------------------------------------------------------------
# Hooks.


@pytest.hookimpl
def pytest_autopilot_optimizer_names(config: pytest.Config) -> Sequence[str]:
    return [NAME]


@pytest.hookimpl
def pytest_autopilot_check(config: pytest.Config, autopilot_config: AutopilotConfig) -> None:
    """Refuse before the session: no space to search, or a current value of the wrong type."""
    if autopilot_config.optimizer != NAME:
        return
    source = autopilot_config.relpath() or "autopilot.yaml"
    spaced = [spec for spec in autopilot_config.parameters if spec.space]
    if not spaced:
        raise pytest.UsageError(
            f"{source}: parameters: optimizer 'search' needs a typed space, expected an entry "
            "such as {path: params.yaml, space: {workers: {int: [1, 16]}}}, got none"
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
            _check_value(dim, values[key], f"{files[0]}: {key}")


@pytest.hookimpl(trylast=True)
def pytest_autopilot_propose(context: OptimizerContext) -> Sequence[Proposal] | None:
    if context.optimizer != NAME:
        return None
    return Search(context).propose()


def _check_value(dim: Dimension, value: Scalar, where: str) -> None:
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


# --------------------------------------------------------------------------------------------
# The space.


@dataclass(frozen=True)
class Axis:
    """One dimension of the search: where it lives in which file, and its scale."""

    name: str
    """The key in ``params``: the dotted key, prefixed with ``<path>:`` when several files
    have spaces."""
    path: str
    key: str
    dim: Dimension

    @property
    def numeric(self) -> bool:
        return not isinstance(self.dim, ChoiceDimension)

    def encode(self, value: Scalar) -> float:
        """Position on the normalized scale (may leave [0, 1] for an out-of-range start)."""
        dim = self.dim
        assert not isinstance(dim, ChoiceDimension)
        x = float(value)  # type: ignore[arg-type]
        if dim.log:
            return (math.log(max(x, 1e-300)) - math.log(dim.low)) / (
                math.log(dim.high) - math.log(dim.low)
            )
        return (x - dim.low) / (dim.high - dim.low)

    def decode(self, u: float) -> int | float:
        """The value of the space nearest to a normalized position (clamped to the bounds)."""
        dim = self.dim
        assert not isinstance(dim, ChoiceDimension)
        u = min(1.0, max(0.0, u))
        if dim.log:
            x = math.exp(math.log(dim.low) + u * (math.log(dim.high) - math.log(dim.low)))
        else:
            x = dim.low + u * (dim.high - dim.low)
        if isinstance(dim, IntDimension):
            return min(dim.high, max(dim.low, math.floor(x + 0.5)))
        return min(dim.high, max(dim.low, float(f"{x:.4g}")))

    def normalize(self, value: Any) -> Hashable:
        """A comparable form: ``4`` and ``4.0`` are the same int; ``True`` is not ``1``."""
        if isinstance(self.dim, IntDimension) and _is_number(value) and float(value).is_integer():
            return ("n", int(value))
        if isinstance(self.dim, FloatDimension) and _is_number(value):
            return ("n", float(f"{float(value):.10g}"))
        return (type(value).__name__, value)

    def plain(self, value: Any) -> Scalar:
        """The value as written to the file and recorded in ``params``."""
        if isinstance(self.dim, IntDimension) and _is_number(value) and float(value).is_integer():
            return int(value)
        if isinstance(self.dim, FloatDimension) and _is_number(value):
            return float(value)
        return value  # type: ignore[no-any-return]

    def show(self, value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def axes_of(parameters: Sequence[ParameterFile]) -> list[Axis]:
    spaced = [p for p in parameters if p.space]
    prefixed = len(spaced) > 1
    return [
        Axis(f"{p.path}:{key}" if prefixed else key, p.path, key, dim)
        for p in spaced
        for key, dim in p.space.items()
    ]


Point = tuple[Scalar, ...]
Key = tuple[Hashable, ...]


@dataclass
class Observed:
    """One point of the space with what is known about it."""

    point: Point
    values: list[float] = field(default_factory=list)
    """Transformed objective of each evaluation (lower is better; ``inf``: failed)."""
    records: list[CandidateRecord] = field(default_factory=list)

    @property
    def f(self) -> float | None:
        if not self.values:
            return None
        finite = [v for v in self.values if math.isfinite(v)]
        return sum(finite) / len(finite) if finite else math.inf


@dataclass(frozen=True)
class Prior:
    """What a dimension is expected to do at a center where it has not been probed."""

    value: float
    why: str
    direction: int = 0
    """+1 / -1: the side where it improved elsewhere (numeric dimensions); 0: unknown."""
    step: float = 0.0
    """The normalized distance of that improvement."""

    def pair(self) -> tuple[float, str]:
        return self.value, self.why


@dataclass
class Move:
    point: Point
    gain: float
    axis: int
    reason: str


# --------------------------------------------------------------------------------------------
# The search.


class Search:
    """One round's proposals, computed from the context alone."""

    def __init__(self, context: OptimizerContext) -> None:
        self.context = context
        self.axes = axes_of(context.parameters)
        self.files = {p.path: p for p in context.parameters}
        rng = random.Random(context.seed)
        order = list(range(len(self.axes)))
        rng.shuffle(order)
        self.rank = {axis: position for position, axis in enumerate(order)}
        self.hinted = _hinted_axes(self.axes, [item.text for item in context.feedback])
        self.encoder = Encoder(self.axes)

    # -- reading the state -------------------------------------------------------------

    def current(self) -> Point:
        """The point the incumbent's parameter files hold."""
        values: list[Scalar] = []
        cache: dict[str, dict[str, Scalar]] = {}
        for axis in self.axes:
            if axis.path not in cache:
                keys = [a.key for a in self.axes if a.path == axis.path]
                file = self.files[axis.path]
                cache[axis.path] = read_values(file.text, keys, file_format(file.path), file.path)
            values.append(axis.plain(cache[axis.path][axis.key]))
        return tuple(values)

    def key(self, point: Point) -> Key:
        return tuple(axis.normalize(v) for axis, v in zip(self.axes, point, strict=True))

    def observe(self) -> None:
        context = self.context
        objective = context.objective
        self.seen: dict[Key, Observed] = {}
        raw: list[tuple[Key, CandidateRecord, float | None]] = []
        self.incumbent_point = self.current()
        points: list[tuple[Point, CandidateRecord]] = [(self.incumbent_point, context.incumbent)]
        if context.baseline.id != context.incumbent.id:
            if context.baseline.commit == context.incumbent.commit:
                points.append((self.incumbent_point, context.baseline))
            elif context.baseline.params is not None:
                point = self._point_of(context.baseline.params)
                if point is not None:
                    points.append((point, context.baseline))
        known = {context.incumbent.id, context.baseline.id}
        unknown = [
            r
            for r in context.history
            if r.params is None and r.commit and r.metrics and r.id not in known
        ][-MAX_GIT_READS:]
        if context.baseline.id != context.incumbent.id and context.baseline.params is None:
            unknown.insert(0, context.baseline)
        recovered = self._points_from_git(unknown) if unknown else {}
        if context.baseline.id in recovered:
            points.append((recovered.pop(context.baseline.id), context.baseline))
        for record in context.history:
            if record.id in known:
                continue
            point = recovered.get(record.id)
            if record.params is not None:
                point = self._point_of(record.params)
            if point is not None:
                points.append((point, record))
        reference_failed = _failed_tests(context.baseline)
        for point, record in points:
            key = self.key(point)
            raw.append((key, record, self._raw_value(record, objective, reference_failed)))
            self.seen.setdefault(key, Observed(point)).records.append(record)
        positives = [v for _, _, v in raw if v is not None and math.isfinite(v)]
        self.log_scale = bool(positives) and all(v > 0 for v in positives)
        scale = _median([abs(v) for v in positives]) or 1.0
        sign = 1.0 if objective.goal == "min" else -1.0
        for key, _, value in raw:
            if value is None:
                continue
            if not math.isfinite(value):
                self.seen[key].values.append(math.inf)
            elif self.log_scale:
                self.seen[key].values.append(sign * math.log(value))
            else:
                self.seen[key].values.append(sign * value / scale)
        self.tol = self._tolerance()

    def _points_from_git(self, records: Sequence[CandidateRecord]) -> dict[str, Point]:
        """Points of candidates that did not record ``params`` (the baseline, or candidates
        of another optimizer), read from their commits; what cannot be read stays unknown."""
        import subprocess

        from pytest_autopilot.loop.workspace import clean_environ

        paths = list(dict.fromkeys(axis.path for axis in self.axes))
        wanted = [(r, path) for r in records if r.commit for path in paths]
        request = "".join(f"{r.commit}:{path}\n" for r, path in wanted).encode()
        try:
            proc = subprocess.run(
                ["git", "cat-file", "--batch"],
                input=request,
                cwd=self.context.config.rootdir,
                env=clean_environ(),
                capture_output=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return {}
        if proc.returncode != 0:
            return {}
        texts: dict[str, dict[str, str]] = {}
        out, pos = proc.stdout, 0
        for record, path in wanted:
            end = out.find(b"\n", pos)
            if end < 0:
                break
            header = out[pos:end].split()
            pos = end + 1
            if len(header) != 3 or header[1] != b"blob":
                continue
            size = int(header[2])
            blob, pos = out[pos : pos + size], pos + size + 1
            try:
                texts.setdefault(str(record.id), {})[path] = blob.decode()
            except UnicodeDecodeError:
                continue
        points: dict[str, Point] = {}
        for rid, files in texts.items():
            try:
                values = {
                    path: read_values(
                        text, [a.key for a in self.axes if a.path == path], file_format(path), path
                    )
                    for path, text in files.items()
                }
            except pytest.UsageError:
                continue
            if len(values) == len(paths):
                points[rid] = tuple(axis.plain(values[axis.path][axis.key]) for axis in self.axes)
        return points

    def _point_of(self, params: Mapping[str, Any]) -> Point | None:
        if not all(axis.name in params for axis in self.axes):
            return None
        return tuple(axis.plain(params[axis.name]) for axis in self.axes)

    @staticmethod
    def _raw_value(
        record: CandidateRecord, objective: Objective, reference_failed: float | None
    ) -> float | None:
        """The objective as measured; ``inf`` for a candidate that failed or broke tests;
        ``None`` when nothing was learned (not evaluated, refused as a duplicate)."""
        if record.verdict in ("failed", "timeout"):
            return math.inf
        if record.verdict in ("violation", "duplicate"):
            return None
        if not record.metrics:
            return None
        failed = _failed_tests(record)
        if failed is not None and reference_failed is not None and failed > reference_failed:
            return math.inf
        value = record.objective_value(objective)
        if value is None or not math.isfinite(value):
            return math.inf
        return value

    def _tolerance(self) -> float:
        """Differences below this (on the transformed scale) are treated as noise."""
        from pytest_autopilot.stats import DEFAULT_RUN_NOISE

        acceptance = self.context.config.acceptance
        noise = max(acceptance.min_effect, acceptance.run_noise or DEFAULT_RUN_NOISE)
        metric = self.context.incumbent.metrics.get(self.context.objective.metric)
        if metric is not None and metric.samples and len(metric.samples) >= 3 and metric.value:
            samples = sorted(metric.samples)
            mid = _median(samples) or 0.0
            mad = _median([abs(s - mid) for s in samples]) or 0.0
            if mid:
                noise = max(noise, 2 * 1.253 * 1.4826 * mad / abs(mid) / math.sqrt(len(samples)))
        return math.log1p(noise) if self.log_scale else noise

    # -- choosing ----------------------------------------------------------------------

    def propose(self) -> list[Proposal]:
        if not self.axes:
            return []
        self.observe()
        wanted = max(0, self.context.max_candidates)
        centers = self._centers()
        pool: dict[Key, tuple[Move, Observed | None]] = {}
        for depth, center in enumerate(centers[:POOL_CENTERS]):
            for move in self.moves(center):
                if depth:
                    move.reason += f", from the {_ordinal(depth + 1)} best point"
                pool.setdefault(self.key(move.point), (move, center))
        rng = random.Random(self.context.seed * 1_000_003 + len(self.seen))
        for _ in range(POOL_RANDOM):
            point = tuple(self._random_value(axis, rng) for axis in self.axes)
            key = self.key(point)
            if key not in self.seen and key not in pool:
                move = Move(point, 0.0, RANDOM, "a point far from those tried")
                pool[key] = (move, None)
        chosen = [
            (move, center or self._nearest(move.point, centers))
            for move, center in self._choose(list(pool.values()), wanted)
        ]
        taken = {self.key(move.point) for move, _ in chosen}
        for point in self._remaining(wanted - len(chosen), taken):
            move = Move(point, 0.0, RANDOM, "one of the last points not tried")
            chosen.append((move, self._nearest(point, centers)))
        return [self._proposal(move, center) for move, center in chosen]

    def _centers(self) -> list[Observed]:
        """Evaluated points, best first; the incumbent first unless beaten beyond the noise."""
        ranked = sorted(
            (o for o in self.seen.values() if o.f is not None and math.isfinite(o.f)),
            key=lambda o: (o.f, self._order(o)),
        )
        incumbent = self.seen[self.key(self.incumbent_point)]
        if (
            ranked
            and incumbent.f is not None
            and math.isfinite(incumbent.f)
            and ranked[0].f is not None
            and ranked[0].f >= incumbent.f - self.tol
        ):
            ranked.remove(incumbent)
            ranked.insert(0, incumbent)
        return ranked or [incumbent]

    def _nearest(self, point: Point, centers: Sequence[Observed]) -> Observed:
        """The evaluated point a far move is described from (and branched from)."""
        x = self.encoder.encode(point)
        return min(
            centers,
            key=lambda c: (_distance2(x, self.encoder.encode(c.point)), c.f),
        )

    def _choose(
        self, pool: list[tuple[Move, Observed | None]], count: int
    ) -> list[tuple[Move, Observed | None]]:
        """The ``count`` moves of the largest expected improvement under a Gaussian-process
        model of the objective; each chosen move is then assumed to land on the model's
        prediction (kriging believer), so the next one goes elsewhere."""
        observations = [
            (self.encoder.encode(o.point), o.f) for o in self.seen.values() if o.f is not None
        ]
        if not observations or not pool:
            return []
        xs = [x for x, _ in observations]
        ys = _finite_targets([y for _, y in observations])
        model = fit_model(xs, ys, self.encoder.groups, self.tol)
        candidates = [(move, center, self.encoder.encode(move.point)) for move, center in pool]
        incumbent = self.seen[self.key(self.incumbent_point)]
        chosen: list[tuple[Move, Observed | None]] = []
        for _ in range(min(count, len(candidates))):
            best_mean = min(model.predict(x)[0] for x in xs)
            scored = []
            for index, (move, center, x) in enumerate(candidates):
                mean, sd = model.predict(x)
                value = _expected_improvement(best_mean, mean, sd)
                origin = (center or incumbent).point
                changed = {
                    i for i, (a, b) in enumerate(zip(move.point, origin, strict=True)) if a != b
                }
                hinted = bool(changed) and changed <= self.hinted
                scored.append(
                    (hinted, value, move.gain, -self.rank.get(move.axis, 0), -index, mean)
                )
            first = not chosen and any(entry[0] for entry in scored)
            top = max(
                range(len(candidates)),
                key=lambda k: (scored[k][0], *scored[k][1:5]) if first else scored[k][1:5],
            )
            move, center, x = candidates.pop(top)
            mean = scored[top][5]
            reference = (center or incumbent).f
            if reference is not None and math.isfinite(reference):
                move.reason += f"; model: {_percent_change(mean - reference)}"
            chosen.append((move, center))
            xs = [*xs, x]
            ys = [*ys, mean]
            model = model.refit(xs, ys)
        return chosen

    def _order(self, observed: Observed) -> int:
        """Earlier evaluated first among equals."""
        ids = [r.id for r in observed.records]
        return min((_record_order(i) for i in ids), default=0)

    # -- moves from one center ---------------------------------------------------------

    def moves(self, center: Observed) -> list[Move]:
        moves: list[Move] = []
        for i, axis in enumerate(self.axes):
            moves.extend(self._axis_moves(center, i, axis))
        out: list[Move] = []
        for move in moves:
            key = self.key(move.point)
            if key in self.seen or any(self.key(m.point) == key for m in out):
                continue
            if move.axis in self.hinted:
                move.gain = move.gain * HINT_FACTOR + HINT_BONUS
                move.reason += "; named as the bottleneck"
            out.append(move)
        for move in self._combined(center):
            key = self.key(move.point)
            if key not in self.seen and all(self.key(m.point) != key for m in out):
                out.append(move)
        return out

    def _combined(self, center: Observed) -> list[Move]:
        """Moves along several dimensions at once.

        Every value that improved the objective elsewhere, all together (a pattern move:
        near-separable objectives get there in one step); and pairs of single changes that
        each moved the objective from the center, for the interactions coordinate moves
        cannot see (a process executor that pays off only with more decode workers).
        """
        moves: list[Move] = []
        transfers = []
        for i in range(len(self.axes)):
            found = self._transfers(center, i)
            if found:
                transfers.append((i, max(found.values(), key=lambda t: t[1])))
        if len(transfers) > 1:
            point = center.point
            for i, (value, _, _) in transfers:
                point = self._with(point, i, value)
            gain = sum(t[1] for _, t in transfers)
            moves.append(Move(point, gain, PATTERN, "together, the changes that improved it"))
        fc = center.f if center.f is not None and math.isfinite(center.f) else 0.0
        probes: list[tuple[int, Scalar, float]] = []
        for i in range(len(self.axes)):
            line = [o for o in self._line(center, i) if o.f is not None and math.isfinite(o.f)]
            if not line:
                continue
            least_bad = min(line, key=lambda o: (o.f, self._order(o)))
            spread = max(abs(o.f - fc) for o in line if o.f is not None)
            if spread > self.tol:
                probes.append((i, least_bad.point[i], spread))
        for (i, vi, si), (j, vj, sj) in itertools.combinations(probes, 2):
            point = self._with(self._with(center.point, i, vi), j, vj)
            reason = f"{self.axes[i].name} and {self.axes[j].name} together (interaction)"
            moves.append(Move(point, 0.25 * min(si, sj), PAIR, reason))
        return moves

    def _line(self, center: Observed, i: int) -> list[Observed]:
        """Evaluated points that differ from the center in dimension ``i`` only."""
        ckey = self.key(center.point)
        return [
            o
            for k, o in self.seen.items()
            if o.f is not None and k[i] != ckey[i] and _same_except(k, ckey, i)
        ]

    def _groups(self, i: int) -> list[list[Observed]]:
        """Lines along dimension ``i`` anywhere: points equal in every other dimension."""
        groups: dict[Key, list[Observed]] = {}
        for k, o in self.seen.items():
            if o.f is not None:
                groups.setdefault(k[:i] + k[i + 1 :], []).append(o)
        return [g for g in groups.values() if len(g) > 1]

    def _prior(self, center: Observed, i: int) -> Prior:
        """Value of moving along ``i`` where the center has no line: what ``i`` did elsewhere.

        The most relevant line elsewhere is the one measured closest to the center's level;
        its best value also gives the direction and the step of a numeric probe.
        """
        axis = self.axes[i]
        fc = center.f if center.f is not None and math.isfinite(center.f) else 0.0
        effect = 0.0
        stale = math.inf
        nearest: list[Observed] = []
        for group in self._groups(i):
            finite = [o for o in group if o.f is not None and math.isfinite(o.f)]
            if len(finite) < 2:
                continue
            values = [o.f for o in finite if o.f is not None]
            effect = max(effect, max(values) - min(values))
            if min(values) - fc < stale:
                stale, nearest = min(values) - fc, finite
        if not nearest:
            return Prior(EXPLORE, f"first probe of {axis.name}")
        value = max(effect, min(0.5 * max(0.0, stale), 0.8 * EXPLORE))
        why = f"{axis.name} moved the objective {_percent(effect)} elsewhere"
        if not axis.numeric:
            return Prior(value, why)
        best = min(nearest, key=lambda o: (o.f, self._order(o)))
        ub = axis.encode(best.point[i])
        rest = sorted(
            (axis.encode(o.point[i]) for o in nearest if o is not best), key=lambda u: abs(u - ub)
        )
        if not rest or rest[0] == ub:
            return Prior(value, why)
        return Prior(value, why, 1 if ub > rest[0] else -1, abs(ub - rest[0]))

    def _transfers(self, center: Observed, i: int) -> dict[Hashable, tuple[Scalar, float, str]]:
        """Values of ``i`` that improved the objective from other points: value -> gain."""
        found: dict[Hashable, tuple[Scalar, float, str]] = {}
        ckey = self.key(center.point)
        for group in self._groups(i):
            finite = [o for o in group if o.f is not None and math.isfinite(o.f)]
            if len(finite) < 2:
                continue
            best = min(finite, key=lambda o: (o.f, self._order(o)))
            same = [o for o in finite if self.key(o.point)[i] == ckey[i]]
            others = same or [o for o in finite if o is not best]
            assert best.f is not None
            gain = min(o.f for o in others if o.f is not None) - best.f
            value = best.point[i]
            norm = self.axes[i].normalize(value)
            if gain <= self.tol or norm == ckey[i] or (norm in found and found[norm][1] >= gain):
                continue
            where = best.records[0].id if best.records else "elsewhere"
            found[norm] = (value, gain, f"it improved the objective {_percent(gain)} in {where}")
        return found

    def _axis_moves(self, center: Observed, i: int, axis: Axis) -> list[Move]:
        line = self._line(center, i)
        transfers = self._transfers(center, i)
        moves = [
            Move(self._with(center.point, i, value), gain * (0.5 if line else 1.0), i, reason)
            for value, gain, reason in transfers.values()
        ]
        if not axis.numeric:
            assert isinstance(axis.dim, ChoiceDimension)
            prior, why = (
                self._prior(center, i).pair() if not line else self._line_effect(center, line)
            )
            for choice in axis.dim.choices:
                if axis.normalize(choice) != axis.normalize(center.point[i]):
                    moves.append(Move(self._with(center.point, i, choice), prior, i, why))
            return moves
        return moves + self._numeric_moves(center, i, axis, line, bool(transfers))

    def _line_effect(self, center: Observed, line: list[Observed]) -> tuple[float, str]:
        fc = center.f if center.f is not None and math.isfinite(center.f) else 0.0
        finite = [o.f for o in line if o.f is not None and math.isfinite(o.f)]
        effect = max((abs(f - fc) for f in finite), default=0.0)
        return 0.5 * effect, f"other choices moved the objective {_percent(effect)}"

    def _numeric_moves(
        self, center: Observed, i: int, axis: Axis, line: list[Observed], transferred: bool
    ) -> list[Move]:
        fc = center.f if center.f is not None and math.isfinite(center.f) else 0.0
        uc = axis.encode(center.point[i])
        below = max(
            (o for o in line if axis.encode(o.point[i]) < uc),
            default=None,
            key=lambda o: axis.encode(o.point[i]),
        )
        above = min(
            (o for o in line if axis.encode(o.point[i]) > uc),
            default=None,
            key=lambda o: axis.encode(o.point[i]),
        )
        ends = {-1: below, 1: above}
        moves: list[Move] = []
        if below is None and above is None:
            if transferred:
                return moves
            prior = self._prior(center, i)
            room = {-1: uc, 1: 1.0 - uc}
            far = prior.direction or (
                1
                if room[1] > room[-1] or (room[1] == room[-1] and self.context.seed % 2 == 0)
                else -1
            )
            for side, weight in ((far, 1.0), (-far, 0.3)):
                step = prior.step if prior.step and side == prior.direction else 0.5 * room[side]
                value = self._step(axis, center.point[i], uc + side * step, side)
                if value is not None:
                    point = self._with(center.point, i, value)
                    moves.append(Move(point, prior.value * weight, i, prior.why))
            return moves
        fvals = {side: self._fval(o, fc) for side, o in ends.items() if o is not None}
        vertex_side = self._vertex_side(axis, center, i, ends, fc)
        for side in (-1, 1):
            neighbor = ends[side]
            other = ends[-side]
            if neighbor is None:
                assert other is not None
                gap = abs(uc - axis.encode(other.point[i]))
                value = self._step(axis, center.point[i], uc + side * 2 * gap, side)
                if value is None:
                    continue
                slope = max(0.0, fvals[-side] - fc)
                gain = 0.7 * slope
                why = (
                    f"continue the direction that improved {_percent(slope)}"
                    if slope > self.tol
                    else f"{axis.name} beyond the values tried"
                )
                moves.append(Move(self._with(center.point, i, value), gain, i, why))
                continue
            value = self._between(axis, center.point[i], neighbor.point[i])
            if value is None:
                continue
            if other is None:
                gain = 0.1 * abs(fvals[side] - fc)
            else:
                delta, on = vertex_side
                gain = delta if on == side else 0.25 * delta
            lo, hi = sorted((center.point[i], neighbor.point[i]), key=lambda v: float(v))  # type: ignore[arg-type]
            why = f"between {axis.show(lo)} and {axis.show(hi)}"
            moves.append(Move(self._with(center.point, i, value), gain, i, why))
        return moves

    def _fval(self, observed: Observed, fc: float) -> float:
        f = observed.f
        assert f is not None
        return f if math.isfinite(f) else fc + FAILED_PENALTY

    def _vertex_side(
        self, axis: Axis, center: Observed, i: int, ends: dict[int, Observed | None], fc: float
    ) -> tuple[float, int]:
        """Improvement predicted by the parabola through the center and both neighbors, and
        on which side of the center its vertex lies."""
        below, above = ends[-1], ends[1]
        if below is None or above is None:
            return 0.0, 0
        x0, x1, x2 = (
            axis.encode(below.point[i]),
            axis.encode(center.point[i]),
            axis.encode(above.point[i]),
        )
        y0, y1, y2 = self._fval(below, fc), fc, self._fval(above, fc)
        denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
        a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
        b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
        if a <= 0:
            side = -1 if y0 < y2 else 1
            return 0.25 * abs(y0 - y2), side
        vertex = -b / (2 * a)
        vertex = min(max(vertex, x0), x2)
        predicted = a * vertex * vertex + b * vertex + (y1 - a * x1 * x1 - b * x1)
        side = -1 if vertex < x1 else 1
        return max(0.0, y1 - predicted) + 0.01 * self.tol, side

    def _step(self, axis: Axis, current: Scalar, target: float, side: int) -> Scalar | None:
        """The value at ``target`` on the normalized scale, or the nearest distinct value on
        that side; ``None`` when there is no room."""
        value = axis.decode(target)
        if axis.normalize(value) != axis.normalize(current) and (
            (float(value) - float(current)) * side > 0  # type: ignore[arg-type]
        ):
            return value
        if isinstance(axis.dim, IntDimension):
            nxt = int(float(current)) + side  # type: ignore[arg-type]
            if axis.dim.low <= nxt <= axis.dim.high:
                return nxt
        return None

    def _between(self, axis: Axis, a: Scalar, b: Scalar) -> Scalar | None:
        """A value strictly between ``a`` and ``b`` near their midpoint on the normalized
        scale; ``None`` when they are adjacent (ints) or within the float resolution."""
        ua, ub = axis.encode(a), axis.encode(b)
        lo, hi = sorted((float(a), float(b)))  # type: ignore[arg-type]
        if isinstance(axis.dim, FloatDimension):
            if abs(ua - ub) < 2 * FLOAT_RESOLUTION:
                return None
            value = axis.decode((ua + ub) / 2)
            return value if lo < value < hi else None
        if hi - lo < 2:
            return None
        value = axis.decode((ua + ub) / 2)
        if lo < value < hi:
            return value
        return int(lo) + 1 if value <= lo else int(hi) - 1

    def _with(self, point: Point, i: int, value: Scalar) -> Point:
        return (*point[:i], self.axes[i].plain(value), *point[i + 1 :])

    # -- fallbacks ---------------------------------------------------------------------

    @staticmethod
    def _random_value(axis: Axis, rng: random.Random) -> Scalar:
        if isinstance(axis.dim, ChoiceDimension):
            return axis.dim.choices[rng.randrange(len(axis.dim.choices))]
        return axis.decode(rng.random())

    def _remaining(self, count: int, taken: set[Key]) -> list[Point]:
        """Unseen points of a finite space in order, for the last evaluations of tiny spaces."""
        if count <= 0 or any(isinstance(a.dim, FloatDimension) for a in self.axes):
            return []
        values: list[list[Scalar]] = []
        size = 1
        for axis in self.axes:
            if isinstance(axis.dim, ChoiceDimension):
                values.append(list(axis.dim.choices))
            else:
                assert isinstance(axis.dim, IntDimension)
                values.append(list(range(axis.dim.low, axis.dim.high + 1)))
            size *= len(values[-1])
        if size > ENUMERATE_LIMIT:
            return []
        found: list[Point] = []
        indices = [0] * len(values)
        for _ in range(size):
            point = tuple(v[j] for v, j in zip(values, indices, strict=True))
            key = self.key(point)
            if key not in self.seen and key not in taken:
                found.append(point)
                taken.add(key)
                if len(found) >= count:
                    break
            for d in range(len(indices)):
                indices[d] += 1
                if indices[d] < len(values[d]):
                    break
                indices[d] = 0
        return found

    # -- the proposal ------------------------------------------------------------------

    def _proposal(self, move: Move, center: Observed) -> Proposal:
        changes = [
            f"{axis.name} {axis.show(old)} -> {axis.show(new)}"
            for axis, old, new in zip(self.axes, center.point, move.point, strict=True)
            if axis.normalize(old) != axis.normalize(new)
        ]
        parent: str | None = None
        if self.key(center.point) != self.key(self.incumbent_point):
            parent = _parent_of(center)
        rationale = "; ".join(changes) + f" ({move.reason})"
        if parent is not None:
            rationale += f", from {parent}"
        edits: dict[str, str] = {}
        for path, file in self.files.items():
            values = {
                axis.key: value
                for axis, value in zip(self.axes, move.point, strict=True)
                if axis.path == path
            }
            if not values:
                continue
            text = write_values(file.text, values, file_format(path), path)
            if text != file.text:
                edits[path] = text
        params = {axis.name: value for axis, value in zip(self.axes, move.point, strict=True)}
        return Proposal(rationale=rationale, edits=edits, parent=parent, params=params)


# --------------------------------------------------------------------------------------------
# The model: a Gaussian process on the normalized scale, in pure Python (tens of points).


class Encoder:
    """Points as vectors: ``u`` for numeric dimensions, one-hot columns for choices."""

    def __init__(self, axes: Sequence[Axis]) -> None:
        self.axes = axes
        self.groups: list[list[int]] = []
        """The columns of each dimension (one length scale per dimension)."""
        column = 0
        for axis in axes:
            width = len(axis.dim.choices) if isinstance(axis.dim, ChoiceDimension) else 1
            self.groups.append(list(range(column, column + width)))
            column += width

    def encode(self, point: Point) -> list[float]:
        x: list[float] = []
        for axis, value in zip(self.axes, point, strict=True):
            if isinstance(axis.dim, ChoiceDimension):
                norm = axis.normalize(value)
                x.extend(1.0 if axis.normalize(c) == norm else 0.0 for c in axis.dim.choices)
            else:
                x.append(min(1.5, max(-0.5, axis.encode(value))))
        return x


LENGTH_SCALES = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
NOISE_RATIOS = (1e-4, 1e-3, 1e-2, 0.05, 0.2)
FIT_MIN = 4
"""Below this many points the length scales keep their defaults: too little to fit."""


@dataclass
class Model:
    """A Gaussian process with a Matern-5/2 kernel, one length scale per dimension, and the
    signal variance profiled out of the likelihood."""

    xs: list[list[float]]
    ys: list[float]
    """Standardized targets."""
    offset: float
    scale: float
    scales: list[float]
    """Length scale of each column."""
    noise: float
    """Noise variance as a fraction of the signal variance."""
    chol: list[list[float]] = field(default_factory=list)
    alpha: list[float] = field(default_factory=list)
    signal: float = 1.0
    nll: float = math.inf

    def __post_init__(self) -> None:
        n = len(self.xs)
        noise = self.noise
        for _ in range(6):
            matrix = [
                [self.kernel(a, b) + (noise if i == j else 0.0) for j, b in enumerate(self.xs)]
                for i, a in enumerate(self.xs)
            ]
            chol = _cholesky(matrix)
            if chol is not None:
                break
            noise = max(noise * 10, 1e-8)
        else:
            raise ValueError("kernel matrix is not positive definite")
        self.chol = chol
        self.alpha = _backward(chol, _forward(chol, self.ys))
        self.signal = max(sum(y * a for y, a in zip(self.ys, self.alpha, strict=True)) / n, 1e-12)
        logdet = sum(math.log(chol[i][i]) for i in range(n))
        self.nll = 0.5 * n * math.log(self.signal) + logdet

    def kernel(self, a: Sequence[float], b: Sequence[float]) -> float:
        r2 = 0.0
        for x, y, ell in zip(a, b, self.scales, strict=True):
            if x != y:
                d = (x - y) / ell
                r2 += d * d
        r = math.sqrt(5.0 * r2)
        return (1.0 + r + r * r / 3.0) * math.exp(-r)

    def predict(self, x: Sequence[float]) -> tuple[float, float]:
        """Mean and standard deviation of the objective (not of a noisy measurement)."""
        k = [self.kernel(x, b) for b in self.xs]
        mean = sum(a * b for a, b in zip(k, self.alpha, strict=True))
        v = _forward(self.chol, k)
        var = self.signal * max(1e-12, 1.0 - sum(t * t for t in v))
        return self.offset + self.scale * mean, self.scale * math.sqrt(var)

    def refit(self, xs: list[list[float]], ys: list[float]) -> Model:
        """The same hyperparameters on other data (``ys`` in objective units)."""
        return Model(
            xs,
            [(y - self.offset) / self.scale for y in ys],
            self.offset,
            self.scale,
            self.scales,
            self.noise,
        )


def fit_model(
    xs: list[list[float]], ys: list[float], groups: Sequence[Sequence[int]], tol: float
) -> Model:
    """Fit length scales and noise by coordinate search over grids, maximizing the
    likelihood; the noise never goes below half the noise level ``tol``."""
    offset = sum(ys) / len(ys)
    spread = math.sqrt(sum((y - offset) ** 2 for y in ys) / len(ys))
    scale = spread if spread > 1e-12 else 1.0
    standard = [(y - offset) / scale for y in ys]
    floor = min(0.5, max(1e-6, (0.5 * tol / scale) ** 2))
    per_group = [1.0 if len(g) > 1 else 0.4 for g in groups]
    noise = max(floor, NOISE_RATIOS[1])

    def build(per: Sequence[float], noise: float) -> Model:
        columns = [0.0] * sum(len(g) for g in groups)
        for group, ell in zip(groups, per, strict=True):
            for c in group:
                columns[c] = ell
        return Model(xs, standard, offset, scale, columns, noise)

    best = build(per_group, noise)
    if len(xs) < FIT_MIN:
        return best
    for _ in range(2):
        for g in range(len(groups)):
            for ell in LENGTH_SCALES:
                trial = [*per_group[:g], ell, *per_group[g + 1 :]]
                model = build(trial, noise)
                if model.nll < best.nll - 1e-9:
                    best, per_group = model, trial
        for ratio in NOISE_RATIOS:
            if ratio >= floor:
                model = build(per_group, ratio)
                if model.nll < best.nll - 1e-9:
                    best, noise = model, ratio
    return best


def _cholesky(a: list[list[float]]) -> list[list[float]] | None:
    n = len(a)
    low = [[0.0] * n for _ in range(n)]
    for i in range(n):
        row = low[i]
        for j in range(i + 1):
            other = low[j]
            total = a[i][j] - sum(map(operator.mul, row[:j], other[:j]))
            if i == j:
                if total <= 0.0:
                    return None
                row[i] = math.sqrt(total)
            else:
                row[j] = total / other[j]
    return low


def _forward(low: list[list[float]], b: Sequence[float]) -> list[float]:
    out: list[float] = []
    for i, row in enumerate(low):
        out.append((b[i] - sum(map(operator.mul, row[:i], out))) / row[i])
    return out


def _backward(low: list[list[float]], b: Sequence[float]) -> list[float]:
    n = len(low)
    out = [0.0] * n
    for i in range(n - 1, -1, -1):
        total = b[i] - sum(low[k][i] * out[k] for k in range(i + 1, n))
        out[i] = total / low[i][i]
    return out


def _expected_improvement(best: float, mean: float, sd: float) -> float:
    if sd < 1e-12:
        return max(0.0, best - mean)
    z = (best - mean) / sd
    cdf = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return (best - mean) * cdf + sd * pdf


def _finite_targets(values: Sequence[float | None]) -> list[float]:
    """Failed points count as clearly worse than the worst measured one."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return [0.0 for _ in values]
    worst = max(finite) + max(1.0, max(finite) - min(finite))
    return [v if v is not None and math.isfinite(v) else worst for v in values]


def _distance2(a: Sequence[float], b: Sequence[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _percent_change(delta: float) -> str:
    if delta < 0:
        return f"expected {_percent(delta)} better"
    return "uncertain, worth measuring"


def _parent_of(center: Observed) -> str | None:
    """The commit to branch from: an evaluated record of the center point."""
    with_commit = [r for r in center.records if r.commit and r.verdict not in ("failed", "timeout")]
    if not with_commit:
        return None
    accepted = [r for r in with_commit if r.verdict == "accepted"]
    return (accepted or with_commit)[0].id


def _same_except(a: Key, b: Key, i: int) -> bool:
    return all(x == y for j, (x, y) in enumerate(zip(a, b, strict=True)) if j != i)


def _failed_tests(record: CandidateRecord) -> float | None:
    metric = record.metrics.get("tests.failed")
    return None if metric is None else metric.value


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _percent(delta: float) -> str:
    return f"{100 * (1 - math.exp(-abs(delta))):.0f}%"


_RECORD_ID = re.compile(r"r(\d+)(?:c(\d+))?")


def _record_order(record_id: str) -> int:
    match = _RECORD_ID.fullmatch(record_id)
    if match is None:
        return 1 << 30
    return int(match.group(1)) * 10_000 + int(match.group(2) or 0)


_BOTTLENECK = re.compile(r"bottleneck\W+(?:stage\W+|is\W+)?['\"]?([A-Za-z0-9_.-]+)", re.IGNORECASE)


def _hinted_axes(axes: Sequence[Axis], notes: Sequence[str]) -> set[int]:
    """Dimensions whose dotted key mentions a stage that a note calls the bottleneck."""
    names = [m.group(1).lower() for note in notes for m in _BOTTLENECK.finditer(note)]
    hinted: set[int] = set()
    for i, axis in enumerate(axes):
        words = [w for w in re.split(r"[^a-z0-9]+", axis.key.lower()) if w]
        for name in names:
            parts = [w for w in re.split(r"[^a-z0-9]+", name) if len(w) > 2]
            if name in words or name in axis.key.lower() or any(p in words for p in parts):
                hinted.add(i)
    return hinted


# --------------------------------------------------------------------------------------------
# Offline driving: the same hook against a function instead of test sessions.


@dataclass
class Trial:
    """One evaluation of :func:`drive`: the point, its measured value, and the verdict."""

    id: str
    params: dict[str, Any]
    value: float | None
    accepted: bool


def drive(
    space: Mapping[str, Dimension],
    start: Mapping[str, Scalar],
    evaluate: Callable[[dict[str, Any]], float | None],
    *,
    evaluations: int,
    candidates: int = 2,
    seed: int = 0,
    goal: Goal = "min",
    min_effect: float = 0.02,
    notes: Callable[[dict[str, Any]], Sequence[str]] | None = None,
) -> list[Trial]:
    """Run ``optimizer: search`` against a function, the way the loop runs it against sessions.

    The parameter file is a YAML text written from ``start`` (dotted keys nest) and edited by
    the proposals; ``evaluate`` gets the values read back from each proposal's file, and
    returns the objective (``None``: the candidate failed). A candidate becomes the incumbent
    when it beats it by ``min_effect``, as a simple stand-in for the loop's noise-aware
    acceptance. ``notes`` gives feedback texts for the incumbent's point. For tests and for
    comparing search strategies (``benchmarks/search_synthetic.py``) without git or pytest
    sessions. The first trial is the start point, then up to ``evaluations`` candidates.
    """
    from pathlib import Path

    import yaml

    from pytest_autopilot.config import Acceptance, Budget, Objective, SearchSettings
    from pytest_autopilot.results import Metric

    path = "params.yaml"
    nested: dict[str, Any] = {}
    for dotted, value in start.items():
        node = nested
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    texts = {"r0": yaml.safe_dump(nested, sort_keys=False)}
    objective = Objective("objective", goal)
    config = AutopilotConfig(
        path=None,
        rootdir=Path("."),
        objective=objective,
        budget=Budget(candidates=candidates),
        acceptance=Acceptance(min_effect=min_effect),
        search=SearchSettings(seed=seed),
    )

    def better(value: float, reference: float) -> bool:
        if goal == "min":
            return value < reference - abs(reference) * min_effect
        return value > reference + abs(reference) * min_effect

    def measure(record: CandidateRecord, text: str) -> Trial:
        values = read_values(text, list(space), "yaml", path)
        value = evaluate(dict(values))
        if value is None:
            record.verdict, record.reason = "failed", "evaluate returned None"
        else:
            record.metrics = {"objective": Metric("objective", value, goal)}
        return Trial(record.id, dict(values), value, False)

    baseline = CandidateRecord(id="r0", round=0, commit="r0", parent=None, rationale="baseline")
    trials = [measure(baseline, texts["r0"])]
    baseline.params = dict(trials[0].params)
    if trials[0].value is None:
        return trials
    baseline.verdict = "accepted"
    incumbent = baseline
    history: list[CandidateRecord] = []
    round_number = 0
    while len(trials) <= evaluations:
        round_number += 1
        context = OptimizerContext(
            optimizer=NAME,
            round=round_number,
            max_candidates=min(candidates, evaluations + 1 - len(trials)),
            config=config,
            objective=objective,
            incumbent=incumbent,
            baseline=baseline,
            gates=[],
            feedback=[
                FeedbackItem("offline", text, "note")
                for text in (notes(_params_at(texts[incumbent.id], space, path)) if notes else ())
            ],
            history=list(history),
            parameters=[ParameterFile(path, texts[incumbent.id], dict(space))],
            knowledge=[],
            seed=seed,
        )
        proposals = pytest_autopilot_propose(context)
        if not proposals:
            break
        best: CandidateRecord | None = None
        for index, proposal in enumerate(proposals, start=1):
            cid = f"r{round_number}c{index}"
            record = CandidateRecord(
                id=cid,
                round=round_number,
                commit=cid,
                parent=proposal.parent or incumbent.id,
                rationale=proposal.rationale,
                params=dict(proposal.params or {}),
            )
            texts[cid] = proposal.edits.get(path, texts[incumbent.id])
            trial = measure(record, texts[cid])
            reference = best or incumbent
            ref_value = reference.objective_value(objective)
            if trial.value is not None and ref_value is not None and better(trial.value, ref_value):
                best = record
            record.verdict = record.verdict or "rejected"
            history.append(record)
            trials.append(trial)
        if best is not None:
            best.verdict = "accepted"
            incumbent = best
            next(t for t in trials if t.id == best.id).accepted = True
    return trials


def _params_at(text: str, space: Mapping[str, Dimension], path: str) -> dict[str, Any]:
    return dict(read_values(text, list(space), "yaml", path))
