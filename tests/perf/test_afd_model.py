"""AFD performance model: formulas on hand-computed cases, the search, the paper validation."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from perf.afd import paper_deploy, paper_tables
from perf.afd.checks import AfdInputError
from perf.afd.deployment import Deployment, WireFormat, parse_split
from perf.afd.hardware import Hardware, hardware
from perf.afd.pipeline import (best_under_sla, curve, evaluate, layer_time_us,
                               tokens_per_s_per_gpu, tpot_us)
from perf.afd.projection import context_sweep, project
from perf.afd.roofline import Roofline, expected_hit_fraction
from perf.afd.step3 import Step3Dims
from perf.afd_model import main

# A GPU with round numbers: 1 TB/s, 1 PFLOP/s for every dtype, 1 GB/s link, no latency.
TOY = Hardware("toy", hbm_bw=1e12, bf16_flops=1e15, fp8_flops=1e15, memory_bytes=80e9,
               nic_bw=1e9, link_latency_s=0.0, nvlink_bw=1e10, source="test")
ATTN_IN = 2048 * 7168 + 2 * 256 * 7168 + 64 * 256 * 2048  # q_proj + k/v + wq = 51,904,512
O_PROJ = 64 * 256 * 7168  # 117,440,512


# ---------------- the pipeline formula ----------------
@pytest.mark.parametrize("stations,m,expected", [
    ([100, 50, 100, 50], 3, 300),  # balanced: the slowest station's busy time
    ([100, 10, 10, 10], 3, 300),  # attention-bound
    ([100, 100, 100, 100], 3, 400),  # too few micro-batches: one round trip
    ([100, 100, 100, 100], 4, 400),
    ([100, 20, 30, 40], 1, 190),  # no pipelining: the sum
])
def test_layer_time_is_max_of_busiest_station_and_round_trip(stations, m, expected):
    assert layer_time_us(stations, m) == expected


def test_paper_stage_budgets_follow_from_the_ring_formula():
    # three equal stations, m = 3: 61 layers x 3t = 50 ms  ->  t = 273 us (paper: 272)
    t = 50e3 / (61 * 3)
    assert layer_time_us([t, t, t], 3) * 61 == pytest.approx(50e3)
    # four equal stations (A, comm, F, comm), m = 3: bound by the round trip, 12.5 ms each
    t4 = 50e3 / (61 * 4)
    assert layer_time_us([t4] * 4, 3) * 61 == pytest.approx(50e3)


def test_tpot_sums_layer_kinds_and_lm_head_passes():
    assert tpot_us({"moe": 300.0, "dense": 200.0}, {"moe": 56, "dense": 5}, 100.0, 3) \
        == 56 * 300 + 5 * 200 + 3 * 100


def test_tokens_per_s_per_gpu_reproduces_paper_identity():
    # 6,144 sequences on 32 GPUs at 47.54 ms per token is the paper's 4,039 tokens/s/GPU
    assert tokens_per_s_per_gpu(6144, 6144 / (4039 * 32) * 1e3, 32) == pytest.approx(4039)


# ---------------- roofline stage times ----------------
def test_attention_time_hand_computed():
    model = Roofline(TOY)
    dep = Deployment(1, 1, context=1000, kv_bytes=1, weight_bytes=1)
    # in-projections: weights + bf16 input row; core: 1000 ctx x 512 B; o_proj weights
    expected = (ATTN_IN + 7168 * 2) / 1e6 + 1000 * 512 / 1e6 + O_PROJ / 1e6
    assert model.attention_us(dep, 1, "dense") == pytest.approx(expected, rel=1e-12)
    # o_proj TP=8 divides only the o_proj weight bytes
    tp8 = replace(dep, oproj_tp=8)
    assert model.attention_us(dep, 1, "dense") - model.attention_us(tp8, 1, "dense") \
        == pytest.approx(O_PROJ * 7 / 8 / 1e6)


def test_attention_core_switches_to_compute_bound_when_flops_dominate():
    slow = replace(TOY, fp8_flops=1e11, bf16_flops=1e11)  # 10 FLOP per byte roofline
    model, dep = Roofline(slow), Deployment(1, 1, context=1000)
    core_flops = 1000 * 4 * 64 * 256  # 128 FLOP/B of FP8 KV: compute-bound here
    weights_flops = 2 * (ATTN_IN + O_PROJ)
    assert model.attention_us(dep, 1, "dense") == pytest.approx(
        (core_flops + weights_flops) / 1e11 * 1e6, rel=1e-9)


def test_dense_ffn_time_is_compute_bound_at_2048_tokens():
    model, dep = Roofline(TOY), Deployment(2, 2)
    w = 3 * 7168 * 18432
    flops_us = 2 * 2048 * w / 16 / 1e15 * 1e6  # 101.47 us
    bytes_us = (w / 16 + 2048 * 7168 * 3) / 1e12 * 1e6  # 68.81 us
    assert flops_us > bytes_us
    assert model.ffn_us(dep, 2048, "dense") == pytest.approx(flops_us)


def test_moe_ffn_reads_only_experts_that_get_tokens():
    model, dep = Roofline(TOY), Deployment(2, 2)  # 16 FFN GPUs: 3 experts each
    w_e, w_s = 3 * 7168 * 5120, 3 * 7168 * 5120
    one = model.ffn_us(dep, 1, "moe")
    expected = (3 * (3 / 48) * w_e + 3 / 48 * 3 * 7168 * 3) / 1e6 + (w_s / 16 + 7168 * 3) / 1e6
    assert one == pytest.approx(expected)
    assert expected_hit_fraction(0, 3, 48) == 0.0
    assert expected_hit_fraction(1, 3, 48) == pytest.approx(3 / 48)
    assert expected_hit_fraction(4096, 3, 48) == pytest.approx(1.0)


def test_link_bytes_and_times_hand_computed():
    wire = WireFormat()
    assert wire.a2f_bytes_per_token(7168, 3) == 7168 + 56 * 4 + 3 * (4 + 2)
    assert wire.f2a_bytes_per_token(7168) == 2 * 7168
    model = Roofline(TOY, intra_collectives=False)
    inst = model.comm_us(Deployment(2, 2), 128)  # 128 x 2 FFN instances = 256 tokens each way
    assert inst == {"a2f": 256 * 7410 / 1e3, "f2a": 256 * 14336 / 1e3}
    rank = model.comm_us(Deployment(2, 2, fanout="rank"), 128)  # 128 x 16 FFN GPUs
    assert rank["a2f"] == pytest.approx(2048 * 7410 / 1e3)
    with_lat = Roofline(replace(TOY, link_latency_s=7e-6), intra_collectives=False)
    assert with_lat.comm_us(Deployment(2, 2), 128)["a2f"] == pytest.approx(inst["a2f"] + 7)


def test_instance_fanout_adds_ffn_host_collectives_as_stations():
    model = Roofline(TOY)
    st = model.stations(Deployment(2, 2), 128, "moe")
    assert list(st) == ["attention", "a2f", "ffn_gather", "ffn", "ffn_scatter", "f2a"]
    assert st["ffn_gather"] == pytest.approx(7 / 8 * 2048 * 7410 / 1e10 * 1e6)
    assert "ffn_gather" not in model.stations(Deployment(2, 2, fanout="rank"), 128, "moe")


def test_paper_batch_fits_in_h800_memory_and_capacity_limits_the_search():
    cap = Roofline(hardware("h800")).capacity(paper_deploy.HEADLINE.deployment())
    assert cap.kv_bytes_per_seq == 4096 * 61 * 512
    assert cap.max_seqs_per_attn_gpu >= 384  # the paper's 6,144 / 16 attention GPUs
    assert cap.ffn_fits
    tiny = replace(hardware("h100"), memory_bytes=20e9)
    assert Roofline(tiny).capacity(Deployment(1, 1)).ffn_fits is False  # 304 GB / 8 GPUs
    res = best_under_sla(Roofline(tiny), Deployment(1, 1))
    assert res.point is None and res.bound == "ffn-memory"


# ---------------- search and monotonicity ----------------
def test_search_returns_largest_batch_meeting_sla_and_names_the_bound():
    model = Roofline(hardware("h100"))
    dep = Deployment(2, 2, sla_ms=30.0)
    res = best_under_sla(model, dep)
    assert res.bound == "sla" and res.point.tpot_ms <= 30.0
    nxt = evaluate(model, dep, res.point.per_gpu + 1)
    assert nxt.tpot_ms > 30.0


def test_more_context_gives_lower_throughput_at_fixed_sla():
    rows = context_sweep(Roofline(hardware("h100")), Deployment(2, 2))
    tgs = [r["tokens_per_s_per_gpu"] for r in rows]
    assert all(a > b for a, b in zip(tgs, tgs[1:])), tgs
    measured_like = paper_deploy.paper_model()
    rows = context_sweep(measured_like, paper_deploy.HEADLINE.deployment())
    tgs = [r["tokens_per_s_per_gpu"] for r in rows]
    assert all(a > b for a, b in zip(tgs, tgs[1:])), tgs


def test_tpot_grows_with_batch_and_throughput_with_it():
    pts = curve(Roofline(hardware("h100")), Deployment(2, 2))
    assert len(pts) > 100
    assert all(b.tpot_ms >= a.tpot_ms for a, b in zip(pts, pts[1:]))
    assert pts[-1].tokens_per_s_per_gpu > 10 * pts[0].tokens_per_s_per_gpu


def test_project_keeps_each_splits_best_micro_batch_count():
    model = paper_deploy.paper_model()
    one = project(model, paper_deploy.HEADLINE.deployment(), ("1A1F",), (3,))[0]
    many = project(model, paper_deploy.HEADLINE.deployment(), ("1A1F",), (1, 2, 3, 4))[0]
    assert many.search.point.tokens_per_s_per_gpu >= one.search.point.tokens_per_s_per_gpu
    assert many.micro_batches != 3  # one FFN server re-reads its weights per micro-batch


# ---------------- the paper ----------------
def test_paper_closed_form_numbers_reproduce():
    dims = Step3Dims()
    checks = (paper_tables.count_checks(dims) + paper_tables.cost_checks(dims)
              + paper_tables.budget_checks(dims))
    bad = [(c.name, c.paper, c.model) for c in checks if c.ok is not True]
    assert not bad
    assert len(checks) >= 30


def test_paper_headline_within_stated_tolerance():
    checks = {c.name: c for c in paper_deploy.deployment_checks()}
    head = checks["2A2F TGS, paper inputs (Step-3 FP8 attention, 4K)"]
    assert head.paper == 4039 and head.tolerance == 0.05
    assert abs(head.rel_error) <= 0.05
    assert all(c.ok is not False for c in checks.values())
    implied = checks["implied TPOT of 2A2F (Step-3 FP8 attention, 4K)"].model
    assert implied == pytest.approx(47.54, abs=0.01)  # below the 50 ms SLA


def test_paper_roofline_bound_is_above_the_measured_run():
    model = paper_deploy.peak_model()
    p = evaluate(model, paper_deploy.HEADLINE.deployment(), 128)
    assert p.tokens_per_s_per_gpu > 4039


# ---------------- bad inputs ----------------
@pytest.mark.parametrize("kwargs,field", [
    ({"attn_instances": 0}, "attn_instances"), ({"ffn_instances": -1}, "ffn_instances"),
    ({"attn_gpus": 0}, "attn_gpus"), ({"ffn_gpus": 2.5}, "ffn_gpus"),
    ({"micro_batches": 0}, "micro_batches"), ({"micro_batches": True}, "micro_batches"),
    ({"context": -4096}, "context"), ({"kv_bytes": 4}, "kv_bytes"),
    ({"fanout": "broadcast"}, "fanout"), ({"sla_ms": 0}, "sla_ms"),
    ({"oproj_tp": 3}, "oproj_tp"),
])
def test_bad_deployments_are_rejected_naming_the_field(kwargs, field):
    args = {"attn_instances": 2, "ffn_instances": 2, **kwargs}
    with pytest.raises(AfdInputError, match=field):
        Deployment(**args)


@pytest.mark.parametrize("split", ["0A2F", "2A0F", "2X2F", "AF", ""])
def test_bad_splits_are_rejected(split):
    with pytest.raises(AfdInputError, match="split"):
        parse_split(split)


def test_other_bad_inputs_are_rejected():
    with pytest.raises(AfdInputError, match="hbm_eff"):
        Roofline(TOY, hbm_eff=0.0)
    with pytest.raises(AfdInputError, match="net_eff"):
        Roofline(TOY, net_eff=1.5)
    with pytest.raises(AfdInputError, match="micro_batches"):
        layer_time_us([1.0], 0)
    with pytest.raises(AfdInputError, match="station"):
        layer_time_us([], 3)
    with pytest.raises(AfdInputError, match=">= 0"):
        layer_time_us([1.0, -2.0], 3)
    with pytest.raises(AfdInputError, match="unknown gpu"):
        hardware("h900")
    with pytest.raises(AfdInputError, match="hbm_bw"):
        replace(TOY, hbm_bw=0.0)
    with pytest.raises(AfdInputError, match="per_gpu"):
        evaluate(Roofline(TOY), Deployment(1, 1), 0)
    with pytest.raises(AfdInputError, match="top_k"):
        Step3Dims(top_k=64)


# ---------------- command line ----------------
def test_cli_paper_writes_json_and_passes(tmp_path, capsys):
    assert main(["--paper", "--out", str(tmp_path), "--no-plot"]) == 0
    out = json.loads((tmp_path / "afd_model_paper.json").read_text())
    assert out["failed"] == []
    assert "4,039" in capsys.readouterr().out


def test_cli_roofline_writes_projection(tmp_path):
    assert main(["--roofline", "--gpu", "h100", "--splits", "2A2F,3A2F", "--out", str(tmp_path),
                 "--no-plot"]) == 0
    out = json.loads((tmp_path / "afd_model_roofline_h100.json").read_text())
    assert [s["split"] for s in out["splits"]] == ["2A2F", "3A2F"]
    assert out["best_2a2f"]["tpot_ms"] <= 50.0
    assert out["paper_point"]["per_gpu"] == 128


@pytest.mark.parametrize("argv,message", [
    (["--roofline", "--micro-batches", "0"], "micro-batches"),
    (["--roofline", "--splits", "2A0F"], "split"),
    (["--measured", "/nonexistent/layers.json"], "no such file"),
])
def test_cli_reports_bad_inputs(tmp_path, capsys, argv, message):
    assert main(argv + ["--out", str(tmp_path), "--no-plot"]) == 2
    assert message in capsys.readouterr().err
