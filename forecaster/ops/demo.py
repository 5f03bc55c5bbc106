"""`forecaster demo`: broker, agent, web gateway, a real-data replay and the live view on one
machine."""

from __future__ import annotations

import contextlib
import getpass
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from device.bundle import find_bundles
from device.manifest import MANIFEST_FILE, BundleManifest
from device.mqtt import parse_broker_url
from device.schemas import AgentStatus, Bar, PriceForecast
from device.topics import Topics
from device.web.settings import loopback_config
from forecaster.errors import FeedError, ForecasterError
from forecaster.ops.feeds import ReplayResult, dataset_bars, replay
from forecaster.ops.mqtt import tool_client
from forecaster.ops.watch import ForecastBoard, Received, watch
from forecaster.training.bundles import DEV_KEY_DIR, SIGNING_KEY_ENV

__all__ = [
    "Coverage",
    "DemoSummary",
    "WebCheck",
    "band_coverage",
    "ensure_models",
    "find_mosquitto",
    "print_summary",
    "run_demo",
    "start_agent",
    "start_broker",
    "start_gateway",
    "summarize",
    "write_agent_config",
]

logger = logging.getLogger(__name__)

AGENT_ID = "demo"
MOSQUITTO_PATHS = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
WEB_MODULES = ("fastapi", "uvicorn", "sse_starlette")  # the `web` extra


# ----- scoring what the agent forecast (plain functions) ------------------------------------


@dataclass(frozen=True)
class Coverage:
    """How often the realized close fell inside one central band at one horizon."""

    horizon: int
    nominal: float
    inside: int
    scored: int

    @property
    def rate(self) -> float:
        return self.inside / self.scored if self.scored else float("nan")


def band_coverage(
    forecasts: Sequence[PriceForecast], closes: dict[tuple[str, int], float]
) -> list[Coverage]:
    """Realized coverage of every central band (quantile q to 1-q) per horizon, scoring only the
    forecasts whose horizon has elapsed: the close `h` bars after the forecast's bar is known."""
    tally: dict[tuple[int, float], list[int]] = {}
    for f in forecasts:
        pairs = [
            (i, f.quantiles.index(round(1 - q, 10)))
            for i, q in enumerate(f.quantiles)
            if q < 0.5 and round(1 - q, 10) in f.quantiles
        ]
        for h_index, h in enumerate(f.horizons):
            realized = closes.get((f.symbol, f.seq + h))
            if realized is None:
                continue
            for lo, hi in pairs:
                nominal = round(f.quantiles[hi] - f.quantiles[lo], 10)
                counts = tally.setdefault((h, nominal), [0, 0])
                counts[0] += f.prices[h_index][lo] <= realized <= f.prices[h_index][hi]
                counts[1] += 1
    return [Coverage(h, nominal, *tally[(h, nominal)]) for h, nominal in sorted(tally)]


def _percentiles(values: Sequence[float]) -> tuple[float, float] | None:
    if not values:
        return None
    p50, p99 = np.percentile(np.asarray(values, dtype=float), [50, 99])
    return float(p50), float(p99)


@dataclass
class DemoSummary:
    """What the demo measured: forecasts, band coverage so far, latencies."""

    bars_sent: int
    price_forecasts: int
    trend_forecasts: int
    duplicates: int
    coverage: dict[str, list[Coverage]]  # price model name -> its bands' coverage
    model_latency_ms: tuple[float, float] | None
    end_to_end_ms: tuple[float, float] | None
    agents: dict[str, AgentStatus] = field(default_factory=dict)
    web: WebCheck | None = None


@dataclass(frozen=True)
class WebCheck:
    """What the web gateway served at the end, beside what the live view received: the latest
    price forecast's seq per symbol."""

    url: str
    gateway: dict[str, int]
    view: dict[str, int]

    @property
    def covers_view(self) -> bool:
        """The gateway holds, per symbol, the live view's latest forecast or a newer one (the
        feed goes on after the live view stops, so the gateway may be ahead)."""
        return all(self.gateway.get(s, -1) >= seq for s, seq in self.view.items())


def summarize(
    board: ForecastBoard, bars: Sequence[Bar], sent_at: dict[tuple[str, int], float]
) -> DemoSummary:
    """Score the board's price forecasts against the bars that were replayed."""
    history: list[Received] = board.price_history()
    price = [r.forecast for r in history if isinstance(r.forecast, PriceForecast)]
    # Only bars that were replayed count as realized: coverage "so far".
    closes = {(b.symbol, b.seq): b.close for b in bars if (b.symbol, b.seq) in sent_at}
    e2e = [
        (r.at - sent_at[(r.forecast.symbol, r.forecast.seq)]) * 1000.0
        for r in history
        if (r.forecast.symbol, r.forecast.seq) in sent_at
    ]
    snap = board.snapshot()
    return DemoSummary(
        bars_sent=len(sent_at),
        price_forecasts=len(price),
        trend_forecasts=snap.received - len(price),
        duplicates=snap.duplicates,
        coverage={
            name: band_coverage([f for f in price if f.model.name == name], closes)
            for name in sorted({f.model.name for f in price})
        },
        model_latency_ms=_percentiles(list(snap.latencies_ms)),
        end_to_end_ms=_percentiles(e2e),
        agents=snap.statuses,
    )


def print_summary(summary: DemoSummary, console: Console) -> None:
    console.line()
    console.rule("demo summary")
    console.print(
        f"bars replayed: {summary.bars_sent}; forecasts received: {summary.price_forecasts} price, "
        f"{summary.trend_forecasts} trend"
        + (f" ({summary.duplicates} redeliveries dropped)" if summary.duplicates else "")
    )
    scored = {name: rows for name, rows in summary.coverage.items() if rows}
    if scored:
        nominals = sorted({c.nominal for rows in scored.values() for c in rows})
        table = Table(title="band coverage so far", title_justify="left")
        table.add_column("model")
        table.add_column("horizon", justify="right")
        table.add_column("scored", justify="right")
        for n in nominals:
            table.add_column(f"{n:.0%} band", justify="right")
        for name, rows in scored.items():
            for h in sorted({c.horizon for c in rows}):
                by_nominal = {c.nominal: c for c in rows if c.horizon == h}
                table.add_row(
                    name,
                    f"+{h}d",
                    str(max(c.scored for c in by_nominal.values())),
                    *[f"{by_nominal[n].rate:.0%}" if n in by_nominal else "" for n in nominals],
                )
        console.print(table)
    else:
        console.print("coverage: no forecast horizon has elapsed yet (run longer: --duration)")
    if summary.web is not None:
        web = summary.web
        served = ", ".join(f"{s} seq {n}" for s, n in sorted(web.gateway.items())) or "nothing"
        same = "up to date with the live view" if web.covers_view else f"live view: {web.view}"
        console.print(f"web gateway {web.url}: latest price forecast {served} ({same})")
    for label, value in (
        ("model latency (agent inference)", summary.model_latency_ms),
        ("bar -> forecast end to end", summary.end_to_end_ms),
    ):
        if value is not None:
            console.print(f"{label}: p50 {value[0]:.2f} ms, p99 {value[1]:.2f} ms")


# ----- the parts the demo starts ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if process.poll() is not None:
                raise FeedError(f"mosquitto exited: {_tail(log)}") from None
            time.sleep(0.05)
    raise FeedError(f"mosquitto did not listen on port {port} within {timeout:g} s")


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def _stop_process(process: subprocess.Popen[bytes], name: str, timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not stop within %g s; killing it", name, timeout)
        process.kill()
        process.wait(timeout)


def find_mosquitto() -> str | None:
    for candidate in MOSQUITTO_PATHS:
        path = shutil.which(candidate)
        if path:
            return path
    return None


def _start_mosquitto(exe: str, workdir: Path, stack: contextlib.ExitStack) -> str:
    port = _free_port()
    config = workdir / "mosquitto.conf"
    # Loopback only, anonymous, no persistence; queue limits lifted so a burst of QoS 1 bars or
    # forecasts is never dropped (Mosquitto's defaults drop beyond 1000 queued messages).
    config.write_text(
        "\n".join(
            [
                f"listener {port} 127.0.0.1",
                f"user {getpass.getuser()}",  # as root it would switch to `mosquitto`
                "allow_anonymous true",
                "persistence false",
                "max_queued_messages 0",
                "max_queued_bytes 0",
                "max_inflight_messages 0",
                "",
            ]
        )
    )
    log = workdir / "mosquitto.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [exe, "-c", str(config)], stdout=out, stderr=out, stdin=subprocess.DEVNULL
        )
    stack.callback(_stop_process, process, "mosquitto")
    _wait_listening(port, process, log, timeout=10.0)
    return f"mqtt://127.0.0.1:{port}"


def _start_embedded(stack: contextlib.ExitStack) -> str:
    try:
        from anyio.from_thread import start_blocking_portal
        from moat.lib.mqtt.async_broker import AsyncMQTTBroker
    except ImportError as exc:
        raise FeedError(
            "no broker: install Mosquitto (apt-get install mosquitto) or the embedded one "
            "(pip install 'forecaster[demo]')"
        ) from exc
    portal = stack.enter_context(start_blocking_portal())
    future, port = portal.start_task(AsyncMQTTBroker(bind_address=("127.0.0.1", 0)).serve)
    stack.callback(future.cancel)  # runs before the portal closes, which waits for its tasks
    return f"mqtt://127.0.0.1:{port}"


def start_broker(workdir: Path, stack: contextlib.ExitStack, kind: str = "auto") -> tuple[str, str]:
    """A broker on a free loopback port, stopped by `stack`: Mosquitto when installed (or `kind`
    = "mosquitto"), else the embedded MQTT v5 broker of the `demo` extra. Returns (url, what)."""
    if kind not in ("auto", "mosquitto", "embedded"):
        raise FeedError(f"broker kind must be auto, mosquitto or embedded, not {kind!r}")
    exe = find_mosquitto() if kind != "embedded" else None
    if exe is not None:
        return _start_mosquitto(exe, workdir, stack), f"Mosquitto ({exe})"
    if kind == "mosquitto":
        raise FeedError("mosquitto is not installed (apt-get install mosquitto)")
    return _start_embedded(stack), "embedded Python broker (moat-lib-mqtt)"


def _toml_string(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_agent_config(
    path: Path, broker_url: str, registry: Path, trusted: Sequence[Path], state_dir: Path
) -> Path:
    """A minimal agent config: serve every bundle of the registry, heartbeat every 2 s."""
    keys = ", ".join(_toml_string(p.resolve()) for p in trusted)
    path.write_text(
        "\n".join(
            [
                f"agent_id = {_toml_string(AGENT_ID)}",
                'log_level = "INFO"',
                f"state_dir = {_toml_string(state_dir.resolve())}",
                "[broker]",
                f"url = {_toml_string(broker_url)}",
                f"client_id = {_toml_string('forecaster-demo-agent')}",
                "session_expiry_s = 0",
                "[models]",
                f"dir = {_toml_string(registry.resolve())}",
                f"trusted_keys = [{keys}]",
                "[status]",
                "interval_s = 2.0",
                "",
            ]
        )
    )
    return path


def start_agent(
    config: Path, log: Path, broker_url: str, stack: contextlib.ExitStack, timeout: float = 60.0
) -> AgentStatus:
    """Run `forecaster-agent --config` as a child process (stopped by `stack`) and wait until its
    heartbeat says it is online with at least one model; raises FeedError with its log otherwise."""
    # The demo's agent is configured by its file alone, not by the user's environment.
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("FORECASTER_AGENT_")}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "device.cli", "--config", str(config)],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    stack.callback(_stop_process, process, "the agent")
    latest: AgentStatus | None = None
    with tool_client(parse_broker_url(broker_url), "forecaster-demo-agent-check") as tool:
        tool.subscribe([Topics().status(AGENT_ID)])
        deadline = time.monotonic() + timeout
        while latest is None or not (latest.online and latest.models):
            if process.poll() is not None:
                raise FeedError(f"the agent exited with status {process.returncode}: {_tail(log)}")
            if time.monotonic() > deadline:
                why = f"; it rejected {latest.rejected}" if latest and latest.rejected else ""
                raise FeedError(
                    f"the agent served no model within {timeout:g} s{why or ': ' + _tail(log)}"
                )
            msg = tool.inbox.get(0.2)
            if msg is not None:
                latest = _status(bytes(msg.payload)) or latest
    return latest


def _status(payload: bytes) -> AgentStatus | None:
    try:
        return AgentStatus.model_validate_json(payload)
    except ValidationError:
        logger.warning("ignoring a malformed agent status")
        return None


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.load(response)


def start_gateway(
    workdir: Path, broker_url: str, stack: contextlib.ExitStack, timeout: float = 30.0
) -> str | None:
    """`forecaster-web` on a free loopback port (open: loopback only), stopped by `stack`, once it
    is connected to the broker; returns its URL, or None without the `web` extra."""
    if any(importlib.util.find_spec(m) is None for m in WEB_MODULES):
        return None
    port = _free_port()
    config = workdir / "web.toml"
    config.write_text(loopback_config(broker_url, port))
    log = workdir / "web.log"
    # Configured by its file alone, like the demo's agent.
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("FORECASTER_WEB_")}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "device.web.cli", "--config", str(config)],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    stack.callback(_stop_process, process, "the web gateway")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FeedError(
                f"the web gateway exited with status {process.returncode}: {_tail(log)}"
            )
        with contextlib.suppress(OSError, ValueError):
            if _get_json(f"{url}/api/v1/gateway").get("connected"):
                return url
        time.sleep(0.1)
    raise FeedError(f"the web gateway was not connected within {timeout:g} s: {_tail(log)}")


def _latest_seqs(board: ForecastBoard) -> dict[str, int]:
    latest: dict[str, int] = {}
    for r in board.price_history():
        latest[r.forecast.symbol] = max(r.forecast.seq, latest.get(r.forecast.symbol, -1))
    return latest


def check_gateway(url: str, board: ForecastBoard, timeout: float = 5.0) -> WebCheck:
    """Ask the gateway for every symbol's latest forecast until it has caught up with the live
    view (both subscribe to the same broker; the last forecasts may still be on their way)."""
    deadline = time.monotonic() + timeout
    while True:
        view = _latest_seqs(board)
        try:
            served = {s["symbol"]: s["seq"] for s in _get_json(f"{url}/api/v1/symbols")}
        except (OSError, ValueError) as exc:
            raise FeedError(f"the web gateway did not answer: {exc}") from exc
        check = WebCheck(url, served, view)
        if check.covers_view or time.monotonic() > deadline:
            return check
        time.sleep(0.1)


# ----- models -------------------------------------------------------------------------------


def _manifests(registry: Path) -> list[BundleManifest]:
    out = []
    for path in find_bundles(registry):
        try:
            out.append(BundleManifest.model_validate_json((path / MANIFEST_FILE).read_bytes()))
        except (OSError, ValueError) as exc:
            logger.warning("skipping %s: %s", path, exc)
    return out


def ensure_models(registry: Path, recipes_dir: Path, console: Console) -> list[BundleManifest]:
    """The registry's bundles; when it holds no price bundle, first train every recipe under
    `recipes_dir` with quick settings (a recipe that fails is reported and skipped)."""
    if not any(m.task == "price" for m in _manifests(registry)):
        from forecaster.tasks import train_recipe

        recipes = sorted(recipes_dir.glob("*/*.toml"))
        if not recipes:
            raise FeedError(f"no price bundle in {registry} and no recipes under {recipes_dir}")
        console.print(
            f"no price model in {registry}: training {len(recipes)} recipes with --quick settings"
        )
        for recipe in recipes:
            try:
                path = train_recipe(
                    recipe, registry=registry, quick=True, key=None, console=console
                )
            except ForecasterError as exc:
                console.print(f"[yellow]skipped {recipe}:[/] {exc}")
                continue
            console.print(f"trained {recipe} -> {path}")
    manifests = _manifests(registry)
    if not any(m.task == "price" for m in manifests):
        raise FeedError(
            f"no price bundle in {registry}; train one: forecaster train RECIPE --quick"
        )
    return manifests


def _default_trusted(registry: Path) -> list[Path]:
    """The public keys of whatever `forecaster train` signs with by default: the development
    keys beside the registry and the directory of $FORECASTER_SIGNING_KEY (its `.pub` twin)."""
    candidates = [registry.resolve().parent / DEV_KEY_DIR]
    if os.environ.get(SIGNING_KEY_ENV):
        candidates.append(Path(os.environ[SIGNING_KEY_ENV]).resolve().parent)
    found = [p for p in candidates if p.is_dir() and any(p.glob("*.pub"))]
    if not found:
        raise FeedError(f"no public keys in {candidates[0]}; pass --trusted-key FILE_OR_DIR")
    return found


# ----- the demo -----------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM stops the demo the way Ctrl-C does, so its cleanup still runs."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _replay_thread(
    broker_url: str,
    warmup: list[Bar],
    paced: list[Bar],
    rate: float,
    stop: threading.Event,
    on_sent: Callable[[Bar, float], None],
    results: list[ReplayResult | BaseException],
    viewer_ready: threading.Event,
) -> None:
    # The first forecasts follow the warm-up burst within milliseconds: let the view subscribe.
    if not viewer_ready.wait(10.0):
        results.append(FeedError("the live view did not subscribe within 10 s"))
        return
    try:
        with tool_client(parse_broker_url(broker_url), "forecaster-demo-feed") as tool:
            # The agent forecasts once a symbol has `window` closes: send those at once, then pace.
            results.append(replay(warmup, tool.client, 0.0, Topics(), stop=stop, on_sent=on_sent))
            results.append(replay(paced, tool.client, rate, Topics(), stop=stop, on_sent=on_sent))
    except Exception as exc:  # reported by the main thread
        results.append(exc)


def _failed(results: list[ReplayResult | BaseException]) -> list[BaseException]:
    return [r for r in results if isinstance(r, BaseException)]


@dataclass(frozen=True)
class DemoOptions:
    """What `forecaster demo` runs: the registry (trained from `recipes_dir` when it has no price
    model), the replayed dataset from `start` at `rate` bars/s, `duration` s of live view."""

    registry: Path
    recipes_dir: Path
    duration: float = 30.0
    rate: float = 20.0
    dataset: str = "sp500"
    start: date = date(2016, 1, 1)
    broker_kind: str = "auto"
    trusted_keys: Sequence[Path] = ()


def _demo_bars(options: DemoOptions, window: int) -> tuple[list[Bar], list[Bar]]:
    """The warm-up bars (one model window before `start`, sent at once) and the paced ones."""
    bars = dataset_bars(options.dataset)
    first = next((i for i, b in enumerate(bars) if b.ts.date() >= options.start), None)
    if first is None:
        raise FeedError(f"{options.dataset} has no bars on or after {options.start}")
    # A margin so the replay outlasts the live view; what is not sent by then is never scored.
    paced = bars[first : first + int(options.duration * options.rate * 1.2) + 10]
    return bars[max(0, first - window) : first], paced


def run_demo(options: DemoOptions, console: Console | None = None) -> DemoSummary:
    """Train if needed, start a broker and an agent, replay real bars, show the live view for
    `duration` seconds, then print and return the summary. Everything started is stopped, also
    on Ctrl-C, SIGTERM or an error."""
    console = console or Console()
    if options.duration <= 0 or options.rate <= 0:
        raise FeedError("duration and rate must be positive")
    registry, rate, duration = options.registry, options.rate, options.duration
    manifests = ensure_models(registry, options.recipes_dir, console)
    warmup, paced = _demo_bars(options, max(m.window or 0 for m in manifests))
    trusted = list(options.trusted_keys) or _default_trusted(registry)

    sent_at: dict[tuple[str, int], float] = {}
    stop, viewer_ready = threading.Event(), threading.Event()
    results: list[ReplayResult | BaseException] = []
    board = ForecastBoard(history=len(warmup) + len(paced) + 10)
    with (
        _sigterm_as_interrupt(),
        tempfile.TemporaryDirectory(prefix="forecaster-demo-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        url, what = start_broker(workdir, stack, options.broker_kind)
        console.print(f"broker: {what} at {url}")
        config = write_agent_config(
            workdir / "agent.toml", url, registry, trusted, workdir / "state"
        )
        status = start_agent(config, workdir / "agent.log", url, stack)
        console.print(
            f"agent {status.agent}: serving "
            + ", ".join(f"{m.get('id')} {m.get('version')}" for m in status.models)
        )
        web = start_gateway(workdir, url, stack)
        if web is None:
            console.print("web gateway: not installed (pip install '.\\[web]')")
        else:
            console.print(f"web page: {web}/ (phone), {web}/?kiosk=1 (kiosk screen)")
        console.print(
            f"replaying {paced[0].symbol} from {options.start} at {rate:g} bars/s "
            f"(first {len(warmup)} bars at once to fill the model window)"
        )

        def on_sent(bar: Bar, at: float) -> None:
            sent_at[(bar.symbol, bar.seq)] = at

        feeder = threading.Thread(
            target=_replay_thread,
            args=(url, warmup, paced, rate, stop, on_sent, results, viewer_ready),
            name="demo-feed",
            daemon=True,
        )
        feeder.start()
        try:
            watch(
                parse_broker_url(url),
                duration=duration,
                console=console,
                board=board,
                subscribed=viewer_ready,
            )
        finally:
            stop.set()
            feeder.join(35.0)
        checked = check_gateway(web, board) if web is not None and not _failed(results) else None
    errors = _failed(results)
    if errors:
        raise FeedError(f"the replay failed: {errors[0]}") from errors[0]
    summary = summarize(board, warmup + paced, sent_at)
    summary.web = checked
    print_summary(summary, console)
    return summary
