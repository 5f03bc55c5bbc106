"""What on-line calibration adds to the agent's work per bar, measured in process (docs/BENCHMARKS.md).

    python -m scripts.bench_bar_path --registry DIR [--symbols 50] [--bars 200] [--rounds 5]

Runs the agent's bar path, `BarHandler.handle` (parse, window, onnxruntime, calibration,
payload) and the outbox commit of each group of 64 bars (as the network loop commits them),
over real S&P 500 closes for `--symbols` symbols, with calibration on and off in alternating
rounds. Reports CPU time per bar (process time: less disturbed by other load on the machine than
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

from device.agent.bar_handler import BarHandler
from device.agent.calibrators import Calibrators, load_calibration
from device.health import LatencyWindow
from device.keys import load_trusted_keys
from device.modelset import ModelSet, load_model_set
from device.outbox import Outbox, OutMessage
from device.settings import AgentSettings, CalibrationSection
from tests.support.clients import bar_payload, sp500_closes
from tests.support.fake_host import message

BATCH = 64  # device/agent/core.py MAX_BATCH


def price_only(registry: Path, keys: Path, name: str) -> ModelSet:
    models = load_model_set(registry, load_trusted_keys([keys]))
    chosen = tuple(m for m in models.models if m.model_id == name)
    if not chosen:
        raise SystemExit(f"no {name} in {registry}")
    return ModelSet(chosen)


def inference_error(*_: object) -> OutMessage:
    raise RuntimeError("the benchmark's model failed on a bar")


def one_round(models: ModelSet, enabled: bool, symbols: int, bars: int, work: Path) -> float:
    """CPU seconds per timed bar, for a fresh agent state in `work`."""
    settings = AgentSettings(agent_id="bench", state_dir=work)
    counters: Counter[str] = Counter()
    outbox = Outbox(settings.outbox_path, 2**28, background_checkpoints=False)
    handler = BarHandler(
        settings,
        lambda: models,
        [],
        counters,
        LatencyWindow(),
        inference_error,
        Calibrators(CalibrationSection(enabled=enabled), load_calibration(settings.outbox_path)),
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
        # As the network loop commits a pass: the batched forecasts (`flush`) and the states they
        # changed join the handled bars' own outputs in one transaction.
        outbox.commit(
            [m for o in outcomes for m in o.messages] + handler.flush(),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--keys", type=Path, help="default: <registry>/../keys")
    parser.add_argument("--model", default="price/spx")
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--bars", type=int, default=200, help="timed bars per symbol")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    models = price_only(args.registry, args.keys or args.registry.parent / "keys", args.model)
    per_bar: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for label in ("off", "on") if r % 2 == 0 else ("on", "off"):
                work = Path(tmp) / f"{label}-{r}"
                per_bar[label].append(
                    one_round(models, label == "on", args.symbols, args.bars, work)
                )
    med = {k: statistics.median(v) * 1e6 for k, v in per_bar.items()}
    result = {
        "symbols": args.symbols,
        "timed_bars": args.symbols * args.bars,
        "cpu_us_per_bar_off": [round(x * 1e6, 1) for x in per_bar["off"]],
        "cpu_us_per_bar_on": [round(x * 1e6, 1) for x in per_bar["on"]],
        "median_off_us": round(med["off"], 1),
        "median_on_us": round(med["on"], 1),
        "added_us": round(med["on"] - med["off"], 1),
        "bars_per_cpu_s_ratio_on_off": round(med["off"] / med["on"], 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
