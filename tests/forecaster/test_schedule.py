"""`forecaster schedule`: settings, validation metrics of real reports, the promotion decision
against a real Mosquitto and agents' retained statuses, the data-file watch, --once and SIGTERM."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.bundle import unpack_bundle
from device.errors import DeviceError
from device.keys import TrustedKeys, generate_keypair, key_id, load_private_key
from device.mqtt import connect, parse_broker_url
from device.schemas import AgentStatus, FleetEvent, ModelRef
from device.topics import Topics
from forecaster.errors import ScheduleError
from forecaster.ops.promote import (
    bundle_metric,
    gdp_validation_metric,
    price_validation_metric,
    trend_validation_metric,
    validation_metric,
)
from forecaster.ops.schedule import DataFile, ScheduleService, Trainer
from forecaster.ops.settings import (
    RecipeEntry,
    TrainerBroker,
    TrainerSettings,
    load_trainer_settings,
)
from forecaster.training.bundles import SIGNING_KEY_ENV, write_bundle
from tests.conftest import Broker, TrainedBundle, free_port, write_test_config
from tests.support.waits import wait_until

ROOT = Path(__file__).resolve().parents[2]
FORECASTER = [sys.executable, "-m", "forecaster.cli"]
NEVER = "0 0 1 1 *"  # cron: once a year, i.e. not during a test

# Small real-data recipes: enough to produce real reports in a few seconds each.
TINY_PRICE = """
[model]
task = "price"
name = "ndx"
[data]
source = "csv"
symbol = "NDX"
path = "ndx.csv"
[split]
train_end = "2012-12-31"
valid_end = "2015-06-30"
[price]
window = 16
horizons = [1, 5]
quantiles = [0.1, 0.5, 0.9]
[quick.teacher]
hidden = 8
epochs = 1
patience = 1
[quick.student]
hidden = [8]
epochs = 5
patience = 2
augment_copies = 1
[quick.compress]
chains = [["distill"]]
benchmark_runs = 50
calibration_windows = 16
"""
TINY_TREND = """
[model]
task = "trend"
name = "spx"
[data]
source = "sp500"
[split]
start = "2006-01-01"
train_end = "2012-12-31"
valid_end = "2015-12-31"
[trend]
window = 16
[quick.trend.teacher]
fit_last = 1000
[quick.trend.student]
hidden = [8]
epochs = 5
patience = 2
"""
TINY_GDP = """
[model]
task = "gdp"
name = "us"
[data]
source = "macrodata"
[split]
start = "1990-01-01"
train_end = "2000-12-31"
valid_end = "2003-12-31"
[gdp]
series = ["core_cpi", "baa_aaa_spread"]
window_quarters = 2
[quick.gdp.teacher]
maxiter = 5
[quick.gdp.student]
hidden = [8]
epochs = 5
patience = 2
latency_runs = 50
"""
# Passes validation, fails in training: the CSV has no `price` column.
FAILING_PRICE = TINY_PRICE.replace('name = "ndx"', 'name = "bad"').replace(
    'path = "ndx.csv"', 'path = "ndx.csv"\nvalue_column = "price"'
)


def write_ndx_csv(path: Path) -> Path:
    """NASDAQ closes from 2008 on (real data shipped in the repo)."""
    lines = (ROOT / "models" / "data" / "nasdaq_close.csv").read_text().splitlines()
    path.write_text("\n".join([lines[0], *(x for x in lines[1:] if x >= "2008")]) + "\n")
    return path


def write_config(path: Path, body: str, recipes: list[dict[str, Any]]) -> Path:
    text = body
    for r in recipes:
        text += "\n[[recipes]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in r.items())
    path.write_text(text)
    return path


# --- settings -------------------------------------------------------------------------------


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    return generate_keypair(tmp_path / "keys")[0]


@pytest.mark.parametrize(
    ("body", "recipe", "needle"),
    [
        ("fleet = true\nbogus = 1\n", {}, "bogus: Extra inputs are not permitted"),
        ("fleet = true\n", {"cron": "0 2 * *"}, "is not a crontab expression"),
        ("fleet = true\n", {"cron": "61 2 * * *"}, "is not a crontab expression"),
        ('fleet = true\nagents = ["a"]\n', {}, "either `fleet = true` or `agents"),
        ("", {}, "either `fleet = true` or `agents"),
        ('agents = ["a/b"]\n', {}, "agents must be distinct ids"),
        ('fleet = true\ntimezone = "Mars/Base"\n', {}, "not an IANA time zone"),
        ('fleet = true\n[broker]\nurl = "http://x"\n', {}, "is not mqtt://host:port"),
        ('fleet = true\n[broker]\ncert_file = "c.pem"\n', {}, "cert_file and key_file go"),
        ("fleet = true\n", {"path": "nope.toml"}, "recipes.0: recipe"),
        ("fleet = true\n", {"watch": True}, "watch = true needs a CSV data file"),
        ("fleet = true\n", {"quick": "maybe"}, "recipes.0.quick"),
        ("fleet = true\nrecipes = []\n", None, "recipes: List should have at least 1 item"),
        ("fleet = true\n[[recipes]\n", None, "not valid TOML"),
    ],
)
def test_bad_settings_are_one_line_errors(
    tmp_path: Path, keyfile: Path, body: str, recipe: dict[str, Any] | None, needle: str
) -> None:
    entry = {"path": str(ROOT / "models" / "price" / "spx.toml"), "cron": NEVER, **(recipe or {})}
    config = write_config(
        tmp_path / "trainer.toml",
        f'signing_key = "{keyfile}"\n{body}',
        [entry] if recipe is not None else [],
    )
    with pytest.raises(ScheduleError) as err:
        load_trainer_settings(config)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_two_recipes_for_one_model_id_are_refused(tmp_path: Path, keyfile: Path) -> None:
    spx = str(ROOT / "models" / "price" / "spx.toml")
    config = write_config(
        tmp_path / "t.toml",
        f'signing_key = "{keyfile}"\nfleet = true\n',
        [{"path": spx, "cron": NEVER}, {"path": spx, "cron": "0 3 * * *"}],
    )
    with pytest.raises(ScheduleError, match=r"trains price/spx, as recipes\.0 does"):
        load_trainer_settings(config)


def test_signing_key_comes_from_the_file_or_the_environment(
    tmp_path: Path, keyfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spx = str(ROOT / "models" / "price" / "spx.toml")
    config = write_config(tmp_path / "t.toml", "fleet = true\n", [{"path": spx, "cron": NEVER}])
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    with pytest.raises(ScheduleError, match="no signing key"):
        load_trainer_settings(config)
    monkeypatch.setenv(SIGNING_KEY_ENV, str(tmp_path / "missing.key"))
    with pytest.raises(ScheduleError, match=r"missing\.key does not exist"):
        load_trainer_settings(config)
    monkeypatch.setenv(SIGNING_KEY_ENV, str(keyfile))
    settings = load_trainer_settings(config)
    assert settings.signing_key == keyfile
    # relative paths are taken from the config file's directory, as for the agent
    assert settings.registry == (tmp_path / "models" / "registry").resolve()


def test_example_config_is_valid_and_documents_every_key() -> None:
    text = (ROOT / "deploy" / "trainer.example.toml").read_text()
    settings = TrainerSettings.model_validate(tomllib.loads(text))
    assert settings.fleet and len(settings.recipes) == 3
    for model in (TrainerSettings, TrainerBroker, RecipeEntry):
        for name in model.model_fields:
            pattern = rf"^((# )?{name} = |\[\[?{name}\]\]?$)"
            assert re.search(pattern, text, re.MULTILINE), f"{name} is not documented"
    unit = (ROOT / "deploy" / "forecaster-trainer.service").read_text()
    assert "forecaster schedule --config /etc/forecaster/trainer.toml\n" in unit


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text("fleet = true\nrecipes = 3\n")
    result = subprocess.run(
        [*FORECASTER, "schedule", "--config", str(config), "--once"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {config}: recipes: Input should be a valid list"
    ]


# --- validation metrics ---------------------------------------------------------------------


def test_price_metric_is_the_chosen_students_validation_pinball(
    quick_price_bundle: TrainedBundle,
) -> None:
    report = json.loads((quick_price_bundle.path / "report.json").read_text())
    chosen = report["headline"]["chosen"]
    expected = report["models"][chosen]["validation"]["pinball"]["overall"]
    metric = bundle_metric(quick_price_bundle.path)
    assert metric is not None
    assert metric.name == "validation pinball"
    assert metric.value == expected > 0
    # the teacher's own validation pinball is a different number: the student's is the one read
    assert metric.value != report["models"]["teacher"]["validation"]["pinball"]["overall"]


REPORT_KEYS = [
    "task", "headline", "chosen", "models", "validation", "pinball", "overall", "log_loss",
    "evaluation", "metrics", "student", "month_1", "rmse", "price", "trend", "gdp",
]  # fmt: skip
json_like = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.sampled_from(REPORT_KEYS),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(REPORT_KEYS), inner, max_size=4)
    ),
    max_leaves=30,
)


@given(report=st.dictionaries(st.sampled_from(REPORT_KEYS), json_like, max_size=5))
def test_metric_extraction_never_raises_and_is_finite_or_none(report: dict[str, Any]) -> None:
    for extract in (price_validation_metric, trend_validation_metric, gdp_validation_metric):
        value = extract(report)
        assert value is None or (isinstance(value, float) and math.isfinite(value))
    metric = validation_metric(report)
    assert metric is None or math.isfinite(metric.value)


def test_a_report_without_its_metric_has_none() -> None:
    nan_price = {
        "task": "price",
        "headline": {"chosen": "s"},
        "models": {"s": {"validation": {"pinball": {"overall": float("nan")}}}},
    }
    assert validation_metric(nan_price) is None
    assert validation_metric({"task": "gdp", "evaluation": {"test": {}}}) is None
    assert validation_metric({"task": "weather"}) is None


# --- a fake agent: the fleet side of the edge agent over a real broker -----------------------


class FakeAgent:
    """A retained AgentStatus naming what it runs; a deploy handler that verifies and installs
    the packed bundle as a device does, then answers on its events topic."""

    def __init__(
        self,
        url: str,
        agent: str,
        trusted: TrustedKeys,
        models_dir: Path,
        running: list[dict[str, Any]],
        accept: bool = True,
    ) -> None:
        self.agent, self.trusted, self.models_dir, self.accept = agent, trusted, models_dir, accept
        self.models = running
        self.received: list[str] = []
        self.topics = Topics()
        self.client = connect(parse_broker_url(url), f"fake-{agent}")
        self.client.on_message = self._on_deploy
        self.client.subscribe(self.topics.deploy(agent), qos=1)
        self._publish_status()  # after the SUBSCRIBE, so its PUBACK means we are listening

    def _publish_status(self) -> None:
        status = AgentStatus(agent=self.agent, online=True, models=self.models)
        info = self.client.publish(
            self.topics.status(self.agent), status.model_dump_json(), qos=1, retain=True
        )
        info.wait_for_publish(timeout=10)

    def _on_deploy(self, _client: object, _userdata: object, msg: Any) -> None:
        try:
            bundle = unpack_bundle(msg.payload, self.trusted, self.models_dir)
        except DeviceError as exc:
            self._answer(False, str(exc), None)
            return
        m = bundle.manifest
        self.received.append(f"{m.model_id}@{m.version}")
        if not self.accept:
            self._answer(False, "smoke test failed", None)
            return
        self.models = [x for x in self.models if x["id"] != m.model_id] + [described(m)]
        self.client.publish(
            self.topics.status(self.agent),
            AgentStatus(agent=self.agent, online=True, models=self.models).model_dump_json(),
            qos=1,
            retain=True,
        )
        ref = ModelRef(name=m.name, version=m.version, sha256=m.model_sha256)
        self._answer(True, f"running {m.model_id} {m.version}", ref)

    def _answer(self, ok: bool, detail: str, model: ModelRef | None) -> None:
        event = FleetEvent(agent=self.agent, kind="deploy", ok=ok, detail=detail, model=model)
        self.client.publish(self.topics.events(self.agent), event.model_dump_json(), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def described(manifest: Any) -> dict[str, Any]:
    """The `models` entry of an agent's status for a bundle (device/modelset.py: describe)."""
    return {
        "id": manifest.model_id,
        "task": manifest.task,
        "name": manifest.name,
        "version": manifest.version,
        "sha256": manifest.model_sha256,
    }


# --- the promotion decision ------------------------------------------------------------------


@dataclass
class Fleet:
    broker: Broker
    registry: Path
    key: Path
    trusted: TrustedKeys
    new: Path  # the freshly trained bundle
    bundles: dict[str, Path]  # deployed candidates by label
    agents: list[FakeAgent]

    def agent(self, name: str, running: str | None, accept: bool = True) -> FakeAgent:
        models = [described(manifest_of(self.bundles[running]))] if running else []
        fake = FakeAgent(
            self.broker.url, name, self.trusted, self.registry.parent / name, models, accept
        )
        self.agents.append(fake)
        return fake

    def trainer(self, agents: list[str] | None = None, wait_s: float = 10) -> Trainer:
        settings = TrainerSettings(
            registry=self.registry,
            signing_key=self.key,
            fleet=agents is None,
            agents=agents or [],
            deploy_wait_s=wait_s,
            broker={"url": self.broker.url},
            recipes=[RecipeEntry(path=ROOT / "models" / "price" / "spx.toml", cron=NEVER)],
        )
        return Trainer(settings)


def manifest_of(bundle: Path) -> Any:
    from device.manifest import BundleManifest

    return BundleManifest.model_validate_json((bundle / "manifest.json").read_bytes())


def rebundle(src: Path, registry: Path, version: str, factor: float, key: Path) -> Path:
    """The quick bundle re-signed as another version whose validation pinball is `factor` x
    the original's: a deployed bundle that was better or worse than the new one."""
    manifest = json.loads((src / "manifest.json").read_text())
    report = json.loads((src / "report.json").read_text())
    chosen = report["headline"]["chosen"]
    report["models"][chosen]["validation"]["pinball"]["overall"] *= factor
    fields = {k: v for k, v in manifest.items() if k not in ("model_sha256", "key_id")}
    fields["version"] = version
    model = (src / "model.onnx").read_bytes()
    return write_bundle(registry, fields, model, load_private_key(key), report)


@pytest.fixture
def fleet(tmp_path: Path, broker: Broker, quick_price_bundle: TrainedBundle) -> Iterator[Fleet]:
    key = next(quick_price_bundle.keys_dir.glob("*.key"))
    public = load_private_key(key).public_key()
    registry = tmp_path / "registry"
    src = quick_price_bundle.path
    bundles = {
        "worse": rebundle(src, registry, "20200101T000000000000Z", 1.25, key),
        "better": rebundle(src, registry, "20200102T000000000000Z", 0.8, key),
        "equal": rebundle(src, registry, "20200103T000000000000Z", 1.0, key),
    }
    new = rebundle(src, registry, "20300101T000000000000Z", 1.0, key)
    f = Fleet(broker, registry, key, {key_id(public): public}, new, bundles, [])
    yield f
    for agent in f.agents:
        agent.close()


def pinball(bundle: Path) -> float:
    metric = bundle_metric(bundle)
    assert metric is not None
    return metric.value


@pytest.mark.parametrize(
    ("running", "published", "verdict"),
    [
        ("worse", True, "→ published to 1 agent"),
        (None, True, "vs nothing deployed → published to 1 agent"),
        ("better", False, "→ not published: not better"),
        ("equal", False, "→ not published: not better"),
    ],
)
def test_publishes_only_when_better_than_the_deployed_bundle(
    fleet: Fleet,
    running: str | None,
    published: bool,
    verdict: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = fleet.agent("kiosk-1", running)
    caplog.set_level("INFO", logger="forecaster.ops.schedule")
    outcome = fleet.trainer(agents=["kiosk-1"]).promote(fleet.new)
    new = "price/spx@20300101T000000000000Z"
    assert agent.received == ([new] if published else [])
    assert outcome.decision.publish == (("kiosk-1",) if published else ())
    head = f"price/spx 20300101T000000000000Z: validation pinball {pinball(fleet.new):.4g} vs "
    assert outcome.message.startswith(head)
    if running:
        deployed = fleet.bundles[running]
        assert f"deployed {pinball(deployed):.4g} ({deployed.name})" in outcome.message
    assert outcome.message.endswith(verdict)
    assert outcome.message in caplog.messages
    if published:
        event = outcome.events["kiosk-1"]
        assert event is not None and event.ok and event.model is not None
        assert event.model.version == "20300101T000000000000Z"


def test_fleet_decides_per_agent_and_reports_rejections(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    worse = fleet.agent("a-worse", "worse")
    better = fleet.agent("b-better", "better")
    empty = fleet.agent("c-empty", None, accept=False)
    caplog.set_level("WARNING", logger="forecaster.ops.schedule")
    outcome = fleet.trainer().promote(fleet.new)  # fleet = true: every agent with a status
    assert sorted(outcome.decision.publish) == ["a-worse", "c-empty"]
    assert worse.received and empty.received and not better.received
    assert outcome.message.endswith(
        "→ published to 2 agents (1 accepted, 1 rejected); not to b-better: not better"
    )
    assert "nothing on 1 agent" in outcome.message
    assert any("c-empty rejected price/spx" in m for m in caplog.messages)


def test_a_deployed_bundle_that_cannot_be_judged_is_left_alone(fleet: Fleet) -> None:
    agent = fleet.agent("kiosk-1", "worse")
    shutil.rmtree(fleet.bundles["worse"])  # the registry no longer has what the agent runs
    outcome = fleet.trainer(agents=["kiosk-1", "kiosk-2"], wait_s=1).promote(fleet.new)
    assert agent.received == []
    # kiosk-2 has no status at all: it runs nothing we know of, so it gets the bundle
    assert outcome.decision.publish == ("kiosk-2",)
    assert outcome.decision.skip == {
        "kiosk-1": "deployed version 20200101T000000000000Z is not in the registry"
    }
    assert outcome.events == {"kiosk-2": None}  # no such agent online: no answer


def test_a_bundle_without_a_validation_metric_is_never_published(fleet: Fleet) -> None:
    agent = fleet.agent("kiosk-1", None)  # even to an agent that runs nothing
    unscored = rebundle(fleet.new, fleet.registry, "20300102T000000000000Z", math.nan, fleet.key)
    outcome = fleet.trainer().promote(unscored)
    assert outcome.message == (
        "price/spx 20300102T000000000000Z: no validation metric in its report → not published"
    )
    assert agent.received == []


def test_no_agents_in_the_fleet_publishes_nothing(fleet: Fleet) -> None:
    outcome = fleet.trainer().promote(fleet.new)
    assert outcome.message.endswith("→ not published: no agents to publish to")
    assert outcome.events == {}


# --- watching a data file --------------------------------------------------------------------


def test_data_file_digest_changes_with_content_not_with_touch(tmp_path: Path) -> None:
    path = write_ndx_csv(tmp_path / "ndx.csv")
    data = DataFile(path)
    first = data.digest()
    assert first is not None
    later = time.time() + 10
    os.utime(path, (later, later))
    assert data.digest() == first
    with path.open("a") as fh:
        fh.write("2019-01-02,6665.94\n")
    assert data.digest() not in (None, first)
    path.unlink()
    assert data.digest() is None


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    wait_until(predicate, timeout, what, interval=0.1)


def count_polls(data: DataFile) -> list[str | None]:
    """Every digest the service asks of `data` (one per poll): a sentinel for "it looked"."""
    seen: list[str | None] = []
    real = data.digest

    def digest() -> str | None:
        value = real()
        seen.append(value)
        return value

    data.digest = digest  # type: ignore[method-assign]
    return seen


def test_changed_data_file_retrains_the_recipe_now(
    tmp_path: Path, broker: Broker, keyfile: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csv = write_ndx_csv(tmp_path / "ndx.csv")
    (tmp_path / "ndx.toml").write_text(TINY_PRICE)
    config = write_config(
        tmp_path / "trainer.toml",
        f'signing_key = "{keyfile}"\nfleet = true\nwatch_interval_s = 0.2\n'
        f'[broker]\nurl = "{broker.url}"\n',
        [{"path": "ndx.toml", "cron": NEVER, "watch": True, "quick": True}],
    )
    caplog.set_level("INFO", logger="forecaster")
    service = ScheduleService(load_trainer_settings(config))
    polls = count_polls(next(iter(service.watched.values())))
    service.start()
    registry = tmp_path / "models" / "registry"
    try:
        os.utime(csv, (time.time() + 5, time.time() + 5))  # touched, same content
        # A change must hold for one poll before it retrains: two polls after the touch are
        # enough to know that it was not taken for one.
        after_touch = len(polls)
        wait_for(lambda: len(polls) >= after_touch + 2, 30, "two polls of the touched file")
        assert not any("retraining now" in m for m in caplog.messages)
        assert not list(registry.glob("*/*/*/manifest.json")), "unchanged data must not retrain"
        with csv.open("a") as fh:
            fh.write("2019-01-02,6665.94\n")
        wait_for(lambda: any("→ not published" in m for m in caplog.messages), 120, "a run")
    finally:
        service.shutdown()
    assert any(f"data file {csv} changed; retraining now" in m for m in caplog.messages)
    assert any(f"retraining {tmp_path / 'ndx.toml'} (data file" in m for m in caplog.messages)
    assert len(list(registry.glob("price/ndx/*/manifest.json"))) == 1


# --- the command line: --once end to end, and clean shutdown ---------------------------------


@dataclass(frozen=True)
class OnceRun:
    result: subprocess.CompletedProcess[str]
    registry: Path
    agent: FakeAgent


@pytest.fixture(scope="module")
def once_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnceRun]:
    """`forecaster schedule --once` over a failing recipe, then trend and GDP recipes, with one
    agent that runs nothing yet."""
    root = tmp_path_factory.mktemp("once")
    port = free_port()
    broker = Broker(port=port, config=write_test_config(root, port), workdir=root)
    broker.start()
    private = generate_keypair(root / "keys")[0]
    public = load_private_key(private).public_key()
    trusted = {key_id(public): public}
    write_ndx_csv(root / "ndx.csv")
    for name, text in (("bad", FAILING_PRICE), ("trend", TINY_TREND), ("gdp", TINY_GDP)):
        (root / f"{name}.toml").write_text(text)
    config = write_config(
        root / "trainer.toml",
        f'signing_key = "keys/{private.name}"\nagents = ["kiosk-1"]\n[broker]\nurl = "{broker.url}"\n',
        [
            {"path": f"{n}.toml", "cron": "30 2 * * 1-5", "quick": True}
            for n in ("bad", "trend", "gdp")
        ],
    )
    agent = FakeAgent(broker.url, "kiosk-1", trusted, root / "agent-models", [])
    try:
        result = subprocess.run(
            [*FORECASTER, "schedule", "--config", str(config), "--once"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=root,
        )
        yield OnceRun(result, root / "models" / "registry", agent)
    finally:
        agent.close()
        broker.stop()


def test_once_runs_every_recipe_and_publishes_new_model_ids(once_run: OnceRun) -> None:
    result = once_run.result
    lines = result.stderr.strip().splitlines()
    # a failed run is logged and the others still run; the exit status says one failed
    assert result.returncode == 1
    assert any(
        "run of" in x and "bad.toml failed: " in x and "no column 'price'" in x for x in lines
    )
    assert (
        lines[-1] == "error: 1 of 3 scheduled run(s) failed or were stopped; the log above says why"
    )
    published = [x for x in lines if "vs nothing deployed → published to 1 agent" in x]
    assert len(published) == 2, result.stderr
    assert "trend/spx " in published[0] and "validation log loss" in published[0]
    assert "gdp/us " in published[1] and "validation RMSE" in published[1]
    assert sorted(v.split("@")[0] for v in once_run.agent.received) == ["gdp/us", "trend/spx"]
    assert "Traceback" not in result.stderr


def test_trend_metric_is_the_chosen_students_validation_log_loss(once_run: OnceRun) -> None:
    (bundle,) = (p.parent for p in once_run.registry.glob("trend/spx/*/report.json"))
    report = json.loads((bundle / "report.json").read_text())
    chosen = report["headline"]["chosen"]
    metric = validation_metric(report)
    assert metric is not None and metric.name == "validation log loss"
    assert metric.value == report["models"][chosen]["validation"]["log_loss"] > 0


def test_gdp_metric_is_the_students_mean_validation_rmse(once_run: OnceRun) -> None:
    (bundle,) = (p.parent for p in once_run.registry.glob("gdp/us/*/report.json"))
    report = json.loads((bundle / "report.json").read_text())
    months = report["evaluation"]["validation"]["metrics"]["student"]
    metric = validation_metric(report)
    assert metric is not None and metric.name == "validation RMSE"
    assert metric.value == pytest.approx(sum(m["rmse"] for m in months.values()) / len(months))
    assert len(months) == 3  # one per information month


def start_schedule(config: Path, *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """The command in the background; its stderr lines are collected as they come."""
    process = subprocess.Popen(
        [*FORECASTER, "schedule", "--config", str(config), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert process.stderr is not None
    stream = process.stderr
    threading.Thread(target=lambda: lines.extend(iter(stream.readline, "")), daemon=True).start()
    return process, lines


@pytest.mark.parametrize("once", [False, True])
def test_sigterm_stops_the_service_and_a_training_at_once(
    tmp_path: Path, broker: Broker, keyfile: Path, once: bool
) -> None:
    # the full (not quick) recipe trains for minutes: stopping it must not wait for that
    config = write_config(
        tmp_path / "trainer.toml",
        f'signing_key = "{keyfile}"\nfleet = true\n[broker]\nurl = "{broker.url}"\n',
        [{"path": str(ROOT / "models" / "price" / "spx.toml"), "cron": NEVER}],
    )
    process, lines = start_schedule(config, *(["--once"] if once else []))
    try:
        ready = "retraining " if once else "scheduler started with 1 recipe(s)"
        wait_for(lambda: any(ready in x for x in lines), 60, ready)
        if once:  # the training child is running
            wait_for(lambda: bool(psutil.Process(process.pid).children()), 60, "the training")
        process.send_signal(signal.SIGTERM)
        rc = process.wait(timeout=20)
    finally:
        process.kill()
    text = "".join(lines)
    assert "Traceback" not in text
    if once:
        assert rc == 1
        assert "stopped: training stopped: the scheduler is shutting down" in text
    else:
        assert rc == 0
        assert "cron '0 0 1 1 *', next run" in text
        assert "scheduler stopped" in text
    assert not list((tmp_path / "models" / "registry").glob("*/*/*/manifest.json"))
