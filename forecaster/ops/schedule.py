"""`forecaster schedule`: retrain recipes on cron schedules (and when their data files change),
publish a new bundle to the fleet only if it beats the deployed one on the validation metric."""

from __future__ import annotations

import hashlib
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from device.errors import DeviceError
from device.keys import key_id, load_private_key
from device.schemas import FleetEvent
from device.topics import Topics
from forecaster.errors import ForecasterError, ScheduleError
from forecaster.ops.fleet import collect_statuses, publish_bundle
from forecaster.ops.promote import Decision, decide, describe
from forecaster.ops.settings import RecipeEntry, TrainerSettings

__all__ = ["DataFile", "RunOutcome", "ScheduleService", "Trainer", "run_once", "serve"]

logger = logging.getLogger(__name__)

# How often the blocked main thread of `serve` wakes to re-check its stop flag.
_IDLE_WAKE_S = 60.0


class DataFile:
    """SHA-256 of a data file's content, re-hashed only when its mtime or size changes, so a
    poll is one stat() and a `touch` alone is not a change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stat: tuple[int, int] | None = None
        self._digest: str | None = None
        self._lock = threading.Lock()

    def digest(self) -> str | None:
        """The content hash; None while the file is missing or unreadable."""
        with self._lock:
            try:
                st = self.path.stat()
                stamp = (st.st_mtime_ns, st.st_size)
                if stamp != self._stat:
                    sha = hashlib.sha256()
                    with self.path.open("rb") as fh:
                        for chunk in iter(lambda: fh.read(1 << 20), b""):
                            sha.update(chunk)
                    self._stat, self._digest = stamp, sha.hexdigest()
            except OSError:
                self._stat = self._digest = None
            return self._digest


@dataclass(frozen=True)
class RunOutcome:
    """One retrain: the bundle it produced, the decision, each published agent's answer."""

    bundle: Path
    decision: Decision
    events: dict[str, FleetEvent | None]
    message: str


class Trainer:
    """Trains a recipe in a child process (so shutdown can stop it at once and a long-running
    service never accumulates torch memory), then promotes the bundle if it is better."""

    def __init__(self, settings: TrainerSettings) -> None:
        if settings.signing_key is None:
            raise ScheduleError("no signing key: set `signing_key` or $FORECASTER_SIGNING_KEY")
        self.settings = settings
        self.address = settings.broker.address()
        self.topics = Topics(settings.topic_prefix)
        public = load_private_key(settings.signing_key).public_key()
        # The bundles this service ships are the ones it signed: verify them with that key.
        self.trusted = {key_id(public): public}
        self._child: subprocess.Popen[str] | None = None
        self._stopping = False

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Refuse new runs and terminate a training in progress. Lock-free: signal handlers call
        it on the thread that may be waiting for that very child."""
        self._stopping = True
        child = self._child
        if child is not None:
            child.terminate()

    def train(self, entry: RecipeEntry) -> Path:
        """`forecaster train` in a child process; returns the new bundle's directory."""
        if self._stopping:
            raise ScheduleError("not training: the scheduler is shutting down")
        command = [sys.executable, "-m", "forecaster.cli", "train", str(entry.path)]
        command += ["--registry", str(self.settings.registry)]
        command += ["--key", str(self.settings.signing_key)]
        if entry.quick:
            command.append("--quick")
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._child = child
        if self._stopping:  # stop() ran between the two lines above
            child.terminate()
        try:
            out, err = child.communicate(timeout=self.settings.train_timeout_s)
        except subprocess.TimeoutExpired as exc:
            child.kill()
            child.communicate()
            raise ScheduleError(
                f"training {entry.path} took more than train_timeout_s = "
                f"{self.settings.train_timeout_s:g} s; stopped it"
            ) from exc
        finally:
            self._child = None
        logger.debug("training output of %s:\n%s", entry.path, err)
        if child.returncode != 0:
            if self._stopping:
                raise ScheduleError("training stopped: the scheduler is shutting down")
            last = next((x for x in reversed(err.splitlines()) if x.strip()), "no output")
            raise ScheduleError(f"training {entry.path} failed: {last.removeprefix('error: ')}")
        lines = [x for x in out.splitlines() if x.strip()]
        bundle = Path(lines[-1].strip()) if lines else None
        if bundle is None or not bundle.is_dir():
            raise ScheduleError(f"training {entry.path} printed no bundle directory")
        return bundle

    def promote(self, bundle: Path) -> RunOutcome:
        """Compare with what the target agents run, publish where better, log one sentence."""
        statuses = collect_statuses(self.address, self.topics)
        targets = list(self.settings.agents) or sorted(statuses)
        decision = decide(bundle, self.settings.registry, statuses, targets)
        events: dict[str, FleetEvent | None] = {}
        if decision.publish:
            events = publish_bundle(
                self.address,
                bundle,
                list(decision.publish),
                self.trusted,
                self.topics,
                wait_s=self.settings.deploy_wait_s,
            )
        for agent, event in events.items():
            if event is not None and not event.ok:
                logger.warning(
                    "%s rejected %s %s: %s",
                    agent,
                    decision.model_id,
                    decision.version,
                    event.detail,
                )
        message = describe(decision, events)
        logger.info("%s", message)
        return RunOutcome(bundle, decision, events, message)

    def retrain(self, entry: RecipeEntry, reason: str) -> RunOutcome:
        logger.info("retraining %s (%s)", entry.path, reason)
        return self.promote(self.train(entry))

    def run(self, entry: RecipeEntry, reason: str) -> RunOutcome | None:
        """`retrain`, with any failure logged instead of raised: the service keeps running."""
        try:
            return self.retrain(entry, reason)
        except (ForecasterError, DeviceError) as exc:
            if self._stopping:
                logger.warning("run of %s stopped: %s", entry.path, exc)
            else:
                logger.error("run of %s failed: %s", entry.path, exc)
        except Exception:
            logger.exception("run of %s failed unexpectedly", entry.path)
        return None


class ScheduleService:
    """The apscheduler side: one cron job per recipe on a single worker, so runs never overlap,
    and one polling job that starts a recipe's job early when its data file changed."""

    def __init__(self, settings: TrainerSettings) -> None:
        self.settings = settings
        self.trainer = Trainer(settings)
        self.zone = ZoneInfo(settings.timezone)
        self.entries = {self._model_id(e): e for e in settings.recipes}
        self.watched = {
            model_id: DataFile(e.recipe().csv_path())
            for model_id, e in self.entries.items()
            if e.watch
        }
        self._lock = threading.Lock()
        self._trained: dict[str, str | None] = {}  # digest each watched recipe last trained on
        self._seen: dict[str, str | None] = {}  # digest at the previous poll
        self._triggered: dict[str, str] = {}  # digest a pending early run was started for
        self._reasons: dict[str, str] = {}
        self.scheduler = BackgroundScheduler(
            timezone=self.zone,
            executors={"default": ThreadPoolExecutor(1), "watch": ThreadPoolExecutor(1)},
            # A run late because another one was training still runs, once.
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )

    @staticmethod
    def _model_id(entry: RecipeEntry) -> str:
        recipe = entry.recipe()
        return f"{recipe.model.task}/{recipe.model.name}"

    def start(self) -> ScheduleService:
        for model_id, entry in self.entries.items():
            trigger = CronTrigger.from_crontab(entry.cron, timezone=self.zone)
            self.scheduler.add_job(
                self._run, trigger, args=[model_id], id=model_id, name=f"retrain {model_id}"
            )
        for model_id, data in self.watched.items():
            self._trained[model_id] = self._seen[model_id] = data.digest()
        if self.watched:
            self.scheduler.add_job(
                self._poll,
                "interval",
                seconds=self.settings.watch_interval_s,
                id="watch",
                name="watch data files",
                executor="watch",
            )
        self.scheduler.start()
        for model_id, entry in self.entries.items():
            job = self.scheduler.get_job(model_id)
            logger.info(
                "%s: cron %r, next run %s%s",
                model_id,
                entry.cron,
                f"{job.next_run_time:%Y-%m-%d %H:%M %Z}" if job and job.next_run_time else "-",
                f"; watching {self.watched[model_id].path}" if model_id in self.watched else "",
            )
        return self

    def shutdown(self) -> None:
        """Stop a training in progress, let a publish in progress finish, stop the scheduler."""
        self.trainer.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)

    def _run(self, model_id: str) -> None:
        if self.trainer.stopping:
            return  # queued behind a run that was stopped by shutdown
        with self._lock:
            reason = self._reasons.pop(model_id, "cron schedule")
            if model_id in self.watched:
                self._trained[model_id] = self.watched[model_id].digest()
        try:
            self.trainer.run(self.entries[model_id], reason)
        finally:
            with self._lock:
                self._triggered.pop(model_id, None)

    def _poll(self) -> None:
        """Start a watched recipe's job now when its file changed since the data it was last
        trained on and has stayed the same for one poll (not half-written)."""
        for model_id, data in self.watched.items():
            digest = data.digest()
            with self._lock:
                previous, self._seen[model_id] = self._seen.get(model_id), digest
                if digest is None:
                    if previous is not None:
                        logger.warning(
                            "%s: data file %s is missing or unreadable", model_id, data.path
                        )
                    continue
                if (
                    digest != previous
                    or digest == self._trained.get(model_id)
                    or digest == self._triggered.get(model_id)
                ):
                    continue
                self._triggered[model_id] = digest
                self._reasons[model_id] = f"data file {data.path} changed"
            logger.info("%s: data file %s changed; retraining now", model_id, data.path)
            self.scheduler.modify_job(model_id, next_run_time=datetime.now(self.zone))


@contextmanager
def _on_signals(handler: Callable[[], None]) -> Iterator[None]:
    """Call `handler` on SIGTERM / SIGINT (instead of dying mid-run) inside the block."""
    previous = {
        sig: signal.signal(sig, lambda _signum, _frame: handler())
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_once(settings: TrainerSettings) -> list[RunOutcome | None]:
    """Retrain every recipe once, in order; a failed run is logged and yields None."""
    trainer = Trainer(settings)
    outcomes: list[RunOutcome | None] = []
    with _on_signals(trainer.stop):
        for entry in settings.recipes:
            if trainer.stopping:
                break
            outcomes.append(trainer.run(entry, "--once"))
    return outcomes


def serve(settings: TrainerSettings) -> None:
    """Run the scheduler until SIGTERM or SIGINT, then shut it down cleanly."""
    if settings.log_level != "DEBUG":
        # apscheduler logs every run of every job at INFO; its warnings (skipped runs) stay.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    stop = threading.Event()
    service = ScheduleService(settings)
    with _on_signals(stop.set):
        service.start()
        logger.info("scheduler started with %d recipe(s)", len(service.entries))
        try:
            while not stop.wait(_IDLE_WAKE_S):
                pass
        finally:
            logger.info("stopping the scheduler")
            service.shutdown()
    logger.info("scheduler stopped")
