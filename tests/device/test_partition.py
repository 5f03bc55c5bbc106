"""Symbol-affine partitions, seq gaps and batched inference of the bar path."""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.agent.bar_handler import BarHandler, PendingRow, infer_rows
from device.agent.calibrators import Calibrators
from device.bars import SymbolWindow
from device.bundle import load_bundle
from device.health import LatencyWindow
from device.keys import load_trusted_keys
from device.modelset import LoadedModel, ModelSet, smoke_test
from device.onnxgraph import op_types, rows_independent
from device.partition import Partition, owner
from device.runtime import OnnxModel
from device.schemas import ModelRef
from device.settings import AgentSettings
from tests.support.clients import bar_payload, sp500_closes

SYMBOLS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/#+"), min_size=1, max_size=64
)


def bar_handler(settings: AgentSettings, counters: Counter[str]) -> BarHandler:
    """A bar handler with no models and fresh calibration state."""
    calibrators = Calibrators(settings.calibration, {})
    return BarHandler(
        settings, ModelSet, (), counters, LatencyWindow(), lambda *_: None, calibrators
    )


def test_the_owner_is_the_documented_crc32() -> None:
    # Pinned: an agent built elsewhere (another Python, another machine) must agree.
    assert [owner(s, 3) for s in ("SPX", "NDX", "CAC", "SMI")] == [0, 2, 2, 0]
    assert owner("SPX", 7) == zlib.crc32(b"SPX") % 7


@given(SYMBOLS, st.integers(1, 64))
def test_every_symbol_has_exactly_one_owner_in_range(symbol: str, count: int) -> None:
    index = owner(symbol, count)
    assert 0 <= index < count
    assert [Partition(k, count).owns(symbol) for k in range(count)].count(True) == 1
    assert owner(symbol, count) == index  # stable


def test_a_partition_index_must_be_below_the_count() -> None:
    with pytest.raises(ValueError, match=r"not in 0\.\.2"):
        Partition(3, 3)


def _msg(symbol: str, seq: int, ts: str, close: float):
    import paho.mqtt.client as mqtt

    msg = mqtt.MQTTMessage(topic=f"market/{symbol}/bar".encode())
    msg.payload = bar_payload(symbol, seq, ts, close)
    return msg


def test_seq_gaps_are_counted_per_symbol_and_flag_the_windows_that_hold_them(caplog) -> None:
    counters: Counter[str] = Counter()
    handler = bar_handler(AgentSettings(agent_id="a"), counters)
    bars = sp500_closes(12)
    seqs = [0, 1, 2, 5, 6, 7, 8, 9, 12, 13]  # two gaps in SPX
    for seq, (ts, close) in zip(seqs, bars, strict=False):
        handler.handle(_msg("SPX", seq, ts, close))
    for seq, (ts, close) in enumerate(bars[:5]):
        handler.handle(_msg("NDX", seq, ts, close))
    assert handler.seq_gaps == {"SPX": 2}
    assert counters["seq_gaps"] == 2
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "SPX" in warnings[0].getMessage()  # the first gap only

    window = handler.windows["SPX"]  # the last three seqs: 9, 12, 13
    assert window.has_gap(3) and not window.has_gap(2)
    assert not handler.windows["NDX"].has_gap(5)
    w = SymbolWindow("X", 3)
    for seq in (0, 1, 3, 4, 5, 6):
        w.push(seq, "", 1.0)
        assert w.has_gap(3) == (seq in (3, 4))  # the jump 1 -> 3 is inside [1, 3] and [3, 4]


def test_bars_of_other_members_symbols_are_counted_not_handled() -> None:
    counters: Counter[str] = Counter()
    settings = AgentSettings(agent_id="a", partition={"index": 1, "count": 3})
    handler = bar_handler(settings, counters)
    mine = [s for s in ("SPX", "NDX", "CAC", "SMI", "DAX", "FTSE") if owner(s, 3) == 1]
    others = [s for s in ("SPX", "NDX", "CAC", "SMI", "DAX", "FTSE") if owner(s, 3) != 1]
    assert mine and others
    assert [handler.not_owned(f"market/{s}/bar") for s in mine] == [False] * len(mine)
    assert all(handler.not_owned(f"market/{s}/bar") for s in others)
    assert not handler.not_owned("macro/cpi")  # not a bar: routed as usual
    assert counters["not_owned"] == len(others)


@pytest.fixture(scope="module")
def price_model(quick_price_bundle) -> LoadedModel:
    bundle = load_bundle(quick_price_bundle.path, load_trusted_keys([quick_price_bundle.keys_dir]))
    m = bundle.manifest
    return LoadedModel(OnnxModel(bundle), ModelRef(name=m.name, version=m.version, sha256="x"))


def _rows(model: LoadedModel, n: int) -> list[PendingRow]:
    w = model.manifest.window or 0
    closes = np.array([c for _, c in sp500_closes(n + w)], dtype=np.float32)
    return [
        PendingRow(model, f"S{i}", i, None, 1.0, closes[None, i : i + w].copy(), False)  # type: ignore[arg-type]
        for i in range(n)
    ]


def test_a_dynamically_quantized_graph_runs_one_window_per_call(price_model) -> None:
    # A `quantize_dynamic`d student: batched, its rows would share activation scales. The quick
    # search picks its chain on validation, so its student is quantized on some machines only;
    # a float one is quantized here.
    from forecaster.compress.quantize import quantize_dynamic

    quantized = price_model.model.bundle.model_bytes
    if "DynamicQuantizeLinear" not in op_types(quantized):
        quantized = quantize_dynamic(quantized)
    assert "DynamicQuantizeLinear" in op_types(quantized)
    bundle = replace(price_model.model.bundle, model_bytes=quantized)
    model = replace(price_model, model=OnnxModel(bundle))
    assert not model.model.batchable
    rows = _rows(model, 20)
    got = infer_rows(model, rows)
    for row, result in zip(rows, got, strict=True):
        assert not isinstance(result, Exception)
        alone, _ = model.model.run_window(row.closes)
        np.testing.assert_array_equal(result[0], alone)


def test_a_float_graph_runs_the_pass_as_one_call_with_the_per_window_results(
    price_model, quick_price_bundle
) -> None:
    # The bundle's teacher: a float graph (LSTM, Gemm) with the same contract as the student.
    teacher = (quick_price_bundle.path / "teacher.onnx").read_bytes()
    assert rows_independent(teacher)
    bundle = replace(price_model.model.bundle, model_bytes=teacher)
    model = replace(price_model, model=OnnxModel(bundle))
    smoke_test(model.model)
    assert model.model.batchable
    rows = _rows(model, 40)
    got = infer_rows(model, rows)
    latencies = {result[1] for result in got if not isinstance(result, Exception)}
    assert len(latencies) == 1  # one call
    for row, result in zip(rows, got, strict=True):
        assert not isinstance(result, Exception)
        alone, _ = model.model.run_window(row.closes)
        np.testing.assert_array_equal(result[0], alone)  # the same bits as alone


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 13), min_size=1, max_size=6), seed=st.integers(0, 999))
def test_a_window_gives_the_same_bits_whatever_shares_its_call(
    price_model, quick_price_bundle, sizes: list[int], seed: int
) -> None:
    # onnxruntime's GEMM kernels differ for 1-3 rows and blocks of 4 (runtime.ROW_BLOCK)
    teacher = (quick_price_bundle.path / "teacher.onnx").read_bytes()
    model = replace(
        price_model, model=OnnxModel(replace(price_model.model.bundle, model_bytes=teacher))
    )
    rows = _rows(model, sum(sizes))
    order = np.random.default_rng(seed).permutation(len(rows))
    alone = [model.model.run_window(r.closes)[0] for r in rows]
    start = 0
    for size in sizes:  # the rows in calls of these sizes, in a shuffled order
        part = [rows[i] for i in order[start : start + size]]
        for i, result in zip(order[start : start + size], infer_rows(model, part), strict=True):
            assert not isinstance(result, Exception)
            np.testing.assert_array_equal(result[0], alone[i])
        start += size


LEVELS = st.sampled_from(["market", "SPX", "bar", "", "$SYS", "a+b", "x#", "fleet"])


@given(
    st.lists(st.sampled_from(["market", "SPX", "bar", "+", "", "$SYS"]), min_size=1, max_size=4),
    st.booleans(),
    st.lists(LEVELS, min_size=1, max_size=5),
)
def test_topic_matching_agrees_with_paho(
    levels: list[str], hash_tail: bool, topic: list[str]
) -> None:
    import paho.mqtt.client as mqtt

    from device.topics import topic_matches

    topic_filter = "/".join([*levels, "#"] if hash_tail else levels)
    name = "/".join(topic)
    for f in (topic_filter, "#"):
        assert topic_matches(f, name) == mqtt.topic_matches_sub(f, name), (f, name)


def test_op_types_read_from_protobuf_match_onnx_including_subgraphs(quick_price_bundle) -> None:
    import onnx
    from onnx import TensorProto, helper

    for name in ("model.onnx", "teacher.onnx"):
        data = (quick_price_bundle.path / name).read_bytes()
        assert op_types(data) == {n.op_type for n in onnx.load_from_string(data).graph.node}
    # A dynamic quantization hidden in a branch of an If still makes the graph per-window only.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    q = helper.make_tensor_value_info("q", TensorProto.UINT8, [None, 4])
    branch = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])], "b", [], [q]
    )
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    node = helper.make_node("If", ["c"], ["q"], then_branch=branch, else_branch=branch)
    model = helper.make_model(helper.make_graph([node], "g", [cond, x], [q]))
    data = model.SerializeToString()
    assert op_types(data) == {"If", "DynamicQuantizeLinear"}
    assert not rows_independent(data)
