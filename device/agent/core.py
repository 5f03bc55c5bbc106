"""The edge agent: bars in over MQTT v5, ONNX forecasts out, nothing lost across crashes.

Threads: one network thread owns the paho client, the outbox and the windows; it runs the message
handlers, publishes the outbox in id order and runs work handed to it with `call_soon` (the
apscheduler jobs do that). Other threads only request work, swap the model set or ask to stop.
Plugins (device/plugins/) add handlers through the `Host` methods below (device/agent/host.py).
"""

from __future__ import annotations

import gc
import json
import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from apscheduler.schedulers.background import BackgroundScheduler
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from device.agent.bar_handler import BarHandler
from device.agent.calibrators import Calibrators, load_calibration
from device.agent.delivery import Delivery
from device.agent.host import Handler, Outcome, Plugin, PluginFactory, Route, Ticket
from device.agent.messages import dead_letter, failure_event
from device.errors import AgentError, ConfigError, PayloadError
from device.health import COUNTERS, LatencyWindow
from device.keys import TrustedKeys, load_trusted_keys
from device.memory import release_free_memory
from device.modelset import WINDOW_TASKS, LoadedModel, ModelSet, load_model_set
from device.mqtt import backoff_delay, new_client, new_properties, read_available, write_pending
from device.outbox import Outbox, OutMessage, StateWrite, WindowState
from device.redelivery import CommittedInputs, input_digest
from device.schemas import AgentStatus
from device.settings import AgentSettings
from device.topics import Topics, topic_matches

__all__ = ["Agent"]

logger = logging.getLogger(__name__)

LOOP_TIMEOUT_S = 0.05
# Acknowledged rows are deleted in the next bar's transaction, or after this long without one.
ACK_FLUSH_S = 0.2
# Messages handled in one pass of the network loop share one transaction (group commit). A pass
# has a fixed cost (~1-2 ms here: the commit, one inference call and the stacked calibration per
# model), so when bars queue up larger passes serve more of them per CPU second: 128 bars and 20 ms
# cost ~4% less CPU per bar than 64 and 10 ms, and a backlog drains faster (docs/BENCHMARKS.md,
# "Agent"). Under a light feed passes stay small and these bounds are never reached; after a stall
# they keep the first bars of a backlog from waiting on the rest.
MAX_BATCH = 128
MAX_BATCH_WAIT_S = 0.020
# A pass keeps reading what arrives this long after its first message: under a steady feed,
# bars a fraction of a millisecond apart then share one inference call per model and one commit
# (a pass's fixed cost, ~1-2 ms here, is otherwise paid per bar; docs/BENCHMARKS.md, "Agent").
PASS_LINGER_S = 0.001
MAX_PENDING_CALLS = 256
SUBSCRIPTIONS_META = "subscriptions"


def _trusted_keys(settings: AgentSettings) -> TrustedKeys:
    missing = [str(p) for p in settings.models.trusted_keys if not p.exists()]
    if missing:
        raise ConfigError(f"trusted key path(s) do not exist: {', '.join(missing)}")
    keys = load_trusted_keys(settings.models.trusted_keys)
    if not keys:
        paths = ", ".join(str(p) for p in settings.models.trusted_keys)
        raise ConfigError(f"no trusted public keys (*.pub) in {paths}")
    return keys


def _load_models(settings: AgentSettings, keys: TrustedKeys) -> ModelSet:
    if not settings.models.dir.is_dir():
        raise ConfigError(f"models directory {settings.models.dir} does not exist")
    models = load_model_set(settings.models.dir, keys, settings.models.intra_op_threads)
    if not models.models:
        logger.warning(
            "no usable model in %s; serving nothing until one is deployed", settings.models.dir
        )
    return models


def _open_outbox(settings: AgentSettings) -> Outbox:
    outbox = Outbox(settings.outbox_path, settings.outbox.max_bytes)
    if outbox.rows:
        logger.info(
            "%d message(s) (%d bytes) from before wait in the outbox", outbox.rows, outbox.bytes
        )
    return outbox


class Agent:
    """`Agent(settings, plugins).run()` serves until `request_stop()` (or `start()` ... `stop()`).
    `plugins` are factories (device/plugins/) called with the agent as their `Host`."""

    def __init__(self, settings: AgentSettings, plugins: Sequence[PluginFactory] = ()) -> None:
        self.settings = settings
        self.agent_id = settings.agent_id
        self.topics = Topics(settings.topic_prefix)
        self.trusted_keys = _trusted_keys(settings)
        self._models_lock = threading.Lock()
        self._models = _load_models(settings, self.trusted_keys)
        self.outbox = _open_outbox(settings)
        self._committed = CommittedInputs(settings.outbox_path)
        self.counters: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
        self.inference_ms = LatencyWindow()
        self.message_ms = LatencyWindow()
        self.started_at = datetime.now(UTC)
        self._started = time.monotonic()
        self._client = self._new_client()
        self._delivery = Delivery(
            self._client, self.outbox, settings.outbox.max_inflight, self.counters
        )
        saved = self.outbox.windows()
        calibrators = Calibrators(settings.calibration, load_calibration(self.outbox.path))
        self._bars = BarHandler(
            settings,
            self._model_set,
            saved,
            self.counters,
            self.inference_ms,
            self.event,
            calibrators,
        )
        self._routes = [
            Route(self.topics.bar_filter(), self._bars.subscriptions(), self._bars.handle)
        ]
        self._init_network_state()
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.plugins: list[Plugin] = []
        self._install(plugins)

    def _install(self, factories: Sequence[PluginFactory]) -> None:
        """Build each plugin for this host and let it add its routes and jobs, in order."""
        for factory in factories:
            plugin = factory(self)
            if plugin is not None:
                plugin.install()
                self.plugins.append(plugin)

    def _new_client(self) -> mqtt.Client:
        broker = self.settings.broker
        client = new_client(broker.address(), self.settings.client_id, manual_ack=True)
        client.connect_timeout = broker.connect_timeout_s
        # paho's own limit off: `Delivery.pump` keeps within the broker's Receive Maximum itself.
        client.max_inflight_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_socket_register_write = self._on_packet_queued
        props = new_properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = broker.session_expiry_s
        props.ReceiveMaximum = broker.receive_maximum
        address = broker.address()
        # clean_start=False: the broker keeps our subscriptions and queues QoS 1 bars while we
        # are away, for `session_expiry_s`.
        client.connect_async(
            address.host,
            address.port,
            keepalive=broker.keepalive_s,
            clean_start=False,
            properties=props,
        )
        return client

    def _init_network_state(self) -> None:
        """State only the network thread touches, and the flags other threads set."""
        self._connection = 0  # counts successful connects (see Ticket)
        self._attempt = 0
        self._last_commit = time.monotonic()
        # The current group commit: outputs, latest window per symbol, inputs to acknowledge.
        self._batch: list[OutMessage] = []
        self._batch_writes: list[StateWrite] = []
        self._batch_inputs: list[tuple[int, int, float]] = []  # mid, qos, perf_counter at receipt
        # (mid, digest) of the handled inputs: one committed-inputs write per commit, not per input
        self._batch_digests: list[tuple[int, bytes]] = []
        self._pump_due = False
        self._queued_packets = 0
        self._calls: queue.Queue[Callable[[], None]] = queue.Queue(MAX_PENDING_CALLS)
        self._stop_requested = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.fatal: BaseException | None = None

    # ----- the Host protocol (device/agent/host.py): what plugins call -----------------------

    @property
    def state_path(self) -> Path:
        return self.outbox.path

    def served_tasks(self) -> tuple[str, ...]:
        """Bundle tasks with a handler: the bar handler's, then each plugin's."""
        tasks = [*WINDOW_TASKS, *(t for p in self.plugins for t in p.tasks)]
        return tuple(dict.fromkeys(tasks))

    def route(self, match: str, handler: Handler, subscriptions: tuple[str, ...] = ()) -> None:
        """Send messages whose topic matches `match` to `handler`; subscribe `subscriptions`
        (default: `match` itself). Call before `start()`."""
        self._routes.append(Route(match, subscriptions or (match,), handler))

    @property
    def models(self) -> ModelSet:
        return self._models

    def _model_set(self) -> ModelSet:
        """The set served now, read by the bar handler at each bar (a swap replaces it)."""
        return self._models

    def update_models(self, change: Callable[[ModelSet], ModelSet]) -> ModelSet:
        """Replace the model set atomically; each bar runs against one whole set, old or new."""
        with self._models_lock:
            self._models = change(self._models)
            return self._models

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the network thread (where publishing and the outbox are safe)."""
        try:
            self._calls.put_nowait(fn)
        except queue.Full:
            logger.warning("network thread is behind; dropped a scheduled call to %s", fn)

    def emit(self, outcome: Outcome) -> None:
        """Commit and publish what no input message produced (scheduled work, e.g. the nowcast's
        cron job). Network thread only: call it from a function given to `call_soon`."""
        self._collect(outcome)
        self._commit_batch()

    def defer(self, msg: mqtt.MQTTMessage) -> Ticket:
        """For a handler that finishes `msg` off the network thread: it returns this ticket, and
        the input is acknowledged only once `finish` has committed what it led to."""
        return Ticket(msg.mid, msg.qos, self._connection)

    def finish(self, ticket: Ticket, outcome: Outcome) -> None:
        """Commit a deferred input's outcome, then acknowledge the input. Network thread only
        (via `call_soon`). An input from an earlier connection is not acknowledged: the broker
        delivers it again, and its handler must recognise the redelivery."""
        self._collect(outcome)
        if ticket.connection == self._connection:
            # Timed from now: the message latency stats measure the commit, not the handler's work.
            self._batch_inputs.append((ticket.mid, ticket.qos, time.perf_counter()))
        self._commit_batch()

    def window_states(self) -> list[WindowState]:
        """A copy of every symbol's window (last seq, closes). Network thread only."""
        return [w.state() for w in self._bars.windows.values()]

    def publish_now(self, topic: str, payload: bytes, properties: Properties | None = None) -> bool:
        """Publish at QoS 0 straight to the connection, outside the outbox: for replies, which
        are worthless once the requester has given up (and QoS 0 takes no Receive Maximum slot).
        Network thread only; False when not connected."""
        if not self._delivery.connected:
            return False
        return self._client.publish(topic, payload, qos=0, properties=properties).rc == 0

    # ----- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying with backoff) and start the status heartbeat."""
        if self._thread is not None:
            raise AgentError("agent already started")
        self.scheduler.add_job(
            self._heartbeat,
            "interval",
            seconds=self.settings.status.interval_s,
            id="heartbeat",
            coalesce=True,
            max_instances=1,
        )
        self.scheduler.start()
        # The start-up objects (modules, sessions, schemas) live as long as the process; frozen,
        # they no longer make every full collection a ~10 ms pause in the middle of a bar.
        gc.collect()
        gc.freeze()
        self._thread = threading.Thread(
            target=self._network_main, name="agent-network", daemon=True
        )
        self._thread.start()
        logger.info(
            "agent %s serving %d model(s): %s",
            self.agent_id,
            len(self._models.models),
            ", ".join(f"{m.model_id}@{m.ref.version}" for m in self._models.models) or "none",
        )

    def request_stop(self) -> None:
        """Ask the agent to stop; safe from signal handlers and any thread."""
        self._stop_requested.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested; True if it was."""
        return self._stop_requested.wait(timeout)

    def stop(self) -> None:
        """Flush the outbox to the broker (up to `flush_timeout_s`), publish the offline status,
        disconnect and close. Idempotent."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(self.settings.outbox.flush_timeout_s + 10.0)
            if self._thread.is_alive():
                logger.error("network thread did not stop in time")
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self._committed.close()
        self.outbox.close()

    def run(self) -> None:
        """Serve until `request_stop()`, then stop cleanly."""
        self.start()
        try:
            while not self.wait(1.0):
                pass
        finally:
            self.stop()

    # ----- network thread -------------------------------------------------------------------

    def _network_main(self) -> None:
        while not self._stop_requested.is_set():
            if not self._open():
                self._stop_requested.wait(self._next_delay())
                continue
            rc = MQTTErrorCode.MQTT_ERR_SUCCESS
            while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and not self._stop_requested.is_set():
                rc = self._loop_once()
            if self._stop_requested.is_set():
                break
            self._delivery.connected = False
            self._stop_requested.wait(self._next_delay())
        self._shutdown()

    def _open(self) -> bool:
        self._client.will_set(
            self.topics.status(self.agent_id), self._status(online=False), qos=1, retain=True
        )
        try:
            self._client.reconnect()
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake
            logger.warning("cannot reach broker %s: %s", self.settings.broker.address().url, exc)
            return False
        return True

    def _next_delay(self) -> float:
        b = self.settings.broker
        delay = backoff_delay(self._attempt, b.reconnect_min_s, b.reconnect_max_s)
        self._attempt += 1
        logger.info("reconnecting in %.2f s", delay)
        return delay

    def _loop_once(self) -> MQTTErrorCode:
        """Read what has arrived, commit it as one batch, then send acks and outputs together."""
        try:
            sent = self._send_queued()  # e.g. CONNECT, queued by reconnect()
            received = self.counters["received"]
            rc = read_available(
                self._client,
                LOOP_TIMEOUT_S,
                MAX_BATCH,
                enough=lambda: self.counters["received"] - received >= MAX_BATCH,
                linger=PASS_LINGER_S,
            )
            self._commit_batch()
            self._housekeeping()
            sent = sent or self._send_queued()
        except Exception:  # a bug in a callback must not kill the network thread
            logger.exception("network loop failed; reconnecting")
            self.counters["errors"] += 1
            return mqtt.MQTT_ERR_CONN_LOST
        return rc if rc != MQTTErrorCode.MQTT_ERR_SUCCESS else sent

    def _send_queued(self) -> MQTTErrorCode:
        packets, self._queued_packets = self._queued_packets, 0
        return write_pending(self._client, packets)

    def _on_packet_queued(self, _client: mqtt.Client, _userdata: object, _sock: object) -> None:
        # Set as paho's "register write" hook so packets wait for `write_pending` instead of
        # going out one syscall each as they are queued.
        self._queued_packets += 1

    def _housekeeping(self) -> None:
        while True:
            try:
                fn = self._calls.get_nowait()
            except queue.Empty:
                break
            try:
                fn()
            except Exception:
                logger.exception("scheduled call %s failed", fn)
        if self._pump_due:
            self._pump_due = False
            self._delivery.pump()
        if self._delivery.acked and (
            len(self._delivery.acked) >= 512 or time.monotonic() - self._last_commit > ACK_FLUSH_S
        ):
            self._flush_acked()

    def _flush_acked(self) -> None:
        acked = self._delivery.take_acked()
        try:
            self.outbox.delete(acked)
        except sqlite3.Error as exc:
            self._fail(AgentError(f"outbox {self.outbox.path}: {exc}"))
        self._last_commit = time.monotonic()

    def _shutdown(self) -> None:
        """On the network thread: deliver what is pending, say offline, leave the session."""
        self._stopping = True
        deadline = time.monotonic() + self.settings.outbox.flush_timeout_s
        while self._delivery.connected and self._delivery.unsent() and time.monotonic() < deadline:
            if self._loop_once() != mqtt.MQTT_ERR_SUCCESS:
                self._delivery.connected = False
        if self._delivery.unsent():
            logger.warning(
                "stopping with %d message(s) in the outbox; they are sent after the next start",
                self.outbox.rows,
            )
        if self._delivery.connected:
            info = self._client.publish(
                self.topics.status(self.agent_id), self._status(online=False), qos=1, retain=True
            )
            deadline = time.monotonic() + 2.0
            # rc is non-zero when the connection dropped meanwhile: nothing to wait for then.
            while info.rc == 0 and not info.is_published() and time.monotonic() < deadline:
                if self._loop_once() != mqtt.MQTT_ERR_SUCCESS:
                    break
            # A normal DISCONNECT: the broker keeps the session (and queues bars for the next
            # start) and does not publish the will; the status above already says offline.
            self._client.disconnect()
            self._send_queued()
        if self._delivery.acked:
            self._flush_acked()
        logger.info("agent %s stopped", self.agent_id)

    def _fail(self, exc: BaseException) -> None:
        """An error the agent cannot serve through (e.g. the outbox disk is full): stop."""
        logger.error("%s; stopping", exc)
        self.fatal = exc
        self._stop_requested.set()

    # ----- paho callbacks (network thread) --------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            logger.error("broker refused the connection: %s", reason)
            return
        self._connection += 1
        self._attempt = 0
        server_max = getattr(properties, "ReceiveMaximum", 65535)
        # Never have more unacknowledged publishes out than the broker accepts (Mosquitto's
        # max_inflight_messages); one slot stays free for the status heartbeat.
        window = max(1, min(self.settings.outbox.max_inflight, server_max - 1))
        logger.info(
            "connected to %s (session %s)",
            self.settings.broker.address().url,
            "resumed" if flags.session_present else "new",
        )
        # Everything stored so far (whatever this process or an earlier one left) is the backlog;
        # what is stored from now on is live.
        self._delivery.connected_with(window)
        self._subscribe(client)
        # Not here: paho re-sends the publishes still unacknowledged from the last connection
        # right after this callback, and they must go out before anything newer.
        self._pump_due = True
        self.call_soon(self.publish_status)

    def _subscribe(self, client: mqtt.Client) -> None:
        wanted = sorted({f for r in self._routes for f in r.subscriptions})
        previous = json.loads(self.outbox.get_meta(SUBSCRIPTIONS_META) or "[]")
        stale = sorted(set(previous) - set(wanted))
        if stale:
            # The persistent session still holds what an earlier configuration subscribed to.
            client.unsubscribe(stale)
            logger.info("unsubscribed from %s (no longer configured)", ", ".join(stale))
        # Retained messages only when the subscription is new, never again on a reconnect.
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        client.subscribe([(f, options) for f in wanted])
        self.outbox.set_meta(SUBSCRIPTIONS_META, json.dumps(wanted))

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        for reason in reasons:
            if reason.is_failure:
                logger.error("broker refused a subscription: %s", reason)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        was = self._delivery.connected
        self._delivery.connected = False
        if was and not self._stopping:
            logger.warning(
                "lost the broker (%s); forecasts go to the outbox until it is back", reason
            )

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: object,
        mid: int,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if self._delivery.published(mid, reason):
            self._pump_due = True

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self._stopping or self.fatal is not None:
            return  # not acknowledged: the broker delivers it again to the next session
        received = time.perf_counter()
        self.counters["received"] += 1
        if self._bars.not_owned(msg.topic):
            # Another member's symbol: nothing to store or forecast, acknowledged with the batch.
            self._batch_inputs.append((msg.mid, msg.qos, received))
            self._commit_if_full()
            return
        digest = input_digest(msg)
        if self._committed.redelivered(msg, digest):
            # Committed before a crash or reconnect; only the broker never got the PUBACK.
            self.counters["redelivered"] += 1
            outcome: Outcome | Ticket | None = None
        else:
            outcome = self._dispatch(msg)
        if isinstance(outcome, Ticket):
            return  # acknowledged by `finish`, once its outcome is committed
        if outcome is not None:
            self._collect(outcome)
        self._batch_inputs.append((msg.mid, msg.qos, received))
        self._batch_digests.append((msg.mid, digest))
        self._commit_if_full()

    def _commit_if_full(self) -> None:
        first = self._batch_inputs[0][2]
        if len(self._batch_inputs) >= MAX_BATCH or time.perf_counter() - first > MAX_BATCH_WAIT_S:
            self._commit_batch()

    def _collect(self, outcome: Outcome) -> None:
        self._batch.extend(outcome.messages)
        self._batch_writes.extend(outcome.writes)

    def _dispatch(self, msg: mqtt.MQTTMessage) -> Outcome | Ticket | None:
        try:
            for route in self._routes:
                if topic_matches(route.match, msg.topic):
                    return route.handler(msg)
            raise PayloadError("no handler for this topic")
        except PayloadError as exc:
            return Outcome([self.dead_letter(msg, exc.reason)])
        except Exception as exc:  # a handler bug: report the input, keep serving
            logger.exception("handler failed on %s", msg.topic)
            self.counters["errors"] += 1
            return Outcome([self.dead_letter(msg, f"internal error: {exc}")])

    def _commit_batch(self) -> None:
        """Commit what the handled messages produced, then acknowledge those messages."""
        self._batch.extend(self._bars.flush())  # the pass's forecasts, one call per model
        self._batch_writes.extend(self._bars.state_writes())
        if self._batch_digests:
            self._batch_writes.append(self._committed.write(self._batch_digests))
            self._batch_digests = []
        if not (self._batch_inputs or self._batch or self._batch_writes):
            return
        messages, self._batch = self._batch, []
        windows = self._bars.window_states()
        writes, self._batch_writes = self._batch_writes, []
        inputs, self._batch_inputs = self._batch_inputs, []
        acked = self._delivery.take_acked()
        try:
            result = self.outbox.commit(
                messages,
                windows,
                acked=acked,
                handed=self._delivery.inflight.values(),
                writes=writes,
            )
        except sqlite3.Error as exc:
            # Nothing is acknowledged: the broker re-sends these bars to the next session.
            self._fail(AgentError(f"outbox {self.outbox.path}: {exc}"))
            return
        self._last_commit = time.monotonic()
        for mid, qos, _ in inputs:
            self._client.ack(mid, qos)
        done = time.perf_counter()
        for _, _, received in inputs:
            self.message_ms.add((done - received) * 1000.0)
        if result.dropped:
            self.counters["dropped"] += result.dropped
            logger.warning(
                "outbox full (%d bytes): dropped the %d oldest unsent message(s)",
                self.outbox.max_bytes,
                result.dropped,
            )
        if not self._delivery.connected:
            self.counters["spooled"] += len(result.rows)
        self._delivery.pump(result.rows)

    # ----- outputs ---------------------------------------------------------------------------

    def dead_letter(self, msg: mqtt.MQTTMessage, reason: str) -> OutMessage:
        self.counters["dead_letters"] += 1
        logger.warning("dead letter from %s: %s", msg.topic, reason)
        return dead_letter(self.agent_id, self.topics, msg, reason)

    def event(self, kind: str, detail: str, model: LoadedModel | None = None) -> OutMessage:
        """A failed FleetEvent on this agent's events topic (e.g. an inference error)."""
        return failure_event(self.agent_id, self.topics, kind, detail, model)

    # ----- status ---------------------------------------------------------------------------

    def status(self, online: bool = True) -> AgentStatus:
        """The heartbeat: models, counters, latency percentiles, symbols still warming up, live
        accuracy of the price models."""
        models = self._models
        need = models.window
        return AgentStatus(
            agent=self.agent_id,
            online=online,
            started_at=self.started_at,
            uptime_s=round(time.monotonic() - self._started, 3),
            models=[m.describe() for m in models.models],
            counters={
                **self.counters,
                "backlog": self.outbox.rows,
                "backlog_bytes": self.outbox.bytes,
            },
            latency_ms={
                **self.inference_ms.percentiles(),
                **self.message_ms.percentiles("message_"),
            },
            warming=self._bars.warming(need),
            partition={"index": self._bars.partition.index, "count": self._bars.partition.count},
            symbols=self._bars.served(),
            seq_gaps=dict(self._bars.seq_gaps),
            rejected=[{"path": r.path, "reason": r.reason} for r in models.rejected],
            accuracy=self._bars.calibrators.accuracy(models.window_models),
        )

    def _status(self, online: bool) -> bytes:
        return self.status(online).model_dump_json().encode()

    def _heartbeat(self) -> None:
        """Scheduler thread: queue the status for the network thread, and trim the heap here,
        where no bar waits while glibc walks it."""
        self.call_soon(self.publish_status)
        release_free_memory()

    def publish_status(self) -> None:
        """Publish the retained heartbeat now. Network thread only (via `call_soon`)."""
        if self._delivery.connected:
            self._client.publish(
                self.topics.status(self.agent_id), self._status(online=True), qos=1, retain=True
            )
