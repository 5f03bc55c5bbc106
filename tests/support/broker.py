"""A real Mosquitto for tests and scripts: started on a free loopback port, retried on another
port when that one was taken between choosing and binding it."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port
from tests.support.waits import wait_until

__all__ = ["MOSQUITTO", "Broker", "PortTakenError", "start_broker", "write_test_config"]

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
BIND_ATTEMPTS = 5


class PortTakenError(RuntimeError):
    """Mosquitto could not bind its port: another process took it after `free_port`."""


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

    @property
    def log(self) -> Path:
        return self.workdir / "mosquitto.log"

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until the port accepts connections; PortTakenError if it is taken."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log
            )
        wait_until(self._listening, timeout, f"mosquitto to listen on port {self.port}")

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            text = self.log.read_text(errors="replace")
            if "Address already in use" in text:
                raise PortTakenError(f"port {self.port} is taken")
            raise RuntimeError(f"mosquitto exited: {text}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

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


def start_broker(workdir: Path, config: Callable[[Path, int], Path] = write_test_config) -> Broker:
    """A started broker whose `config(workdir, port)` listens on a free port; a port taken
    before Mosquitto bound it is replaced by another (at most BIND_ATTEMPTS tries)."""
    for _ in range(BIND_ATTEMPTS):
        port = free_port()
        broker = Broker(port=port, config=config(workdir, port), workdir=workdir)
        try:
            broker.start()
        except PortTakenError:
            continue
        return broker
    raise RuntimeError(f"no free port for mosquitto after {BIND_ATTEMPTS} tries")
