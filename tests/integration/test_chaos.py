"""Reliability under faults and bad input: the short version of `make chaos` (scripts/chaos.py),
and the faults it found, each pinned down on its own."""

from __future__ import annotations

import functools
import json
import os
import random
import signal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.bars import SeqCheck, check_seq, parse_bar
from device.errors import PayloadError
from device.schemas import Bar
from scripts.chaos import (
    BROKER_KEYS,
    MALFORMED_KINDS,
    TOPICS,
    ChaosConfig,
    Input,
    MalformedFactory,
    broker_config,
    nonce_of,
    plan_chaos,
    run_chaos,
    symbol_names,
)
from tests.integration.test_agent import AGENT, outbox_rows, wait_status
from tests.support.agents import agent_config, unread_bytes
from tests.support.clients import bar_payload, sp500_closes
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def real_bars() -> list[Bar]:
    from forecaster.ops.feeds import dataset_bars

    return dataset_bars("sp500", limit=300)


def rejected(item: Input, last: dict[str, int], symbols: list[str]) -> bool:
    """Would an agent that serves `symbols` (and has room for no other) reject `item`?"""
    symbol = TOPICS.symbol_of_bar(item.topic)
    assert symbol is not None
    try:
        bar = parse_bar(item.payload, symbol, None)
    except PayloadError:
        return True
    return symbol not in symbols or check_seq(last[symbol], bar.seq) is not SeqCheck.NEW


@settings(max_examples=200, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(MALFORMED_KINDS),
    index=st.integers(2, 299),
)
def test_every_generated_bad_payload_is_invalid_and_carries_its_nonce(
    seed: int, kind: str, index: int
) -> None:
    symbols = symbol_names(3)
    good = real_bars()[index].model_copy(update={"symbol": symbols[0], "seq": index})
    factory = MalformedFactory(random.Random(seed), symbols)
    factory.count = seed % 1_000_000
    item = factory.make(good, index - 1, kind)
    assert item.kind == kind
    # The agent echoes at most the first 1,024 bytes of a payload in its dead letter.
    shown = item.payload[:1024].decode("utf-8", errors="replace")
    assert nonce_of(f"{shown} {item.topic}") == item.nonce
    assert rejected(item, dict.fromkeys(symbols, index - 1), symbols)


def test_the_plan_is_reproducible_and_keeps_every_real_bar_in_order() -> None:
    symbols = symbol_names(4)
    plan = plan_chaos(real_bars(), symbols, rounds=80, malformed=300, warmup=64, seed=3)
    assert plan == plan_chaos(real_bars(), symbols, rounds=80, malformed=300, warmup=64, seed=3)
    valid = [i for i in plan if i.kind == "bar"]
    assert [(i.symbol, i.seq) for i in valid] == [(s, r) for r in range(80) for s in symbols]
    assert all(json.loads(i.payload)["close"] == real_bars()[i.seq].close for i in valid)
    bad = [i for i in plan if i.kind != "bar"]
    assert sorted(i.nonce for i in bad) == list(range(300))
    assert {i.kind for i in bad} == set(MALFORMED_KINDS)
    assert plan.index(bad[0]) >= 64 * len(symbols)  # none before every window is full
    last: dict[str, int] = {}
    for item in plan:
        if item.seq is not None:
            last[item.symbol] = item.seq
        else:
            assert rejected(item, last, symbols)


def test_the_harness_broker_has_the_deploy_persistence_and_queue_settings(tmp_path: Path) -> None:
    deploy = {}
    for line in (ROOT / "deploy" / "mosquitto.conf").read_text().splitlines():
        key, _, value = line.partition(" ")
        deploy[key] = value.strip()
    lines = broker_config(tmp_path, 18830).read_text().splitlines()
    ours = dict(line.partition(" ")[::2] for line in lines)
    for key in BROKER_KEYS:
        expected = f"{tmp_path}/" if key == "persistence_location" else deploy[key]
        assert ours[key] == expected, key
    assert ours["persistence"] == "true"
    assert "listener 18830 127.0.0.1" in lines
    assert not {"cafile", "password_file", "acl_file"} & ours.keys()


def test_short_chaos_run_loses_nothing_and_dead_letters_every_bad_payload(
    tmp_path: Path, quick_price_bundle
) -> None:
    """5 symbols of real bars with 200 bad payloads mixed in; one agent SIGKILL, one broker
    restart, one 3 s broker freeze. Every forecast arrives once after dedup, every bad payload
    gives exactly one dead letter, and the agent serves again soon after each fault."""
    window = json.loads((quick_price_bundle.path / "manifest.json").read_text())["window"]
    cfg = ChaosConfig(
        symbols=5,
        bars=window + 450,
        malformed=200,
        kills=1,
        broker_restarts=1,
        partition_s=3.0,
        rate=250.0,
        settle_s=20.0,
    )
    result = run_chaos(cfg, quick_price_bundle, tmp_path, say=lambda _: None)

    forecasts, letters = result["forecasts"], result["dead_letters"]
    assert result["complete"]
    assert forecasts["expected"] == 5 * (cfg.bars - window + 1)
    assert forecasts["lost"] == 0
    assert forecasts["unexpected"] == 0
    assert forecasts["recomputed_keys"] == 0  # no bar processed twice, even across the kill
    assert letters["expected"] == letters["matched"] == 200
    assert letters["missing"] == 0
    assert letters["without_nonce"] == 0  # no valid bar was dead-lettered
    assert letters["redone"] == 0  # none dead-lettered again after the kill
    assert all(k["dead_lettered"] == k["sent"] for k in letters["by_kind"].values())
    assert [r["kind"] for r in result["restarts"]] == ["kill", "broker_restart", "partition"]
    # The goal is 2 s; the bound here leaves room for a loaded 2-core test machine.
    assert all(r["next_new_forecast_s"] < 10.0 for r in result["restarts"])
    assert all(
        0 <= r["first_new_computed_s"] <= r["next_new_forecast_s"] for r in result["restarts"]
    )
    assert result["agent_tracebacks"] == 0
    assert len(result["rss_mb"]["per_process"]) == 2


def test_a_duplicate_bar_in_flight_at_a_sigkill_is_still_dead_lettered(
    tmp_path, broker, quick_price_bundle, agent_process, collector, feed
) -> None:
    """The broker re-sends the duplicate with the DUP flag to the restarted agent. The agent never
    committed it, so it is not a redelivery of anything it handled: it must be dead-lettered,
    not taken for a redelivery and dropped."""
    sub = collector(f"fleet/{AGENT}/deadletter", f"fleet/{AGENT}/status")
    config = agent_config(tmp_path / "agent.toml", broker.url, quick_price_bundle)
    agent = agent_process(config)
    wait_status(sub, lambda s: s.online)
    bars = sp500_closes(3)
    for seq, bar in enumerate(bars):
        feed.bar("SPX", seq, *bar)
    feed.flush()
    wait_status(sub, lambda s: s.counters["received"] == 3)
    assert agent.proc is not None
    os.kill(agent.proc.pid, signal.SIGSTOP)
    duplicate = json.loads(bar_payload("SPX", 2, *bars[2])) | {"note": "sent twice"}
    feed.raw("market/SPX/bar", json.dumps(duplicate).encode())
    feed.flush()
    wait_until(  # the broker wrote it to the socket
        lambda: unread_bytes(agent.proc.pid, broker.port) > 0, 10, "the duplicate in the socket"
    )
    agent.kill()

    agent_process(config)
    letters = sub.wait_for(f"fleet/{AGENT}/deadletter", lambda d: len(d) >= 1, timeout=30)
    assert "duplicate seq 2" in letters[0]["reason"]
    status = wait_status(sub, lambda s: s.counters["received"] == 1)
    assert status.counters["redelivered"] == 0
    assert len(sub.on(f"fleet/{AGENT}/deadletter")) == 1


def test_a_bad_payload_committed_before_a_sigkill_gets_one_dead_letter(
    tmp_path, broker, link, quick_price_bundle, agent_process, collector, feed
) -> None:
    """The dead letter is committed but the broker never hears the input's PUBACK (the link is
    cut), so after a SIGKILL it re-sends the input. The agent recognises what it committed and
    does not dead-letter it again."""
    sub = collector(f"fleet/{AGENT}/deadletter", f"fleet/{AGENT}/status")
    config = agent_config(tmp_path / "agent.toml", link.url, quick_price_bundle)
    agent = agent_process(config)
    wait_status(sub, lambda s: s.online)
    link.cut()  # returns once a read the relay had under way has gone through
    feed.raw("market/SPX/bar", b"\x00 not a bar")
    feed.flush()
    wait_until(  # the dead letter, committed and unsent
        lambda: outbox_rows(tmp_path / "state") >= 1, 20, "the committed dead letter"
    )
    agent.kill()
    link.reset()

    agent_process(config)
    status = wait_status(sub, lambda s: s.counters["received"] == 1 and s.counters["backlog"] == 0)
    assert status.counters["redelivered"] == 1
    assert status.counters["dead_letters"] == 0
    letters = sub.on(f"fleet/{AGENT}/deadletter")
    assert len(letters) == 1
    assert letters[0]["reason"].startswith("malformed JSON")
