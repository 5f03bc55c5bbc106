"""Shared fixtures: a real Mosquitto broker on a free loopback port, quick trained bundles. The
helpers behind them live in tests/support (scripts/ imports them from there too)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import MOSQUITTO, Broker, start_broker, write_test_config
from tests.support.bundles import TrainedBundle
from tests.support.ports import free_port

# Names test modules import from here (kept so their imports stay as they are).
__all__ = ["Broker", "TrainedBundle", "free_port", "write_test_config"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed; .ci/run installs it with apt-get")
    b = start_broker(tmp_path)
    yield b
    b.stop()


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
