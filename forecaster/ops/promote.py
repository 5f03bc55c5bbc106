"""When a retrained bundle replaces the deployed one: only if its validation metric is better.
Every task's metric is a loss (lower is better), read from the bundle's report.json."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from device.manifest import MANIFEST_FILE, REPORT_FILE, BundleManifest
from device.schemas import AgentStatus, FleetEvent
from forecaster.errors import ForecasterError

__all__ = [
    "Decision",
    "Metric",
    "Running",
    "bundle_metric",
    "decide",
    "describe",
    "gdp_validation_metric",
    "price_validation_metric",
    "running_versions",
    "trend_validation_metric",
    "validation_metric",
]

logger = logging.getLogger(__name__)


def _dig(obj: Any, *keys: Any) -> Any:
    """`obj[k1][k2]...`, or None where a level is missing or not a mapping (reports vary)."""
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        try:
            obj = obj[key]
        except (KeyError, TypeError):  # TypeError: an unhashable key read from the report
            return None
    return obj


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        return None
    return number if math.isfinite(number) else None


def price_validation_metric(report: Mapping[str, Any]) -> float | None:
    """The shipped student's validation pinball loss over every horizon and quantile."""
    chosen = _dig(report, "headline", "chosen")
    return _finite(_dig(report, "models", chosen, "validation", "pinball", "overall"))


def trend_validation_metric(report: Mapping[str, Any]) -> float | None:
    """The shipped student's validation log loss against the ex-post regime labels."""
    chosen = _dig(report, "headline", "chosen")
    return _finite(_dig(report, "models", chosen, "validation", "log_loss"))


def gdp_validation_metric(report: Mapping[str, Any]) -> float | None:
    """The student's validation RMSE (annualized %), the mean over the information months, as
    the task itself ranks its teacher candidates."""
    months = _dig(report, "evaluation", "validation", "metrics", "student")
    if not isinstance(months, Mapping) or not months:
        return None
    rmses = [_finite(_dig(row, "rmse")) for row in months.values()]
    if any(r is None for r in rmses):
        return None
    return _finite(math.fsum(r for r in rmses if r is not None) / len(rmses))


_METRICS: dict[str, tuple[str, Callable[[Mapping[str, Any]], float | None]]] = {
    "price": ("validation pinball", price_validation_metric),
    "trend": ("validation log loss", trend_validation_metric),
    "gdp": ("validation RMSE", gdp_validation_metric),
}


@dataclass(frozen=True)
class Metric:
    """A bundle's validation loss and what it measures; lower is better."""

    name: str
    value: float

    def __str__(self) -> str:
        return f"{self.name} {self.value:.4g}"


def validation_metric(report: Mapping[str, Any]) -> Metric | None:
    """The metric of the report's task, or None when the report does not carry it."""
    known = _METRICS.get(str(report.get("task")))
    if known is None:
        return None
    name, extract = known
    value = extract(report)
    return None if value is None else Metric(name, value)


def bundle_metric(bundle_dir: Path) -> Metric | None:
    """`validation_metric` of the bundle's report.json; None when it is missing or unreadable."""
    try:
        report = json.loads((bundle_dir / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return validation_metric(report) if isinstance(report, dict) else None


def _manifest(bundle_dir: Path) -> BundleManifest | None:
    try:
        return BundleManifest.model_validate_json((bundle_dir / MANIFEST_FILE).read_bytes())
    except (OSError, ValidationError):
        return None


@dataclass(frozen=True)
class Running:
    """The version (and model hash) an agent reports for a model id in its retained status."""

    version: str
    sha256: str | None = None


def running_versions(
    statuses: Mapping[str, AgentStatus], model_id: str, agents: list[str]
) -> dict[str, Running | None]:
    """Per target agent, what it runs as `model_id` (`<task>/<name>`); None: nothing, or no status."""
    running: dict[str, Running | None] = {}
    for agent in agents:
        status = statuses.get(agent)
        models = status.models if status else []
        match = next((m for m in models if m.get("id") == model_id), None)
        version = match.get("version") if match else None
        running[agent] = (
            Running(str(version), match.get("sha256") if match else None) if version else None
        )
    return running


@dataclass(frozen=True)
class Decision:
    """Who gets the new bundle and why the others do not."""

    model_id: str
    version: str
    metric: Metric | None
    running: dict[str, Running | None]
    # deployed version -> its metric, or why it has none
    deployed: dict[str, float | str] = field(default_factory=dict)
    publish: tuple[str, ...] = ()
    skip: dict[str, str] = field(default_factory=dict)


def _deployed_metric(
    registry: Path, model_id: str, running: Running, new: BundleManifest
) -> float | str:
    """The deployed bundle's metric from the registry, or the reason it cannot be judged."""
    path = registry / model_id / running.version
    manifest = _manifest(path)
    if manifest is None or manifest.version != running.version:
        return f"deployed version {running.version} is not in the registry"
    if running.sha256 and manifest.model_sha256 != running.sha256:
        return f"deployed version {running.version} differs from the registry's (model SHA-256)"
    metric = bundle_metric(path)
    if metric is None:
        return f"deployed version {running.version} has no validation metric"
    if manifest.periods.validation != new.periods.validation:
        logger.warning(
            "%s: validation periods differ (new %s..%s, deployed %s %s..%s); comparing anyway",
            model_id,
            *new.periods.validation,
            running.version,
            *manifest.periods.validation,
        )
    return metric.value


def decide(
    bundle_dir: Path, registry: Path, statuses: Mapping[str, AgentStatus], agents: list[str]
) -> Decision:
    """For each target agent: publish when it runs nothing as that model id or a bundle with a higher
    validation loss; never replace what cannot be judged (not in `registry`, no metric)."""
    new = _manifest(bundle_dir)
    if new is None:
        raise ForecasterError(f"{bundle_dir} has no readable manifest")
    model_id, version = new.model_id, new.version
    running = running_versions(statuses, model_id, agents)
    metric = bundle_metric(bundle_dir)
    if metric is None:
        return Decision(
            model_id, version, None, running, skip=dict.fromkeys(running, "no validation metric")
        )
    deployed: dict[str, float | str] = {}
    publish: list[str] = []
    skip: dict[str, str] = {}
    for agent, current in running.items():
        if current is None:
            publish.append(agent)
            continue
        if current.version == version:
            skip[agent] = "already runs it"
            continue
        if current.version not in deployed:
            deployed[current.version] = _deployed_metric(registry, model_id, current, new)
        baseline = deployed[current.version]
        if isinstance(baseline, str):
            skip[agent] = baseline
        elif metric.value < baseline:
            publish.append(agent)
        else:
            skip[agent] = "not better"
    return Decision(model_id, version, metric, running, deployed, tuple(publish), skip)


def _agents(n: int) -> str:
    return f"{n} agent{'s' if n != 1 else ''}"


def _baseline_text(decision: Decision) -> str:
    parts = [
        f"{value:.4g} ({version})" if isinstance(value, float) else f"? ({version})"
        for version, value in decision.deployed.items()
    ]
    empty = sum(r is None for r in decision.running.values())
    if not parts:
        return "nothing deployed"
    if empty:
        parts.append(f"nothing on {_agents(empty)}")
    return "deployed " + ", ".join(parts)


def _events_text(events: Mapping[str, FleetEvent | None]) -> str:
    ok = sum(1 for e in events.values() if e is not None and e.ok)
    rejected = sum(1 for e in events.values() if e is not None and not e.ok)
    silent = sum(1 for e in events.values() if e is None)
    if ok == len(events):
        return ""
    counts = [(ok, "accepted"), (rejected, "rejected"), (silent, "no answer")]
    return " (" + ", ".join(f"{n} {what}" for n, what in counts if n) + ")"


def _skip_text(decision: Decision) -> str:
    by_reason: dict[str, list[str]] = {}
    for agent, reason in decision.skip.items():
        by_reason.setdefault(reason, []).append(agent)
    if not decision.publish and len(by_reason) == 1:
        return next(iter(by_reason))
    return "; ".join(f"{', '.join(agents)}: {reason}" for reason, agents in by_reason.items())


def describe(decision: Decision, events: Mapping[str, FleetEvent | None] | None = None) -> str:
    """One sentence per run, e.g. `price/spx V: validation pinball 0.0031 vs deployed 0.0032
    (V0) → published to 3 agents`."""
    head = f"{decision.model_id} {decision.version}: "
    if decision.metric is None:
        return head + "no validation metric in its report → not published"
    head += str(decision.metric)
    if not decision.running:
        return head + " → not published: no agents to publish to"
    head += f" vs {_baseline_text(decision)} → "
    if not decision.publish:
        return head + f"not published: {_skip_text(decision)}"
    text = f"published to {_agents(len(decision.publish))}{_events_text(events or {})}"
    if decision.skip:
        text += f"; not to {_skip_text(decision)}"
    return head + text
