"""One round of the search: a pool of moves, a model to rank them, the chosen proposals."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from pytest_autopilot.config import ChoiceDimension, FloatDimension, IntDimension
from pytest_autopilot.optimizers.search.design import DESIGN_SIZE, latin_hypercube
from pytest_autopilot.optimizers.search.model import (
    distance2,
    expected_improvement,
    finite_targets,
    fit_model,
)
from pytest_autopilot.optimizers.search.moves import Moves
from pytest_autopilot.optimizers.search.space import (
    RANDOM,
    Axis,
    Encoder,
    Key,
    Move,
    Observed,
    Point,
    choice_axes,
    ordinal,
    percent_change,
    record_order,
)
from pytest_autopilot.optimizers.search.stages import (
    as_number,
    capacity_knob,
    concurrency_move,
)
from pytest_autopilot.optimizers.search.state import Observations
from pytest_autopilot.paramfiles import Scalar, file_format, write_values
from pytest_autopilot.proposals import OptimizerContext, Proposal

POOL_CENTERS = 3
"""Local moves are generated around this many of the best points."""

POOL_RANDOM = 200
"""Random points added to the candidate pool, so the model can send the search far away."""

POOL_NEARBY = 100
"""Points near each of the best two points, several knobs changed at once, for the model to
rank: one-knob moves alone walk a valley with interacting knobs one axis at a time."""

NEARBY_SCALE = 0.15
"""Standard deviation of a nearby point's step on the normalized scale."""

ENUMERATE_LIMIT = 200_000

CONTEXT_MARGIN = 0.3
"""How much worse than the best point the best point of another combination of choices may
be for the stage model to start from it too."""
STALL_AFTER = 3
"""Evaluations without an improvement beyond the noise after which the model's picks have
stopped paying: the untried one-step neighbours of the best point go first."""


class Search(Observations):
    """One round's proposals, computed from the context alone."""

    def __init__(self, context: OptimizerContext) -> None:
        super().__init__(context)
        rng = random.Random(context.seed)
        order = list(range(len(self.axes)))
        rng.shuffle(order)
        self.rank = {axis: position for position, axis in enumerate(order)}
        self.encoder = Encoder(self.axes)

    def propose(self) -> list[Proposal]:
        """The round's candidates. A resumed round (some of its candidates already in the
        history) is planned again from the history before it, so it proposes what the
        uninterrupted round would have, minus what was already evaluated."""
        if not self.axes:
            return []
        context = self.context
        done = [r for r in context.history if r.round == context.round]
        self.observe([r for r in context.history if r.round != context.round])
        wanted = max(0, context.max_candidates)
        if wanted == 0:
            return []
        chosen = self._plan(wanted + len(done))
        if done:
            skip = set()
            for record in done:
                point = self._point_of(record.params) if record.params is not None else None
                if point is not None:
                    skip.add(self.key(point))
            chosen = [(m, c) for m, c in chosen if self.key(m.point) not in skip]
        return [self._proposal(move, center) for move, center in chosen[:wanted]]

    def _plan(self, wanted: int) -> list[tuple[Move, Observed]]:
        centers = self._centers()
        pool: dict[Key, tuple[Move, Observed | None]] = {}
        moves = Moves(self)
        preferred: set[Key] = set()
        seen = list(self.seen.values())
        staged = [
            (move, center)
            for center in self._context_bests(centers)
            if (move := concurrency_move(self.axes, seen, center)) is not None
        ]
        local = [(move, centers[0]) for move in self.local(centers, moves)]
        for move, center in [*staged, *local]:
            if self.key(move.point) in self.seen:
                continue
            preferred.add(self.key(move.point))
            pool.setdefault(self.key(move.point), (move, center))
        for depth, center in enumerate(centers[:POOL_CENTERS]):
            for move in moves.around(center):
                if depth:
                    move.reason += f", from the {ordinal(depth + 1)} best point"
                pool.setdefault(self.key(move.point), (move, center))
        rng = random.Random(self.context.seed * 1_000_003 + len(self.seen))
        for _ in range(POOL_RANDOM):
            point = tuple(random_value(axis, rng) for axis in self.axes)
            key = self.key(point)
            if key not in self.seen and key not in pool:
                move = Move(point, 0.0, RANDOM, "a point far from those tried")
                pool[key] = (move, None)
        for center in centers[:2]:
            for _ in range(POOL_NEARBY):
                point = nearby(self.axes, center.point, rng)
                key = self.key(point)
                if key not in self.seen and key not in pool:
                    move = Move(point, 0.0, RANDOM, "several knobs near a good point")
                    pool[key] = (move, center)
        chosen = [(move, centers[0]) for move in self._design(wanted, bool(staged))]
        taken = {self.key(move.point) for move, _ in chosen}
        rest = [entry for key, entry in pool.items() if key not in taken]
        chosen += [
            (move, center or self._nearest(move.point, centers))
            for move, center in self._choose(rest, wanted - len(chosen), preferred)
        ]
        taken = {self.key(move.point) for move, _ in chosen}
        for point in self._remaining(wanted - len(chosen), taken):
            move = Move(point, 0.0, RANDOM, "one of the last points not tried")
            chosen.append((move, self._nearest(point, centers)))
        return chosen

    def _design(self, wanted: int, directed: bool) -> list[Move]:
        """The untried points of the initial space-filling design, while fewer than
        ``1 + DESIGN_SIZE`` points are measured and all but the first are the design's; none
        when a stage model (``directed``) or a bottleneck note says where to go, or the
        history holds points from elsewhere (another optimizer, an earlier seed)."""
        room = min(wanted, 1 + DESIGN_SIZE - len(self.seen))
        if room <= 0 or directed or self.hinted:
            return []
        first = min(self.seen.values(), key=self.order)
        design = latin_hypercube(self.axes, self.encoder, first.point, self.context.seed)
        planned = {self.key(point) for point in design} | {self.key(first.point)}
        if any(key not in planned for key in self.seen):
            return []
        fresh: dict[Key, Point] = {}
        for point in design:
            if self.key(point) not in self.seen:
                fresh.setdefault(self.key(point), point)
        why = "a point of the space-filling initial design"
        return [Move(p, 0.0, RANDOM, why) for p in list(fresh.values())[:room]]

    def progress(self) -> tuple[int, Observed | None]:
        """Evaluations since the best value last improved beyond the noise, and the best
        point before that improvement (``None`` when there was none)."""
        firsts = sorted(
            (min(record_order(r.id) for r in o.records), o)
            for o in self.seen.values()
            if o.f is not None and o.records
        )
        best: Observed | None = None
        previous: Observed | None = None
        since = 0
        for _, observed in firsts:
            f = observed.f
            assert f is not None
            if best is None or best.f is None or f < best.f - self.tol:
                if best is not None and best.f is not None and math.isfinite(best.f):
                    previous = best
                best, since = observed, 0
            else:
                since += 1
        return since, previous

    def local(self, centers: list[Observed], moves: Moves) -> list[Move]:
        """Local refinement, when the model's picks stopped paying (``STALL_AFTER``
        evaluations without improvement) or the last improvement was itself one step: first
        the same step again (a pattern move), then the untried one-step neighbours."""
        since, previous = self.progress()
        center = centers[0]
        stepped = previous is not None and moves.one_knob(previous, center)
        found: list[Move] = moves.carry_over(center) + moves.choice_flips(center)
        if previous is not None and stepped:
            found += moves.extrapolate(previous, center)
        if since < STALL_AFTER:
            return found
        return found + moves.refinement(center)

    def _centers(self) -> list[Observed]:
        """Evaluated points, best first; the incumbent first unless beaten beyond the noise."""
        ranked = sorted(
            (o for o in self.seen.values() if o.f is not None and math.isfinite(o.f)),
            key=lambda o: (o.f, self.order(o)),
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

    def _context_bests(self, centers: list[Observed]) -> list[Observed]:
        """The best point, then the best point of each other combination of choices that is
        within ``CONTEXT_MARGIN`` of it: a stage model from there may beat the best point
        (a process executor measured at one decode task loses; at four it wins)."""
        best = centers[0]
        if best.f is None:
            return [best]
        margin = self.margin(CONTEXT_MARGIN, best.f)
        choices = choice_axes(self.axes)
        found = {tuple(best.point[i] for i in choices): best}
        for center in centers:
            context = tuple(center.point[i] for i in choices)
            if context not in found and center.f is not None and center.f <= best.f + margin:
                found[context] = center
        return list(found.values())

    def _nearest(self, point: Point, centers: Sequence[Observed]) -> Observed:
        """The evaluated point a far move is described from (and branched from)."""
        x = self.encoder.encode(point)
        return min(
            centers,
            key=lambda c: (distance2(x, self.encoder.encode(c.point)), c.f),
        )

    def _choose(
        self, pool: list[tuple[Move, Observed | None]], count: int, preferred: set[Key]
    ) -> list[tuple[Move, Observed | None]]:
        """The ``count`` moves of the largest expected improvement under a Gaussian-process
        model of the objective; each chosen move is then assumed to land on the model's
        prediction (kriging believer), so the next one goes elsewhere. Moves in ``preferred``
        (the stage model, carried-over improvements, local refinement) go before all others,
        best expected improvement first: half the round (at least one), the whole round once
        the search has stalled, so until then the model's picks still explore; then the best
        move that changes only what a bottleneck note names (never lowering that stage's
        concurrency), once per round."""
        observations = [
            (self.encoder.encode(o.point), o.f) for o in self.seen.values() if o.f is not None
        ]
        if not observations or not pool:
            return []
        xs = [x for x, _ in observations]
        ys = finite_targets([y for _, y in observations])
        model = fit_model(xs, ys, self.encoder.groups, self.tol)
        candidates = [(move, center, self.encoder.encode(move.point)) for move, center in pool]
        incumbent = self.seen[self.key(self.incumbent_point)]
        fixed = []
        for move, center, _ in candidates:
            origin = (center or incumbent).point
            changed = {i for i, (a, b) in enumerate(zip(move.point, origin, strict=True)) if a != b}
            hinted = (
                bool(changed)
                and changed <= self.hinted
                and origin == incumbent.point
                and not self._lowers_capacity(move.point, origin, changed)
            )
            fixed.append((hinted, self.key(move.point) in preferred))
        chosen: list[tuple[Move, Observed | None]] = []
        hint_taken = False
        stalled = self.progress()[0] >= STALL_AFTER
        preferred_left = count if stalled else max(1, count // 2)
        for _ in range(min(count, len(candidates))):
            best_mean = min(model.mean(x) for x in xs)
            scored = []
            for index, (move, _, x) in enumerate(candidates):
                mean, sd = model.predict(x)
                value = expected_improvement(best_mean, mean, sd)
                hinted, tier = fixed[index]
                scored.append(
                    (
                        tier and preferred_left > 0,
                        hinted and not hint_taken,
                        value,
                        move.gain,
                        -self.rank.get(move.axis, 0),
                        -index,
                        mean,
                    )
                )
            top = max(range(len(candidates)), key=lambda k: scored[k][:6])
            hint_taken = hint_taken or scored[top][1]
            preferred_left -= scored[top][0]
            move, center, x = candidates.pop(top)
            fixed.pop(top)
            mean = scored[top][6]
            reference = (center or incumbent).f
            if reference is not None and math.isfinite(reference):
                move.reason += f"; model: {percent_change(mean - reference)}"
            chosen.append((move, center))
            xs = [*xs, x]
            ys = [*ys, mean]
            model = model.refit(xs, ys)
        return chosen

    def _lowers_capacity(self, point: Point, origin: Point, changed: set[int]) -> bool:
        """Whether a move lowers a concurrency or thread count: never what a note naming
        that stage as the bottleneck asks for."""
        return any(
            capacity_knob(self.axes[i]) and as_number(point[i]) < as_number(origin[i])
            for i in changed
        )

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
            parent = parent_of(center)
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


def parent_of(center: Observed) -> str | None:
    """The commit to branch from: an evaluated record of the center point."""
    with_commit = [r for r in center.records if r.commit and r.verdict not in ("failed", "timeout")]
    if not with_commit:
        return None
    accepted = [r for r in with_commit if r.verdict == "accepted"]
    return (accepted or with_commit)[0].id


def nearby(axes: Sequence[Axis], point: Point, rng: random.Random) -> Point:
    """``point`` with each knob changed with probability ``2 / len(axes)`` (at least one):
    numeric knobs by a Gaussian step on the normalized scale, choices to another choice."""
    changed = [rng.random() < 2 / len(axes) for _ in axes]
    if not any(changed):
        changed[rng.randrange(len(axes))] = True
    values: list[Scalar] = []
    for axis, value, change in zip(axes, point, changed, strict=True):
        if not change:
            values.append(value)
        elif isinstance(axis.dim, ChoiceDimension):
            values.append(random_value(axis, rng))
        else:
            values.append(axis.decode(axis.encode(value) + rng.gauss(0.0, NEARBY_SCALE)))
    return tuple(values)


def random_value(axis: Axis, rng: random.Random) -> Scalar:
    if isinstance(axis.dim, ChoiceDimension):
        return axis.dim.choices[rng.randrange(len(axis.dim.choices))]
    return axis.decode(rng.random())
