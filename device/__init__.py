"""Edge side of Forecaster: the bundle and MQTT contracts, the ONNX runtime and the agent.

The contract the cloud side imports (keep these names stable): `device.bundle`, `device.manifest`,
`device.keys` (the signed bundle), `device.schemas`, `device.topics` (the MQTT messages),
`device.mqtt` (broker URLs and clients), `device.settings` (`AgentSettings`, `load_settings`),
`device.errors` and `device.configio`. The rest is the agent: `device.agent` (core, the plugin
seam in `host.py`, delivery, the bar handler), `device.plugins` (deploy, nowcast) and the modules
they use. Nothing here imports torch, pandas, statsmodels, arch or `forecaster`.

`Agent` and `OnnxModel` are imported on first use (PEP 562): importing the package, or a light
part of it such as the web gateway (`device.web`), must not load onnxruntime and apscheduler.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from device.bundle import Bundle, find_bundles, load_bundle, pack_bundle, unpack_bundle
from device.errors import (
    AgentError,
    BundleError,
    ConfigError,
    DeviceError,
    ModelError,
    PayloadError,
    SignatureError,
)
from device.keys import generate_keypair, key_id, load_trusted_keys
from device.manifest import BundleManifest, TensorSpec
from device.schemas import (
    AgentStatus,
    Bar,
    DeadLetter,
    FleetEvent,
    MacroRelease,
    ModelRef,
    Nowcast,
    NowcastFailure,
    PriceForecast,
    TrendForecast,
)
from device.settings import AgentSettings, load_settings
from device.topics import Topics, forecast_key

if TYPE_CHECKING:
    from device.agent import Agent
    from device.runtime import OnnxModel

_LAZY = {"Agent": "device.agent", "OnnxModel": "device.runtime"}

__all__ = [
    "Agent",
    "AgentError",
    "AgentSettings",
    "AgentStatus",
    "Bar",
    "Bundle",
    "BundleError",
    "BundleManifest",
    "ConfigError",
    "DeadLetter",
    "DeviceError",
    "FleetEvent",
    "MacroRelease",
    "ModelError",
    "ModelRef",
    "Nowcast",
    "NowcastFailure",
    "OnnxModel",
    "PayloadError",
    "PriceForecast",
    "SignatureError",
    "TensorSpec",
    "Topics",
    "TrendForecast",
    "find_bundles",
    "forecast_key",
    "generate_keypair",
    "key_id",
    "load_bundle",
    "load_settings",
    "load_trusted_keys",
    "pack_bundle",
    "unpack_bundle",
]


def __getattr__(name: str) -> Any:
    """The heavy names, imported when first asked for."""
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'device' has no attribute {name!r}")
