"""`forecaster-web --config web.toml`: serve the page and API until SIGTERM or SIGINT;
`forecaster-web hash` makes the hashes `[auth]` takes."""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from device.errors import DeviceError

__all__ = ["main", "serve"]

logger = logging.getLogger("device.web")

# paho's network thread gives up the GIL at every socket call (several per message) and then waits
# for the event loop's thread, busy writing to hundreds of streams, to hand it back: after up to
# `sys.getswitchinterval()`, 5 ms by default. That capped the gateway's intake near 200 messages/s
# under load (docs/BENCHMARKS.md, "Web gateway"); 0.5 ms lets it keep up with 1,000/s.
GIL_SWITCH_INTERVAL_S = 0.0005


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forecaster-web",
        description="Read-only web page and HTTP API over the fleet's MQTT forecasts. Settings "
        "come from the TOML file and FORECASTER_WEB_* variables (deploy/web.example.toml).",
    )
    parser.add_argument("--config", type=Path, help="gateway settings (TOML)")
    sub = parser.add_subparsers(dest="command")
    hasher = sub.add_parser("hash", help="print a hash for [auth] users or tokens")
    hasher.add_argument("--token", action="store_true", help="make a new bearer token instead")
    return parser


def _hash(token: bool) -> int:
    from device.web.auth import hash_password, hash_token, new_token

    if token:
        value = new_token()
        print(f"token (give to the client): {value}")
        print(f"tokens entry: {hash_token(value)}")
        return 0
    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass()
    if not password:
        print("forecaster-web: error: empty password", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def _stopped(signum: int, _frame: FrameType | None) -> None:
    logger.info("stopped by %s", signal.Signals(signum).name)


def serve(config: Path | None) -> int:
    """Load the settings and run uvicorn in this process; 1 with a one-line error."""
    import uvicorn

    from device.web.app import create_app
    from device.web.settings import load_web_settings

    try:
        settings = load_web_settings(config)
        logging.basicConfig(
            level=settings.log_level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        app = create_app(settings)
    except DeviceError as exc:
        print(f"forecaster-web: error: {exc}", file=sys.stderr)
        return 1
    http = settings.http
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=http.host,
            port=http.port,
            log_level=settings.log_level.lower(),
            ssl_certfile=http.ssl_certfile,
            ssl_keyfile=http.ssl_keyfile,
            proxy_headers=False,
            server_header=False,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
    )
    # uvicorn stops on SIGTERM/SIGINT, then re-raises the signal to the handler it found: with
    # this one in place that is a logged clean stop (exit 0) instead of death by signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # this process only serves the gateway
    try:
        server.run()
    except (OSError, SystemExit) as exc:
        print(
            f"forecaster-web: error: cannot serve on {http.host}:{http.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0 if server.started else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "hash":
        return _hash(args.token)
    return serve(args.config)


if __name__ == "__main__":
    sys.exit(main())
