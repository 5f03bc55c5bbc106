"""Loopback ports for tests."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A loopback port nothing listens on right now. Another process may take it before the
    caller binds it: listeners bind port 0 themselves (`Link`), and `start_broker` retries on a
    new port when Mosquitto finds this one taken. Fine as is for "a port where nothing listens"."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
