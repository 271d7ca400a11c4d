"""The runtime model (perf/afd_model.py --runtime): placements' bytes, fanout and imbalance on
hand-computed cases, link and data-plane formulas, FFN times, stations, the command line."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from perf.afd.checks import AfdInputError
from perf.afd.dataplane import DeviceCosts, attention_side_us, ffn_side_us
from perf.afd.deployment import Deployment
from perf.afd.hardware import GIB, Hardware, hardware
from perf.afd.layers_json import FfnTable
from perf.afd.links import Link, Transport, load_ping_pong, MPI_SHM, mpi_transport
from perf.afd.measured_ffn import MeasuredFfn, StreamRates
from perf.afd.pipeline import evaluate, layer_time_us
from perf.afd.placement import Layout, RankWork, dense_work, ffn_weight_bytes, moe_work
from perf.afd.rank_time import bucket_rows, ffn_rank_us
from perf.afd.roofline import Roofline, expected_hit_fraction
from perf.afd.routing import uniform_routing
from perf.afd.runtime import RuntimeModel, RuntimeSpec, collective_us, transfer_us, wire_format
from perf.afd.step3 import Step3Dims
from perf.afd_model import main

H = 7168
TOY = Hardware("toy", hbm_bw=1e12, bf16_flops=1e15, fp8_flops=1e15, memory_bytes=80e9,
               nic_bw=1e9, link_latency_s=0.0, nvlink_bw=1e10, source="test")
W_E = 3 * 7168 * 5120  # one expert (= the shared expert) in parameters
W_D = 3 * 7168 * 18432  # one dense MLP


# ---------------- wire bytes per token, each placement and dtype ----------------
@pytest.mark.parametrize("wire,slots,a2f", [
    ("fp8", 3, H + 56 * 4 + 3 * (4 + 2)),  # 7,410: FP8 + fp32 scale per 128 + int32 id, bf16 w
    ("fp8", 4, H + 56 * 4 + 4 * (4 + 2)),  # 7,416: one more slot for the shared expert (P1/P2)
    ("fp8", 0, H + 56 * 4),  # 7,392: dense layers carry no routing
    ("bf16", 3, 2 * H + 3 * (4 + 2)),  # 14,354: no scales
    ("fp32", 3, 4 * H + 3 * (4 + 4)),  # 28,696: weights in the activation dtype
])
def test_a2f_bytes_per_token_copy(wire, slots, a2f):
    assert wire_format(wire, 1).a2f_bytes_per_token(H, slots) == a2f


def test_f2a_bytes_and_the_engine_wire():
    assert wire_format("fp8", 1).f2a_bytes_per_token(H) == 2 * H
    assert wire_format("fp32", 2).f2a_bytes_per_token(H) == 4 * H
    assert wire_format("engine", 1).hidden_bytes == 1  # FP8 engines: FP8 on the wire
    assert wire_format("engine", 2).hidden_bytes == 2  # BF16 engines keep BF16


def ids_where(rows: list[list[int]], repeat: int) -> np.ndarray:
    """[1, len(rows) * repeat, k] micro-batch repeating the given top-k rows (top-1 first)."""
    return np.asarray(rows * repeat, dtype=np.int16)[None]


def test_sliced_sends_every_token_everywhere_and_instance_once_per_instance():
    ids = np.random.default_rng(0).permutation(48)[:3][None, None].repeat(256, axis=1)
    sliced = moe_work(Layout("sliced", 16, 16, 48), ids, 16, 3)
    assert sliced.fanout == 16 and np.all(sliced.tokens_in == 256)
    assert sliced.msgs_out == 16 and sliced.msgs_in == 16 and sliced.routing_slots == 3
    inst = moe_work(Layout("instance", 16, 16, 48), ids, 16, 3)
    assert inst.fanout == 2 and inst.msgs_out == 2 and inst.gathered == 256
    assert np.all(inst.tokens_in == 2 * 16)  # 2 attention ranks per instance GPU (rail)
    assert np.all(inst.shared_rows == 256) and inst.shared_fraction == 1 / 16


def test_replicated_fanout_is_the_distinct_ranks_of_a_token():
    layout = Layout("top1", 2, 16, 48)  # experts 0-2 on rank 0, 3-5 on rank 1, ...
    spread = moe_work(layout, ids_where([[0, 3, 6]], 8), 4, 3)  # three ranks
    same = moe_work(layout, ids_where([[0, 1, 2]], 8), 4, 3)  # one rank
    assert spread.fanout == 3 and same.fanout == 1
    assert spread.tokens_in[0, :3].tolist() == [8, 8, 8] and spread.tokens_in[0, 3:].sum() == 0
    assert same.assignments[0, 0] == 24 and same.experts_hit[0, 0] == 3
    assert spread.routing_slots == 4  # the shared-expert slot rides along


def test_fanout_is_bounded_by_top_k_for_any_routing():
    ids = np.stack([np.random.default_rng(i).permuted(np.tile(np.arange(48), (512, 1)),
                                                      axis=1)[:, :3] for i in range(4)])
    for p in ("top1", "balanced"):
        w = moe_work(Layout(p, 4, 16, 48), ids.astype(np.int16), 128, 3)
        per_token = w.tokens_out.sum(axis=1) / 512
        assert np.all(per_token <= 3) and np.all(w.tokens_in.sum(axis=1) <= 3 * 512)
    dense = dense_work(Layout("balanced", 4, 16, 48), 128)
    assert dense.fanout == 1 and dense.shared_rows.tolist() == [[32] * 16]  # 512 / 16 each


def test_shared_work_top1_versus_balanced_hand_computed():
    rows = [[0, 12]]  # 24 experts on 2 ranks: top-1 expert 0 on rank 0, expert 12 on rank 1
    ids = ids_where(rows, 8)  # one attention rank with 8 tokens
    top1 = moe_work(Layout("top1", 1, 2, 24), ids, 8, 2)
    bal = moe_work(Layout("balanced", 1, 2, 24), ids, 8, 2)
    assert top1.assignments.tolist() == [[8, 8]]
    assert top1.shared_rows.tolist() == [[8, 0]]  # all shared work on the top-1 rank
    # loads start at 8 routed each: ties go to the top-1 rank, then alternate
    assert bal.shared_rows.tolist() == [[4, 4]]
    skew = ids_where([[0, 1]], 8)  # both experts on rank 0: nothing to balance
    assert moe_work(Layout("balanced", 1, 2, 24), skew, 8, 2).shared_rows.tolist() == [[8, 0]]


def test_balanced_lowers_the_busiest_ranks_work_on_skewed_routing():
    rng = np.random.default_rng(1)
    w = np.r_[np.full(6, 4.0), np.ones(42)]  # six hot experts
    keys = np.log(w)[None, None] + rng.gumbel(size=(4, 2048, 48))
    ids = np.argsort(-keys, axis=2)[:, :, :3].astype(np.int16)
    top1 = moe_work(Layout("top1", 16, 16, 48), ids, 128, 3)
    bal = moe_work(Layout("balanced", 16, 16, 48), ids, 128, 3)
    total = lambda r: (r.assignments + r.shared_rows).max(axis=1).mean()  # noqa: E731
    assert total(bal) < total(top1)
    assert (bal.assignments + bal.shared_rows).sum() == (top1.assignments + top1.shared_rows).sum()


def test_ffn_weight_bytes_per_rank_hand_computed():
    d, moe, dense = Step3Dims(), 56, 5
    routed = moe * 3 * W_E  # 3 experts of each MoE layer on each of 16 ranks
    shared = moe * W_E + dense * W_D
    assert ffn_weight_bytes("sliced", d, 16, 1) == pytest.approx(routed + shared / 16)
    assert ffn_weight_bytes("balanced", d, 16, 1) == pytest.approx(routed + shared)
    assert ffn_weight_bytes("top1", d, 16, 2) == pytest.approx(2 * (routed + shared))
    assert ffn_weight_bytes("balanced", d, 16, 1) / GIB == pytest.approx(24.8, abs=0.05)


def test_layouts_refuse_impossible_ranks():
    with pytest.raises(AfdInputError, match="at least one expert"):
        Layout("sliced", 1, 64, 48)
    with pytest.raises(AfdInputError, match="instance_gpus"):
        Layout("instance", 1, 12, 48)
    assert Layout("top1", 1, 5, 48).expert_rank().tolist().count(0) == 10  # uneven EP blocks


# ---------------- FFN rank times ----------------
def expected_work(dep: Deployment, tokens: int) -> RankWork:
    """The expected work of one sliced rank under uniform routing (what Roofline.ffn_us prices)."""
    g = dep.ffn_gpu_count
    a = np.array([[tokens * 3 * (48 / g) / 48]])
    hit = np.array([[48 / g * expected_hit_fraction(tokens, 3, 48)]])
    rows = np.array([[tokens]])
    return RankWork("moe", a, hit, rows, 1 / g, rows, np.array([[tokens]]), g, 1, 3, 0, tokens)


def test_rank_roofline_equals_the_stage_roofline_on_the_expected_work():
    roof, dep = Roofline(hardware("h100")), Deployment(2, 2)
    assert ffn_rank_us(roof, dep, expected_work(dep, 2048))[0, 0] == pytest.approx(
        roof.ffn_us(dep, 2048, "moe"))


def test_replicated_shared_expert_costs_one_more_experts_weights():
    roof, dep = Roofline(TOY), Deployment(2, 2)
    a, hit = np.array([[1.0]]), np.array([[1.0]])
    one = RankWork("moe", a, hit, np.array([[1]]), 1.0, a, a, 16, 16, 4, 0, 1)
    # weight-bound: (expert + shared) weights + 2 rows of fp8 input and bf16 output, at 1 TB/s
    assert ffn_rank_us(roof, dep, one)[0, 0] == pytest.approx((2 * W_E + 2 * H * 3) / 1e6)
    assert bucket_rows(np.array([0, 1, 5, 129, 2048])).tolist() == [0, 1, 6, 192, 2048]


def test_measured_ffn_reads_the_table_at_equivalent_work():
    table = FfnTable(16, "moe", (512, 1024, 2048, 4096), (356.0, 418.0, 555.0, 865.0))
    rates = StreamRates(moe=2.5e12, dense=2e12, source="test")
    m = MeasuredFfn(table, Step3Dims(), 1, rates)
    dep = Deployment(2, 2)
    assert m.rank_us(expected_work(dep, 2048))[0, 0] == pytest.approx(555.0)
    # the same work units plus a whole shared expert instead of a 1/16 slice
    rep = RankWork("moe", np.array([[384.0]]), np.array([[3.0]]), np.array([[128]]), 1.0,
                   np.array([[400]]), np.array([[400]]), 16, 16, 4, 0, 128)
    extra = (W_E - W_E / 16) / 2.5e12 * 1e6
    hit = 3 * expected_hit_fraction(2048, 3, 48)
    assert m.rank_us(rep)[0, 0] == pytest.approx(555.0 + extra + (3 - hit) * W_E / 2.5e12 * 1e6)
    busy = RankWork("moe", np.array([[2000.0]]), np.array([[3.0]]), np.array([[2048]]), 1 / 16,
                    np.array([[2048]]), np.array([[2048]]), 16, 16, 3, 0, 2048)
    assert m.rank_us(busy) is None  # equivalent to more than the table's 4,096 tokens


# ---------------- links and data plane ----------------
def test_transfer_times_hand_computed():
    link = Link("l", 1e9, 10.0, 1.0, "test")
    t = Transport("t", link, link, staged=False)
    one = transfer_us(t, True, np.array([1e6]), 4, np.array([2e6]), 2)
    assert one == pytest.approx(10 + 2e6 / 1e9 * 1e6 + 4 * 1.0)  # busiest side, one latency
    staged = replace(t, staged=True, pcie_bw=1e9, copy_latency_us=5.0)
    assert transfer_us(staged, True, np.array([1e6]), 1, np.array([1e6]), 1) \
        == pytest.approx(2 * (5 + 1000) + 10 + 1000 + 1)
    table = replace(link, table=((0.0, 1e6), (1.0, 101.0)))  # serialized messages
    ts = Transport("t", table, table, staged=False)
    assert transfer_us(ts, True, np.array([2e6]), 4, np.array([1e6]), 1) \
        == pytest.approx(max(4 * 51.0, 101.0))
    assert collective_us(t, 1e6, 8) == pytest.approx(7 * (10 + 1) + 7 * 1000)
    assert collective_us(t, 1e6, 1) == 0


def test_mpi_transport_uses_the_measured_ping_pong():
    sizes, us = load_ping_pong(MPI_SHM)
    assert sizes[0] == 0 and all(b > a for a, b in zip(sizes, sizes[1:]))
    shm = mpi_transport().intra
    assert shm.message_us(sizes[3]) == pytest.approx(us[3])
    assert shm.message_us(2 * sizes[-1]) > us[-1]  # extended at the largest message's rate
    assert mpi_transport().staged


def test_fp8_wire_adds_the_quantization_and_dequantization_bytes():
    c, d = DeviceCosts(1e12, 0.0, 1024), Step3Dims()
    fp8, bf16 = wire_format("fp8", 1), wire_format("bf16", 1)
    q = attention_side_us(c, d, fp8, 128, 0, 0, False)
    b = attention_side_us(c, d, bf16, 128, 0, 0, False)
    assert q - b == pytest.approx(128 * (2 * H + H + 56 * 4) / 1e6)  # read bf16, write fp8+scales
    f8, f16 = ffn_side_us(c, d, fp8, 100, 0), ffn_side_us(c, d, bf16, 100, 0)
    # assembling FP8 moves fewer bytes, dequantizing adds FP8 read + bf16 write
    assert f8 - f16 == pytest.approx(100 * (2 * (7392 - 2 * H) + 7392 + 2 * H) / 1e6)


# ---------------- stations, head, the command line ----------------
@pytest.fixture(scope="module")
def uniform_model():
    spec = RuntimeSpec(routing=uniform_routing(48, 3), sampler_layers=2, draws_per_layer=2)
    return RuntimeModel(Roofline(hardware("h100")), spec)


def test_stations_are_the_runtime_ring(uniform_model):
    m, dep = uniform_model, Deployment(2, 2, wire=wire_format("engine", 1))
    st = m.stations(dep, 128, "moe")
    assert list(st) == ["attn_host", "attention", "a2f", "ffn_host", "ffn", "f2a"]
    f = m.figures(dep, 128, "moe")
    assert st["attention"] == pytest.approx(m.roof.attention_us(dep, 128, "moe")
                                            + f["attention_dataplane_us"])
    assert st["attn_host"] == st["ffn_host"] == 90.0
    p = evaluate(m, dep, 128)
    assert p.layer_us["moe"] == pytest.approx(layer_time_us(list(st.values()), 3))
    lo, hi, mid = (m.figures(dep, n, "moe")["a2f_us"] for n in (96, 128, 112))
    assert mid == pytest.approx((lo + hi) / 2)  # between grid points: linear


def test_head_is_bf16_whatever_the_engine_weights():
    roof, d = Roofline(TOY), Step3Dims()
    fp8, bf16 = Deployment(1, 1, weight_bytes=1), Deployment(1, 1, weight_bytes=2)
    v = d.vocab * d.hidden
    expected = max((v * 2 + 4 * (H * 2 + d.vocab * 4)) / 1e12, 2 * 4 * v / 1e15) * 1e6
    assert roof.head_us(fp8, 4) == roof.head_us(bf16, 4) == pytest.approx(expected)
    layers = 61 * (51904512 + 117440512) + 56 * 48 * H  # attention + router parameters
    assert roof.capacity(fp8).attn_weight_bytes == pytest.approx(layers + v * (2 + 2))
    assert roof.capacity(bf16).attn_weight_bytes == pytest.approx(2 * layers + v * (2 + 2))


def test_placement_memory_enters_the_capacity(uniform_model):
    tiny = replace(hardware("h100"), memory_bytes=26 * GIB)  # sliced fits, replicated does not
    roof = Roofline(tiny)
    dep = Deployment(2, 2)
    sliced = RuntimeModel(roof, replace(uniform_model.spec, placement="sliced"),
                          uniform_model.sampler)
    bal = RuntimeModel(roof, uniform_model.spec, uniform_model.sampler)
    assert sliced.capacity(dep).ffn_fits and not bal.capacity(dep).ffn_fits


def test_host_splits_are_one_instance_each():
    dep = Deployment(2, 2).with_split("2+6")
    assert (dep.attn_gpu_count, dep.ffn_gpu_count, dep.name) == (2, 6, "2+6")
    assert Deployment(1, 1).with_split("3A2F").name == "3A2F"
    with pytest.raises(AfdInputError, match="split"):
        Deployment(1, 1).with_split("0+8")


def test_cli_runtime_writes_headline_and_placement_study(tmp_path, capsys):
    argv = ["--roofline", "--runtime", "--routing", "uniform", "--splits", "2A2F",
            "--out", str(tmp_path), "--no-plot"]
    assert main(argv) == 0
    out = json.loads((tmp_path / "afd_model_runtime_roofline_h100_uniform.json").read_text())
    assert out["mode"] == "runtime" and out["runtime"]["placement"] == "balanced"
    assert {r["placement"] for r in out["placement_study"]} == {"sliced", "top1", "balanced",
                                                                "instance"}
    text = capsys.readouterr().out
    assert "4,039" in text and "instance-fanout model" in text and "ASSUMED" in text


@pytest.mark.parametrize("argv,message", [
    (["--paper", "--runtime"], "--runtime needs layer times"),
    (["--roofline", "--runtime", "--fanout", "rank"], "--fanout"),
])
def test_cli_runtime_refuses_mixed_modes(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        main(argv + ["--out", str(tmp_path), "--no-plot"])
    assert message in capsys.readouterr().err


def test_cli_runtime_reports_bad_inputs(tmp_path, capsys):
    argv = ["--roofline", "--runtime", "--host-overhead-us", "fast", "--out", str(tmp_path),
            "--no-plot"]
    assert main(argv) == 2
    assert "--host-overhead-us" in capsys.readouterr().err
