"""The FP8 accuracy gate on the bundled trained model: `quantize` (ModelOpt calibration on
data/calib.txt) -> `convert` -> `build` -> `eval` against the BF16 checkpoint on the held-out
text, with the README's thresholds. Also: the engines really hold FP8 weights and an 8-bit cache.
"""

import json

import pytest

from step3_trt.checkpoint.reader import TensorStore
from step3_trt.cli.main import main
from tests.conftest import REPO

MODEL = REPO / "models" / "step3-tiny"
CONFIG = REPO / "build_configs" / "tiny-cpu-fp8.yaml"
# Measured on this model (per-tensor weights, static activations, FP8 KV, 4,096 held-out tokens):
# top-1 0.961, KL 2.6e-3 nats/token, perplexity ratio 0.9996. The pipeline is deterministic
# (fixed calibration windows, max calibration), so the margins cover CPU summation order only.
GATE = ("--min-top1", "0.95", "--max-kl", "0.005", "--max-ppl-ratio", "1.01")


@pytest.fixture(scope="module")
def fp8_engines(tmp_path_factory, graph_cache):
    work = tmp_path_factory.mktemp("fp8-gate")
    steps = [["quantize", "--checkpoint", MODEL, "--out", work / "fp8", "--kv-cache", "fp8"],
             ["convert", "--checkpoint", work / "fp8", "--config", CONFIG, "--out", work / "roles"],
             ["build", "--checkpoint", work / "roles", "--config", CONFIG, "--out",
              work / "engines", "--cache-dir", graph_cache]]
    for argv in steps:
        assert main([*map(str, argv), "--no-progress"]) == 0, argv
    return work / "engines"


def test_fp8_engines_hold_fp8_weights_and_an_8bit_kv_cache(fp8_engines):
    meta = json.loads((fp8_engines / "attention" / "rank0" / "engine.json").read_text())
    assert meta["dtypes"]["kv_cache"] == "float8_e4m3fn"
    ffn = TensorStore(fp8_engines / "ffn" / "rank0")
    assert ffn.entries["model.layers.1.moe.gate_proj.weight"].dtype == "F8_E4M3"
    assert "model.layers.{layer}.self_attn.k_scale" in meta["graphs"]["attn_prefill"]["weights"]
    ffn_meta = json.loads((fp8_engines / "ffn" / "rank0" / "engine.json").read_text())
    assert "model.layers.{layer}.moe.gate_proj.weight_scale" in \
        ffn_meta["graphs"]["ffn_moe"]["weights"]


def test_fp8_engines_pass_the_accuracy_gate(fp8_engines, capsys):
    code = main(["eval", "--engines", str(fp8_engines), "--reference", str(MODEL), "--data",
                 str(REPO / "data" / "heldout.txt"), "--json", *GATE])
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    metrics = result.get("result", result)
    assert metrics["mean_kl"] > 0  # FP8 really changed the numerics
