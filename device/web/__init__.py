"""The read-only web gateway (`forecaster-web`): a live page and a versioned HTTP API over the
fleet's MQTT forecasts, nowcasts and statuses. Edge-side: FastAPI, uvicorn and sse-starlette only
(the `web` extra), never the training stack. `device.web.cli.serve(config)` runs it."""

from __future__ import annotations

from device.web.app import create_app
from device.web.auth import Authenticator, hash_password, hash_token
from device.web.settings import WebSettings, load_web_settings
from device.web.store import Store, Update

__all__ = [
    "Authenticator",
    "Store",
    "Update",
    "WebSettings",
    "create_app",
    "hash_password",
    "hash_token",
    "load_web_settings",
]
