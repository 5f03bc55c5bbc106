"""`forecaster-agent --config agent.toml`: run the edge agent until SIGTERM or SIGINT.
`forecaster-agent owner SYMBOL... --count N`: which member of a pool of N serves each symbol."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from device.errors import DeviceError

__all__ = ["main"]

logger = logging.getLogger("device")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forecaster-agent",
        description="Serve signed ONNX forecasters over MQTT: market/<symbol>/bar in, "
        "forecast/price|trend/<symbol> out. Settings come from the TOML file and "
        "FORECASTER_AGENT_* environment variables (see deploy/agent.example.toml).",
    )
    parser.add_argument("--config", type=Path, required=True, help="agent settings (TOML)")
    parser.epilog = "forecaster-agent owner SYMBOL... --count N: the pool member of each symbol"
    return parser


def _owner(argv: list[str]) -> int:
    """Print `SYMBOL INDEX` per symbol: the [partition] index that serves it."""
    from device.partition import owner

    parser = argparse.ArgumentParser(
        prog="forecaster-agent owner",
        description="Which member ([partition] index) of a pool of --count agents serves each "
        "symbol: crc32(symbol as UTF-8) % count, as every agent computes it.",
    )
    parser.add_argument("symbols", nargs="+", metavar="SYMBOL")
    parser.add_argument("--count", type=int, required=True, help="[partition] count of the pool")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    for symbol in args.symbols:
        print(f"{symbol} {owner(symbol, args.count)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit 0 after a clean stop; 1 with a one-line error when the agent cannot serve."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["owner"]:
        return _owner(argv[1:])
    args = _parser().parse_args(argv)
    # Imported here so `--help` stays fast on small devices.
    from device.agent import Agent
    from device.plugins import DEFAULT_PLUGINS
    from device.settings import load_settings

    try:
        settings = load_settings(args.config)
        logging.basicConfig(
            level=settings.log_level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        # apscheduler logs every heartbeat run at INFO.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        agent = Agent(settings, DEFAULT_PLUGINS)
    except DeviceError as exc:
        print(f"forecaster-agent: error: {exc}", file=sys.stderr)
        return 1

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s; stopping", signal.Signals(signum).name)
        agent.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()
    if agent.fatal is not None:
        print(f"forecaster-agent: error: {agent.fatal}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
