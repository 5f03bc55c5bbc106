"""One exception tree for the edge package; library errors are translated at the boundary."""

from __future__ import annotations

__all__ = [
    "AgentError",
    "BundleError",
    "CalibrationStateError",
    "ConfigError",
    "DeviceError",
    "ModelError",
    "PayloadError",
    "SignatureError",
]


class DeviceError(Exception):
    """Root of every error raised by the `device` package."""


class ConfigError(DeviceError):
    """The agent's settings are missing, malformed or contradictory."""


class BundleError(DeviceError):
    """A model bundle cannot be read or does not follow the bundle contract."""


class SignatureError(BundleError):
    """A bundle is unsigned, signed by an untrusted key, or its bytes do not match."""


class CalibrationStateError(DeviceError):
    """A calibration state or its input is malformed (bad saved blob, wrong shape, bad close)."""


class ModelError(DeviceError):
    """ONNX Runtime could not load or run a model."""


class PayloadError(DeviceError):
    """An input message is invalid; `reason` is what goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AgentError(DeviceError):
    """The broker refused or dropped us; carries the MQTT reason code when there is one."""

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(
            message if reason_code is None else f"{message} (reason code {reason_code})"
        )
        self.reason_code = reason_code
