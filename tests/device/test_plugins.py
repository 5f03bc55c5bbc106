"""The deploy and nowcast plugins against a fake host: no broker, no network thread. What they
route, commit, publish and refuse is exactly what the agent would carry to the broker."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from datetime import date
from pathlib import Path

import pytest

from device.bundle import pack_bundle
from device.errors import PayloadError
from device.keys import load_trusted_keys
from device.modelset import WINDOW_TASKS, load_model_set
from device.plugins.deploy import deploy_plugin
from device.plugins.nowcast import nowcast_plugin
from device.schemas import (
    BUNDLE_CONTENT_TYPE,
    FleetEvent,
    Nowcast,
    NowcastFailure,
    NowcastHistory,
)
from device.settings import load_settings
from forecaster.ops.macro_feed import macro_releases
from tests.support.bundles import TrainedBundle
from tests.support.fake_host import FakeHost, message

AGENT = "unit"


def fake_host(
    tmp_path: Path, bundle: TrainedBundle, tasks: tuple[str, ...] = WINDOW_TASKS
) -> FakeHost:
    """A host serving what `bundle`'s registry holds, from a copy the plugins may change."""
    models = tmp_path / "models"
    shutil.copytree(bundle.registry, models)
    path = tmp_path / "agent.toml"
    path.write_text(
        f'agent_id = "{AGENT}"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[models]\ndir = "{models}"\ntrusted_keys = ["{bundle.keys_dir}"]\n'
        '[nowcast]\ncron = ""\n'
    )
    settings = load_settings(path)
    settings.state_dir.mkdir()
    trusted = load_trusted_keys(settings.models.trusted_keys)
    return FakeHost(settings, load_model_set(models, trusted), tasks=tasks)


def events(outcome) -> list[FleetEvent]:
    return [
        FleetEvent.model_validate_json(m.payload)
        for m in outcome.messages
        if m.topic == f"fleet/{AGENT}/events"
    ]


def test_the_deployer_routes_its_own_deploy_topic_and_serves_no_task(tmp_path, quick_price_bundle):
    host = fake_host(tmp_path, quick_price_bundle)
    deployer = deploy_plugin(host)
    deployer.install()
    assert [r.match for r in host.routes] == [f"fleet/{AGENT}/deploy"]
    assert deployer.tasks == ()


def test_a_deploy_without_a_content_type_is_refused_and_dead_lettered(tmp_path, quick_price_bundle):
    host = fake_host(tmp_path, quick_price_bundle)
    deploy_plugin(host).install()
    outcome = host.handler(f"fleet/{AGENT}/deploy")(message(f"fleet/{AGENT}/deploy", b"x"))
    [event] = events(outcome)
    assert not event.ok and event.detail.startswith("no content type")
    assert host.counters["dead_letters"] == 1


def test_the_served_version_deployed_again_is_answered_without_a_swap(tmp_path, quick_price_bundle):
    host = fake_host(tmp_path, quick_price_bundle)
    before = host.models
    deploy_plugin(host).install()
    payload = pack_bundle(quick_price_bundle.path)
    msg = message(f"fleet/{AGENT}/deploy", payload, mid=7, ContentType=BUNDLE_CONTENT_TYPE)
    ticket = host.handler(msg.topic)(msg)
    [(done, outcome)] = host.wait_finished(1)
    host.stopped.set()
    assert done == ticket and done.mid == 7  # acknowledged only through `finish`
    [event] = events(outcome)
    assert event.ok and event.detail.endswith("is already served")
    assert host.models is before


def test_a_bundle_of_a_task_no_plugin_serves_is_refused(tmp_path, quick_bundles):
    host = fake_host(tmp_path, quick_bundles["price"])  # the host serves price and trend only
    deploy_plugin(host).install()
    payload = pack_bundle(quick_bundles["gdp"].path)
    msg = message(f"fleet/{AGENT}/deploy", payload, ContentType=BUNDLE_CONTENT_TYPE)
    host.handler(msg.topic)(msg)
    [(_, outcome)] = host.wait_finished(1)
    host.stopped.set()
    [event] = events(outcome)
    assert not event.ok and "this agent serves price, trend models" in event.detail


def test_the_nowcast_plugin_is_not_built_without_a_gdp_model(tmp_path, quick_price_bundle):
    assert nowcast_plugin(fake_host(tmp_path, quick_price_bundle)) is None


@pytest.fixture
def nowcast_host(tmp_path, quick_bundles) -> FakeHost:
    host = fake_host(tmp_path, quick_bundles["gdp"])
    service = nowcast_plugin(host)
    assert service is not None and service.tasks == ("gdp",)
    service.install()
    return host


def test_a_release_is_committed_with_the_nowcast_it_leads_to(nowcast_host):
    host = nowcast_host
    assert [r.match for r in host.routes] == ["macro/+", "nowcast/gdp/+/get"]
    release = macro_releases(date(2008, 1, 1), date(2008, 8, 31))[-1]
    outcome = host.handler("macro/x")(
        message(f"macro/{release.series}", release.model_dump_json().encode())
    )
    [out] = outcome.messages
    assert out.topic == "nowcast/gdp/us" and out.retain and out.qos == 1
    assert Nowcast.model_validate_json(out.payload).model == host.models.by_task("gdp")[0].ref
    assert len(outcome.writes) == 3  # panel row, release group, track entry: one transaction
    assert host.counters["nowcasts"] == 1


def test_a_request_is_answered_on_its_response_topic_with_its_correlation(nowcast_host):
    host = nowcast_host
    handle = host.handler("nowcast/gdp/us/get")
    with pytest.raises(PayloadError, match="response topic"):
        handle(message("nowcast/gdp/us/get", b"{}"))
    handle(message("nowcast/gdp/xx/get", b"{}", ResponseTopic="reply/1", CorrelationData=b"c-1"))
    [reply] = host.published
    assert reply.topic == "reply/1" and reply.properties.CorrelationData == b"c-1"
    failure = NowcastFailure.model_validate_json(reply.payload)
    assert failure.region == "xx" and "serving: us" in failure.error
    assert set(json.loads(reply.payload)) == {"agent", "region", "error", "ts"}


def commit(host: FakeHost, outcome) -> None:
    """Run an outcome's state writes in one transaction, as the agent's outbox commit does."""
    with closing(sqlite3.connect(host.state_path)) as db:
        cur = db.cursor()
        for write in outcome.writes:
            write(cur)
        db.commit()


def feed_releases(host: FakeHost, releases) -> list[Nowcast]:
    nowcasts = []
    for r in releases:
        outcome = host.handler("macro/x")(
            message(f"macro/{r.series}", r.model_dump_json().encode())
        )
        commit(host, outcome)
        nowcasts.append(Nowcast.model_validate_json(outcome.messages[0].payload))
    return nowcasts


def history(host: FakeHost, body: bytes = b'{"history": true}') -> NowcastHistory:
    host.handler("nowcast/gdp/us/get")(
        message("nowcast/gdp/us/get", body, ResponseTopic="reply/h", CorrelationData=b"h")
    )
    return NowcastHistory.model_validate_json(host.published[-1].payload)


def test_the_track_is_answered_on_request_and_survives_a_restart(tmp_path, quick_bundles):
    host = fake_host(tmp_path, quick_bundles["gdp"])
    nowcast_plugin(host).install()
    releases = macro_releases(date(2008, 5, 1), date(2008, 8, 31))
    # the month-end market batch of August split by a restart: half before, half after
    cut = len(releases) - 3
    nowcasts = feed_releases(host, releases[:cut])
    latest = nowcasts[-1]
    assert latest.impacts and latest.impacts[-1].series == releases[cut - 1].series
    assert abs(sum(i.impact_pp for i in latest.impacts) - latest.revision) <= 1e-9
    answer = history(host)
    assert answer.nowcast == latest
    assert {e.quarter for e in answer.track} == {"2008Q2", "2008Q3"}  # 2008Q1's were pruned
    assert answer.track[-1].impacts == latest.impacts
    times = [e.time for e in answer.track]
    assert times == sorted(set(times))  # one entry per release time, oldest first
    # a plain request still gets the nowcast itself; a malformed body is dead-lettered
    host.handler("nowcast/gdp/us/get")(
        message("nowcast/gdp/us/get", b"", ResponseTopic="reply/p", CorrelationData=b"p")
    )
    assert Nowcast.model_validate_json(host.published[-1].payload) == latest
    with pytest.raises(PayloadError, match="invalid nowcast request"):
        host.handler("nowcast/gdp/us/get")(
            message("nowcast/gdp/us/get", b"{", ResponseTopic="reply/p")
        )

    restarted = FakeHost(host.settings, host.models, tasks=host.tasks)
    nowcast_plugin(restarted).install()
    [republished] = restarted.emitted[0].messages
    assert Nowcast.model_validate_json(republished.payload).impacts == latest.impacts
    assert history(restarted).track == answer.track
    after = feed_releases(restarted, releases[cut:])[-1]
    # ... the batch goes on across the restart: its split is that of an agent that never stopped
    straight = fake_host(tmp_path / "straight", quick_bundles["gdp"])
    nowcast_plugin(straight).install()
    assert feed_releases(straight, releases)[-1].impacts == after.impacts
    assert len(after.impacts) == sum(r.released_at == releases[-1].released_at for r in releases)
