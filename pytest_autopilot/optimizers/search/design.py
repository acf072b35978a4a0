"""The initial design: a few space-filling points before the model has anything to fit.

With one or two measured points a Gaussian process knows nothing about the length scales,
and its expected improvement sends the search to the corners of the space, where knobs such
as buffer sizes or worker counts are usually at their worst. A Latin hypercube instead puts
one point in each stratum of every dimension (centred in the stratum, on the log scale for
``log: true``), every choice about equally often; of a few seeded hypercubes the one whose
points are farthest from each other and from the starting point is kept. The design depends
on the seed and the starting point only, so every round (and a resumed one) continues the
same design."""

from __future__ import annotations

import random
from collections.abc import Sequence

from pytest_autopilot.config import ChoiceDimension
from pytest_autopilot.optimizers.search.model import distance2
from pytest_autopilot.optimizers.search.space import Axis, Encoder, Point

DESIGN_SIZE = 6
"""Space-filling points measured before the model chooses (after the starting point)."""

TRIES = 32
"""Seeded hypercubes compared for the largest smallest distance."""


def latin_hypercube(
    axes: Sequence[Axis], encoder: Encoder, start: Point, seed: int, size: int = DESIGN_SIZE
) -> list[Point]:
    """``size`` points, one per stratum of every dimension, spread as far apart as the seed's
    ``TRIES`` hypercubes allow (the starting point counts as already placed)."""
    rng = random.Random(seed * 7_919 + 17)
    anchor = encoder.encode(start)
    best: list[Point] = []
    best_spread = -1.0
    for _ in range(TRIES):
        columns = []
        for axis in axes:
            order = list(range(size))
            rng.shuffle(order)
            if isinstance(axis.dim, ChoiceDimension):
                choices = list(axis.dim.choices)
                offset = rng.randrange(len(choices))
                columns.append([choices[(k + offset) % len(choices)] for k in order])
            else:
                columns.append([axis.decode((k + 0.5) / size) for k in order])
        points: list[Point] = [tuple(column[k] for column in columns) for k in range(size)]
        encoded = [anchor, *(encoder.encode(p) for p in points)]
        spread = min(distance2(a, b) for i, a in enumerate(encoded) for b in encoded[i + 1 :])
        if spread > best_spread:
            best, best_spread = points, spread
    return best
