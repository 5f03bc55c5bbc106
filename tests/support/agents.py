"""The agent as a real subprocess that cannot import the training stack, and its config."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.bundles import TrainedBundle

__all__ = ["EDGE_ONLY", "ROOT", "AgentProcess", "agent_config", "unread_bytes"]

ROOT = Path(__file__).resolve().parents[2]
EDGE_ONLY = ROOT / "tests" / "integration" / "edge_only.py"


def agent_config(
    path: Path,
    broker_url: str,
    bundle: TrainedBundle,
    agent_id: str = "test-agent",
    broker_settings: dict[str, Any] | None = None,
    **top: Any,
) -> Path:
    """An agent.toml for a test: quick reconnects, a fast heartbeat, the trained bundle."""
    lines = [f"agent_id = {json.dumps(agent_id)}", f'state_dir = "{path.parent / "state"}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in top.items()]
    lines += [
        "[broker]",
        f"url = {json.dumps(broker_url)}",
        "reconnect_min_s = 0.1",
        "reconnect_max_s = 0.5",
        "keepalive_s = 5",
        *(f"{k} = {json.dumps(v)}" for k, v in (broker_settings or {}).items()),
        "[models]",
        f'dir = "{bundle.registry}"',
        f'trusted_keys = ["{bundle.keys_dir}"]',
        "[status]",
        "interval_s = 0.5",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class AgentProcess:
    """`forecaster-agent` in a subprocess that cannot import the training stack."""

    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(EDGE_ONLY), "device.cli", "--config", str(self.config)],
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def unread_bytes(pid: int, remote_port: int) -> int:
    """Bytes the kernel holds, not yet read, on `pid`'s TCP connections to `remote_port` (from
    /proc/net/tcp): how a test knows the broker has written to a frozen agent's socket."""
    fds = Path(f"/proc/{pid}/fd")
    inodes = set()
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, queues, inode = fields[2], fields[4], fields[9]
        if inode in inodes and int(remote.split(":")[1], 16) == remote_port:
            total += int(queues.split(":")[1], 16)
    return total
