"""Over-the-air models on `fleet/<agent>/deploy`: verify, check, smoke-test and hot-swap signed
bundles, roll back on an operator's command, and answer each with a FleetEvent on
`fleet/<agent>/events`.

The network thread only dispatches on the MQTT v5 content type and snapshots the live windows; a
worker thread unpacks, verifies and smoke-tests; the swap runs back on the network thread between
two messages, so every bar is forecast by one whole model set, old or new. The deploy message is
acknowledged only once its event is committed to the outbox (see docs/DEPLOY.md, "4. Models").
"""

from __future__ import annotations

import logging
import queue
import re
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from pydantic import ValidationError

from device.agent.host import Host, Outcome, Ticket
from device.bars import validation_reason
from device.bundle import load_bundle, unpack_bundle
from device.errors import BundleError, DeviceError, ModelError, SignatureError
from device.keys import TrustedKeys, load_trusted_keys
from device.manifest import BundleManifest, TensorSpec
from device.modelset import WINDOW_TASKS, LoadedModel, ModelSet, load_model, smoke_test
from device.outbox import OutMessage
from device.schemas import (
    BUNDLE_CONTENT_TYPE,
    COMMAND_CONTENT_TYPE,
    DeployCommand,
    FleetEvent,
    ModelRef,
)
from device.slots import (
    CURRENT_FILE,
    created_at,
    install,
    installed_versions,
    prune,
    write_current,
)

__all__ = ["Deployer", "check_fits", "check_latency", "deploy_plugin", "served_model", "with_model"]

logger = logging.getLogger(__name__)

# Deploys and rollbacks waiting for the worker; more are refused ("busy") rather than queued.
MAX_PENDING = 4
# The fullest live windows a candidate is smoke-tested on.
SMOKE_WINDOWS = 32
# How long the worker waits for the network thread to apply a result before taking the next job.
APPLY_TIMEOUT_S = 30.0
STAGING_DIR = ".staging"
# Symbols named in an event's one-line detail; `after_seq` has them all.
DETAIL_SYMBOLS = 3


def served_model(models: ModelSet, model_id: str) -> LoadedModel | None:
    """The model a set serves as `model_id` (`<task>/<name>`, the slot on disk), if any."""
    return next((m for m in models.models if m.model_id == model_id), None)


def with_model(models: ModelSet, model: LoadedModel) -> ModelSet:
    """`models` with `model` in its slot, replacing the version there (if any)."""
    kept = [m for m in models.models if m.model_id != model.model_id]
    ordered = sorted([*kept, model], key=lambda m: m.model_id)
    return ModelSet(models=tuple(ordered), rejected=models.rejected)


def _shape(spec: TensorSpec) -> str:
    dims = ["?" if isinstance(d, str) else str(d) for d in spec.shape]
    return f"{spec.name}:{spec.dtype}[{','.join(dims)}]"


def check_fits(m: BundleManifest, models: ModelSet, tasks: tuple[str, ...]) -> None:
    """Raise BundleError unless the bundle can take a slot the agent serves: its own slot with the
    same inputs and window, or a new slot of a served task whose inputs the agent can feed."""
    if m.task not in tasks:
        raise BundleError(
            f"{m.model_id} is a {m.task} model; this agent serves {', '.join(tasks)} models"
        )
    inputs = [_shape(s) for s in m.inputs]
    if m.task in WINDOW_TASKS:
        # The bar handler feeds exactly one float32 [batch, window] tensor of closes.
        spec = m.inputs[0] if len(m.inputs) == 1 else None
        if spec is None or spec.dtype != "float32" or spec.shape[1:] != [m.window]:
            raise BundleError(
                f"{m.model_id} inputs {inputs} do not fit: the agent feeds one float32 "
                f"[batch, {m.window}] tensor of closes"
            )
    current = served_model(models, m.model_id)
    if current is not None:
        served = current.manifest
        if [_shape(s) for s in served.inputs] != inputs or served.window != m.window:
            raise BundleError(
                f"{m.model_id} inputs {inputs} (window {m.window}) differ from the served "
                f"version's {[_shape(s) for s in served.inputs]} (window {served.window})"
            )
        return
    peers = {tuple(s.name for s in p.manifest.inputs) for p in models.by_task(m.task)}
    names = tuple(s.name for s in m.inputs)
    if peers and names not in peers:
        raise BundleError(
            f"{m.model_id} inputs {list(names)} differ from those of the served {m.task} models "
            f"{[list(p) for p in sorted(peers)]}"
        )


def check_latency(model: LoadedModel, windows: Mapping[str, np.ndarray], budget_ms: float) -> str:
    """Smoke-test on the live windows and the latency budget; the summary for the event."""
    latencies = smoke_test(model.model, windows)
    if not latencies:
        return "smoke-tested"
    p50 = statistics.median(latencies)
    if p50 > budget_ms:
        raise ModelError(
            f"{model.model_id}: median latency {p50:.2f} ms is over the budget of {budget_ms:g} ms"
        )
    return f"smoke-tested on {len(latencies) - 1} live window(s), p50 {p50:.3f} ms"


def _boundary(after_seq: dict[str, int]) -> str:
    if not after_seq:
        return "it forecasts from the next bar"
    named = [f"{s}#{q}" for s, q in sorted(after_seq.items())[:DETAIL_SYMBOLS]]
    more = len(after_seq) - len(named)
    return f"it forecasts the bars after {', '.join(named)}" + (f" and {more} more" if more else "")


@dataclass(frozen=True)
class _Job:
    kind: str  # "deploy" or "rollback"
    ticket: Ticket
    payload: bytes
    command: DeployCommand | None
    windows: dict[str, np.ndarray]  # symbol -> closes, the fullest live windows at receipt
    received: float  # perf_counter at receipt


@dataclass
class _Attempt:
    """What is known so far about the bundle or command being processed, for its event."""

    model_id: str | None = None
    model: ModelRef | None = None


@dataclass(frozen=True)
class _Candidate:
    """A checked model ready to swap in."""

    model: LoadedModel
    expected: ModelRef | None  # what the slot served when the checks began; the swap requires it
    checks: str  # what it passed, for the event


class Deployer:
    """The deploy/rollback handler of one agent and its worker thread."""

    # Serves no bundle task itself: it accepts bundles of the tasks the host's handlers serve.
    tasks: tuple[str, ...] = ()

    def __init__(self, host: Host) -> None:
        self.host = host
        self.settings = host.settings.models
        self.staging = self.settings.dir / STAGING_DIR
        # Left by a crash in the middle of a deploy; nothing in it was ever installed.
        shutil.rmtree(self.staging, ignore_errors=True)
        self._jobs: queue.Queue[_Job] = queue.Queue(MAX_PENDING)
        self._worker: threading.Thread | None = None

    def install(self) -> None:
        """Subscribe the agent to its own deploy topic."""
        self.host.route(self.host.topics.deploy(self.host.agent_id), self.handle)

    # ----- network thread -------------------------------------------------------------------

    def handle(self, msg: mqtt.MQTTMessage) -> Outcome | Ticket:
        """Dispatch on the content type; queue the work and defer the acknowledgement."""
        content_type = getattr(msg.properties, "ContentType", None)
        command = None
        if content_type == BUNDLE_CONTENT_TYPE:
            kind = "deploy"
        elif content_type == COMMAND_CONTENT_TYPE:
            kind = "rollback"
            try:
                command = DeployCommand.model_validate_json(msg.payload)
            except ValidationError as exc:
                return self._refuse(msg, kind, validation_reason("deploy command", exc))
        else:
            what = "no content type" if not content_type else f"content type {content_type!r}"
            return self._refuse(
                msg,
                "deploy",
                f"{what}: a deploy is {BUNDLE_CONTENT_TYPE} (a packed bundle) or "
                f"{COMMAND_CONTENT_TYPE} (a command)",
            )
        states = sorted(self.host.window_states(), key=lambda s: len(s.closes), reverse=True)
        job = _Job(
            kind=kind,
            ticket=self.host.defer(msg),
            payload=bytes(msg.payload),
            command=command,
            windows={s.symbol: s.closes for s in states[:SMOKE_WINDOWS]},
            received=time.perf_counter(),
        )
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            event = self._event(
                job.kind, _Attempt(), False, f"busy: {MAX_PENDING} deploys are pending"
            )
            return Outcome([self._message(event)])
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="agent-deploy", daemon=True)
            self._worker.start()
        return job.ticket

    def _refuse(self, msg: mqtt.MQTTMessage, kind: str, reason: str) -> Outcome:
        """Bad input on the deploy topic: a rejected event and a dead letter."""
        event = self._event(kind, _Attempt(), False, reason)
        return Outcome([self._message(event), self.host.dead_letter(msg, reason)])

    def _swap(self, job: _Job, c: _Candidate) -> FleetEvent:
        """Swap `c` in if its slot still serves what the checks saw (the worker has already
        recorded it as CURRENT). Nothing here touches the disk: bars wait while this runs."""
        started = time.perf_counter()
        model_id, new = c.model.model_id, c.model.ref
        attempt = _Attempt(model_id, new)
        current = served_model(self.host.models, model_id)
        if (current.ref if current else None) != c.expected:
            now = current.ref.version if current else "nothing"
            return self._event(
                job.kind,
                attempt,
                False,
                f"{model_id} changed to {now} while this was checked; send again",
            )
        self.host.update_models(lambda models: with_model(models, c.model))
        after = {}
        if c.model.manifest.task in WINDOW_TASKS:
            after = {s.symbol: s.last_seq for s in self.host.window_states() if s.last_seq >= 0}
        done = time.perf_counter()
        timing = f"swapped in {(done - started) * 1000:.2f} ms, {(done - job.received) * 1000:.0f} ms after receipt"
        if job.kind == "deploy":
            verb = "deployed"
        elif current is not None and current.manifest.created_at > c.model.manifest.created_at:
            verb = "rolled back"
        else:
            verb = "rolled forward"
        old = c.expected.version if c.expected else "(new slot)"
        detail = (
            f"{model_id} {verb} {old} -> {new.version}: {c.checks}; {_boundary(after)}; {timing}"
        )
        return self._event(job.kind, attempt, True, detail, previous=c.expected, after_seq=after)

    # ----- worker thread --------------------------------------------------------------------

    def _work(self) -> None:
        while not self.host.wait(0):
            try:
                job = self._jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            self._run(job)

    def _run(self, job: _Job) -> None:
        attempt = _Attempt()
        result: _Candidate | FleetEvent
        recorded: str | None = None  # the slot whose CURRENT this job rewrote
        try:
            if job.kind == "deploy":
                result = self._deploy(job, attempt)
            else:
                result = self._rollback(job, attempt)
            if isinstance(result, _Candidate):
                # Recorded before the swap, here because it takes an fsync: after a crash in
                # between, the agent restarts on the new version and the redelivered message
                # finds it served. If the swap does not happen, it is put back below.
                recorded = result.model.model_id
                write_current(self.settings.dir / recorded, result.model.model.bundle.path.name)
        except (DeviceError, OSError) as exc:
            result = self._event(job.kind, attempt, False, self._reason(exc))
        except Exception as exc:  # a bug: answer, keep serving
            logger.exception("%s failed", job.kind)
            result = self._event(job.kind, attempt, False, f"internal error: {self._reason(exc)}")
        event = self._apply(job, result)
        swapped = event is not None and event.ok and isinstance(result, _Candidate)
        try:
            if recorded is not None and not swapped:
                self._restore_current(recorded)
            elif swapped and job.kind == "deploy" and attempt.model_id and attempt.model:
                prune(
                    self.settings.dir / attempt.model_id,
                    self.settings.keep_versions,
                    attempt.model.version,
                )
        except OSError as exc:
            logger.error("cannot tidy %s after the %s: %s", attempt.model_id, job.kind, exc)

    def _restore_current(self, model_id: str) -> None:
        """Make CURRENT name what the slot serves (after a swap that did not happen)."""
        served = served_model(self.host.models, model_id)
        slot_dir = self.settings.dir / model_id
        if served is not None:
            write_current(slot_dir, served.model.bundle.path.name)
        elif slot_dir.is_dir():
            (slot_dir / CURRENT_FILE).unlink(missing_ok=True)

    def _apply(self, job: _Job, result: _Candidate | FleetEvent) -> FleetEvent | None:
        """On the network thread: swap a candidate in (or take the answer as it is), commit the
        event and acknowledge the input. Waits for that; None if it did not happen in time: it is
        then called off, and the input comes again as a redelivery."""
        done, cancelled = threading.Event(), threading.Event()
        lock = threading.Lock()
        box: list[FleetEvent] = []

        def apply() -> None:
            with lock:
                if not cancelled.is_set():
                    run()

        def run() -> None:
            try:
                event = result if isinstance(result, FleetEvent) else self._swap(job, result)
            except Exception as exc:  # a bug: answer, keep serving
                logger.exception("applying a %s failed", job.kind)
                self.host.counters["errors"] += 1
                event = self._event(
                    job.kind, _Attempt(), False, f"internal error: {self._reason(exc)}"
                )
            box.append(event)
            self.host.finish(job.ticket, Outcome([self._message(event)]))
            if event.ok:
                # Operators read versions from the retained status; don't make them wait a beat.
                self.host.publish_status()
            done.set()

        self.host.call_soon(apply)
        deadline = time.monotonic() + APPLY_TIMEOUT_S
        while not done.wait(0.2):
            if self.host.wait(0) or time.monotonic() > deadline:
                with lock:
                    if done.is_set():
                        break
                    cancelled.set()
                logger.warning("a %s was not applied in time; called off", job.kind)
                return None
        return box[0]

    def _trusted(self) -> TrustedKeys:
        # Read again for every deploy: a key added for a rotation counts without a restart.
        keys = load_trusted_keys(self.settings.trusted_keys)
        if not keys:
            raise SignatureError("no trusted public keys on this agent")
        return keys

    def _reason(self, exc: BaseException) -> str:
        """One line, without the staging paths the operator cannot see."""
        text = re.sub(re.escape(str(self.staging)) + r"[^\s:]*", "bundle", str(exc))
        return " ".join(text.split())

    def _deploy(self, job: _Job, attempt: _Attempt) -> _Candidate | FleetEvent:
        trusted = self._trusted()
        models = self.host.models
        self.staging.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.staging))
        try:
            staged = unpack_bundle(job.payload, trusted, staging)
            m = staged.manifest
            attempt.model_id, attempt.model = (
                m.model_id,
                ModelRef(name=m.name, version=m.version, sha256=m.model_sha256),
            )
            check_fits(m, models, self.host.served_tasks())
            current = served_model(models, m.model_id)
            if current is not None and current.ref == attempt.model:
                return self._event(
                    job.kind, attempt, True, f"{m.model_id} {m.version} is already served"
                )
            dest = self.settings.dir / m.task / m.name / m.version
            if dest.exists() and self._installed_differs(dest, trusted, m.model_sha256):
                raise BundleError(
                    f"version {m.version} of {m.model_id} is installed with another model; "
                    "give the new one a new version"
                )
            model = load_model(replace(staged, path=dest), self.settings.intra_op_threads)
            smoke = check_latency(model, job.windows, self.settings.latency_budget_ms)
            install(staged.path, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return _Candidate(model, current.ref if current else None, f"key {m.key_id}, {smoke}")

    def _installed_differs(self, dest: Path, trusted: TrustedKeys, sha256: str) -> bool:
        """Whether `dest` holds a valid bundle of another model (a broken one gets replaced)."""
        try:
            return load_bundle(dest, trusted).sha256 != sha256
        except BundleError as exc:
            logger.warning("replacing the broken install %s: %s", dest, exc)
            return False

    def _rollback(self, job: _Job, attempt: _Attempt) -> _Candidate | FleetEvent:
        command = job.command
        assert command is not None
        model_id = attempt.model_id = command.model
        trusted = self._trusted()
        models = self.host.models
        current = served_model(models, model_id)
        versions = installed_versions(self.settings.dir / model_id)
        have = ", ".join(p.name for p in versions) or "none"
        if command.version is not None:
            if current is not None and current.ref.version == command.version:
                attempt.model = current.ref
                return self._event(
                    job.kind, attempt, True, f"{model_id} {command.version} is already served"
                )
            targets = [p for p in versions if p.name == command.version]
            if not targets:
                raise BundleError(
                    f"version {command.version} of {model_id} is not installed (installed: {have})"
                )
        elif current is None:
            raise BundleError(f"this agent serves no {model_id}; name the version to roll back to")
        else:
            served_at = (current.manifest.created_at, current.ref.version)
            targets = [p for p in versions if (created_at(p), p.name) < served_at]
            if not targets:
                raise BundleError(
                    f"no version of {model_id} older than {current.ref.version} is installed "
                    f"(installed: {have})"
                )
        skipped = []
        for path in targets:  # newest first: the previous good version
            try:
                bundle = load_bundle(path, trusted)
                m = bundle.manifest
                attempt.model = ModelRef(name=m.name, version=m.version, sha256=m.model_sha256)
                check_fits(m, models, self.host.served_tasks())
                model = load_model(bundle, self.settings.intra_op_threads)
                smoke = check_latency(model, job.windows, self.settings.latency_budget_ms)
            except DeviceError as exc:
                logger.warning("cannot roll %s back to %s: %s", model_id, path.name, exc)
                skipped.append(f"{path.name} ({self._reason(exc)})")
                continue
            checks = f"key {m.key_id}, {smoke}"
            if skipped:
                checks += f"; skipped {', '.join(skipped)}"
            return _Candidate(model, current.ref if current else None, checks)
        raise BundleError(
            f"no version of {model_id} to roll back to passes the checks: {'; '.join(skipped)}"
        )

    # ----- events ---------------------------------------------------------------------------

    def _event(
        self,
        kind: str,
        attempt: _Attempt,
        ok: bool,
        detail: str,
        previous: ModelRef | None = None,
        after_seq: dict[str, int] | None = None,
    ) -> FleetEvent:
        if not ok:
            served = served_model(self.host.models, attempt.model_id) if attempt.model_id else None
            kept = f"still serving {attempt.model_id}@{served.ref.version}" if served else None
            detail = f"{detail}; {kept or 'the served models are unchanged'}"
        return FleetEvent(
            agent=self.host.agent_id,
            kind=kind,
            ok=ok,
            detail=detail,
            model=attempt.model,
            previous=previous,
            after_seq=after_seq or {},
        )

    def _message(self, event: FleetEvent) -> OutMessage:
        log = logger.info if event.ok else logger.warning
        log("%s: %s", event.kind, event.detail)
        return OutMessage(
            self.host.topics.events(self.host.agent_id), event.model_dump_json().encode()
        )


def deploy_plugin(host: Host) -> Deployer:
    """The deploy/rollback handler; every agent runs one."""
    return Deployer(host)
