"""Benchmark the edge agent on one machine with Mosquitto on loopback (docs/BENCHMARKS.md, "Agent").

    python -m scripts.bench_agent [--symbols 50] [--bars 100] [--rate R] [--seconds 10]
                                  [--pool 3] [--registry DIR] [--model price/spx]
                                  [--install-size] [--json OUT]

Measures, in one run against one broker:
1. throughput: 50 symbols x `--bars` bars published as fast as possible at QoS 1; forecasts out
   per second for the agent (one price model) and for a bare paho subscribe->publish relay;
2. end-to-end latency bar-published -> forecast-received with bars paced at `--rate` per second
   (default: half the relay's throughput measured in the same run), for the relay and the agent;
3. agent RSS with three models loaded (price/spx, price/ndx, trend/spx), and with one;
4. the combined throughput of pools of 1 .. `--pool` agents (symbol-affine partitions), and the
   in-process cost of a bar the agent does not own next to one it forecasts;
5. with --install-size: the size of `pip install .` (the edge install) in a fresh venv's
   site-packages, next to the training stack's packages in the development venv.
Without --registry it trains the three quick bundles first (about a minute).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import psutil

from device.mqtt import new_client, parse_broker_url
from tests.support.broker import start_broker

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("models/price/spx.toml", "models/price/ndx_csv.toml", "models/trend/spx.toml")
TRAINING_STACK = ("torch", "pandas", "scipy", "statsmodels", "arch", "onnx", "matplotlib")


def _bench_config(workdir: Path, port: int) -> Path:
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\nset_tcp_nodelay true\n"
    )
    return conf


@contextmanager
def mosquitto(workdir: Path) -> Iterator[tuple[str, psutil.Process]]:
    """A loopback broker with the queue limits lifted, as in deploy/mosquitto.conf."""
    broker = start_broker(workdir, _bench_config)
    assert broker.process is not None
    try:
        yield broker.url, psutil.Process(broker.process.pid)
    finally:
        broker.stop()


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def cpu_per_message(
    processes: dict[str, psutil.Process], messages: int, run: Callable[[], float]
) -> tuple[float, dict[str, float]]:
    """`run()`'s result and the CPU µs per message each process spent meanwhile: on two shared
    cores the throughput ratio swings with whichever process gets the cores, the CPU per
    message much less."""
    before = {name: cpu_s(p) for name, p in processes.items()}
    result = run()
    return result, {
        name: round((cpu_s(p) - before[name]) / messages * 1e6, 1) for name, p in processes.items()
    }


def client(url: str, client_id: str) -> mqtt.Client:
    c = new_client(parse_broker_url(url), client_id)
    address = parse_broker_url(url)
    c.connect(address.host, address.port, keepalive=30)
    c.loop_start()
    return c


def relay_main(url: str) -> None:
    """The baseline: receive each bar at QoS 1 and publish it again at QoS 1, nothing else."""
    relay = new_client(parse_broker_url(url), "bench-relay")

    def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        symbol = msg.topic.split("/")[1]
        c.publish(f"forecast/relay/{symbol}", msg.payload, qos=1)

    def on_subscribe(*_: object) -> None:
        print("ready", flush=True)

    relay.on_message = on_message
    relay.on_subscribe = on_subscribe
    relay.on_connect = lambda c, *_: c.subscribe("market/+/bar", qos=1)
    address = parse_broker_url(url)
    relay.connect(address.host, address.port)
    relay.loop_forever()


@dataclass
class Receiver:
    """Counts forecasts and records when each (symbol, seq) arrived."""

    url: str
    topic: str
    count: int = 0
    arrivals: dict[tuple[str, int], float] = field(default_factory=dict)
    record: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    expected: int = 0

    def __post_init__(self) -> None:
        self.client = client(self.url, f"bench-rx-{self.topic.replace('/', '_')}")
        ready = threading.Event()
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = self._on_message
        self.client.subscribe(self.topic, qos=1)
        ready.wait(10)

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            return  # forecasts are retained: an earlier phase's latest, handed over on subscribe
        now = time.perf_counter()
        self.count += 1
        if self.record:
            body = json.loads(msg.payload)
            self.arrivals.setdefault((body["symbol"], body["seq"]), now)
        if self.count >= self.expected:
            self.done.set()

    def expect(self, n: int) -> None:
        self.count, self.expected = 0, n
        self.arrivals.clear()
        self.done.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def bar(symbol: str, seq: int, close: float) -> bytes:
    return json.dumps(
        {
            "symbol": symbol,
            "ts": "2020-01-02T00:00:00Z",
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": 1.0,
            "seq": seq,
        }
    ).encode()


def sp500_closes(n: int) -> list[float]:
    import arch.data.sp500

    return [float(c) for c in arch.data.sp500.load()["Adj Close"].to_numpy()[:n]]


def burst(
    pub: mqtt.Client,
    rx: Receiver,
    symbols: list[str],
    seqs: range,
    closes: list[float],
    per_bar: int = 1,
) -> float:
    """Publish every symbol's bars for `seqs` as fast as possible; outputs out per second
    (`per_bar` outputs for each bar: one per model)."""
    rx.expect(len(symbols) * len(seqs) * per_bar)
    start = time.perf_counter()
    for seq in seqs:
        for symbol in symbols:
            pub.publish(f"market/{symbol}/bar", bar(symbol, seq, closes[seq]), qos=1)
    if not rx.done.wait(300):
        raise RuntimeError(f"only {rx.count} of {rx.expected} outputs arrived")
    return rx.expected / (time.perf_counter() - start)


def paced(
    pub: mqtt.Client,
    rx: Receiver,
    symbols: list[str],
    first_seq: int,
    rate: float,
    seconds: float,
    closes: list[float],
) -> np.ndarray:
    """Bars at `rate` per second, round robin over symbols; latencies in ms."""
    steps = int(rate * seconds) // len(symbols)
    rx.expect(steps * len(symbols))
    rx.record = True
    sent: dict[tuple[str, int], float] = {}
    start = time.perf_counter()
    i = 0
    for seq in range(first_seq, first_seq + steps):
        for symbol in symbols:
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent[(symbol, seq)] = time.perf_counter()
            pub.publish(f"market/{symbol}/bar", bar(symbol, seq, closes[seq]), qos=1)
            i += 1
    if not rx.done.wait(120):
        raise RuntimeError(f"only {rx.count} of {rx.expected} outputs arrived")
    rx.record = False
    return np.array([(rx.arrivals[k] - t) * 1000.0 for k, t in sent.items()])


def prepare_registries(work: Path, given: Path | None, model: str) -> tuple[Path, Path, Path]:
    """(registry with three models, registry with `model` only, trusted key dir)."""
    # Absolute: the agent takes a relative models.dir relative to its own config file.
    full = given.resolve() if given is not None else work / "trained" / "registry"
    if given is None:
        from forecaster.tasks import train_recipe

        for recipe in RECIPES:
            print(f"training {recipe} --quick ...", file=sys.stderr)
            train_recipe(ROOT / recipe, registry=full, quick=True)
    keys = full.resolve().parent / "keys"
    single = work / "single" / "registry"
    if not (full / model).is_dir():
        raise SystemExit(f"bench_agent: no {model} in {full} (--model names a <task>/<name>)")
    source = sorted((full / model).iterdir())[-1]
    shutil.copytree(source, single / model / source.name)
    return full, single, keys


@dataclass(frozen=True)
class BurstRun:
    """What every burst of a run shares: the symbols, the window to fill, the timed bars."""

    symbols: list[str]
    window: int
    bars: int
    closes: list[float]


@dataclass
class AgentRun:
    """A running agent process and its latest status heartbeat."""

    process: psutil.Process
    status: dict[str, Any] = field(default_factory=dict)

    def fresh_status(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next heartbeat (the agent's own view of its latency and counters)."""
        seen = self.status.get("ts")
        deadline = time.monotonic() + timeout
        while self.status.get("ts") == seen and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.status


def window_models(registry: Path) -> list[Path]:
    """The price/trend bundles' slots: each forecasts every bar (a gdp bundle answers macro)."""
    return [p for p in registry.glob("*/*") if p.parent.name in ("price", "trend")]


@contextmanager
def agent(
    url: str,
    registry: Path,
    keys: Path,
    workdir: Path,
    name: str,
    partition: tuple[int, int] = (0, 1),
) -> Iterator[AgentRun]:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "agent.toml"
    config.write_text(
        f'agent_id = "{name}"\nlog_level = "WARNING"\nstate_dir = "{workdir / "state"}"\n'
        f'[broker]\nurl = "{url}"\n[models]\ndir = "{registry}"\ntrusted_keys = ["{keys}"]\n'
        "[status]\ninterval_s = 1.0\n"
        f"[partition]\nindex = {partition[0]}\ncount = {partition[1]}\n"
    )
    watcher = Receiver(url, f"fleet/{name}/status")
    proc = subprocess.Popen([sys.executable, "-m", "device.cli", "--config", str(config)], cwd=ROOT)
    run = AgentRun(psutil.Process(proc.pid))
    watcher.client.on_message = lambda _c, _u, m: setattr(run, "status", json.loads(m.payload))
    try:
        deadline = time.monotonic() + 60
        while not run.status.get("online"):
            if time.monotonic() > deadline:
                raise RuntimeError("the agent did not come online")
            time.sleep(0.05)
        yield run
    finally:
        watcher.close()
        proc.terminate()
        proc.wait(30)


def warm_up(
    pub: mqtt.Client,
    rx: Receiver,
    symbols: list[str],
    window: int,
    closes: list[float],
    per_bar: int = 1,
) -> None:
    """Fill every symbol's window (not timed); the last bar yields each symbol's first forecast."""
    for seq in range(window - 1):
        for symbol in symbols:
            pub.publish(f"market/{symbol}/bar", bar(symbol, seq, closes[seq]), qos=1)
    burst(pub, rx, symbols, range(window - 1, window), closes, per_bar)


def rss_while(proc: psutil.Process, run: Callable[[], Any]) -> tuple[Any, float]:
    """Run `run()` while sampling the process's resident set; returns (result, peak MB)."""
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = run()
    finally:
        stop.set()
        sampler.join()
    return result, peak[0] / 2**20


def pool_rates(
    url: str, pub: mqtt.Client, work: Path, registry: Path, keys: Path, size: int, run: BurstRun
) -> dict[str, int]:
    """Forecasts per second of pools of 1 .. `size` agents, all forecasts of a burst counted."""
    rates = {}
    for count in range(1, size + 1):
        rx = Receiver(url, "forecast/price/+")
        with ExitStack() as pool:
            for index in range(count):
                pool.enter_context(
                    agent(
                        url,
                        registry,
                        keys,
                        work / f"pool{count}-{index}",
                        f"pool{count}-{index}",
                        (index, count),
                    )
                )
            warm_up(pub, rx, run.symbols, run.window, run.closes)
            rates[str(count)] = round(
                burst(pub, rx, run.symbols, range(run.window, run.window + run.bars), run.closes)
            )
        rx.close()
    return rates


def catch_up(
    url: str, pub: mqtt.Client, work: Path, registry: Path, keys: Path, run: BurstRun
) -> dict[str, float]:
    """Member 1 of a pool of two is stopped while a burst is published: its bars wait in its
    persistent session. Seconds from its restart to its last forecast, and the rate of that."""
    from device.partition import owner

    theirs = sum(owner(s, 2) == 1 for s in run.symbols) * run.bars
    rx = Receiver(url, "forecast/price/+")
    member = {k: (work / f"catch-{k}", f"catch-{k}", (k, 2)) for k in (0, 1)}
    with agent(url, registry, keys, *member[0]):
        with agent(url, registry, keys, *member[1]):
            warm_up(pub, rx, run.symbols, run.window, run.closes)
        rx.expect(len(run.symbols) * run.bars)
        for seq in range(run.window, run.window + run.bars):
            for symbol in run.symbols:
                pub.publish(f"market/{symbol}/bar", bar(symbol, seq, run.closes[seq]), qos=1)
        deadline = time.monotonic() + 120
        while rx.count < rx.expected - theirs and time.monotonic() < deadline:
            time.sleep(0.05)  # member 0 serves its own symbols meanwhile
        start = time.perf_counter()
        with agent(url, registry, keys, *member[1]):
            online = time.perf_counter()
            if not rx.done.wait(300):
                raise RuntimeError(f"only {rx.count} of {rx.expected} outputs arrived")
            done = time.perf_counter()
    rx.close()
    return {
        "queued_bars": theirs,
        "start_to_online_s": round(online - start, 2),
        "restart_to_last_forecast_s": round(done - start, 2),
        "queued_bars_per_s_after_online": round(theirs / max(done - online, 1e-9)),
    }


def batching_us(registry: Path, keys: Path, closes: list[float], rows: int = 64) -> dict[str, Any]:
    """Inference per window of one pass of `rows` bars: one call per window against one call for
    all, for the served student and for its bundle's float teacher (same contract)."""
    from dataclasses import replace

    from device.agent.bar_handler import PendingRow, infer_rows
    from device.bundle import load_bundle
    from device.keys import load_trusted_keys
    from device.modelset import load_model
    from device.runtime import OnnxModel

    path = sorted(p for slot in window_models(registry) for p in slot.iterdir())[-1]
    student = load_model(load_bundle(path, load_trusted_keys([keys])))
    graphs = {"student": student}
    if (path / "teacher.onnx").is_file():
        bundle = replace(student.model.bundle, model_bytes=(path / "teacher.onnx").read_bytes())
        graphs["float_teacher"] = replace(student, model=OnnxModel(bundle))
    w = student.manifest.window or 0
    data = np.array(closes, dtype=np.float32)
    out: dict[str, Any] = {}
    for name, model in graphs.items():
        pending = [
            PendingRow(model, f"S{i}", i, None, 1.0, data[None, i : i + w].copy(), False)  # type: ignore[arg-type]
            for i in range(rows)
        ]
        timings, served = {}, model.model.batchable
        for mode in (False, True):
            model.model.batchable = mode
            start = time.perf_counter()
            for _ in range(20):
                infer_rows(model, pending)
            timings[mode] = (time.perf_counter() - start) / (20 * rows) * 1e6
        model.model.batchable = served
        out[name] = {
            "batchable": model.model.batchable,
            "per_window_call_us": round(timings[False], 2),
            "one_call_per_pass_us": round(timings[True], 2),
        }
    return out


def relay_phase(
    url: str, pub: mqtt.Client, broker: psutil.Process, run: BurstRun, args: argparse.Namespace
) -> tuple[float, dict[str, float], np.ndarray, float]:
    """The bare relay's burst rate and CPU per message, the latency run's rate (default: half
    that burst rate) and the relay's latencies at it."""
    relay_proc = subprocess.Popen(
        [sys.executable, __file__, "relay", "--broker", url], stdout=subprocess.PIPE, text=True
    )
    assert relay_proc.stdout is not None and relay_proc.stdout.readline().strip() == "ready"
    rx = Receiver(url, "forecast/relay/+")
    symbols, window, closes = run.symbols, run.window, run.closes
    burst(pub, rx, symbols, range(window), closes)  # warm the same way
    relay_rate, relay_cpu = cpu_per_message(
        {"relay": psutil.Process(relay_proc.pid), "bench": psutil.Process(), "broker": broker},
        len(symbols) * run.bars,
        lambda: burst(pub, rx, symbols, range(window, window + run.bars), closes),
    )
    rate = args.rate or relay_rate / 2
    if int(rate * args.seconds) // len(symbols) + window + run.bars >= len(closes):
        raise SystemExit("bench_agent: --rate x --seconds needs more closes than the data has")
    relay_lat = paced(pub, rx, symbols, window + run.bars, rate, args.seconds, closes)
    rx.close()
    relay_proc.terminate()
    relay_proc.wait(10)
    return relay_rate, relay_cpu, relay_lat, rate


def scale_out(
    url: str, pub: mqtt.Client, work: Path, registry: Path, keys: Path, run: BurstRun, pool: int
) -> dict[str, Any]:
    """Pools of 1 .. `pool` agents, and a member's catch-up after it was down."""
    return {
        "pool_forecasts_per_s": pool_rates(url, pub, work, registry, keys, pool, run)
        if pool
        else {},
        "catch_up": catch_up(url, pub, work, registry, keys, run),
    }


def partition_cost_us(
    registry: Path, keys: Path, window: int, closes: list[float]
) -> dict[str, float]:
    """In-process CPU per bar, without the network: a bar another member owns (topic check
    only) next to one this agent forecasts (parse, window, one inference, JSON)."""
    from collections import Counter

    from device.agent.bar_handler import BarHandler
    from device.agent.calibrators import Calibrators
    from device.health import LatencyWindow
    from device.keys import load_trusted_keys
    from device.modelset import load_model_set
    from device.partition import owner
    from device.settings import AgentSettings, PartitionSettings
    from scripts.bench_bar_path import inference_error

    models = load_model_set(registry, load_trusted_keys([keys]))
    settings = AgentSettings(agent_id="cost", partition=PartitionSettings(index=0, count=2))
    calibrators = Calibrators(settings.calibration, {})
    handler = BarHandler(
        settings, lambda: models, (), Counter(), LatencyWindow(), inference_error, calibrators
    )
    mine = next(f"S{i}" for i in range(100) if owner(f"S{i}", 2) == 0)
    other = next(f"S{i}" for i in range(100) if owner(f"S{i}", 2) == 1)
    msgs = []
    for seq in range(len(closes)):
        msg = mqtt.MQTTMessage(topic=f"market/{mine}/bar".encode())
        msg.payload = bar(mine, seq, closes[seq])
        msgs.append(msg)
    for msg in msgs[:window]:
        handler.handle(msg)
    handler.flush()
    timed = msgs[window:]
    start = time.perf_counter()
    for msg in timed:
        handler.handle(msg)
        handler.flush()
    owned = (time.perf_counter() - start) / len(timed)
    topic = f"market/{other}/bar"
    start = time.perf_counter()
    for _ in range(len(timed)):
        handler.not_owned(topic)
    skipped = (time.perf_counter() - start) / len(timed)
    return {"owned_bar_us": round(owned * 1e6, 2), "unowned_bar_us": round(skipped * 1e6, 3)}


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def install_sizes(work: Path) -> dict[str, Any]:
    """MB of site-packages after `pip install .` into a fresh venv (and its largest entries),
    next to the training stack's packages in this venv."""
    venv = work / "edge-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, str(ROOT)], check=True)
    [site] = list((venv / "lib").glob("python*/site-packages"))
    entries = {p.name: dir_size(p) if p.is_dir() else p.stat().st_size for p in site.iterdir()}
    largest = sorted(entries.items(), key=lambda kv: -kv[1])[:8]
    training = {}
    for dist in TRAINING_STACK:
        files = [Path(str(f.locate())) for f in metadata.distribution(dist).files or []]
        training[dist] = sum(p.stat().st_size for p in files if p.is_file())
    return {
        "edge_site_packages_mb": round(sum(entries.values()) / 2**20, 1),
        "edge_largest_mb": {k: round(v / 2**20, 1) for k, v in largest},
        "training_stack_mb": round(sum(training.values()) / 2**20, 1),
        "training_largest_mb": {k: round(v / 2**20, 1) for k, v in training.items()},
    }


def pct(a: np.ndarray) -> dict[str, float]:
    return {
        k: round(float(np.percentile(a, q)), 3) for k, q in (("p50", 50), ("p90", 90), ("p99", 99))
    } | {"max": round(float(a.max()), 3)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    relay = sub.add_parser("relay", help="(internal) run the baseline relay")
    relay.add_argument("--broker", required=True)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--bars", type=int, default=100, help="timed bars per symbol")
    parser.add_argument(
        "--rate", type=float, help="bars/s for the latency run (default: half the relay's rate)"
    )
    parser.add_argument("--pool", type=int, default=3, help="largest pool to measure (0: none)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument("--registry", type=Path, help="registry with the three bundles")
    parser.add_argument(
        "--model", default="price/spx", help="the <task>/<name> of the one-model runs"
    )
    parser.add_argument("--install-size", action="store_true")
    parser.add_argument("--json", type=Path, help="write the results here too")
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.command == "relay":
        relay_main(args.broker)
        return

    symbols = [f"S{i:03d}" for i in range(args.symbols)]
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "symbols": args.symbols,
    }
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        full, single, keys = prepare_registries(work, args.registry, args.model)
        url, broker = stack.enter_context(mosquitto(work))
        pub = client(url, "bench-feed")
        window = max(
            json.loads(p.read_text())["window"]
            for slot in window_models(full)
            for p in slot.glob("*/manifest.json")
        )
        closes = sp500_closes(window + args.bars + 4000)
        # Keep this process's full collections (pandas came with the data) out of the timings.
        gc.collect()
        gc.freeze()

        # 1. The bare relay.
        spec = BurstRun(symbols, window, args.bars, closes)
        relay_rate, relay_cpu, relay_lat, rate = relay_phase(url, pub, broker, spec, args)

        # 2. The agent with one price model.
        rx = Receiver(url, "forecast/price/+")
        with agent(url, single, keys, work / "one", "bench-one") as run:
            warm_up(pub, rx, symbols, window, closes)
            agent_rate, agent_cpu = cpu_per_message(
                {"agent": run.process, "bench": psutil.Process(), "broker": broker},
                len(symbols) * args.bars,
                lambda: burst(pub, rx, symbols, range(window, window + args.bars), closes),
            )
            agent_lat, rss_one = rss_while(
                run.process,
                lambda: paced(pub, rx, symbols, window + args.bars, rate, args.seconds, closes),
            )
            inside = run.fresh_status()["latency_ms"]
        rx.close()

        # 3. The agent with three models (two price, one trend): memory under the same load.
        rx = Receiver(url, "forecast/#")
        with agent(url, full, keys, work / "three", "bench-three") as run:
            n = len(window_models(full))  # every price/trend model forecasts every bar
            warm_up(pub, rx, symbols, window, closes, n)
            three_rate, rss_three = rss_while(
                run.process,
                lambda: burst(pub, rx, symbols, range(window, window + args.bars), closes, n),
            )
        rx.close()
        scaled = scale_out(url, pub, work, single, keys, spec, args.pool)
        pub.disconnect()
        pub.loop_stop()
        costs = {
            **partition_cost_us(single, keys, window, closes[: window + 2000]),
            "inference_per_window": batching_us(single, keys, closes),
        }

        results |= {
            "throughput_bars": len(symbols) * args.bars,
            "relay_per_s": round(relay_rate),
            "agent_per_s": round(agent_rate),
            "ratio": round(agent_rate / relay_rate, 3),
            # CPU µs per bar of the burst: the bench process is the feed and the receiver
            "cpu_us_per_message": {"relay_run": relay_cpu, "agent_run": agent_cpu},
            "latency_rate_per_s": round(rate),
            "latency_bars": len(agent_lat),
            "agent_latency_ms": pct(agent_lat),
            "relay_latency_ms": pct(relay_lat),
            # receipt -> committed and acknowledged, inside the agent (its status heartbeat)
            "agent_internal_ms": inside,
            "rss_one_model_mb": round(rss_one, 1),
            "rss_three_models_mb": round(rss_three, 1),
            "three_models_forecasts_per_s": round(three_rate),
            **scaled,
            "partition_cost": costs,
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
        if args.install_size:
            results |= install_sizes(work)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
