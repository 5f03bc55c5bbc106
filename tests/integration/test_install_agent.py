"""deploy/install-agent.sh against a prefix directory: a light venv, config, unit, a running agent."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from device.mqtt import connect, parse_broker_url
from tests.support.waits import wait_until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, quick_price_bundle) -> Path:
    prefix = tmp_path_factory.mktemp("gateway") / "opt"
    password = prefix.parent / "kiosk.password"
    password.write_text("s3cret\n")
    pub = next(quick_price_bundle.keys_dir.glob("*.pub"))
    result = subprocess.run(
        [
            "bash",
            str(ROOT / "deploy" / "install-agent.sh"),
            "--agent-id",
            "kiosk-07",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--trusted-key",
            str(pub),
            "--password-file",
            str(password),
            "--prefix",
            str(prefix),
            "--systemd-dir",
            str(prefix / "systemd"),
            "--no-enable",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "config ok: agent kiosk-07, 1 trusted key(s)" in result.stdout
    return prefix


def test_edge_venv_has_no_training_stack(installed: Path) -> None:
    python = installed / "venv" / "bin" / "python"
    for module in ("torch", "pandas", "statsmodels", "arch", "onnx", "typer"):
        probe = subprocess.run(
            [str(python), "-c", f"import {module}"], capture_output=True, check=False
        )
        assert probe.returncode != 0, f"{module} is importable in the edge install"
    assert (installed / "venv" / "bin" / "forecaster-agent").exists()
    cloud = subprocess.run(
        [str(installed / "venv" / "bin" / "forecaster"), "train", "x.toml"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cloud.returncode == 1
    assert cloud.stderr.count("\n") == 1
    assert "pip install 'forecaster[train]'" in cloud.stderr


def test_config_unit_and_secret(installed: Path) -> None:
    unit = (installed / "systemd" / "forecaster-agent.service").read_text()
    assert (
        f"ExecStart={installed}/venv/bin/forecaster-agent --config {installed}/etc/agent.toml"
        in unit
    )
    assert "@PREFIX@" not in unit
    env = installed / "etc" / "agent.env"
    assert env.read_text().strip() == "FORECASTER_AGENT_BROKER__PASSWORD=s3cret"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert "s3cret" not in (installed / "etc" / "agent.toml").read_text()


def test_installed_agent_serves_and_reports_status(
    installed: Path, broker, quick_price_bundle
) -> None:
    models = installed / "var" / "models"
    m = quick_price_bundle.path
    shutil.copytree(m, models / m.parts[-3] / m.parts[-2] / m.parts[-1], dirs_exist_ok=True)
    env = {**os.environ, "FORECASTER_AGENT_BROKER__URL": broker.url}
    statuses: list[dict] = []
    watcher = connect(parse_broker_url(broker.url), "install-watcher")
    watcher.on_message = lambda _c, _u, msg: statuses.append(json.loads(msg.payload))
    watcher.subscribe("fleet/kiosk-07/status", qos=1)
    agent = subprocess.Popen(
        [
            str(installed / "venv" / "bin" / "forecaster-agent"),
            "--config",
            str(installed / "etc" / "agent.toml"),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: any(s.get("online") for s in statuses), 30, "the installed agent online", 0.2
        )
        online = [s for s in statuses if s.get("online")]
        assert any(model.get("name") == m.parts[-2] for model in online[-1]["models"]), online[-1]
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        watcher.disconnect()
        watcher.loop_stop()
