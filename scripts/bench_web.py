"""Benchmark the web gateway on one machine (docs/BENCHMARKS.md, "Web gateway").

    python -m scripts.bench_web [--symbols 50] [--rate 20] [--clients 100,250,500,1000]
                                [--seconds 10] [--interval-ms 100] [--profile OUT] [--json OUT]

A publisher sends price-forecast payloads for `--symbols` symbols at `--rate` bars/s each straight
to a loopback Mosquitto (as agents would, QoS 1, `produced_at` = publish time); one gateway
process (`forecaster-web`) subscribes; for each client count, that many SSE clients hold
/api/v1/stream open. 20 of them (`--probes`) ("probes") parse every event and record publish -> receipt per
forecast, in a process of their own; the rest read and discard the bytes in one or two other
processes. Beside them one plain MQTT subscriber to the same topics measures publish -> MQTT
receipt: the gateway's own receipt cannot be earlier, so the difference is what the gateway adds
(validation, batching, fan-out). Reported per level: p50/p99 latency (SSE and MQTT), updates
received per probe per second, gateway CPU (% of one core) and RSS, the machine's load average.
`--profile OUT` runs the gateway under cProfile (its event loop thread: the fan-out) and writes the
statistics to OUT when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import arch.data.sp500
import numpy as np
import psutil

from device.mqtt import new_client, parse_broker_url
from scripts.bench_agent import mosquitto
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
HORIZONS, QUANTILES = [1, 5, 20], [0.05, 0.1, 0.5, 0.9, 0.95]


def payload(symbol: str, seq: int, close: float) -> bytes:
    z = np.array([-1.645, -1.2816, 0.0, 1.2816, 1.645])
    returns = [list(z * 0.01 * np.sqrt(h)) for h in HORIZONS]
    now = datetime.now(UTC).isoformat()
    return json.dumps(
        {
            "key": f"bench/{symbol}/{seq}/price/spx", "agent": "bench", "symbol": symbol,
            "model": {"name": "spx", "version": "bench", "sha256": "0" * 64},
            "ts": now, "seq": seq, "last_close": close, "horizons": HORIZONS,
            "quantiles": QUANTILES, "returns": returns,
            "prices": [[close * float(np.exp(r)) for r in row] for row in returns],
            "latency_ms": 0.3, "produced_at": now,
        }
    ).encode()  # fmt: skip


def publish(url: str, symbols: int, rate: float, stop: threading.Event) -> None:
    """`symbols` x `rate` forecasts per second, paced in 10 ms ticks, real S&P 500 closes."""
    closes = arch.data.sp500.load()["Adj Close"].to_numpy()[-2000:]
    address = parse_broker_url(url)
    pub = new_client(address, "bench-publisher")
    pub.max_inflight_messages_set(1000)  # as the agent's outbox: many forecasts in flight
    pub.connect(address.host, address.port)
    pub.loop_start()
    seq, start = 0, time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - start) * rate)
        while seq < due:
            for s in range(symbols):
                pub.publish(
                    f"forecast/price/S{s:03d}",
                    payload(f"S{s:03d}", seq, float(closes[seq % len(closes)])),
                    qos=1,
                )
            seq += 1
        time.sleep(0.01)
    pub.disconnect()
    pub.loop_stop()


async def sse_client(port: int, probe: bool, latencies: list[float], counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=4 * 1024 * 1024)
    writer.write(b"GET /api/v1/stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    try:
        if not probe:
            while await reader.read(65536):
                pass
            return
        while line := await reader.readline():
            if not line.startswith(b"data: ["):
                continue
            now = time.time()
            for update in json.loads(line[6:]):
                data = update["data"]
                if data and update["kind"] == "price":
                    latencies.append(now - datetime.fromisoformat(data["produced_at"]).timestamp())
                    counts[0] += 1
    finally:
        writer.close()


def mqtt_probe_main(url: str, seconds: float, out: Any) -> None:
    """publish -> receipt on a plain MQTT subscriber of forecast/price/+, for `seconds`."""
    latencies: list[float] = []
    measuring = threading.Event()

    def on_message(_c: object, _u: object, msg: Any) -> None:
        if measuring.is_set():
            produced = json.loads(msg.payload)["produced_at"]
            latencies.append(time.time() - datetime.fromisoformat(produced).timestamp())

    address = parse_broker_url(url)
    sub = new_client(address, f"bench-mqtt-probe-{os.getpid()}")
    sub.on_message = on_message
    sub.connect(address.host, address.port)
    sub.subscribe("forecast/price/+", qos=1)
    sub.loop_start()
    time.sleep(3)  # as the SSE clients: connect and settle
    measuring.set()
    time.sleep(seconds)
    measuring.clear()
    sub.disconnect()
    sub.loop_stop()
    out.send({"latencies": latencies})


def clients_main(port: int, n: int, probes: int, seconds: float, out: Any) -> None:
    """One process of clients: `n` connections, the first `probes` of them measuring."""

    async def main() -> None:
        latencies: list[float] = []
        counts = [0]
        tasks = [
            asyncio.create_task(sse_client(port, i < probes, latencies, counts)) for i in range(n)
        ]
        await asyncio.sleep(3)  # connect and settle
        latencies.clear()
        counts[0] = 0
        await asyncio.sleep(seconds)
        out.send({"latencies": list(latencies), "updates": counts[0]})
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def wait_ready(port: int, gateway: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Until the gateway answers and is connected to the broker (its start takes seconds on a
    busy machine: clients that connect earlier would be refused)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            raise SystemExit(f"the gateway exited with status {gateway.returncode}")
        try:
            url = f"http://127.0.0.1:{port}/api/v1/gateway"
            with urllib.request.urlopen(url, timeout=1) as response:
                if json.load(response)["connected"]:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the gateway was not ready within {timeout:g} s")


def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.array(values) * 1000, q)), 1) if values else None


def level(
    url: str, port: int, gateway: psutil.Process, n: int, seconds: float, probes: int
) -> dict[str, Any]:
    # The probes get a process of their own, so that the bulk readers' CPU does not delay them.
    bulk = n - probes
    shares = [(probes, probes)] + [(bulk // 2 + bulk % 2, 0), (bulk // 2, 0)] * (bulk > 300)
    if 0 < bulk <= 300:
        shares.append((bulk, 0))
    pipes, procs = [], []
    for count, measuring in shares:
        recv, send = mp.Pipe(duplex=False)
        proc = mp.Process(target=clients_main, args=(port, count, measuring, seconds, send))
        proc.start()
        pipes.append(recv)
        procs.append(proc)
    recv, send = mp.Pipe(duplex=False)
    mqtt_probe = mp.Process(target=mqtt_probe_main, args=(url, seconds, send))
    mqtt_probe.start()
    time.sleep(3)
    gateway.cpu_percent(None)
    rss = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(0.5)
        rss = max(rss, gateway.memory_info().rss)
    cpu = gateway.cpu_percent(None)
    load = os.getloadavg()[0]
    results = [r.recv() for r in pipes]
    mqtt_lat = recv.recv()["latencies"]
    for proc in [*procs, mqtt_probe]:
        proc.join(20)
    lat = [x for r in results for x in r["latencies"]]
    return {
        "clients": n,
        "p50_ms": _ms(lat, 50),
        "p99_ms": _ms(lat, 99),
        "mqtt_p50_ms": _ms(mqtt_lat, 50),
        "mqtt_p99_ms": _ms(mqtt_lat, 99),
        "updates_per_probe_s": round(results[0]["updates"] / probes / seconds, 1),
        "gateway_cpu_pct": round(cpu, 1),
        "gateway_rss_mb": round(rss / 2**20, 1),
        "load_1min": round(load, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--rate", type=float, default=20.0, help="bars per second per symbol")
    parser.add_argument("--clients", default="100,250,500,1000")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--probes", type=int, default=20, help="clients that parse every event")
    parser.add_argument("--interval-ms", type=int, default=100, help="stream.interval_ms")
    parser.add_argument("--profile", type=Path, help="cProfile statistics of the gateway")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, mosquitto(Path(tmp)) as (url, _):
        port = free_port()
        config = Path(tmp) / "web.toml"
        config.write_text(
            f'[broker]\nurl = "{url}"\n[http]\nport = {port}\n[stream]\nmax_clients = 100000\n'
            f"interval_ms = {args.interval_ms}\n"
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        profile = ["-m", "cProfile", "-o", str(args.profile)] if args.profile else []
        gw = subprocess.Popen(
            [sys.executable, *profile, "-m", "device.web.cli", "--config", str(config)],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        stop = threading.Event()
        publisher = threading.Thread(
            target=publish, args=(url, args.symbols, args.rate, stop), daemon=True
        )
        try:
            wait_ready(port, gw)
            publisher.start()
            for n in (int(x) for x in args.clients.split(",")):
                row = level(url, port, psutil.Process(gw.pid), n, args.seconds, args.probes)
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            stop.set()
            gw.terminate()
            gw.wait(10)
    info = {
        "symbols": args.symbols,
        "rate": args.rate,
        "interval_ms": args.interval_ms,
        "cpus": os.cpu_count(),
        "levels": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
