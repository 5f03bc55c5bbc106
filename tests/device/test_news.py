"""News per release on the device (device/news.py): the impacts of the releases since the
previous information sum to the revision for any student, exactly in release order and to float64
rounding within a group of simultaneous releases (Shapley values), on random releases and on
every release of the 2004Q1-2009Q3 test period replayed from the real panel."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.bundle import load_bundle
from device.keys import load_trusted_keys
from device.news import SHAPLEY_MAX, Player, attribute, coalitions, impacts_of, shapley
from device.panel import GdpLayout, Released, ReleasedPanel, check_release, quarter_of
from device.plugins.nowcast import compute_nowcast, nowcast_plugin
from device.runtime import OnnxModel
from device.schemas import MacroRelease, Nowcast
from device.track import ReleaseGroup
from forecaster.data.macro import load_macro_panel, release_stream
from tests.device.test_plugins import fake_host
from tests.support.fake_host import message

T0 = datetime(2008, 8, 29, 21, tzinfo=UTC)
# The test period, as in docs/NOWCAST.md: every release of 2004Q1..2009Q3 is checked.
TEST_START, TEST_END = datetime(2004, 1, 1, tzinfo=UTC), datetime(2009, 10, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def student(quick_bundles) -> OnnxModel:
    gdp = quick_bundles["gdp"]
    return OnnxModel(load_bundle(gdp.path, load_trusted_keys([gdp.keys_dir])))


@pytest.fixture(scope="module")
def layout(student: OnnxModel) -> GdpLayout:
    return GdpLayout.from_manifest(student.manifest)


@pytest.fixture(scope="module")
def releases(layout: GdpLayout) -> list[MacroRelease]:
    """Every release of the panel of the bundle's own series (its manifest's `series`)."""
    panel = load_macro_panel(date(1985, 1, 1), series=list(layout.series))
    return [MacroRelease.model_validate(r) for r in release_stream(panel)]


def run_of(student: OnnxModel):
    def run(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        outputs, _ = student.run(batch)
        return outputs["nowcast"], outputs["band"]

    return run


def one(student: OnnxModel, inputs: dict[str, np.ndarray]) -> float:
    outputs, _ = student.run({k: v[None] for k, v in inputs.items()})
    return float(outputs["nowcast"][0])


@settings(max_examples=60, deadline=None)
@given(
    cut=st.integers(0, 10_000),
    picks=st.lists(
        st.tuples(st.integers(0, 10_000), st.floats(-20, 20), st.integers(0, 3)),
        min_size=1,
        max_size=12,
    ),
)
def test_impacts_sum_to_the_revision_for_random_releases_and_a_real_student(
    student: OnnxModel, layout: GdpLayout, releases: list[MacroRelease], cut: int, picks: list
) -> None:
    # the real information set at a random release of 1990-2009, then random new values in
    # random cells, at up to four release times (ties make Shapley groups)
    panel = ReleasedPanel()
    stop = releases[2000 + cut % (len(releases) - 2000)].released_at
    for r in releases:
        if r.released_at <= stop:
            panel.apply(check_release(r, layout.known))
    quarter = quarter_of(stop)
    monthly, gdp = panel.inputs(layout, quarter)
    base = {"monthly": monthly[0], "gdp": gdp[0]}
    cells = [("monthly", (i, j)) for i in range(layout.months) for j in range(len(layout.series))]
    cells += [("gdp", (k,)) for k in range(layout.gdp_lags)]
    players = sorted(
        (
            Player(cells[c % len(cells)], np.float32(v), stop + timedelta(hours=t))
            for c, v, t in picks
        ),
        key=lambda p: p.released_at,
    )
    news = attribute(run_of(student), base, players)
    assert len(news.impacts) == len(players)
    if news.shapley:
        assert abs(math.fsum(news.impacts) - news.revision) <= 1e-9
    else:
        assert sum(news.impacts) == news.revision  # telescoping float64 differences: exact
    # the ends of the batch are the student's own nowcasts without and with the releases
    assert news.previous == one(student, base)
    full = {k: v.copy() for k, v in base.items()}
    for p in players:
        full[p.cell[0]][p.cell[1]] = p.value
    assert news.nowcast == one(student, full)


def permutation_shapley(value, players: list[int]) -> list[float]:
    """Shapley values by their definition: the mean marginal contribution over all orders."""
    totals = dict.fromkeys(players, 0.0)
    orders = list(itertools.permutations(players))
    for order in orders:
        seen: frozenset[int] = frozenset()
        for p in order:
            totals[p] += value(seen | {p}) - value(seen)
            seen |= {p}
    return [totals[p] / len(orders) for p in players]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 6), seed=st.integers(0, 2**32 - 1))
def test_shapley_is_symmetric_efficient_and_the_mean_over_orders(n: int, seed: int) -> None:
    rng = random.Random(seed)
    raw = {
        frozenset(s): rng.uniform(-3, 3)
        for k in range(n + 1)
        for s in itertools.combinations(range(n), k)
    }

    def symmetric(s: frozenset[int]) -> float:  # players 0 and 1 are interchangeable
        swapped = frozenset({0: 1, 1: 0}.get(p, p) for p in s)
        return raw[s] + raw[swapped]

    players = list(range(n))
    values = shapley(symmetric, players)
    assert values[0] == values[1]  # exactly: the same marginal contributions, fsum'd
    assert abs(math.fsum(values) - (symmetric(frozenset(players)) - symmetric(frozenset()))) < 1e-12
    np.testing.assert_allclose(values, permutation_shapley(symmetric, players), atol=1e-12)


def test_identical_simultaneous_releases_share_the_impact_equally(student, layout) -> None:
    # the same value for the same cell twice at one time: a symmetric game for a real student
    base = {
        "monthly": np.full((layout.months, len(layout.series)), np.nan, np.float32),
        "gdp": np.array([1.0] * layout.gdp_lags, np.float32),
    }
    cell = ("monthly", (layout.months - 2, 0))
    twins = [Player(cell, np.float32(4.0), T0), Player(cell, np.float32(4.0), T0)]
    other = Player(("gdp", (0,)), np.float32(-3.0), T0)
    news = attribute(run_of(student), base, [*twins, other])
    assert news.shapley and news.impacts[0] == news.impacts[1] != 0.0
    assert abs(math.fsum(news.impacts) - news.revision) <= 1e-9


def test_groups_above_the_cap_fall_back_to_the_fixed_order() -> None:
    n = SHAPLEY_MAX + 1
    group = list(range(n))
    assert len(coalitions([group])) == n + 1  # the prefixes only
    assert len(coalitions([list(range(SHAPLEY_MAX))])) == 2**SHAPLEY_MAX
    value = {frozenset(range(k)): float(k * k) for k in range(n + 1)}.__getitem__
    impacts = impacts_of(value, [group])
    assert [impacts[i] for i in group] == [float(2 * k + 1) for k in range(n)]


def test_every_release_of_the_test_period_is_explained_exactly(
    tmp_path, quick_bundles, student: OnnxModel, layout: GdpLayout, releases: list[MacroRelease]
) -> None:
    """The plugin replays 2004Q1-2009Q3 from the real panel, one message per release (each
    month-end market batch in a shuffled order): every published nowcast's impacts sum to its
    revision, the revision starts from the previous release time's nowcast, and a batch's
    final split does not depend on the order its releases arrived in."""
    host = fake_host(tmp_path, quick_bundles["gdp"])
    service = nowcast_plugin(host)
    service.install()
    handle = host.handler("macro/x")
    shuffle = random.Random(13)
    checked = shapley_groups = 0
    last: dict[str, Nowcast] = {}  # quarter -> the last nowcast of the previous release time
    for r in releases:  # what was released before the test period, straight into the panel
        if r.released_at < TEST_START:
            service.panel.apply(check_release(r, layout.known))
    period = [r for r in releases if TEST_START <= r.released_at < TEST_END]
    for _, same_time in itertools.groupby(period, key=lambda r: r.released_at):
        batch = list(same_time)
        shuffle.shuffle(batch)
        nowcasts = []
        for r in batch:
            [out] = handle(message(f"macro/{r.series}", r.model_dump_json().encode())).messages
            nowcasts.append(Nowcast.model_validate_json(out.payload))
        for n in nowcasts:
            checked += 1
            total = math.fsum(i.impact_pp for i in n.impacts)
            if n.attribution == "sequential":
                assert sum(i.impact_pp for i in n.impacts) == n.revision == n.nowcast - n.previous
            else:
                assert abs(total - n.revision) <= 1e-9
            if n.quarter in last:  # the batch moves the nowcast on from the previous time's
                assert abs(n.previous - last[n.quarter].nowcast) <= 1e-6
        final = nowcasts[-1]
        assert {(i.series, i.period) for i in final.impacts} == {
            (r.series, r.period) for r in batch
        }
        if len(batch) > 1:
            shapley_groups += 1
            assert final.attribution == "shapley"
            # order-free: the same batch in release-stream order gives the same split
            again = attribute_batch(host.models.by_task("gdp")[0], layout, service.panel, final)
            assert again == {(i.series, i.period): i.impact_pp for i in final.impacts}
        last[final.quarter] = final
    assert checked == len(period) and shapley_groups >= 60  # one batch per month-end
    # the track: every release time of the last two quarters, the latest entry = the nowcast
    track = service.tracks["us"].around(final.quarter)
    assert {e.quarter for e in track} == {"2009Q2", "2009Q3"}
    assert (track[-1].nowcast, track[-1].impacts) == (final.nowcast, final.impacts)


def attribute_batch(model, layout: GdpLayout, panel: ReleasedPanel, final: Nowcast) -> dict:
    """The impacts of `final`'s releases computed again, with them in release-stream order."""
    group = ReleaseGroup()
    for i in sorted(final.impacts, key=lambda i: (layout.known.index(i.series), i.period)):
        release = MacroRelease(
            series=i.series, period=i.period, value=i.value, released_at=i.released_at
        )
        group = group.add(release, None if i.previous is None else Released(i.previous, T0))
    nowcast = compute_nowcast("x", model, layout, panel, group)
    return {(i.series, i.period): i.impact_pp for i in nowcast.impacts}
