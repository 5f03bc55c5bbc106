"""The bar handler's calibration step on the quick SPX bundle and real S&P 500 closes: what it
publishes, and that its state, committed with the window in one outbox transaction, resumes
exactly."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.agent.bar_handler import BarHandler
from device.agent.calibrators import SNAPSHOT_EVERY, Calibrators, load_calibration
from device.agent.host import Outcome
from device.calibration import Calibrator
from device.health import LatencyWindow
from device.keys import load_trusted_keys
from device.modelset import LoadedModel, ModelSet, load_model_set
from device.outbox import Outbox
from device.schemas import PriceForecast
from device.settings import AgentSettings, CalibrationSection
from tests.support.accuracy import pooled
from tests.support.calibration import is_fresh
from tests.support.clients import bar_payload, sp500_closes
from tests.support.fake_host import message

BARS = sp500_closes(64 + 140)


@pytest.fixture(scope="module")
def models(quick_price_bundle) -> ModelSet:
    return load_model_set(
        quick_price_bundle.registry, load_trusted_keys([quick_price_bundle.keys_dir])
    )


class Run:
    """A bar handler over a real outbox in `state`, as the agent builds it (core.py)."""

    def __init__(self, state: Path, models: ModelSet, **calibration: object) -> None:
        self.models = models
        settings = AgentSettings(agent_id="unit", state_dir=state)
        self.outbox = Outbox(settings.outbox_path, 2**26, background_checkpoints=False)
        section = CalibrationSection.model_validate(calibration)
        self.handler = BarHandler(
            settings,
            lambda: self.models,
            self.outbox.windows(),
            Counter(),
            LatencyWindow(),
            lambda *_: pytest.fail("no inference error expected"),
            Calibrators(section, load_calibration(settings.outbox_path)),
        )

    def feed(self, seqs: range, symbol: str = "SPX") -> dict[int, PriceForecast]:
        """Handle and commit each bar as the agent does (one transaction per bar)."""
        out = {}
        for seq in seqs:
            payload = bar_payload(symbol, seq, *BARS[seq])
            outcome = self.handler.handle(message(f"market/{symbol}/bar", payload)) or Outcome()
            # as the agent commits a pass: the bar's outputs, the batched forecasts, the states
            messages = outcome.messages + self.handler.flush()
            self.outbox.commit(
                messages,
                self.handler.window_states(),
                writes=outcome.writes + self.handler.state_writes(),
            )
            for m in messages:
                f = PriceForecast.model_validate_json(m.payload)
                out[f.seq] = f
        return out

    def close(self) -> None:
        self.outbox.close()


def fields(f: PriceForecast) -> tuple[object, ...]:
    return (f.returns, f.prices, f.raw, f.correction)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)
@given(cut=st.integers(64, len(BARS) - 2))
def test_a_restart_resumes_the_committed_state_exactly(
    tmp_path_factory: pytest.TempPathFactory, models: ModelSet, cut: int
) -> None:
    steady = Run(tmp_path_factory.mktemp("steady"), models)
    expected = steady.feed(range(len(BARS)))
    steady.close()
    state = tmp_path_factory.mktemp("cut")
    first = Run(state, models)
    got = first.feed(range(cut))
    first.outbox._db.close()  # no clean close: what is committed is all there is
    got |= Run(state, models).feed(range(cut, len(BARS)))
    assert sorted(got) == sorted(expected)
    assert all(fields(got[s]) == fields(expected[s]) for s in expected)


def test_published_forecasts_carry_raw_and_correction_and_never_cross(
    tmp_path: Path, models: ModelSet
) -> None:
    run = Run(tmp_path, models)
    [model] = models.window_models
    w = model.manifest.window or 0
    out = run.feed(range(len(BARS)))
    assert sorted(out) == list(range(w - 1, len(BARS)))
    for f in out.values():
        returns, raw, correction = (np.array(a) for a in (f.returns, f.raw, f.correction))
        np.testing.assert_allclose(returns, raw + correction, atol=1e-12)
        assert (np.diff(returns, axis=1) >= 0).all()
        np.testing.assert_allclose(f.prices, f.last_close * np.exp(returns), rtol=1e-12)
    # nothing scored yet at the first forecast; later ones are corrected from the scores
    assert is_fresh(out[w - 1]) and not is_fresh(out[len(BARS) - 1])
    [acc] = run.handler.calibrators.accuracy(models.window_models)
    assert acc.symbol == "SPX" and acc.model == f"{model.model_id}@{model.ref.version}"
    # forecasts published since the first, per horizon, scored once their horizon has passed
    n = len(out)
    assert acc.scored == sum(n - h for h in model.manifest.horizons or [])
    assert set(acc.coverage) == {"80", "90"} and all(0 <= c <= 1 for c in acc.coverage.values())
    assert acc.pinball > 0


def test_a_new_model_version_starts_its_own_state(tmp_path: Path, models: ModelSet) -> None:
    run = Run(tmp_path, models)
    [old] = models.window_models
    split = 130
    before = run.feed(range(split))
    assert not is_fresh(before[split - 1])
    new = LoadedModel(model=old.model, ref=old.ref.model_copy(update={"version": "v2"}))
    run.models = ModelSet((new,))
    after = run.feed(range(split, len(BARS)))
    # The same graph under a new version: its first forecast is corrected as at a fresh start.
    assert is_fresh(after[split])
    [acc] = run.handler.calibrators.accuracy(run.models.window_models)
    assert acc.model.endswith("@v2")
    assert acc.scored == sum(len(after) - h for h in old.manifest.horizons or [])
    run.close()
    # ... and what is committed is the new version's state, not the old one's
    [(key, blob)] = load_calibration(tmp_path / "outbox.sqlite").items()
    assert key == ("SPX", old.model_id)
    cal = Calibrator.from_bytes(blob)
    want = pooled(cal.accuracy())
    assert want is not None
    assert acc.scored == want.scored
    assert acc.pinball == pytest.approx(want.pinball, abs=1e-7)  # rounded to 7 digits
    assert acc.coverage == pytest.approx(want.coverage, abs=1e-4)  # rounded to 4


def test_calibration_can_be_turned_off(tmp_path: Path, models: ModelSet) -> None:
    run = Run(tmp_path, models, enabled=False)
    out = run.feed(range(len(BARS)))
    assert all(f.raw is None and f.correction is None for f in out.values())
    assert run.handler.calibrators.accuracy(models.window_models) == []
    assert load_calibration(tmp_path / "outbox.sqlite") == {}


def test_a_bar_logs_a_small_row_and_loading_replays_it_exactly(
    tmp_path: Path, models: ModelSet
) -> None:
    run = Run(tmp_path, models)
    [model] = models.window_models
    run.feed(range(len(BARS)))
    run.close()
    db = sqlite3.connect(tmp_path / "outbox.sqlite")
    logged = db.execute("SELECT COUNT(*) FROM calibration_log").fetchone()[0]
    db.close()
    # snapshots every SNAPSHOT_EVERY bars; the bars since the last one are in the log
    forecasts = len(BARS) - (model.manifest.window or 0) + 1
    assert 0 < logged == (forecasts - 1) % SNAPSHOT_EVERY
    [(key, blob)] = load_calibration(tmp_path / "outbox.sqlite").items()
    assert blob == run.handler.calibrators.state(key[0], model)
