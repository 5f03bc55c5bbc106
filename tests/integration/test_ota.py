"""Over-the-air models: the real agent (`forecaster-agent` in an edge-only subprocess) behind the
production broker config (TLS, passwords, ACL from deploy/), bundles trained with `--quick`."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.bundle import pack_bundle
from device.keys import generate_keypair, load_private_key
from device.manifest import MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE
from device.schemas import (
    BUNDLE_CONTENT_TYPE,
    COMMAND_CONTENT_TYPE,
    AgentStatus,
    DeadLetter,
    FleetEvent,
    PriceForecast,
)
from device.slots import read_current
from forecaster.training.bundles import write_bundle
from tests.conftest import Broker, TrainedBundle
from tests.integration.conftest import (
    AgentProcess,
    Collector,
    Feed,
    secured_address,
    sp500_closes,
    start_secured,
)
from tests.support.calibration import is_fresh
from tests.support.cli import run_cli as forecaster
from tests.support.waits import in_step, wait_until

pytestmark = pytest.mark.integration

AGENT = "kiosk-01"
SLOT = "price/spx"


# ----- bundles ----------------------------------------------------------------------------------


def signed_version(
    src: Path,
    registry: Path,
    key: Ed25519PrivateKey,
    version: str,
    step: int,
    model: bytes | None = None,
    **changes: Any,
) -> Path:
    """A copy of bundle `src` as another version (created `step` minutes later), properly signed:
    a new version only needs a new version string and a valid signature."""
    fields = json.loads((src / MANIFEST_FILE).read_text())
    del fields["model_sha256"], fields["key_id"]
    fields["version"] = version
    fields["created_at"] = datetime.fromisoformat(fields["created_at"]) + timedelta(minutes=step)
    fields.update(changes)
    return write_bundle(registry, fields, model or (src / MODEL_FILE).read_bytes(), key, {})


def archive(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def constant_graph(window: int, out_shape: tuple[int, int], expr: str) -> bytes:
    """A real ONNX graph `close [batch, window] -> quantiles [batch, H, Q]` whose every output is
    `expr` of the window's first close: "nan" gives NaN everywhere, "sqrt(200-x)" a finite value on
    the agent's flat smoke window (100) but NaN on S&P 500 closes (above 200)."""
    from onnx import TensorProto, helper

    h, q = out_shape
    consts = [
        helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
        helper.make_tensor("ends", TensorProto.INT64, [1], [1]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        helper.make_tensor("shape", TensorProto.INT64, [3], [-1, 1, 1]),
        helper.make_tensor("ones", TensorProto.FLOAT, [1, h, q], [1.0] * (h * q)),
        helper.make_tensor("nan", TensorProto.FLOAT, [1, h, q], [float("nan")] * (h * q)),
        helper.make_tensor("c200", TensorProto.FLOAT, [1], [200.0]),
    ]
    nodes = [
        helper.make_node("Slice", ["close", "starts", "ends", "axes"], ["first"]),
        helper.make_node("Reshape", ["first", "shape"], ["x"]),
    ]
    if expr == "nan":
        nodes.append(helper.make_node("Mul", ["x", "nan"], ["quantiles"]))
    else:
        nodes += [
            helper.make_node("Sub", ["c200", "x"], ["d"]),
            helper.make_node("Sqrt", ["d"], ["s"]),
            helper.make_node("Mul", ["s", "ones"], ["quantiles"]),
        ]
    graph = helper.make_graph(
        nodes,
        f"ota-{expr}",
        [helper.make_tensor_value_info("close", TensorProto.FLOAT, ["batch", window])],
        [helper.make_tensor_value_info("quantiles", TensorProto.FLOAT, ["batch", h, q])],
        initializer=consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


# ----- the fleet under test -------------------------------------------------------------------


@dataclass
class Fleet:
    """A secured broker, the agent kiosk-01 serving price/spx v1, and operator-side clients."""

    tmp: Path
    broker: Broker
    creds: Path
    bundle: TrainedBundle
    models_dir: Path
    v1: Path
    key: Ed25519PrivateKey
    config: Path
    trainer: Collector  # fleet/kiosk-01/# as the `trainer` account (events, dead letters, status)
    analyst: Collector  # forecast/# as the `analyst` account
    feed: Feed
    start_agent: Callable[[], AgentProcess]

    @property
    def window(self) -> int:
        return int(json.loads((self.bundle.path / MANIFEST_FILE).read_text())["window"])

    def url(self, user: str) -> str:
        password = (self.creds / "accounts" / f"{user}.password").read_text().strip()
        return f"mqtts://{user}:{password}@localhost:{self.broker.port}"

    def version(self, name: str, step: int, **kwargs: Any) -> Path:
        return signed_version(self.bundle.path, self.tmp / "built", self.key, name, step, **kwargs)

    def send(self, payload: bytes, content_type: str | None, timeout: float = 30.0) -> FleetEvent:
        """Publish on the agent's deploy topic as the trainer; the agent's next event."""
        before = len(self.events())
        props = Properties(PacketTypes.PUBLISH)
        if content_type is not None:
            props.ContentType = content_type
        info = self.trainer.client.publish(f"fleet/{AGENT}/deploy", payload, 1, properties=props)
        info.wait_for_publish(10)
        found = self.trainer.wait_for(
            f"fleet/{AGENT}/events", lambda e: len(e) > before, timeout=timeout
        )
        return FleetEvent.model_validate(found[before])

    def deploy(self, bundle: Path) -> FleetEvent:
        return self.send(pack_bundle(bundle), BUNDLE_CONTENT_TYPE)

    def rollback(self, version: str | None = None) -> FleetEvent:
        command = {"action": "rollback", "model": SLOT, "version": version}
        return self.send(json.dumps(command).encode(), COMMAND_CONTENT_TYPE)

    def events(self) -> list[dict[str, Any]]:
        return self.trainer.on(f"fleet/{AGENT}/events")

    def status(
        self, predicate: Callable[[AgentStatus], bool], timeout: float = 30.0
    ) -> AgentStatus:
        found = self.trainer.wait_for(
            f"fleet/{AGENT}/status",
            lambda s: bool(s) and predicate(AgentStatus.model_validate(s[-1])),
            timeout,
        )
        return AgentStatus.model_validate(found[-1])

    def served(self, status: AgentStatus) -> str | None:
        return next((m["version"] for m in status.models if m["id"] == SLOT), None)

    def forecasts(self, symbol: str = "SPX") -> list[PriceForecast]:
        return [
            PriceForecast.model_validate(f) for f in self.analyst.on(f"forecast/price/{symbol}")
        ]

    def wait_forecasts(
        self, symbol: str, seqs: range, timeout: float = 30.0
    ) -> dict[int, PriceForecast]:
        """Forecasts by seq once every seq in `seqs` has one."""
        self.analyst.wait_for(
            f"forecast/price/{symbol}",
            lambda _: {f.seq for f in self.forecasts(symbol)} >= set(seqs),
            timeout,
        )
        return {f.seq: f for f in self.forecasts(symbol)}

    def installed(self) -> list[str]:
        return sorted(p.name for p in (self.models_dir / SLOT).iterdir() if p.is_dir())


def agent_toml(path: Path, fleet_port: int, creds: Path, models: Path, keys: Path) -> Path:
    password = (creds / "accounts" / f"{AGENT}.password").read_text().strip()
    path.write_text(
        f"""agent_id = "{AGENT}"
state_dir = "{path.parent / "state"}"
[broker]
url = "mqtts://localhost:{fleet_port}"
username = "{AGENT}"
password = "{password}"
ca_file = "{creds / "ca.crt"}"
reconnect_min_s = 0.1
reconnect_max_s = 0.5
keepalive_s = 5
[models]
dir = "{models}"
trusted_keys = ["{keys}"]
keep_versions = 3
[status]
interval_s = 0.5
"""
    )
    return path


@pytest.fixture
def fleet(
    tmp_path: Path, fleet_credentials: Path, quick_price_bundle: TrainedBundle, agent_process
) -> Iterator[Fleet]:
    (tmp_path / "broker").mkdir()
    broker = start_secured(tmp_path / "broker", fleet_credentials)
    secured = (broker, fleet_credentials)
    src = quick_price_bundle.path
    models_dir = tmp_path / "models"
    v1 = models_dir / src.relative_to(quick_price_bundle.registry)
    v1.mkdir(parents=True)
    for name in (MODEL_FILE, MANIFEST_FILE, SIGNATURE_FILE):  # what a device holds
        (v1 / name).write_bytes((src / name).read_bytes())
    config = agent_toml(
        tmp_path / "agent.toml",
        broker.port,
        fleet_credentials,
        models_dir,
        quick_price_bundle.keys_dir,
    )
    trainer = Collector.subscribed(
        secured_address(secured, "trainer"), "ota-trainer", f"fleet/{AGENT}/#"
    )
    analyst = Collector.subscribed(secured_address(secured, "analyst"), "ota-analyst", "forecast/#")
    feed = Feed(secured_address(secured, "feed"), "ota-feed")
    f = Fleet(
        tmp=tmp_path,
        broker=broker,
        creds=fleet_credentials,
        bundle=quick_price_bundle,
        models_dir=models_dir,
        v1=v1,
        key=load_private_key(next(quick_price_bundle.keys_dir.glob("*.key"))),
        config=config,
        trainer=trainer,
        analyst=analyst,
        feed=feed,
        start_agent=lambda: agent_process(config),
    )
    yield f
    for c in (trainer, analyst, feed):
        c.close()
    broker.stop()


def warm_up(fleet: Fleet, symbols: dict[str, list[tuple[str, float]]]) -> int:
    """Feed each symbol a full window of bars; returns the next seq."""
    w = fleet.window
    for symbol, bars in symbols.items():
        for seq in range(w):
            fleet.feed.bar(symbol, seq, *bars[seq])
    fleet.feed.flush()
    for symbol in symbols:
        fleet.wait_forecasts(symbol, range(w - 1, w))
    return w


# ----- tests ------------------------------------------------------------------------------------


def test_bad_bundles_are_rejected_with_a_reason_and_the_old_model_keeps_serving(
    fleet: Fleet,
) -> None:
    agent = fleet.start_agent()
    v1 = fleet.v1.name
    fleet.status(lambda s: s.online and fleet.served(s) == v1)
    bars = sp500_closes(fleet.window + 20)
    seq = warm_up(fleet, {"SPX": bars})
    w, m = fleet.window, json.loads((fleet.bundle.path / MANIFEST_FILE).read_text())
    out_shape = (len(m["horizons"]), len(m["quantiles"]))

    good = fleet.version("ota-good", 1)
    files = {n: (good / n).read_bytes() for n in (MODEL_FILE, MANIFEST_FILE, SIGNATURE_FILE)}
    stranger = load_private_key(generate_keypair(fleet.tmp / "stranger")[0])
    tampered_model = bytearray(files[MODEL_FILE])
    tampered_model[-8] ^= 0xFF
    bad: dict[str, tuple[bytes, str | None, str]] = {
        "unsigned": (
            archive({MODEL_FILE: files[MODEL_FILE], MANIFEST_FILE: files[MANIFEST_FILE]}),
            BUNDLE_CONTENT_TYPE,
            "unsigned bundle",
        ),
        "untrusted key": (
            pack_bundle(signed_version(fleet.v1, fleet.tmp / "stranger-reg", stranger, "x", 2)),
            BUNDLE_CONTENT_TYPE,
            "not among the trusted keys",
        ),
        "forged signature": (
            archive({**files, SIGNATURE_FILE: bytes(64)}),
            BUNDLE_CONTENT_TYPE,
            "signature does not verify",
        ),
        "tampered model": (
            archive({**files, MODEL_FILE: bytes(tampered_model)}),
            BUNDLE_CONTENT_TYPE,
            "does not match the signed SHA-256",
        ),
        "wrong task": (
            pack_bundle(fleet.version("ota-gdp", 3, task="gdp", series=["INDPRO"])),
            BUNDLE_CONTENT_TYPE,
            "gdp/spx is a gdp model; this agent serves price, trend models",
        ),
        "trend manifest over a price graph": (
            pack_bundle(
                fleet.version(
                    "ota-trend",
                    4,
                    task="trend",
                    horizons=None,
                    quantiles=None,
                    classes=["bear", "sideways", "bull"],
                    outputs=[{"name": "proba", "shape": ["batch", 3]}],
                )
            ),
            BUNDLE_CONTENT_TYPE,
            "output shape [1, 3, 5], expected [1, 3]",
        ),
        "another window": (
            pack_bundle(
                fleet.version(
                    "ota-w32", 5, window=32, inputs=[{"name": "close", "shape": ["batch", 32]}]
                )
            ),
            BUNDLE_CONTENT_TYPE,
            "differ from the served version",
        ),
        "NaN everywhere": (
            pack_bundle(fleet.version("ota-nan", 6, model=constant_graph(w, out_shape, "nan"))),
            BUNDLE_CONTENT_TYPE,
            "non-finite output on a flat window",
        ),
        "NaN on live data only": (
            pack_bundle(fleet.version("ota-sqrt", 7, model=constant_graph(w, out_shape, "sqrt"))),
            BUNDLE_CONTENT_TYPE,
            "non-finite output on the live window of SPX",
        ),
        "not an archive": (b"not a tar.gz", BUNDLE_CONTENT_TYPE, "not a readable archive"),
        "no content type": (pack_bundle(good), None, "no content type"),
        "unknown content type": (
            pack_bundle(good),
            "application/zip",
            "content type 'application/zip'",
        ),
        "malformed command": (
            b'{"action": "reboot"}',
            COMMAND_CONTENT_TYPE,
            "invalid deploy command",
        ),
    }
    for case, (payload, content_type, reason) in bad.items():
        event = fleet.send(payload, content_type)
        assert not event.ok, case
        assert event.kind in ("deploy", "rollback")
        assert reason in event.detail, (case, event.detail)
        assert "\n" not in event.detail
        assert event.detail.endswith(
            (f"still serving {SLOT}@{v1}", "the served models are unchanged")
        )
        # The old model keeps serving: the next bar is forecast by v1.
        fleet.feed.bar("SPX", seq, *bars[seq])
        fleet.feed.flush()
        assert fleet.wait_forecasts("SPX", range(seq, seq + 1))[seq].model.version == v1
        seq += 1

    # Bad input on the deploy topic is also dead-lettered; rejected bundles are not.
    letters = [DeadLetter.model_validate(d) for d in fleet.trainer.on(f"fleet/{AGENT}/deadletter")]
    assert len(letters) == 3
    assert all(d.topic == f"fleet/{AGENT}/deploy" for d in letters)
    assert fleet.installed() == [v1]  # nothing that failed was installed
    assert read_current(fleet.models_dir / SLOT) is None  # and nothing was swapped
    status = fleet.status(lambda s: s.counters["dead_letters"] == 3)
    assert fleet.served(status) == v1
    assert status.counters["errors"] == 0
    assert agent.alive()


def feed_live(
    fleet: Fleet, series: dict[str, Any], swaps: set[int], due: threading.Semaphore
) -> None:
    """Replay `series` as a live feed, not one burst: at most 20 bars ahead of the agent's SPX
    forecasts; at each bar of `swaps`, once the agent has forecast it on every symbol (it may
    run up to 20 bars behind the feed), release `due` so that the swap lands after that bar
    while the feed goes on."""
    w = fleet.window

    def served(symbols: list[str], seq: int) -> bool:
        # bars before the first full window lead to no forecast
        return seq < w - 1 or all(seq in {f.seq for f in fleet.forecasts(s)} for s in symbols)

    n = len(next(iter(series.values())))
    for seq in in_step(range(n), partial(served, ["SPX"]), lead=20, timeout=60):
        for symbol, bars in series.items():
            fleet.feed.bar(symbol, seq, *bars[seq])
        if seq in swaps:
            fleet.feed.flush()
            wait_until(partial(served, list(series), seq), 60, f"the forecasts of bar {seq}")
            due.release()


def test_a_swap_under_a_live_feed_loses_and_duplicates_no_forecast(fleet: Fleet) -> None:
    fleet.start_agent()
    v1, w = fleet.v1.name, fleet.window
    fleet.status(lambda s: s.online)
    n = w + 400
    series = {"SPX": sp500_closes(n, start=4000), "NDX": sp500_closes(n, start=2000)}
    swaps = {w + 100: fleet.version("ota-2", 1), w + 250: fleet.version("ota-3", 2)}
    events: list[FleetEvent] = []
    failures: list[BaseException] = []
    due = threading.Semaphore(0)

    def operator() -> None:
        try:
            for bundle in swaps.values():
                due.acquire()
                events.append(fleet.deploy(bundle))
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=operator)
    thread.start()

    feed_live(fleet, series, set(swaps), due)
    thread.join(60)
    assert not failures, failures
    fleet.feed.flush()

    assert [e.ok for e in events] == [True, True], [e.detail for e in events]
    assert [e.model.version for e in events] == ["ota-2", "ota-3"]
    assert [e.previous.version for e in events] == [v1, "ota-2"]
    for symbol in series:
        by_seq = fleet.wait_forecasts(symbol, range(w - 1, n))
        assert sorted(by_seq) == list(range(w - 1, n))
        # Each forecast key (agent/symbol/seq/slot) names one version only: no bar was forecast
        # twice, by the old and the new model.
        versions: dict[str, set[str]] = defaultdict(set)
        for f in fleet.forecasts(symbol):
            versions[f.key].add(f.model.version)
        assert all(len(v) == 1 for v in versions.values())
        first, second = (e.after_seq[symbol] for e in events)
        assert w + 100 <= first < second < n - 1  # both swaps happened mid-stream
        for seq, f in by_seq.items():
            expected = v1 if seq <= first else "ota-2" if seq <= second else "ota-3"
            assert f.model.version == expected, (symbol, seq)
        assert f"{symbol}#{first}" in events[0].detail
        # Each new version starts its own calibration: its first forecast is corrected as by a
        # fresh state, though the version before it had moved on from one.
        for last in (first, second):
            assert not is_fresh(by_seq[last]) and is_fresh(by_seq[last + 1])


@pytest.mark.slow
def test_a_hundred_hot_swaps_keep_the_agent_rss_flat(fleet: Fleet) -> None:
    agent = fleet.start_agent()
    fleet.status(lambda s: s.online)
    bars = sp500_closes(fleet.window + 120)
    seq = warm_up(fleet, {"SPX": bars})
    bundles = [pack_bundle(fleet.version(f"ota-{i:03d}", i)) for i in range(1, 101)]
    assert agent.proc is not None
    process = psutil.Process(agent.proc.pid)
    start_rss = process.memory_info().rss
    rss, latencies = [], []
    for i, payload in enumerate(bundles, 1):
        started = time.perf_counter()
        event = fleet.send(payload, BUNDLE_CONTENT_TYPE)
        latencies.append((time.perf_counter() - started) * 1000)
        assert event.ok and event.model.version == f"ota-{i:03d}", event.detail
        fleet.feed.bar("SPX", seq, *bars[seq])
        seq += 1
        rss.append(process.memory_info().rss)
    fleet.feed.flush()
    by_seq = fleet.wait_forecasts("SPX", range(fleet.window - 1, seq))
    assert by_seq[seq - 1].model.version == "ota-100"
    growth_mb = (max(rss) - start_rss) / 2**20
    latencies.sort()
    print(  # the numbers docs/DEPLOY.md quotes
        f"\n100 hot swaps: RSS {start_rss / 2**20:.1f} MB at start, {rss[-1] / 2**20:.1f} MB at "
        f"the end, at most {growth_mb:+.1f} MB; deploy round trip p50 {latencies[50]:.0f} ms, "
        f"p99 {latencies[98]:.0f} ms"
    )
    assert growth_mb < 10
    # Old versions are pruned: the served one and the two before it stay.
    assert fleet.installed() == ["ota-098", "ota-099", "ota-100"]
    assert read_current(fleet.models_dir / SLOT) == "ota-100"


def test_rollback_restores_the_previous_version_and_survives_a_restart(fleet: Fleet) -> None:  # noqa: PLR0915 (deploy, roll back, restart: each step needs the last)
    agent = fleet.start_agent()
    v1 = fleet.v1.name
    fleet.status(lambda s: s.online and fleet.served(s) == v1)
    bars = sp500_closes(fleet.window + 20)
    seq = warm_up(fleet, {"SPX": bars})
    v2 = fleet.version("ota-2", 1)
    trainer = ["--broker", fleet.url("trainer"), "--ca", str(fleet.creds / "ca.crt")]

    def forecast_version() -> str:
        nonlocal seq
        fleet.feed.bar("SPX", seq, *bars[seq])
        fleet.feed.flush()
        seq += 1
        return fleet.wait_forecasts("SPX", range(seq - 1, seq))[seq - 1].model.version

    # `forecaster publish` ships the bundle and prints the agent's answer.
    keys = ["--trusted-key", str(fleet.bundle.keys_dir), "--registry", str(fleet.tmp / "built")]
    done = forecaster("publish", str(v2), "--agent", AGENT, *trainer, *keys)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{AGENT}: ok {SLOT} deployed {v1} -> ota-2" in done.stdout
    assert forecast_version() == "ota-2"
    # The same bundle again (e.g. redelivered after a crash) changes nothing.
    assert fleet.deploy(v2).detail == f"{SLOT} ota-2 is already served"
    other_model = (v2 / MODEL_FILE).read_bytes() + b" "
    clash = signed_version(
        fleet.bundle.path, fleet.tmp / "clash", fleet.key, "ota-2", 9, other_model
    )
    event = fleet.deploy(clash)
    assert (
        not event.ok
        and "version ota-2 of price/spx is installed with another model" in event.detail
    )

    # A bundle the agent refuses: the CLI prints the reason and fails.
    gdp = fleet.version("ota-gdp", 2, task="gdp", series=["INDPRO"])
    done = forecaster("publish", str(gdp), "--agent", AGENT, *trainer, *keys)
    assert done.returncode == 1
    assert f"{AGENT}: rejected" in done.stdout and "this agent serves price, trend" in done.stdout

    done = forecaster("fleet", "rollback", "--agent", AGENT, "--model", SLOT, *trainer)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{SLOT} rolled back ota-2 -> {v1}" in done.stdout
    rollback = FleetEvent.model_validate(fleet.events()[-1])
    assert rollback.kind == "rollback" and rollback.model.version == v1
    assert rollback.previous.version == "ota-2"
    assert forecast_version() == v1

    done = forecaster("fleet", "status", *trainer)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if AGENT in line)
    assert "online" in row and f"{SLOT}@{v1}" in row

    # The rollback survives a restart although ota-2 is newer.
    assert agent.terminate() == 0
    fleet.status(lambda s: not s.online)
    restarted = fleet.start_agent()
    status = fleet.status(lambda s: s.online and s.counters["received"] == 0)
    assert fleet.served(status) == v1
    assert forecast_version() == v1

    # Nothing older than v1; then forward again by naming the version.
    event = fleet.rollback()
    assert not event.ok and f"no version of {SLOT} older than {v1}" in event.detail
    event = fleet.rollback("ota-2")
    assert event.ok and event.model.version == "ota-2", event.detail
    assert f"{SLOT} rolled forward {v1} -> ota-2" in event.detail
    assert forecast_version() == "ota-2"
    assert fleet.rollback("ota-2").detail == f"{SLOT} ota-2 is already served"
    event = fleet.rollback("nope")
    assert not event.ok and "version nope of price/spx is not installed" in event.detail
    assert read_current(fleet.models_dir / SLOT) == "ota-2"
    assert restarted.alive()


def test_a_deploy_sent_while_the_agent_is_down_is_applied_when_it_returns(fleet: Fleet) -> None:
    agent = fleet.start_agent()
    fleet.status(lambda s: s.online)
    assert agent.terminate() == 0
    fleet.status(lambda s: not s.online)
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = BUNDLE_CONTENT_TYPE
    payload = pack_bundle(fleet.version("ota-2", 1))
    fleet.trainer.client.publish(f"fleet/{AGENT}/deploy", payload, 1, properties=props)
    fleet.start_agent()  # its persistent session held the deploy
    [event] = fleet.trainer.wait_for(f"fleet/{AGENT}/events", lambda e: len(e) == 1, 30)
    assert event["ok"] and event["model"]["version"] == "ota-2", event["detail"]
    assert fleet.served(fleet.status(lambda s: s.online and fleet.served(s) == "ota-2"))


def test_the_retained_status_names_the_new_version_right_after_a_swap(fleet: Fleet) -> None:
    """With a heartbeat an hour apart, only the republish after a swap can show ota-2 in time."""
    text = fleet.config.read_text()
    fleet.config.write_text(text.replace("interval_s = 0.5", "interval_s = 3600"))
    fleet.start_agent()
    fleet.status(lambda s: s.online and fleet.served(s) == fleet.v1.name)
    event = fleet.deploy(fleet.version("ota-2", 1))
    assert event.ok, event.detail
    assert fleet.served(fleet.status(lambda s: fleet.served(s) == "ota-2", timeout=5))
