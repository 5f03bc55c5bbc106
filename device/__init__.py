"""Edge side of Forecaster: the bundle and MQTT contracts, the ONNX runtime and the agent.

The contract the cloud side imports (keep these names stable): `device.bundle`, `device.manifest`,
`device.keys` (the signed bundle), `device.schemas`, `device.topics` (the MQTT messages),
`device.mqtt` (broker URLs and clients), `device.settings` (`AgentSettings`, `load_settings`),
`device.errors` and `device.configio`. The rest is the agent: `device.agent` (core, the plugin
seam in `host.py`, delivery, the bar handler), `device.plugins` (deploy, nowcast) and the modules
they use. Nothing here imports torch, pandas, statsmodels, arch or `forecaster`.
"""

from __future__ import annotations

from device.agent import Agent
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
from device.runtime import OnnxModel
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
