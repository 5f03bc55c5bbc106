"""News per release: how much each new release moved the GDP nowcast, from the student itself.

The student runs once on a batch of input rows: the previous inputs plus more and more of the
new releases (ordered by release time). Releases at different times are attributed in order
(impact_k = y_k - y_{k-1}); releases sharing one release time (the month-end market batch) have
no natural order, so they get Shapley values over every subset of their group (all 2^n rows in
the same batch), or the fixed order above `SHAPLEY_MAX`. The outputs are float32; every
difference is taken in float64, where the difference of two float32 numbers of similar size is
exact, so the ordered impacts telescope exactly to the revision y_K - y_0 and a Shapley group's
sum is off by float64 rounding only (~1e-16 pp).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby

import numpy as np

__all__ = [
    "SHAPLEY_MAX",
    "Attribution",
    "Player",
    "attribute",
    "coalitions",
    "impacts_of",
    "shapley",
]

# Largest group of simultaneous releases given Shapley values: 2^8 = 256 rows in one batch
# (sub-millisecond for the students we ship). Above it the group is attributed in the fixed
# order (release time, then the manifest's series order, then period), which sums as exactly.
SHAPLEY_MAX = 8

# (input name, index into that input's array without the batch axis)
Cell = tuple[str, tuple[int, ...]]
# Runs the student on a batch: inputs by name -> (nowcast [B], band [B, 2]) as float32
Run = Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True, slots=True)
class Player:
    """One new release: where its value goes in the student's input (None: outside the input
    window, so it cannot move this nowcast), the float32 value, and its release time."""

    cell: Cell | None
    value: np.float32
    released_at: datetime


@dataclass(frozen=True, slots=True)
class Attribution:
    """The student's nowcast and band with all releases, the nowcast without them, and each
    release's impact (in the order the players were given)."""

    nowcast: float
    band: tuple[float, float]
    previous: float
    impacts: list[float]
    shapley: bool  # True when some group of simultaneous releases got Shapley values

    @property
    def revision(self) -> float:
        return self.nowcast - self.previous


def _groups(players: Sequence[Player]) -> list[list[int]]:
    """Indices of `players` (already in release order) grouped by equal release time."""
    order = range(len(players))
    return [list(g) for _, g in groupby(order, key=lambda i: players[i].released_at)]


def coalitions(groups: Sequence[Sequence[int]], cap: int = SHAPLEY_MAX) -> list[frozenset[int]]:
    """Every set of releases the student must see, without repeats: for each group in turn,
    the releases of the groups before it plus every subset of the group (Shapley) or plus each
    prefix of the group (in order, above `cap`). The first is the empty set, the last all."""
    rows: dict[frozenset[int], None] = {frozenset(): None}
    before: frozenset[int] = frozenset()
    for group in groups:
        if 1 < len(group) <= cap:
            for mask in range(1 << len(group)):
                rows[before | {p for bit, p in enumerate(group) if mask >> bit & 1}] = None
        else:
            for k in range(1, len(group) + 1):
                rows[before | frozenset(group[:k])] = None
        before |= frozenset(group)
    return list(rows)


def shapley(value: Callable[[frozenset[int]], float], players: Sequence[int]) -> list[float]:
    """Shapley values of `players` in the game `value` (a float64 payoff per coalition, with
    the players outside this group fixed by the caller). Each marginal contribution is an exact
    float64 difference; `math.fsum` adds them correctly rounded, so players whose contributions
    are the same get exactly the same value."""
    n = len(players)
    weight = [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    out = []
    for i in players:
        others = [p for p in players if p != i]
        terms = []
        for mask in range(1 << (n - 1)):
            subset = frozenset(p for bit, p in enumerate(others) if mask >> bit & 1)
            terms.append(weight[len(subset)] * (value(subset | {i}) - value(subset)))
        out.append(math.fsum(terms))
    return out


def _joined(
    value: Callable[[frozenset[int]], float], before: frozenset[int]
) -> Callable[[frozenset[int]], float]:
    """The game of one group: its coalitions always joined by the releases before it."""
    return lambda subset: value(before | subset)


def impacts_of(
    value: Callable[[frozenset[int]], float],
    groups: Sequence[Sequence[int]],
    cap: int = SHAPLEY_MAX,
) -> dict[int, float]:
    """Each player's impact: in order across groups, Shapley within a group of at most `cap`."""
    impacts: dict[int, float] = {}
    before: frozenset[int] = frozenset()
    for group in groups:
        if 1 < len(group) <= cap:
            values = shapley(_joined(value, before), group)
            impacts.update(zip(group, values, strict=True))
        else:
            for k, p in enumerate(group):
                prefix = before | frozenset(group[:k])
                impacts[p] = value(prefix | {p}) - value(prefix)
        before |= frozenset(group)
    return impacts


def _batch(
    base: dict[str, np.ndarray], players: Sequence[Player], sets: Sequence[frozenset[int]]
) -> dict[str, np.ndarray]:
    """One input row per set: `base` with the values of the set's players."""
    batch = {name: np.repeat(array[None], len(sets), axis=0) for name, array in base.items()}
    for i, p in enumerate(players):  # in release order: a later revision of a cell wins
        if p.cell is not None:
            name, index = p.cell
            rows = [r for r, s in enumerate(sets) if i in s]
            flat = batch[name].reshape(len(sets), -1)  # a view: np.repeat's result is contiguous
            flat[rows, int(np.ravel_multi_index(index, base[name].shape))] = p.value
    return batch


def attribute(
    run: Run, base: dict[str, np.ndarray], players: Sequence[Player], cap: int = SHAPLEY_MAX
) -> Attribution:
    """Attribute the move from the student's nowcast on `base` (inputs without the batch axis)
    to its nowcast with every player's value, in one batch. `players` must be in release order
    (time, then series, then period); simultaneous ones are grouped here."""
    groups = _groups(players)
    sets = coalitions(groups, cap)
    nowcast, band = run(_batch(base, players, sets))
    # float64 before any difference: exact for float32 inputs (see the module docstring)
    payoff = dict(zip(sets, nowcast.astype(np.float64).tolist(), strict=True))
    impacts = impacts_of(payoff.__getitem__, groups, cap)
    full = sets.index(frozenset(range(len(players))))
    return Attribution(
        nowcast=payoff[sets[full]],
        band=(float(band[full, 0]), float(band[full, 1])),
        previous=payoff[frozenset()],
        impacts=[impacts[i] for i in range(len(players))],
        shapley=any(1 < len(g) <= cap for g in groups),
    )
