"""Agent settings: TOML file, FORECASTER_AGENT_* overrides, unknown keys refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from device.errors import ConfigError
from device.settings import ENV_PREFIX, AgentSettings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "agent.example.toml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_example_config_loads_and_documents_every_key() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.agent_id == "kiosk-01"
    assert settings.broker.address().tls
    text = EXAMPLE.read_text()
    sections = {None: AgentSettings.model_fields}
    for name, f in AgentSettings.model_fields.items():
        if hasattr(f.annotation, "model_fields"):
            sections[name] = f.annotation.model_fields
            assert f"[{name}]" in text
    for section, fields in sections.items():
        for key in fields:
            if section is None and key in sections:
                continue
            assert re.search(rf"^#? ?{key} = ", text, re.MULTILINE), f"{section}.{key} undocumented"


def test_relative_paths_are_resolved_against_the_config_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[models]\ndir = "reg"\ntrusted_keys = ["k"]\n'))
    assert settings.models.dir == tmp_path / "reg"
    assert settings.models.trusted_keys == [tmp_path / "k"]
    assert settings.outbox_path == tmp_path / "state" / "outbox.sqlite"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path, 'agent_id = "a1"\n[broker]\nurl = "mqtt://h:1"\nkeepalive_s = 9\n')
    monkeypatch.setenv("FORECASTER_AGENT_BROKER__URL", "mqtts://other:8883")
    monkeypatch.setenv("FORECASTER_AGENT_BROKER__PASSWORD", "s3cret")
    monkeypatch.setenv("FORECASTER_AGENT_SYMBOLS", '["SPX", "NDX"]')
    settings = load_settings(config)
    assert settings.agent_id == "a1"
    assert settings.broker.keepalive_s == 9  # the rest of the section still comes from the file
    assert settings.symbols == ["SPX", "NDX"]
    address = settings.broker.address()
    assert (address.host, address.port, address.tls, address.password) == (
        "other",
        8883,
        True,
        "s3cret",
    )
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1\n", "bogus: Extra inputs are not permitted"),
        ("[broker]\nport = 1883\n", "broker.port: Extra inputs are not permitted"),
        ("[nope]\nx = 1\n", "nope: Extra inputs are not permitted"),
        ('[broker]\nurl = "http://x"\n', "broker: broker URL 'http://x' is not mqtt://"),
        ("[broker]\nreconnect_min_s = 9\nreconnect_max_s = 1\n", "reconnect_max_s must be"),
        ('agent_id = "a/b"\n', "agent_id: String should match pattern"),
        ('symbols = ["A", "B/C"]\n', "symbols must not"),
        ("[outbox]\nmax_bytes = 10\n", "outbox.max_bytes"),
        ("agent_id = \n", "not valid TOML"),
    ],
)
def test_bad_settings_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_settings(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_unknown_environment_variables_are_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path, "")
    monkeypatch.setenv("FORECASTER_AGENT_BROKER__PASWORD", "typo")
    monkeypatch.setenv("FORECASTER_AGENT_LOGLEVEL", "DEBUG")
    with pytest.raises(
        ConfigError, match="FORECASTER_AGENT_BROKER__PASWORD, FORECASTER_AGENT_LOGLEVEL"
    ):
        load_settings(config)


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
