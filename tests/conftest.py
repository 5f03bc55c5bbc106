"""Shared fixtures: a real Mosquitto broker on a free loopback port."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    """A Mosquitto process the test owns; `stop` / `start` simulate a broker restart."""

    port: int
    config: Path
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        log = (self.workdir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    log = (self.workdir / "mosquitto.log").read_text()
                    raise RuntimeError(f"mosquitto exited: {log}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening in time")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


def write_test_config(workdir: Path, port: int) -> Path:
    """Loopback-only test broker; queue limits lifted so a QoS 1 burst is never dropped."""
    config = workdir / "mosquitto.conf"
    config.write_text(
        "\n".join(
            [
                f"listener {port} 127.0.0.1",
                # Started as root, Mosquitto would switch to user `mosquitto` and could not write
                # its persistence file into the test's private temporary directory.
                f"user {getpass.getuser()}",
                "allow_anonymous true",
                "persistence true",
                f"persistence_location {workdir}/",
                "autosave_interval 1",
                "max_queued_messages 0",
                "max_queued_bytes 0",
                "max_inflight_messages 0",
                "",
            ]
        )
    )
    return config


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed; .ci/run installs it with apt-get")
    port = free_port()
    b = Broker(port=port, config=write_test_config(tmp_path, port), workdir=tmp_path)
    b.start()
    yield b
    b.stop()


@dataclass(frozen=True)
class TrainedBundle:
    """A bundle trained once per test session with `--quick`, and the keys that trust it."""

    path: Path
    registry: Path
    keys_dir: Path


@pytest.fixture(scope="session")
def quick_price_bundle(tmp_path_factory: pytest.TempPathFactory) -> TrainedBundle:
    """Real data, real teacher and student, quick settings: the bundle most tests need."""
    from forecaster.tasks import train_recipe

    root = tmp_path_factory.mktemp("quick-registry")
    registry = root / "registry"
    recipe = Path(__file__).resolve().parents[1] / "models" / "price" / "spx.toml"
    path = train_recipe(recipe, registry=registry, quick=True)
    return TrainedBundle(path=path, registry=registry, keys_dir=root / "keys")


@pytest.fixture(scope="session")
def quick_bundles(
    tmp_path_factory: pytest.TempPathFactory, quick_price_bundle: TrainedBundle
) -> dict[str, TrainedBundle]:
    """Quick price, trend and GDP bundles in one registry signed by one key, by task: what an
    agent serving all three loads. The price bundle is `quick_price_bundle`, copied."""
    from forecaster.tasks import train_recipe

    root = tmp_path_factory.mktemp("quick-all")
    registry, keys = root / "registry", root / "keys"
    # The same development key beside the registry: training below signs with it.
    shutil.copytree(quick_price_bundle.keys_dir, keys)
    price = registry / quick_price_bundle.path.relative_to(quick_price_bundle.registry)
    shutil.copytree(quick_price_bundle.path, price)
    models = Path(__file__).resolve().parents[1] / "models"
    paths = {
        "price": price,
        "trend": train_recipe(models / "trend" / "spx.toml", registry=registry, quick=True),
        "gdp": train_recipe(models / "gdp" / "us.toml", registry=registry, quick=True),
    }
    return {task: TrainedBundle(path, registry, keys) for task, path in paths.items()}
