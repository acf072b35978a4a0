"""Moves from one evaluated point: line searches along each dimension, transfers of values
that helped elsewhere, pattern and pair moves, and the one-step neighbours of local
refinement."""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable

from pytest_autopilot.config import ChoiceDimension, FloatDimension, IntDimension
from pytest_autopilot.optimizers.search.space import (
    NEIGHBOUR,
    PAIR,
    PATTERN,
    Axis,
    Key,
    Move,
    Observed,
    Point,
    Prior,
    choice_axes,
    percent,
    same_except,
)
from pytest_autopilot.optimizers.search.state import Observations
from pytest_autopilot.paramfiles import Scalar

EXPLORE = 0.3
"""Value (in log-objective units, about a 26% improvement) of probing a dimension that was
never probed: a move along a dimension that has shown a bigger effect goes first."""

FLOAT_RESOLUTION = 0.01
"""A float line search stops when its neighbors are this close on the normalized scale."""

HINT_FACTOR = 1.5
HINT_BONUS = 0.15
"""A dimension named by a bottleneck note: local moves along it are worth value * factor +
bonus, and the first candidate of the round changes only such dimensions."""

LOG_STEP = 1.25
"""A one-step neighbour on a ``log: true`` int dimension is this factor away (at least 1)."""

FAILED_PENALTY = 1.0
"""How much worse than the center a failed point counts when valuing moves toward it."""

CHOICE_LOSS = 0.3
"""How much worse a choice's value must have measured, everything else equal, for the
search to stop flipping back to it."""


class Moves:
    """The moves the state suggests around any center."""

    def __init__(self, state: Observations) -> None:
        self.axes = state.axes
        self.seen = state.seen
        self.key = state.key
        self.tol = state.tol
        self._margin = state.margin
        self.hinted = state.hinted
        self.seed = state.context.seed
        self._order = state.order
        self._with = state.with_value

    def around(self, center: Observed) -> list[Move]:
        """Moves from one center: along each dimension, then along several at once."""
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
            if o.f is not None and k[i] != ckey[i] and same_except(k, ckey, i)
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
        why = f"{axis.name} moved the objective {percent(effect)} elsewhere"
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
            found[norm] = (value, gain, f"it improved the objective {percent(gain)} in {where}")
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
        return 0.5 * effect, f"other choices moved the objective {percent(effect)}"

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
            return [] if transferred else self._first_probes(center, i, axis, uc)
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
                    f"continue the direction that improved {percent(slope)}"
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

    def _first_probes(self, center: Observed, i: int, axis: Axis, uc: float) -> list[Move]:
        """A dimension never moved from this center: a big step toward the farther bound (or
        the way it improved elsewhere), and a smaller-valued one the other way."""
        prior = self._prior(center, i)
        room = {-1: uc, 1: 1.0 - uc}
        far = prior.direction or (
            1 if room[1] > room[-1] or (room[1] == room[-1] and self.seed % 2 == 0) else -1
        )
        moves: list[Move] = []
        for side, weight in ((far, 1.0), (-far, 0.3)):
            step = prior.step if prior.step and side == prior.direction else 0.5 * room[side]
            value = self._step(axis, center.point[i], uc + side * step, side)
            if value is not None:
                point = self._with(center.point, i, value)
                moves.append(Move(point, prior.value * weight, i, prior.why))
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

    # -- local refinement ----------------------------------------------------------------

    def neighbour_values(self, center: Observed, i: int) -> list[Scalar]:
        """The values one step away along ``i``: adjacent ints (stepping over values whose
        candidates failed, as a constraint forbids them), floats two resolution steps away
        on the normalized scale, every other choice."""
        axis = self.axes[i]
        value = center.point[i]
        if isinstance(axis.dim, ChoiceDimension):
            return [c for c in axis.dim.choices if axis.normalize(c) != axis.normalize(value)]
        found: list[Scalar] = []
        for side in (-1, 1):
            step = self._step(axis, value, axis.encode(value) + side * 2 * FLOAT_RESOLUTION, side)
            if isinstance(axis.dim, IntDimension):
                here = int(float(value))  # type: ignore[arg-type]
                stride = max(1, round(here * (LOG_STEP - 1))) if axis.dim.log else 1
                step = here + side * stride
                while axis.dim.low <= step <= axis.dim.high and self._failed_at(center, i, step):
                    step += side * stride
                if not axis.dim.low <= step <= axis.dim.high:
                    step = None
            if step is not None:
                found.append(step)
        return found

    def _failed_at(self, center: Observed, i: int, value: Scalar) -> bool:
        seen = self.seen.get(self.key(self._with(center.point, i, value)))
        return seen is not None and seen.f is not None and not math.isfinite(seen.f)

    def refinement(self, center: Observed) -> list[Move]:
        """Every untried one-knob neighbour of the center; once all are measured, the steps
        that did not make it worse beyond the noise, one step further (numeric knobs), and
        the pairs of the best three of them (pattern moves). Steps that made it worse are
        not combined: with noise, pairs of every step kept a stalled search grinding around
        one point while a real improvement lay two steps away."""
        singles: list[tuple[float, int, Scalar]] = []
        untried: list[Move] = []
        fc = center.f if center.f is not None and math.isfinite(center.f) else 0.0
        for i in range(len(self.axes)):
            for value in self.neighbour_values(center, i):
                point = self._with(center.point, i, value)
                seen = self.seen.get(self.key(point))
                if seen is None or seen.f is None:
                    why = "one step from the best point (local refinement)"
                    untried.append(Move(point, 0.0, i, why))
                else:
                    singles.append((self._fval(seen, fc) - fc, i, value))
        if untried:
            return untried
        promising = sorted((s for s in singles if s[0] < self.tol), key=lambda s: s[0])
        moves: list[Move] = []
        for delta, i, value in promising:
            if not self.axes[i].numeric:
                continue
            side = 1 if float(value) > float(center.point[i]) else -1  # type: ignore[arg-type]
            step = self._with(center.point, i, value)
            for further in self.neighbour_values(Observed(step), i):
                if (float(further) - float(value)) * side > 0:  # type: ignore[arg-type]
                    point = self._with(center.point, i, further)
                    why = "a step that did not hurt, one further (local refinement)"
                    moves.append(Move(point, -delta, i, why))
        best: dict[int, tuple[float, int, Scalar]] = {}
        for single in promising:
            best.setdefault(single[1], single)
        top = sorted(best.values(), key=lambda s: s[0])[:3]
        for (da, i, vi), (db, j, vj) in itertools.combinations(top, 2):
            point = self._with(self._with(center.point, i, vi), j, vj)
            why = "two one-step changes together (local refinement, pattern move)"
            moves.append(Move(point, -(da + db), NEIGHBOUR, why))
        return [m for m in moves if self.key(m.point) not in self.seen]

    def carry_over(self, center: Observed) -> list[Move]:
        """The changes that improved their parent beyond the noise, each applied to the
        center when it does not have them yet, biggest improvement first: two candidates of
        one round that both beat the incumbent along different knobs are then combined
        next round, instead of waiting for the model to rank the combination. Only changes
        measured in or after the center's round: older ones had their chance on it."""
        by_id = {r.id: o for o in self.seen.values() for r in o.records}
        since = min((r.round for r in center.records), default=0)
        found: dict[Key, Move] = {}
        for observed in self.seen.values():
            if observed.f is None or not math.isfinite(observed.f):
                continue
            for record in observed.records:
                if record.round < since:
                    continue
                parent = by_id.get(record.parent or "")
                if parent is None or parent is observed or parent.f is None:
                    continue
                gain = self._fval(parent, observed.f) - observed.f
                if gain <= self.tol:
                    continue
                point = self._carried(center.point, parent.point, observed.point)
                if point is None:
                    continue
                changed = [
                    self.axes[i].name
                    for i, (a, b) in enumerate(zip(parent.point, observed.point, strict=True))
                    if self.axes[i].normalize(a) != self.axes[i].normalize(b)
                ]
                key = self.key(point)
                if key in self.seen or (key in found and found[key].gain >= gain):
                    continue
                why = f"{', '.join(changed)} as in {record.id}, which improved {percent(gain)}"
                found[key] = Move(point, gain, PATTERN, why + " (carried over)")
        return sorted(found.values(), key=lambda m: -m.gain)

    def choice_flips(self, center: Observed) -> list[Move]:
        """Every other value of each choice dimension at the center, unless it was measured
        with the center's values of the other choices: a choice (an executor kind, per-item
        or per-batch work) often decides more than any count, and no model ranks it well
        from a handful of points; counts changing do not make it worth trying again."""
        moves: list[Move] = []
        choices = choice_axes(self.axes)
        ckey = self.key(center.point)
        for i in choices:
            lost = self._lost_to(i, ckey[i])
            for value in self.neighbour_values(center, i):
                point = self._with(center.point, i, value)
                key = self.key(point)
                context = [j for j in choices if j != i]
                tried = key[i] in lost or any(
                    k[i] == key[i] and all(k[j] == ckey[j] for j in context)
                    for k, o in self.seen.items()
                    if o.f is not None
                )
                if not tried:
                    why = f"{self.axes[i].name} at the best point (every choice tried there)"
                    moves.append(Move(point, 0.0, i, why))
        return moves

    def _lost_to(self, i: int, value: object) -> set[object]:
        """The values of choice ``i`` measured ``CHOICE_LOSS`` worse than ``value`` at a point
        otherwise the same: not worth flipping back to from elsewhere (per-item fetching that
        lost 40% to per-batch fetching will not win after a count changes)."""
        by_rest: dict[Key, dict[object, float]] = {}
        for key, observed in self.seen.items():
            if observed.f is not None and math.isfinite(observed.f):
                rest = key[:i] + key[i + 1 :]
                by_rest.setdefault(rest, {})[key[i]] = observed.f
        lost: set[object] = set()
        for values in by_rest.values():
            here = values.get(value)
            if here is not None:
                margin = self._margin(CHOICE_LOSS, here)
                lost |= {v for v, f in values.items() if f > here + margin}
        return lost

    def _carried(self, center: Point, before: Point, after: Point) -> Point | None:
        """``center`` with the changes from ``before`` to ``after``; a numeric value is
        carried only where it moves the center the same way (raising a concurrency that
        helped elsewhere is not the same as lowering the center's to that value)."""
        point = center
        for i, axis in enumerate(self.axes):
            if axis.normalize(before[i]) == axis.normalize(after[i]):
                continue
            if axis.numeric:
                step = float(after[i]) - float(before[i])  # type: ignore[arg-type]
                if (float(after[i]) - float(center[i])) * step <= 0:  # type: ignore[arg-type]
                    return None
            point = self._with(point, i, after[i])
        return point

    def one_knob(self, before: Observed, after: Observed) -> bool:
        """Whether ``after`` differs from ``before`` in one numeric knob only."""
        pairs = zip(self.key(before.point), self.key(after.point), strict=True)
        changed = [i for i, (a, b) in enumerate(pairs) if a != b]
        return len(changed) == 1 and self.axes[changed[0]].numeric

    def extrapolate(self, before: Observed, after: Observed) -> list[Move]:
        """The step from ``before`` to ``after`` that improved it, twice as far, as far, and
        one step, in that order, when untried (a pattern move with expansion: a knob far
        from its best value gets there in a few doublings, not one value at a time)."""
        pairs = zip(before.point, after.point, strict=True)
        i = next(i for i, (a, b) in enumerate(pairs) if a != b)
        axis = self.axes[i]
        origin, here = axis.encode(before.point[i]), axis.encode(after.point[i])
        side = 1 if here > origin else -1
        values: list[Scalar] = []
        for factor in (2.0, 1.0):
            value = self._step(axis, after.point[i], here + factor * (here - origin), side)
            if value is not None:
                values.append(value)
        values += [
            v
            for v in self.neighbour_values(after, i)
            if (float(v) - float(after.point[i])) * side > 0  # type: ignore[arg-type]
        ]
        moves: list[Move] = []
        for value in values:
            point = self._with(after.point, i, value)
            key = self.key(point)
            if key in self.seen or any(self.key(m.point) == key for m in moves):
                continue
            why = "the step that improved it, further (pattern move)"
            moves.append(Move(point, 0.0, i, why))
        return moves
