"""What on-line calibration adds to the agent's work per bar, measured in process (docs/BENCHMARKS.md).

    python -m scripts.bench_bar_path --registry DIR [--symbols 50] [--bars 200] [--rounds 5]
                                     [--compare-previous]

Runs the agent's bar path, `BarHandler.handle` (parse, window) and `flush` (onnxruntime,
calibration, payload) and the outbox commit of each group of 64 bars (as the network loop
commits them),
over real S&P 500 closes for `--symbols` symbols, with calibration on and off in alternating
rounds (`--compare-previous`: also on with the previous default, round 5's blend toward a
fixed-coefficient variance without the GARCH-t mix, `ROUND5` of
scripts/price_calibration_study.py, in the same rotation, and each method's
`observe` + `publish` timed alone on one symbol's bars). Reports CPU time per bar (process time: less disturbed by other load on the machine than
wall time), median over rounds, without MQTT: the part of the agent calibration can change. The
bar messages are built inside the timed loop (the same work on and off).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from device.agent.bar_handler import BarHandler
from device.agent.calibrators import Calibrators, load_calibration
from device.calibration import CalibrationSettings, Calibrator
from device.health import LatencyWindow
from device.keys import load_trusted_keys
from device.modelset import ModelSet, load_model_set
from device.outbox import Outbox, OutMessage
from device.settings import AgentSettings, CalibrationSection
from scripts.price_calibration_study import ROUND5
from tests.support.clients import bar_payload, sp500_closes
from tests.support.fake_host import message

BATCH = 64  # bars per group commit (the agent's passes reach core.MAX_BATCH only under a backlog)


def price_only(registry: Path, keys: Path, name: str) -> ModelSet:
    models = load_model_set(registry, load_trusted_keys([keys]))
    chosen = tuple(m for m in models.models if m.model_id == name)
    if not chosen:
        raise SystemExit(f"no {name} in {registry}")
    return ModelSet(chosen)


def inference_error(*_: object) -> OutMessage:
    raise RuntimeError("the benchmark's model failed on a bar")


def one_round(
    models: ModelSet, conf: CalibrationSettings | None, symbols: int, bars: int, work: Path
) -> float:
    """CPU seconds per timed bar, for a fresh agent state in `work`; `conf` None: calibration
    off."""
    settings = AgentSettings(agent_id="bench", state_dir=work)
    counters: Counter[str] = Counter()
    outbox = Outbox(settings.outbox_path, 2**28, background_checkpoints=False)
    calibrators = Calibrators(
        CalibrationSection(enabled=conf is not None), load_calibration(settings.outbox_path)
    )
    if conf is not None:
        calibrators.settings = conf  # the agent's settings choose only the window
    handler = BarHandler(
        settings,
        lambda: models,
        [],
        counters,
        LatencyWindow(),
        inference_error,
        calibrators,
    )
    w = models.window
    closes = sp500_closes(w + bars)
    names = [f"S{i:03d}" for i in range(symbols)]
    order = [(seq, s) for seq in range(w + bars) for s in names]

    def run(batch: list[tuple[int, str]]) -> None:
        # Messages built per batch, as they arrive in the agent (no heap of them all at once).
        msgs = [message(f"market/{s}/bar", bar_payload(s, seq, *closes[seq])) for seq, s in batch]
        outs = [handler.handle(m) for m in msgs]
        outcomes = [o for o in outs if o is not None]
        # As the agent commits a pass (device/agent/core.py, _commit_batch): a batchable model's
        # forecasts (inference and calibration) are computed by the flush, not by `handle`.
        flushed = handler.flush()
        outbox.commit(
            [m for o in outcomes for m in o.messages] + flushed,
            handler.window_states(),
            writes=[x for o in outcomes for x in o.writes] + handler.state_writes(),
        )

    warm, timed = order[: w * symbols], order[w * symbols :]
    for i in range(0, len(warm), BATCH):
        run(warm[i : i + BATCH])
    gc.collect()
    gc.freeze()  # as the agent does after start-up (device/agent/core.py)
    start = time.process_time()
    for i in range(0, len(timed), BATCH):
        run(timed[i : i + BATCH])
    cpu = time.process_time() - start
    if counters["forecasts"] < len(timed):  # every timed bar must have led to its forecast
        raise SystemExit(f"bench_bar_path: {counters['forecasts']} forecasts for {len(timed)} bars")
    outbox.close()
    gc.unfreeze()
    return cpu / len(timed)


def alone(models: ModelSet, conf: CalibrationSettings, bars: int) -> float:
    """CPU seconds per bar of one calibrator's `observe` + `publish` alone, on S&P 500 closes
    and a fixed raw output of the model's shape (median of 5 passes)."""
    m = models.models[0].manifest
    horizons, levels = list(m.horizons or []), list(m.quantiles or [])
    raw = np.linspace(-0.05, 0.05, len(levels))[None, :] * np.sqrt(horizons)[:, None]
    closes = [close for _, close in sp500_closes(bars, start=0)]
    times = []
    for _ in range(5):
        cal = Calibrator("bench@1", horizons, levels, conf)
        start = time.process_time()
        for seq, close in enumerate(closes):
            cal.observe(seq, close)
            cal.publish(seq, close, raw)
        times.append((time.process_time() - start) / bars)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--keys", type=Path, help="default: <registry>/../keys")
    parser.add_argument("--model", default="price/spx")
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--bars", type=int, default=200, help="timed bars per symbol")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--compare-previous",
        action="store_true",
        help="also time the previous default (round 5: no GARCH-t mix) in the same rotation",
    )
    args = parser.parse_args()
    models = price_only(args.registry, args.keys or args.registry.parent / "keys", args.model)
    arms: dict[str, CalibrationSettings | None] = {"off": None, "on": CalibrationSettings()}
    if args.compare_previous:
        arms["on_previous"] = ROUND5
    per_bar: dict[str, list[float]] = {label: [] for label in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            labels = list(arms)
            for label in labels if r % 2 == 0 else labels[::-1]:
                work = Path(tmp) / f"{label}-{r}"
                per_bar[label].append(one_round(models, arms[label], args.symbols, args.bars, work))
    med = {k: statistics.median(v) * 1e6 for k, v in per_bar.items()}
    result: dict[str, object] = {"symbols": args.symbols, "timed_bars": args.symbols * args.bars}
    for label in arms:
        result[f"cpu_us_per_bar_{label}"] = [round(x * 1e6, 1) for x in per_bar[label]]
        result[f"median_{label}_us"] = round(med[label], 1)
    for label in list(arms)[1:]:
        suffix = label[2:]  # "" or "_previous"
        result[f"added_us{suffix}"] = round(med[label] - med["off"], 1)
        result[f"bars_per_cpu_s_ratio_on{suffix}_off"] = round(med["off"] / med[label], 3)
        conf = arms[label] or CalibrationSettings()
        result[f"alone_us_per_bar{suffix}"] = round(alone(models, conf, 5000) * 1e6, 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
