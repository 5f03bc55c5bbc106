"""Gateway settings and its command line: the example documents every key, bad config is one
line and a non-zero exit, `hash` makes what [auth] takes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from device.errors import ConfigError
from device.web.auth import Authenticator
from device.web.settings import ENV_PREFIX, WebSettings, load_web_settings

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "deploy" / "web.example.toml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_example_loads_and_documents_every_key() -> None:
    settings = load_web_settings(EXAMPLE)
    assert settings.broker.username == "web" and settings.auth.enabled
    assert settings.broker.ca_file == EXAMPLE.parent / "ca.crt"  # relative to the file
    text = EXAMPLE.read_text()
    for name, field in WebSettings.model_fields.items():
        section = getattr(field.annotation, "model_fields", None)
        if section is None:
            assert f"\n{name} = " in text, name
            continue
        assert f"[{name}]" in text
        for key in section:
            assert f"\n{key} = " in text or f"\n# {key} = " in text, f"{name}.{key}"


def test_environment_wins_and_unknown_keys_are_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "web.toml"
    config.write_text("[http]\nport = 9000\n")
    monkeypatch.setenv("FORECASTER_WEB_HTTP__PORT", "9100")
    assert load_web_settings(config).http.port == 9100
    config.write_text("[http]\nprot = 9000\n")
    with pytest.raises(ConfigError, match=r"http\.prot"):
        load_web_settings(config)


def test_unknown_environment_variables_are_errors_like_the_agents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FORECASTER_WEB_HTTP__PROT", "9100")
    monkeypatch.setenv("FORECASTER_WEB_LOGLEVEL", "DEBUG")
    monkeypatch.setenv("FORECASTER_WEB_BROKER__PASSWORD", "fine")  # a real key is accepted
    with pytest.raises(
        ConfigError, match=r"unknown environment variables: FORECASTER_WEB_HTTP__PROT, "
        r"FORECASTER_WEB_LOGLEVEL$",
    ):  # fmt: skip
        load_web_settings(None)
    monkeypatch.delenv("FORECASTER_WEB_HTTP__PROT")
    monkeypatch.delenv("FORECASTER_WEB_LOGLEVEL")
    password = load_web_settings(None).broker.password
    assert password is not None and password.get_secret_value() == "fine"


def test_the_gateway_does_not_import_the_agents_runtime() -> None:
    # device/__init__ imports Agent and OnnxModel lazily: a gateway does not pay for them.
    code = (
        "import sys, device.web, device.web.cli, device.web.app\n"
        "heavy = [m for m in ('onnxruntime', 'apscheduler', 'device.agent') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from device import Agent, OnnxModel\n"
        "assert 'onnxruntime' in sys.modules and Agent.__name__ == 'Agent'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device.web.cli", *args], cwd=ROOT, input=stdin,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_bad_config_is_one_line_and_exit_1(tmp_path: Path) -> None:
    config = tmp_path / "web.toml"
    config.write_text('[http]\nhost = "0.0.0.0"\n')
    result = run_cli("--config", str(config))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "configure [auth]" in result.stderr


def test_hash_makes_what_auth_accepts() -> None:
    password = run_cli("hash", stdin="correct horse\n").stdout.strip()
    token_out = run_cli("hash", "--token").stdout.splitlines()
    token = token_out[0].split(": ")[1]
    settings = WebSettings.model_validate(
        {"auth": {"users": {"ana": password}, "tokens": [token_out[1].split(": ")[1]]}}
    )
    auth = Authenticator(settings.auth)
    import base64

    assert auth.allows("Basic " + base64.b64encode(b"ana:correct horse").decode())
    assert auth.allows(f"Bearer {token}")
    assert not auth.allows("Bearer " + token[:-1])


def test_loopback_config_is_what_the_demo_needs(tmp_path: Path) -> None:
    from device.web.settings import loopback_config

    config = tmp_path / "web.toml"
    config.write_text(loopback_config("mqtt://127.0.0.1:1883", 8123, "site1/"))
    settings = load_web_settings(config)
    assert (settings.http.host, settings.http.port, settings.topic_prefix) == (
        "127.0.0.1",
        8123,
        "site1/",
    )
    assert not settings.auth.enabled and settings.http.loopback
