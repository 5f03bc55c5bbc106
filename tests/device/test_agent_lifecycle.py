"""The agent without a broker: start-up errors, backoff, stopping while unreachable, model swaps."""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.agent import Agent
from device.cli import main
from device.errors import ConfigError
from device.modelset import ModelSet
from device.mqtt import backoff_delay
from device.outbox import Outbox, WindowState
from device.settings import ENV_PREFIX, load_settings
from tests.support.ports import free_port
from tests.support.waits import wait_until


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def config(tmp_path: Path, bundle, **extra: str) -> Path:
    """An agent pointed at a port where nothing listens."""
    lines = {
        "registry": f'"{bundle.registry}"',
        "keys": f'["{bundle.keys_dir}"]',
        **extra,
    }
    path = tmp_path / "agent.toml"
    path.write_text(
        'agent_id = "unit"\n'
        f'[broker]\nurl = "mqtt://127.0.0.1:{free_port()}"\n'
        "reconnect_min_s = 0.05\nreconnect_max_s = 0.2\n"
        f"[models]\ndir = {lines['registry']}\ntrusted_keys = {lines['keys']}\n"
        "[outbox]\nflush_timeout_s = 1.0\n"
    )
    return path


@given(attempt=st.integers(0, 200), base=st.floats(0.01, 5), cap=st.floats(0.01, 60))
def test_backoff_is_exponential_capped_and_jittered(attempt: int, base: float, cap: float) -> None:
    ceiling = min(cap, base * 2.0**attempt)
    delay = backoff_delay(attempt, base, cap, random.Random(attempt))
    assert ceiling / 2 <= delay <= ceiling
    assert backoff_delay(attempt + 1, base, cap, random.Random(0)) <= min(
        cap, base * 2.0 ** (attempt + 1)
    )


def test_jitter_spreads_a_fleet_out() -> None:
    rng = random.Random(1)
    delays = {round(backoff_delay(5, 0.5, 5.0, rng), 3) for _ in range(50)}
    assert len(delays) > 40
    assert min(delays) >= 2.5


def test_the_agent_stops_promptly_while_the_broker_is_unreachable(
    tmp_path: Path, quick_price_bundle, caplog: pytest.LogCaptureFixture
) -> None:
    agent = Agent(load_settings(config(tmp_path, quick_price_bundle)))
    caplog.set_level(logging.INFO, logger="device.agent.core")
    agent.start()
    wait_until(  # backing off
        lambda: any("reconnecting in" in r.getMessage() for r in caplog.records),
        10,
        "the agent to try the broker",
    )
    started = time.monotonic()
    agent.stop()
    assert time.monotonic() - started < 3.0
    assert agent.fatal is None
    status = agent.status(online=False)
    assert not status.online
    assert [m["id"] for m in status.models] == [m.model_id for m in agent.models.models]
    assert status.counters["received"] == 0


def test_swapping_the_model_set_is_atomic_and_shows_in_status(
    tmp_path: Path, quick_price_bundle
) -> None:
    agent = Agent(load_settings(config(tmp_path, quick_price_bundle)))
    before = agent.models
    assert before.models
    after = agent.update_models(lambda current: ModelSet(rejected=current.rejected))
    assert agent.models is after
    assert agent.status().models == []
    agent.stop()


def test_saved_windows_survive_a_start_without_models(tmp_path: Path, quick_price_bundle) -> None:
    empty = tmp_path / "no-models"
    empty.mkdir()
    settings = load_settings(config(tmp_path, quick_price_bundle, registry=f'"{empty}"'))
    closes = np.linspace(100.0, 163.0, 64)
    box = Outbox(settings.outbox_path, settings.outbox.max_bytes)
    box.commit([], [WindowState("SPX", 63, "2020-03-31T00:00:00+00:00", 64, closes)])
    box.close()
    agent = Agent(settings)
    assert agent.models.models == ()
    [state] = agent.window_states()
    np.testing.assert_array_equal(state.closes, closes)  # kept for the model deployed later
    assert state.last_seq == 63
    agent.stop()


def test_missing_keys_or_models_are_config_errors(tmp_path: Path, quick_price_bundle) -> None:
    path = config(tmp_path, quick_price_bundle, keys=f'["{tmp_path / "nokeys"}"]')
    with pytest.raises(ConfigError, match="trusted key path"):
        Agent(load_settings(path))
    (tmp_path / "empty").mkdir()
    path = config(tmp_path, quick_price_bundle, keys=f'["{tmp_path / "empty"}"]')
    with pytest.raises(ConfigError, match="no trusted public keys"):
        Agent(load_settings(path))
    path = config(tmp_path, quick_price_bundle, registry=f'"{tmp_path / "nomodels"}"')
    with pytest.raises(ConfigError, match="models directory"):
        Agent(load_settings(path))


def test_cli_errors_are_one_line_with_exit_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path / "missing.toml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("forecaster-agent: error: ") and err.count("\n") == 1
    (tmp_path / "bad.toml").write_text("[broker]\nurl = 5\nnope = 1\n")
    assert main(["--config", str(tmp_path / "bad.toml")]) == 1
    err = capsys.readouterr().err
    assert "broker.nope" in err and "Traceback" not in err and err.count("\n") == 1
