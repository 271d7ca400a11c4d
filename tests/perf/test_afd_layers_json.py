"""The measured-layer-times format: loading, validation messages, and the stage model on it."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from perf.afd.checks import AfdInputError
from perf.afd.deployment import Deployment
from perf.afd.hardware import hardware
from perf.afd.layers_json import FORMAT, load_layer_times, parse_layer_times
from perf.afd.measured import Measured
from perf.afd.pipeline import best_under_sla, evaluate
from perf.afd.roofline import Roofline
from perf.afd_model import main

EXAMPLE = Path(__file__).parent / "data" / "layers_example.json"
TOKENS, CONTEXTS, FFN_TOKENS = [16, 32, 64, 128, 256], [1024, 4096, 16384], [256, 1024, 2048, 4096]


def synthetic(roof: Roofline, ffn_gpus: int = 16) -> dict:
    """A layer-times file whose numbers are the roofline's (so results can be compared)."""
    dep = Deployment(2, 2)
    att = [[roof.attention_us(replace(dep, context=c), t, "moe") for c in CONTEXTS]
           for t in TOKENS]
    ffn = [{"ffn_gpus": ffn_gpus, "kind": k, "tokens": FFN_TOKENS,
            "us": [roof.ffn_us(dep, n, k) for n in FFN_TOKENS]} for k in ("moe", "dense")]
    return {"format": FORMAT, "device": "synthetic", "kv_bytes": 1, "weight_bytes": 1,
            "attention": {"tokens": TOKENS, "context": CONTEXTS, "us": att}, "ffn": ffn}


@pytest.fixture
def roof():
    return Roofline(hardware("h100"), intra_collectives=False)


def test_measured_equals_roofline_at_grid_points_and_interpolates_between(roof):
    model = Measured(parse_layer_times(synthetic(roof)), roof)
    dep = Deployment(2, 2)  # 16 attention GPUs: 128 per GPU = 2,048-token micro-batch
    st = model.stations(dep, 128, "moe")
    assert st["attention"] == pytest.approx(roof.attention_us(dep, 128, "moe"))
    assert st["ffn"] == pytest.approx(roof.ffn_us(dep, 2048, "moe"))
    assert (st["a2f"], st["f2a"]) == pytest.approx(
        (roof.comm_us(dep, 128)["a2f"], roof.comm_us(dep, 128)["f2a"]))
    mid = model.data.attention.at(96, 4096)
    lo, hi = (roof.attention_us(dep, n, "moe") for n in (64, 128))
    assert mid == pytest.approx((lo + hi) / 2)
    ctx = model.data.attention.at(64, 2560)  # halfway between 1K and 4K
    a, b = (roof.attention_us(replace(dep, context=c), 64, "moe") for c in (1024, 4096))
    assert ctx == pytest.approx((a + b) / 2)


def test_outside_the_grid_there_is_no_point_and_the_search_says_why(roof):
    model = Measured(parse_layer_times(synthetic(roof)), roof)
    dep = Deployment(2, 2)
    assert model.stations(dep, 8, "moe") is None  # below attention.tokens[0] = 16
    assert model.stations(replace(dep, context=32768), 64, "moe") is None
    assert evaluate(model, dep, 16) is not None
    res = best_under_sla(model, dep)  # FFN table ends at 4,096 tokens = 256 per GPU
    assert res.point is not None and res.point.per_gpu <= 256
    small = synthetic(roof)
    small["ffn"][0]["tokens"] = [256, 1024]
    small["ffn"][0]["us"] = small["ffn"][0]["us"][:2]
    res = best_under_sla(Measured(parse_layer_times(small), roof), dep)
    assert res.bound == "measured-range" and res.point.per_gpu == 1024 // 16


def test_missing_ffn_table_for_a_split_gives_no_points(roof):
    model = Measured(parse_layer_times(synthetic(roof, ffn_gpus=16)), roof)
    assert best_under_sla(model, Deployment(1, 1)).point is None  # 8 FFN GPUs: not measured


def test_link_block_replaces_the_roofline_link(roof):
    raw = synthetic(roof)
    raw["link"] = {"a2f_bytes_per_token": 1000, "f2a_bytes_per_token": 2000,
                   "bandwidth_GBps": 1.0, "latency_us": 5}
    model = Measured(parse_layer_times(raw), roof)
    st = model.stations(Deployment(2, 2), 128, "moe")  # 256 tokens per NIC each way
    assert st["a2f"] == pytest.approx(256 * 1000 / 1e3 + 5)
    assert st["f2a"] == pytest.approx(256 * 2000 / 1e3 + 5)


def test_dtype_mismatch_with_deployment_is_refused(roof):
    model = Measured(parse_layer_times(synthetic(roof)), roof)
    with pytest.raises(AfdInputError, match="kv_bytes"):
        model.stations(Deployment(2, 2, kv_bytes=2), 64, "moe")


def _without(raw: dict, path: str) -> dict:
    raw = copy.deepcopy(raw)
    *parents, last = path.split(".")
    obj = raw
    for p in parents:
        obj = obj[int(p)] if p.isdigit() else obj[p]
    del obj[last]
    return raw


@pytest.mark.parametrize("path,message", [
    ("format", "missing field 'format'"), ("attention", "missing field 'attention'"),
    ("attention.us", "'attention.us'"), ("attention.context", "'attention.context'"),
    ("ffn", "missing field 'ffn'"), ("ffn.0.tokens", "'ffn[0].tokens'"),
    ("ffn.1.ffn_gpus", "'ffn[1].ffn_gpus'"), ("kv_bytes", "'kv_bytes'"),
    ("device", "'device'"),
])
def test_missing_fields_are_named(roof, path, message):
    with pytest.raises(AfdInputError, match=re.escape(message)):
        parse_layer_times(_without(synthetic(roof), path), "layers.json")


@pytest.mark.parametrize("edit,message", [
    (lambda r: r.update(format="other/1"), "format must be"),
    (lambda r: r["attention"].update(tokens=[32, 16, 64, 128, 256]), "strictly increasing"),
    (lambda r: r["attention"].update(tokens=[0, 16, 64, 128, 256]), "positive integers"),
    (lambda r: r["attention"]["us"].pop(), "rows"),
    (lambda r: r["attention"]["us"][0].pop(), r"attention.us\[0\] must list 3"),
    (lambda r: r["attention"]["us"][1].__setitem__(0, -3.0), "positive microseconds"),
    (lambda r: r["ffn"][0].update(kind="expert"), "kind"),
    (lambda r: r["ffn"][0].update(ffn_gpus=0), "ffn_gpus"),
    (lambda r: r["ffn"][0].update(us=[1.0]), r"ffn\[0\].us must list 4"),
    (lambda r: r.update(ffn=[]), "at least one"),
    (lambda r: r.update(kv_bytes=3), "kv_bytes"),
    (lambda r: r.update(weight_bytes="fp8"), "weight_bytes"),
    (lambda r: r.update(link={"a2f_bytes_per_token": 1}), "link.f2a_bytes_per_token"),
    (lambda r: r.update(kv_capacity_tokens=-1), "kv_capacity_tokens"),
    (lambda r: r.update(attention=[1, 2]), "attention"),
])
def test_bad_values_are_rejected_with_clear_messages(roof, edit, message):
    raw = synthetic(roof)
    edit(raw)
    with pytest.raises(AfdInputError, match=message):
        parse_layer_times(raw, "layers.json")


def test_file_errors(tmp_path):
    with pytest.raises(AfdInputError, match="no such file"):
        load_layer_times(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AfdInputError, match="not JSON"):
        load_layer_times(bad)


def test_the_documented_example_loads_and_runs_through_the_cli(tmp_path):
    data = load_layer_times(EXAMPLE)
    assert data.device and data.attention.tokens and data.ffn
    assert main(["--measured", str(EXAMPLE), "--gpu", "h100", "--splits", "2A2F",
                 "--out", str(tmp_path), "--no-plot"]) == 0
    out = json.loads((tmp_path / "afd_model_measured_layers_example.json").read_text())
    assert out["mode"] == "measured" and out["best_2a2f"]["tpot_ms"] <= 50


def test_layer_times_composed_from_the_committed_kernel_results():
    from perf.afd.from_kernels import RESULTS, compose, gemm_rate, gemm_us
    raw = compose(RESULTS)
    data = parse_layer_times(raw, "composed")
    mfa = json.loads((RESULTS / "kernels_mfa_decode.json").read_text())
    decode = next(r["ms"] * 1e3 for r in mfa["rows"]
                  if (r["B"], r["L"], r["kv"]) == (128, 4096, "fp8"))
    assert data.attention.at(128, 4096) > decode  # decode kernel plus the three GEMMs
    assert {(t.ffn_gpus, t.kind) for t in data.ffn} == {(16, "moe"), (16, "dense"),
                                                         (8, "moe"), (8, "dense")}
    rate = gemm_rate(json.loads((RESULTS / "kernels_fp8_linear.json").read_text())["rows"])
    # below the smallest measured M a GEMM is weight-bound: its time does not shrink
    assert gemm_us(1, 7168 * 10240, rate) == pytest.approx(gemm_us(16, 7168 * 10240, rate))
    assert gemm_us(16, 7168 * 10240, rate) == pytest.approx(40.0, rel=0.01)  # measured 0.040 ms


def test_the_format_example_in_the_docs_is_valid():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "afd-model.md").read_text()
    block = doc.split("```json", 1)[1].split("```", 1)[0]
    data = parse_layer_times(json.loads(block), "docs/afd-model.md")
    assert data.attention.at(128, 4096) == pytest.approx(230.4)
    assert data.ffn_table(16, "dense").at(2048) == pytest.approx(90.0)
