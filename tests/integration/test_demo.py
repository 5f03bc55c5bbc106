"""`forecaster demo` end to end on a quick pre-trained registry: a broker, the agent, the web
gateway, a replay of real S&P 500 bars, the live view and the summary, with nothing left running
afterwards."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from device.mqtt import connect, parse_broker_url
from forecaster.ops.demo import start_broker
from tests.conftest import TrainedBundle

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def demo_processes() -> list[psutil.Process]:
    """Processes started by a demo: their command lines name its temporary directory."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any("forecaster-demo-" in part for part in proc.info["cmdline"] or []):
                found.append(proc)
    return found


@pytest.mark.parametrize("kind", ["mosquitto", "embedded"])
def test_demo_shows_forecasts_prints_a_summary_and_stops_everything(
    quick_price_bundle: TrainedBundle, kind: str
) -> None:
    before = {p.pid for p in demo_processes()}
    result = subprocess.run(
        [
            sys.executable, "-m", "forecaster.cli", "demo",
            "--registry", str(quick_price_bundle.registry),
            "--duration", "6", "--rate", "40", "--broker-kind", kind,
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert ("Mosquitto" if kind == "mosquitto" else "embedded") in out
    assert "agent demo: serving price/" in out
    received = re.search(r"forecasts received: (\d+) price", out)
    assert received and int(received.group(1)) >= 100, out  # ~6 s x 40 bars/s after warm-up
    assert re.search(r"\+1d\s+│\s+\d+\s+│\s+\d+%", out), out  # a scored coverage row
    assert re.search(r"model latency \(agent inference\): p50 [\d.]+ ms, p99 [\d.]+ ms", out)
    assert re.search(r"bar -> forecast end to end: p50 [\d.]+ ms", out)
    assert "SPX" in out
    # The gateway ran beside it and served the forecasts the live view received.
    page = re.search(r"web page: (http://127\.0\.0\.1:\d+)/ \(phone\), \1/\?kiosk=1", out)
    assert page, out
    served = re.search(
        rf"web gateway {page.group(1)}: latest price forecast SPX seq (\d+) "
        r"\(up to date with the live view\)",
        out,
    )
    assert served and int(served.group(1)) >= 100, out
    assert {p.pid for p in demo_processes()} <= before


def test_embedded_broker_serves_mqtt5_qos1_and_stops(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        url, what = start_broker(tmp_path, stack, "embedded")
        assert "embedded" in what
        address = parse_broker_url(url)
        got: list[bytes] = []
        done = threading.Event()
        sub = connect(address, "sub")
        sub.on_message = lambda _c, _u, m: (got.append(m.payload), len(got) == 50 and done.set())
        sub.subscribe("market/+/bar", qos=1)
        pub = connect(address, "pub")
        infos = [pub.publish("market/SPX/bar", str(i), qos=1) for i in range(50)]
        for info in infos:
            info.wait_for_publish(5)
        assert done.wait(5)
        assert got == [str(i).encode() for i in range(50)]
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection((address.host, address.port), 1),
    ):
        pass
