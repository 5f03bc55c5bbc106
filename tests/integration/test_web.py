"""The web gateway in a real browser (Debian's Chromium, headless, driven by Playwright) against a
real Mosquitto, agent, `forecaster feed replay` and `feed macro`: the phone page shows what the
agent published, updates within 2 s of a bar, says "reconnecting" while the gateway is down and
recovers when it is back, with every symbol's latest forecast from the retained topics before any
new bar; the kiosk layout renders; offline, the installed app shows the last known values.
Screenshots go to the test's folder, and to the folder $FORECASTER_SCREENSHOTS names when set
(`FORECASTER_SCREENSHOTS=docs/img` refreshes the README's), so a test run leaves the tree clean."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from device.web.settings import loopback_config
from forecaster.ops.feeds import dataset_bars
from tests.conftest import Broker, TrainedBundle, free_port
from tests.integration.conftest import EDGE_ONLY, ROOT, Collector, Feed, agent_config
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS_ENV = "FORECASTER_SCREENSHOTS"
AGENT = "web-agent"
WARM = 70  # bars replayed: the students' window is 64, so the last 7 bars get forecasts
FORECASTER = [sys.executable, "-m", "forecaster.cli"]


class Gateway:
    """`forecaster-web` as an edge install runs it: a subprocess that cannot import the
    training stack."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        out = self.log.open("ab")
        cmd = [sys.executable, str(EDGE_ONLY), "device.web.cli", "--config", str(self.config)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=out)

        def connected() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            try:
                return bool(httpx.get(f"{self.url}/api/v1/gateway", timeout=1).json()["connected"])
            except httpx.HTTPError:
                return False

        wait_until(connected, timeout, "the gateway to connect to the broker", 0.1)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=15)


@pytest.fixture
def gateway(tmp_path: Path, broker: Broker) -> Iterator[Gateway]:
    port = free_port()
    config = tmp_path / "web.toml"
    config.write_text(loopback_config(broker.url, port) + "[stream]\nping_s = 2.0\n")
    gw = Gateway(config, port, tmp_path / "web.log")
    yield gw
    if gw.proc is not None and gw.proc.poll() is None:
        gw.proc.kill()


def number(text: str) -> float:
    return float(text.replace(",", "").replace("%", ""))


def screenshot(page: Any, out: Path, name: str, *, full_page: bool = False) -> None:
    """Into the test's folder, and into $FORECASTER_SCREENSHOTS (e.g. docs/img) when it is set."""
    folders = [out] + (
        [ROOT / os.environ[SCREENSHOTS_ENV]] if os.environ.get(SCREENSHOTS_ENV) else []
    )
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / name), full_page=full_page)


def latest_seqs(url: str) -> dict[str, int]:
    return {s["symbol"]: s["seq"] for s in httpx.get(f"{url}/api/v1/symbols", timeout=5).json()}


def wait_for_seqs(url: str, expected: dict[str, int], timeout: float = 5.0) -> None:
    wait_until(lambda: latest_seqs(url) == expected, timeout, f"the gateway to hold {expected}")


def run(*args: str) -> None:
    result = subprocess.run(
        [*FORECASTER, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_phone_page_live_stale_recovery_and_kiosk(  # noqa: PLR0915 - one scenario, in order
    tmp_path: Path,
    broker: Broker,
    quick_bundles: dict[str, TrainedBundle],
    agent_process,
    collector,
    feed: Feed,
    gateway: Gateway,
) -> None:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("chromium is not installed; .ci/run installs it with apt-get")

    config = agent_config(
        tmp_path / "agent.toml", broker.url, quick_bundles["price"], agent_id=AGENT
    )
    config.write_text(config.read_text() + '[nowcast]\ncron = ""\n')
    sub: Collector = collector("forecast/price/SPX", "nowcast/gdp/us", f"fleet/{AGENT}/status")
    agent_process(config)
    sub.wait_for(f"fleet/{AGENT}/status", lambda s: bool(s) and s[-1]["online"], 30)
    gateway.start()

    bars = dataset_bars("sp500", start=date(2018, 1, 1), limit=WARM + 2)
    run("feed", "replay", "--dataset", "sp500", "--start", "2018-01-01", "--limit", str(WARM),
        "--rate", "0", "--broker", broker.url)  # fmt: skip
    run("feed", "replay", "--dataset", "nasdaq", "--start", "2018-01-01", "--limit", str(WARM),
        "--rate", "0", "--broker", broker.url)  # fmt: skip
    run("feed", "macro", "--broker", broker.url, "--rate", "0", "--start", "2008-01-01",
        "--end", "2008-08-31")  # fmt: skip
    sent = sub.wait_for("forecast/price/SPX", lambda f: bool(f) and f[-1]["seq"] == WARM - 1, 30)[
        -1
    ]
    nowcast = sub.wait_for("nowcast/gdp/us", bool, 30)[-1]

    # Forecasts are retained: a subscriber that arrives after them gets the latest at once.
    late = collector("forecast/price/+")
    late.wait_for("forecast/price/+", lambda f: {x["symbol"] for x in f} == {"SPX", "NDX"}, 10)
    got = {m.topic: m for m in late.drain()}
    assert all(m.retain for m in got.values())
    assert json.loads(got["forecast/price/SPX"].payload)["seq"] == WARM - 1
    assert json.loads(got["forecast/price/NDX"].payload)["seq"] == WARM - 1

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        page = phone.new_page()
        page.goto(gateway.url)
        card = page.locator('article[data-symbol="SPX"]')
        rows = card.locator("tbody tr")
        page.wait_for_function(
            "s => document.querySelector('#conn').dataset.state === 'live' && "
            "document.querySelectorAll('article[data-symbol=\"SPX\"] tbody tr').length === s",
            arg=len(sent["horizons"]), timeout=10_000,
        )  # fmt: skip
        page.wait_for_function(
            "() => document.querySelector('#gdp [data-field=nowcast]') !== null", timeout=10_000
        )

        # The card shows what the agent published, to display rounding.
        median = sent["quantiles"].index(0.5)
        for k, horizon in enumerate(sent["horizons"]):
            row = rows.nth(k)
            assert row.get_attribute("data-horizon") == str(horizon)
            shown = number(row.locator('[data-field="median"]').inner_text())
            assert abs(shown - sent["prices"][k][median]) <= 0.006
            lo, hi = (
                number(t) for t in row.locator('[data-field="band"]').inner_text().split(" – ")
            )
            assert abs(lo - sent["prices"][k][0]) <= 0.006
            assert abs(hi - sent["prices"][k][-1]) <= 0.006
        assert (
            abs(number(card.locator('[data-field="last-close"]').inner_text()) - sent["last_close"])
            <= 0.006
        )
        assert sent["model"]["version"] in card.locator('[data-field="model"]').inner_text()
        assert card.locator(".trend li").count() >= 2
        assert (
            abs(number(page.locator("#gdp [data-field=nowcast]").inner_text()) - nowcast["nowcast"])
            <= 0.06
        )
        assert (
            page.locator(f'#fleet-list li[data-agent="{AGENT}"]')
            .inner_text()
            .startswith(f"{AGENT}: online")
        )
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
        screenshot(page, tmp_path, "web-phone.png", full_page=True)

        def bar_updates_page(bar_index: int) -> float:
            bar = bars[bar_index]
            shown = f"{bar.close:,.2f}"
            start = time.monotonic()
            feed.bar("SPX", bar.seq, bar.ts.strftime("%Y-%m-%dT%H:%M:%SZ"), bar.close)
            page.wait_for_function(
                "c => document.querySelector('article[data-symbol=\"SPX\"] [data-field=\"last-close\"]')"
                ".textContent === c",
                arg=shown, timeout=2_000,
            )  # fmt: skip
            return time.monotonic() - start

        assert bar_updates_page(WARM) < 2.0
        before = latest_seqs(gateway.url)
        assert before == {"SPX": bars[WARM].seq, "NDX": WARM - 1}

        # The gateway goes away: the page says so, keeps the last values, and comes back by itself.
        assert gateway.stop() == 0
        page.wait_for_function(
            "() => document.querySelector('#conn').dataset.state === 'reconnecting'", timeout=5_000
        )
        assert card.locator("tbody tr").count() == len(sent["horizons"])
        gateway.start()
        page.wait_for_function(
            "() => document.querySelector('#conn').dataset.state === 'live'", timeout=15_000
        )
        # Its view came back with the restart, before any new bar: every symbol's latest forecast
        # (retained price and trend topics), the retained nowcast and status.
        wait_for_seqs(gateway.url, before)
        spx = httpx.get(f"{gateway.url}/api/v1/symbols/SPX", timeout=5).json()
        assert spx["price"]["seq"] == spx["trend"]["seq"] == bars[WARM].seq
        recovered = httpx.get(f"{gateway.url}/api/v1/nowcasts/us", timeout=5).json()
        assert recovered["nowcast"] == nowcast["nowcast"]
        assert bar_updates_page(WARM + 1) < 2.0

        kiosk = browser.new_context(viewport={"width": 1920, "height": 1080}).new_page()
        kiosk.goto(f"{gateway.url}/?kiosk=1")
        kiosk.wait_for_function("() => document.body.classList.contains('kiosk')")
        kiosk.wait_for_function(
            "() => document.querySelector('#conn').dataset.state === 'live'", timeout=10_000
        )
        feed.bar("SPX", bars[WARM + 1].seq + 1, "2018-04-20T00:00:00Z", bars[WARM + 1].close)
        active = kiosk.locator("article.symbol.active")
        active.wait_for(timeout=5_000)
        assert active.get_attribute("data-symbol") in {"SPX", "NDX"}  # it cycles through both
        size = kiosk.evaluate(
            "parseFloat(getComputedStyle(document.querySelector('article.active h2')).fontSize)"
        )
        assert size >= 32
        screenshot(kiosk, tmp_path, "web-kiosk.png")

        # Offline (the phone loses its network): the installed app still opens with the last
        # known values, from the service worker's cache and the page's saved state.
        assert page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        last = card.locator('[data-field="last-close"]').inner_text()
        phone.set_offline(True)
        page.reload()
        page.wait_for_function(
            "c => document.querySelector('article[data-symbol=\"SPX\"] [data-field=\"last-close\"]')"
            "?.textContent === c",
            arg=last, timeout=10_000,
        )  # fmt: skip
        assert "offline" in page.locator("#conn").inner_text()
        browser.close()
