"""The models an agent serves: the newest verified bundle per `<task>/<name>`, smoke-tested."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.bundle import Bundle, find_bundles, load_bundle
from device.errors import BundleError, ModelError
from device.keys import TrustedKeys
from device.manifest import BundleManifest
from device.panel import probe_gdp_outputs
from device.runtime import OnnxModel
from device.schemas import ModelRef
from device.slots import preferred_order

__all__ = [
    "WINDOW_TASKS",
    "LoadedModel",
    "ModelSet",
    "RejectedBundle",
    "load_model",
    "load_model_set",
    "smoke_test",
]

logger = logging.getLogger(__name__)

# Tasks whose single input is the last `window` raw closes of one symbol.
WINDOW_TASKS = ("price", "trend")


@dataclass(frozen=True)
class LoadedModel:
    """A verified bundle with its onnxruntime session."""

    model: OnnxModel
    ref: ModelRef

    @property
    def manifest(self) -> BundleManifest:
        return self.model.manifest

    @property
    def model_id(self) -> str:
        return self.model.manifest.model_id

    def describe(self) -> dict[str, object]:
        m = self.model.manifest
        return {
            "id": m.model_id,
            "task": m.task,
            "name": m.name,
            "version": m.version,
            "sha256": m.model_sha256,
            "key_id": m.key_id,
            "window": m.window,
        }


@dataclass(frozen=True)
class RejectedBundle:
    """A bundle directory that was not loaded, and why (shown in the agent's status)."""

    path: str
    reason: str


@dataclass(frozen=True)
class ModelSet:
    """An immutable set of loaded models; the agent swaps whole sets, never edits one."""

    models: tuple[LoadedModel, ...] = ()
    rejected: tuple[RejectedBundle, ...] = ()
    window_models: tuple[LoadedModel, ...] = field(init=False)
    window: int = field(init=False)
    # Whether some window model may run a pass's windows as one call (read on every bar).
    batchable: bool = field(init=False)

    def __post_init__(self) -> None:
        window_models = tuple(m for m in self.models if m.manifest.task in WINDOW_TASKS)
        object.__setattr__(self, "window_models", window_models)
        object.__setattr__(
            self, "window", max((m.manifest.window or 0 for m in window_models), default=0)
        )
        object.__setattr__(self, "batchable", any(m.model.batchable for m in window_models))

    def by_task(self, task: str) -> tuple[LoadedModel, ...]:
        return tuple(m for m in self.models if m.manifest.task == task)


def smoke_test(model: OnnxModel, windows: Mapping[str, np.ndarray] | None = None) -> list[float]:
    """Run a price/trend model on a flat window and on the last `window` closes of each live
    window given (symbol -> closes; shorter ones are skipped), a GDP model on an empty panel, and
    check every output's shape and values. Returns the price/trend latencies in ms."""
    m = model.manifest
    if m.task == "gdp":
        probe_gdp_outputs(model)
        return []
    if m.task not in WINDOW_TASKS or m.window is None:
        return []
    if m.task == "price":
        expected: tuple[int, ...] = (1, len(m.horizons or []), len(m.quantiles or []))
    else:
        expected = (1, len(m.classes or []))
    inputs = {"a flat window": np.full((1, m.window), 100.0, dtype=np.float32)}
    for symbol, closes in (windows or {}).items():
        if len(closes) >= m.window:
            inputs[f"the live window of {symbol}"] = np.asarray(
                closes[-m.window :], dtype=np.float32
            )[None, :]
    latencies = []
    rows = []
    for what, closes in inputs.items():
        out, latency_ms = model.run_window(closes)
        if out.shape != expected:
            raise ModelError(
                f"{m.model_id}: output shape {list(out.shape)}, expected {list(expected)}"
            )
        if not np.isfinite(out).all():
            raise ModelError(f"{m.model_id}: non-finite output on {what}")
        latencies.append(latency_ms)
        rows.append((closes, out))
    if model.batchable:
        _check_batch(model, rows)
    return latencies


def _check_batch(model: OnnxModel, rows: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Run the smoke windows (and a rising one) together, in two orders; a graph whose rows do
    not give exactly their single-window results in any call runs one window per call (a
    symbol's forecast must never depend on which symbols share its call)."""
    window = rows[0][0].shape[1]
    # a rising window and a few random walks, so that the calls hold whole blocks and a rest
    walks = 100.0 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.02, (6, window)), 1))
    for extra in [np.linspace(90.0, 110.0, window), *walks]:
        closes = extra.astype(np.float32)[None, :]
        rows = [*rows, (closes, model.run_window(closes)[0])]
    windows = np.concatenate([closes for closes, _ in rows])
    expected = np.concatenate([out for _, out in rows])
    batched, _ = model.run_window(windows)
    reversed_, _ = model.run_window(windows[::-1])
    if not (np.array_equal(batched, expected) and np.array_equal(reversed_[::-1], expected)):
        logger.warning(
            "%s: batched rows differ from single windows; running one window per call",
            model.manifest.model_id,
        )
        model.batchable = False


def load_model(bundle: Bundle, intra_op_threads: int = 1) -> LoadedModel:
    """An onnxruntime session for a verified bundle, smoke-tested; raises ModelError."""
    model = OnnxModel(bundle, intra_op_threads)
    smoke_test(model)
    m = bundle.manifest
    return LoadedModel(
        model=model, ref=ModelRef(name=m.name, version=m.version, sha256=bundle.sha256)
    )


def load_model_set(directory: Path, trusted: TrustedKeys, intra_op_threads: int = 1) -> ModelSet:
    """Per model id (`<task>/<name>`), the version its CURRENT file records (the last deploy or
    rollback), else the newest, that verifies and runs; versions that fail on the way are skipped
    with an error log and listed in `rejected`, never loaded."""
    by_model_id: dict[str, list[Path]] = defaultdict(list)
    for path in find_bundles(directory):
        by_model_id["/".join(path.relative_to(directory).parts[:2])].append(path)
    loaded: list[LoadedModel] = []
    rejected: list[RejectedBundle] = []
    for model_id in sorted(by_model_id):
        for path in preferred_order(directory / model_id, by_model_id[model_id]):
            try:
                model = load_model(load_bundle(path, trusted), intra_op_threads)
            except (BundleError, ModelError) as exc:
                logger.error("skipping bundle %s: %s", path, exc)
                rejected.append(RejectedBundle(path=str(path), reason=str(exc)))
                continue
            logger.info(
                "loaded %s version %s (sha256 %s)",
                model.model_id,
                model.ref.version,
                model.ref.sha256[:12],
            )
            loaded.append(model)
            break
    return ModelSet(models=tuple(loaded), rejected=tuple(rejected))
