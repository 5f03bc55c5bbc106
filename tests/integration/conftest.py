"""Fixtures for agent tests; the helpers they hand out live in tests/support (the agent as a
real subprocess, a collecting subscriber, a feed of real S&P 500 bars, a TCP link that can be
cut to simulate a network partition), where scripts/ imports them too."""

from __future__ import annotations

import getpass
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from device.mqtt import BrokerAddress
from tests.support.agents import EDGE_ONLY, ROOT, AgentProcess, agent_config
from tests.support.broker import Broker, start_broker
from tests.support.bundles import TrainedBundle
from tests.support.clients import (
    Collector,
    Feed,
    Link,
    bar_payload,
    persistent_client,
    sp500_closes,
)

# Names test modules import from here (kept so their imports stay as they are).
__all__ = [
    "EDGE_ONLY",
    "ROOT",
    "AgentProcess",
    "Collector",
    "Feed",
    "Link",
    "TrainedBundle",
    "agent_config",
    "bar_payload",
    "persistent_client",
    "secured_address",
    "sp500_closes",
    "start_secured",
]


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[Callable[[Path], AgentProcess]]:
    started: list[AgentProcess] = []

    def make(config: Path) -> AgentProcess:
        agent = AgentProcess(config=config, log=tmp_path / "agent.log")
        agent.start()
        started.append(agent)
        return agent

    yield make
    for agent in started:
        if agent.alive():
            agent.kill()


@pytest.fixture
def collector(broker) -> Iterator[Callable[..., Collector]]:
    made: list[Collector] = []

    def make(*filters: str, url: str | None = None) -> Collector:
        c = Collector.subscribed(url or broker.url, f"collector-{len(made)}", *filters, timeout=5)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def feed(broker) -> Iterator[Feed]:
    f = Feed(broker.url)
    yield f
    f.close()


@pytest.fixture
def link(broker) -> Iterator[Link]:
    relay = Link(broker.port)
    yield relay
    relay.close()


# ----- the production broker config (deploy/) with credentials made in the test ---------------

SECURED_AGENTS = ("kiosk-01", "gw-02")


@pytest.fixture(scope="session")
def fleet_credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/make-credentials.sh output (CA, broker certificate, passwords, ACL) for two agents."""
    creds = tmp_path_factory.mktemp("fleet") / "creds"
    subprocess.run(
        [
            "bash",
            str(ROOT / "deploy" / "make-credentials.sh"),
            str(creds),
            "localhost",
            *SECURED_AGENTS,
        ],
        check=True,
        capture_output=True,
    )
    return creds


def start_secured(work: Path, creds: Path) -> Broker:
    """deploy/mosquitto.conf with its paths pointed at `creds`, on a free loopback port."""
    template = (ROOT / "deploy" / "mosquitto.conf").read_text()

    def config(workdir: Path, port: int) -> Path:
        text = template.replace("/etc/mosquitto/forecaster", str(creds))
        text = text.replace("/var/lib/mosquitto/", f"{workdir}/")
        text = text.replace("listener 8883", f"listener {port} 127.0.0.1")
        (workdir / "mosquitto.conf").write_text(text + f"\nuser {getpass.getuser()}\n")
        return workdir / "mosquitto.conf"

    return start_broker(work, config)


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, fleet_credentials: Path
) -> Iterator[tuple[Broker, Path]]:
    """One secured broker for a whole test module."""
    broker = start_secured(tmp_path_factory.mktemp("secured"), fleet_credentials)
    yield broker, fleet_credentials
    broker.stop()


def secured_address(secured: tuple[Broker, Path], user: str | None) -> BrokerAddress:
    """TLS to the secured broker, as `user` with the password made for it (None: anonymous)."""
    broker, creds = secured
    base = BrokerAddress(host="localhost", port=broker.port, tls=True, ca_file=creds / "ca.crt")
    if user is None:
        return base
    password = (creds / "accounts" / f"{user}.password").read_text().strip()
    return replace(base, username=user, password=password)
