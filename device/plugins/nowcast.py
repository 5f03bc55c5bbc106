"""The GDP nowcast served by the agent: `macro/<series>` releases in, the retained
`nowcast/gdp/<region>` out, and answers to `nowcast/gdp/<region>/get` on the request's MQTT v5
response topic with its correlation data echoed (what `mosquitto_rr` expects).

The panel of released values lives in the agent's state database and is written in the same
transaction as the nowcasts it leads to, so a release is acknowledged only once both are durable.
The target quarter is the quarter of the latest release time (`as_of`): the student was trained
on information sets whose cut lies inside the quarter it nowcasts (docs/NOWCAST.md).

Each nowcast carries the news of its release time (device/news.py: the move from the nowcast
before that time, split per release) and becomes that time's entry in the region's track
(device/track.py), answered to `{"history": true}` requests.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import numpy as np
import paho.mqtt.client as mqtt
from apscheduler.triggers.cron import CronTrigger
from paho.mqtt.packettypes import PacketTypes
from pydantic import ValidationError

from device.agent.host import Host, Outcome
from device.bars import validation_reason
from device.errors import ModelError, PayloadError
from device.modelset import LoadedModel
from device.mqtt import new_properties
from device.news import Player, attribute
from device.outbox import OutMessage
from device.panel import (
    INPUT_GDP,
    INPUT_MONTHLY,
    OUTPUT_BAND,
    OUTPUT_NOWCAST,
    Change,
    GdpLayout,
    ReleasedPanel,
    check_release,
    load_panel,
    month_label,
    panel_write,
    quarter_label,
    quarter_of,
)
from device.schemas import (
    InformationSet,
    MacroRelease,
    Nowcast,
    NowcastBand,
    NowcastFailure,
    NowcastHistory,
    NowcastRequest,
    ReleaseImpact,
    TrackEntry,
)
from device.track import (
    GroupMember,
    ReleaseGroup,
    Track,
    group_write,
    load_group,
    load_tracks,
    track_write,
)

__all__ = ["NowcastService", "compute_nowcast", "nowcast_plugin", "track_entry"]

logger = logging.getLogger(__name__)

JSON = "application/json"
NOWCAST_COUNTERS = ("nowcasts", "requests")
NO_GROUP = ReleaseGroup()


def _players(
    layout: GdpLayout, quarter: int, group: ReleaseGroup
) -> tuple[list[GroupMember], list[Player]]:
    """The group's releases this model reads, in release order (the manifest's series order,
    then period, for simultaneous ones), and where each sits in the quarter's inputs."""
    order = {s: i for i, s in enumerate(layout.known)}
    members = sorted(
        (m for m in group.members if m.release.series in order),
        key=lambda m: (m.release.released_at, order[m.release.series], m.release.period),
    )
    players = [
        Player(
            layout.cell(quarter, m.release.series, m.release.period),
            np.float32(m.release.value),
            m.release.released_at,
        )
        for m in members
    ]
    return members, players


def compute_nowcast(
    agent_id: str,
    model: LoadedModel,
    layout: GdpLayout,
    panel: ReleasedPanel,
    group: ReleaseGroup = NO_GROUP,
) -> Nowcast:
    """Run the GDP student on the panel's information set for the quarter of its `as_of`, in
    one batch with the inputs before the `group`'s releases, so the nowcast carries each
    release's impact (device/news.py)."""
    if panel.as_of is None:
        raise ModelError("no macro release received yet")
    quarter = quarter_of(panel.as_of)
    monthly, gdp = panel.inputs(layout, quarter)
    members, players = _players(layout, quarter, group)
    base = {INPUT_MONTHLY: monthly[0].copy(), INPUT_GDP: gdp[0].copy()}
    for m, p in zip(members, players, strict=True):
        if p.cell is not None:
            base[p.cell[0]][p.cell[1]] = np.nan if m.previous is None else m.previous.value
    latency: list[float] = []

    def run(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        outputs, ms = model.model.run(batch)
        latency.append(ms)
        centre, band = outputs[OUTPUT_NOWCAST], outputs[OUTPUT_BAND]
        if not (np.isfinite(centre).all() and np.isfinite(band).all()):
            raise ModelError(
                f"{model.model_id} produced a non-finite nowcast for {quarter_label(quarter)}"
            )
        return centre, band

    news = attribute(run, base, players)
    last_month = 3 * quarter + 2
    return Nowcast(
        agent=agent_id,
        region=layout.region,
        quarter=quarter_label(quarter),
        nowcast=news.nowcast,
        band=NowcastBand(lo=news.band[0], hi=news.band[1], levels=layout.band_levels),
        information=InformationSet(
            months=(month_label(last_month - layout.months + 1), month_label(last_month)),
            gdp_quarters=(quarter_label(quarter - layout.gdp_lags), quarter_label(quarter - 1)),
            latest={s: panel.latest(s) for s in layout.known},
            missing=int(np.isnan(monthly).sum() + np.isnan(gdp).sum()),
            cells=int(monthly.size + gdp.size),
        ),
        model=model.ref,
        as_of=panel.as_of,
        latency_ms=latency[0],
        previous=news.previous,
        revision=news.revision,
        impacts=[
            ReleaseImpact(
                series=m.release.series,
                period=m.release.period,
                value=m.release.value,
                previous=None if m.previous is None else m.previous.value,
                released_at=m.release.released_at,
                impact_pp=impact,
            )
            for m, impact in zip(members, news.impacts, strict=True)
        ],
        attribution="shapley" if news.shapley else "sequential",
    )


def track_entry(nowcast: Nowcast, time: datetime) -> TrackEntry:
    """The track's record of `nowcast`, made by the releases of `time`."""
    return TrackEntry(
        quarter=nowcast.quarter,
        time=time,
        nowcast=nowcast.nowcast,
        band=nowcast.band,
        previous=nowcast.nowcast if nowcast.previous is None else nowcast.previous,
        revision=nowcast.revision,
        impacts=nowcast.impacts,
        model=nowcast.model,
        produced_at=nowcast.produced_at,
    )


class NowcastService:
    """Keeps the panel, recomputes on each release and on the cron schedule, answers requests.
    Every method runs on the agent's network thread."""

    tasks: tuple[str, ...] = ("gdp",)

    def __init__(self, host: Host) -> None:
        self.host = host
        self.topics = host.topics
        self.panel = load_panel(host.state_path)
        self.group = load_group(host.state_path)
        self.tracks = load_tracks(host.state_path)
        self._latest: dict[str, Nowcast] = {}  # region -> last computed
        self._layouts: dict[str, GdpLayout] = {}  # model sha256 -> layout
        for name in NOWCAST_COUNTERS:
            host.counters.setdefault(name, 0)

    def install(self) -> None:
        """Routes, the cron job, and a first publish from the stored panel."""
        host = self.host
        requests = self.topics.nowcast_request("+")
        group = host.settings.partition.request_group
        host.route(self.topics.macro_filter(), self.handle_release)
        # Releases go to every agent (each keeps its own panel); one agent of a share group
        # answers each request (a stateless reply: any member may give it).
        host.route(
            requests, self.handle_request, (f"$share/{group}/{requests}" if group else requests,)
        )
        cron = host.settings.nowcast.cron
        if cron:
            host.scheduler.add_job(
                lambda: host.call_soon(self.refresh),
                CronTrigger.from_crontab(cron, timezone=UTC),
                id="nowcast",
                coalesce=True,
                max_instances=1,
                misfire_grace_time=3600,
            )
        if len(self.panel):
            # Computed now, so a request right after a restart finds it; published once the
            # network thread runs, so the retained nowcast comes from the model this agent runs.
            outcome = self._compute(self._models())
            host.call_soon(lambda: host.emit(outcome))

    def _models(self) -> list[tuple[LoadedModel, GdpLayout]]:
        found = []
        for model in self.host.models.by_task("gdp"):
            layout = self._layouts.get(model.ref.sha256)
            if layout is None:
                layout = self._layouts[model.ref.sha256] = GdpLayout.from_manifest(model.manifest)
            found.append((model, layout))
        return found

    def _compute(
        self, models: list[tuple[LoadedModel, GdpLayout]], record: bool = False
    ) -> Outcome:
        """Nowcasts of `models` as retained messages (inference errors become fleet events);
        with `record`, each also becomes its region's track entry for the current group."""
        out = Outcome()
        for model, layout in models:
            try:
                nowcast = compute_nowcast(self.host.agent_id, model, layout, self.panel, self.group)
            except ModelError as exc:
                self.host.counters["errors"] += 1
                logger.warning("%s", exc)
                out.messages.append(self.host.event("inference_error", str(exc), model))
                continue
            self._latest[layout.region] = nowcast
            self.host.counters["nowcasts"] += 1
            self.host.inference_ms.add(nowcast.latency_ms)
            out.messages.append(
                OutMessage(
                    self.topics.nowcast(layout.region),
                    nowcast.model_dump_json().encode(),
                    qos=1,
                    retain=True,
                )
            )
            if record and self.group.released_at is not None:
                entry = track_entry(nowcast, self.group.released_at)
                track = self.tracks.setdefault(layout.region, Track())
                keep = track.put(self.group.id, entry)
                out.writes.append(track_write(layout.region, self.group.id, entry, keep))
        return out

    def handle_release(self, msg: mqtt.MQTTMessage) -> Outcome | None:
        try:
            release = MacroRelease.model_validate_json(msg.payload)
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                raise PayloadError(f"malformed JSON: {exc.errors()[0]['msg']}") from exc
            raise PayloadError(validation_reason("macro release", exc)) from exc
        if msg.topic != self.topics.macro(release.series):
            raise PayloadError(f"series {release.series!r} in the payload differs from the topic's")
        models = self._models()
        if not models:
            raise PayloadError("no gdp model is loaded")
        known = tuple(dict.fromkeys(s for _, layout in models for s in layout.known))
        release = check_release(release, known)
        stored = self.panel.get(release.series, release.period)
        change = self.panel.apply(release)
        if change is Change.SAME:
            self.host.counters["redelivered"] += 1
            return None
        if change is Change.STALE:
            assert stored is not None
            raise PayloadError(
                f"{release.series} {release.period} already holds {stored.value!r} released at "
                f"{stored.released_at.isoformat()}, later than this value"
            )
        if change is Change.REVISION:
            logger.info("%s %s revised to %r", release.series, release.period, release.value)
        self.group = self.group.add(release, stored)
        uses = [(m, layout) for m, layout in models if release.series in layout.known]
        outcome = self._compute(uses, record=True)
        outcome.writes[:0] = [panel_write(release), group_write(self.group)]
        return outcome

    def handle_request(self, msg: mqtt.MQTTMessage) -> Outcome:
        props = msg.properties
        response = getattr(props, "ResponseTopic", None)
        if not response:
            raise PayloadError(
                "a nowcast request needs an MQTT v5 response topic (e.g. mosquitto_rr -e TOPIC)"
            )
        if any(c in response for c in "+#"):
            raise PayloadError(f"response topic {response!r} contains a wildcard")
        try:
            request = NowcastRequest.model_validate_json(msg.payload or b"{}")
        except ValidationError as exc:
            raise PayloadError(validation_reason("nowcast request", exc)) from exc
        self.host.counters["requests"] += 1
        outcome = Outcome()
        region = msg.topic.split("/")[-2]
        answer: Nowcast | NowcastFailure | NowcastHistory = self._answer(region, outcome)
        if request.history and isinstance(answer, Nowcast):
            track = self.tracks.get(region, Track()).around(answer.quarter)
            answer = NowcastHistory(
                agent=self.host.agent_id, region=region, nowcast=answer, track=track
            )
        reply = new_properties(PacketTypes.PUBLISH)
        reply.ContentType = JSON
        correlation = getattr(props, "CorrelationData", None)
        if correlation is not None:
            reply.CorrelationData = correlation
        if not self.host.publish_now(response, answer.model_dump_json().encode(), reply):
            logger.warning("could not answer the nowcast request on %s", response)
        return outcome

    def _answer(self, region: str, outcome: Outcome) -> Nowcast | NowcastFailure:
        """The region's nowcast; recomputed (and republished through `outcome`) when the model
        changed since it was made."""
        models = self._models()
        mine = [(m, layout) for m, layout in models if layout.region == region]
        if not mine:
            served = ", ".join(sorted(layout.region for _, layout in models)) or "none"
            return self._failure(
                region, f"no GDP nowcast for region {region!r} (serving: {served})"
            )
        if self.panel.as_of is None:
            return self._failure(region, "no macro release received yet")
        current = self._latest.get(region)
        if current is None or current.model != mine[0][0].ref:
            again = self._compute(mine[:1])
            outcome.messages.extend(again.messages)
            current = self._latest.get(region)
        if current is None or current.model != mine[0][0].ref:
            return self._failure(region, "the nowcast failed; see the agent's events")
        return current

    def _failure(self, region: str, reason: str) -> NowcastFailure:
        return NowcastFailure(agent=self.host.agent_id, region=region, error=reason)

    def refresh(self) -> None:
        """Recompute and republish every region's nowcast (the cron job and start-up); `as_of`
        moves only with new releases."""
        if self.panel.as_of is None:
            logger.info("no macro release yet; no nowcast to publish")
            return
        self.host.emit(self._compute(self._models()))


def nowcast_plugin(host: Host) -> NowcastService | None:
    """Serve the GDP nowcast when the agent starts with a gdp bundle; None otherwise."""
    if not host.models.by_task("gdp"):
        return None
    service = NowcastService(host)
    logger.info(
        "GDP nowcast: %d released values, as of %s; serving %s",
        len(service.panel),
        service.panel.as_of,
        ", ".join(layout.region for _, layout in service._models()),
    )
    return service
