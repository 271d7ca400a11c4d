"""FP8 on the wire (FP8 engines: FP8 weights, bf16 activations, FP8 KV cache; `quantize` of the
random tiny checkpoint): the routed experts compute the same bits from the FP8 wire as from the
bf16 hidden states in process; the replicated linears with static input scales cannot (they
quantize the decoded y, so two roundings meet) and stay within FP8 accuracy; with dynamic
activation scales the whole FFN is bit-identical; and the AFD job gives the in-process runner's
tokens with FP8 messages of the expected size."""

import json

import pytest
import torch
import torch.nn.functional as F

from plugins.fp8 import fp8_dequantize_ref, fp8_quantize_ref
from step3_trt.build_config import BuildConfig
from step3_trt.config import Step3Config
from step3_trt.engine.graphs import SwiGluMlp
from step3_trt.engine.signatures import Fp8Layout
from step3_trt.quant.quantize import QuantizeOptions, quantize_checkpoint
from step3_trt.quant.scheme import Fp8Scheme
from step3_trt.runtime.engine import RankEngine
from step3_trt.runtime.local import LocalRunner
from step3_trt.runtime.wire_format import WireFormat
from step3_trt.sampling import SamplingParams
from tests.conftest import REPO, make_engines
from tests.runtime.test_afd import request_lines, run_cli

CALIB = REPO / "data" / "calib.txt"


@pytest.fixture(scope="module")
def fp8_engines(tiny_checkpoint, tmp_path_factory, graph_cache):
    work = tmp_path_factory.mktemp("fp8-wire")
    opts = QuantizeOptions(CALIB, calib_size=4, calib_seq_len=32, batch_size=2,
                           scheme=Fp8Scheme("per-tensor", "static", True))
    fp8 = quantize_checkpoint(tiny_checkpoint, work / "fp8", opts, progress=False)
    build = BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu-fp8.yaml")
    return make_engines(fp8, build, work, graph_cache)[1]


def ffn_inputs(cfg: Step3Config, tokens: int, seed: int):
    """bf16 hidden states over many magnitudes, and a routing over all experts."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-3, 2, tokens)[:, None]
    y = (torch.randn(tokens, cfg.hidden_size, generator=g) * scale).to(torch.bfloat16)
    ids = torch.stack([torch.randperm(cfg.moe_num_experts, generator=g)[:cfg.moe_top_k]
                       for _ in range(tokens)]).to(torch.int32)
    weights = torch.rand(tokens, cfg.moe_top_k, generator=g).to(torch.bfloat16)
    return y, weights, ids


def through_the_wire(engine: RankEngine, y: torch.Tensor) -> torch.Tensor:
    wire = WireFormat.of_engine(engine.meta)
    assert wire.fp8 and engine.meta["wire"]["hidden"] == "float8_e4m3fn"
    sent = wire.encode_hidden(y)
    assert sent[0].dtype == torch.float8_e4m3fn and sent[1].dtype == torch.float32
    return wire.decode(sent, moe=False).y


@pytest.mark.parametrize("rank", ["ffn/rank0", "ffn/rank1"])
def test_routed_experts_give_the_same_bits_through_the_fp8_wire(fp8_engines, rank):
    engine = RankEngine(fp8_engines / rank)
    cfg = Step3Config.from_dict(engine.arch)
    offset = torch.tensor(engine.mapping["expert_offset"], dtype=torch.int32)
    for seed, layer in enumerate(cfg.moe_layers):
        y, weights, ids = ffn_inputs(cfg, 61, seed)
        direct = engine("ffn_moe", y, weights, ids, offset, layer=layer)
        wired = engine("ffn_moe", through_the_wire(engine, y), weights, ids, offset, layer=layer)
        assert direct.abs().max() > 0  # the rank's experts did work
        assert torch.equal(wired, direct)


def test_static_input_scales_of_the_replicas_stay_within_fp8_accuracy(fp8_engines):
    """The shared expert's linears quantize with a calibrated per-tensor input scale. From the
    decoded y, already rounded per 1x128 group to e4m3, a value is rounded a second time, so the
    bits differ. e4m3 keeps 3 mantissa bits: one rounding moves a normal value by at most 2^-4
    of itself, two by at most about 2^-3; measured against the product with the dequantized
    weights in float32, the in-process path stays within the first bound and the wire's within
    the second (a wrong weight or scale would be off by about 100%)."""
    engine = RankEngine(fp8_engines / "ffn/rank0")
    cfg = Step3Config.from_dict(engine.arch)
    layer = cfg.moe_layers[0]
    y, _, _ = ffn_inputs(cfg, 64, seed=9)
    y = y / y.abs().amax(-1, keepdim=True)  # within the calibrated range (amax 3.8)
    p = f"model.layers.{layer}.share_expert."
    w = {n: fp8_dequantize_ref(engine.weights[f"{p}{n}.weight"],
                               engine.weights[f"{p}{n}.weight_scale"])
         for n in ("gate_proj", "up_proj", "down_proj")}
    exact = F.linear(F.silu(F.linear(y.float(), w["gate_proj"])) * F.linear(y.float(),
                     w["up_proj"]), w["down_proj"])
    direct = engine("ffn_shared", y, layer=layer).float()
    wired = engine("ffn_shared", through_the_wire(engine, y), layer=layer).float()
    assert not torch.equal(wired, direct)
    assert (direct - exact).norm() <= 2**-4 * exact.norm()
    assert (wired - exact).norm() <= 2**-3 * exact.norm()


def test_dynamic_activation_scales_make_the_replicas_bit_identical():
    """A SwiGLU replica whose linears quantize their input per 1x128 group on the fly (dynamic
    activation scheme, e.g. block-FP8 checkpoints) sees through the decoded y the q and scales
    the attention rank sent."""
    g = torch.Generator().manual_seed(3)
    H, inner = 300, 200
    weights = [torch.randn(inner, H, generator=g), torch.randn(inner, H, generator=g),
               torch.randn(H, inner, generator=g)]
    quantized = [fp8_quantize_ref(w / 10, "tensor") for w in weights]
    layout = Fp8Layout(("gate", "up", "down"), (), static=False, kv=False, templates=())
    mlp = SwiGluMlp(layout)
    args = [q for q, _ in quantized] + [s for _, s in quantized]
    y = (torch.randn(50, H, generator=g) * torch.logspace(-2, 2, 50)[:, None]).to(torch.bfloat16)
    wire = WireFormat(H, 1, torch.bfloat16, fp8=True)
    decoded = wire.decode(wire.encode_hidden(y), moe=False).y
    assert not torch.equal(decoded, y)
    assert torch.equal(mlp(decoded, *args), mlp(y, *args))


@pytest.mark.slow
def test_the_fp8_job_gives_the_in_process_tokens_with_fp8_messages(fp8_engines, tmp_path):
    """One request, so the job's batches are the in-process runner's (the prompt's prefill,
    then one token per step, on attention rank 0: dense tokens start on the same FFN rank) and
    every FFN rank computes on the rows LocalFfn gives it: the same bits, hence the same greedy
    tokens. (With several requests the job batches them differently from the in-process
    runner; bf16 partials then round differently, e.g. the shared expert is added to the routed
    partial of another FFN rank, and a near-tied greedy token of the random checkpoint can
    flip: the float32 jobs of test_dispatch_afd.py and test_afd.py compare several.)"""
    prompt = torch.randint(2, 300, (20,), generator=torch.Generator().manual_seed(4)).tolist()
    proc = run_cli("--engines", fp8_engines, "--prompt-ids", ",".join(map(str, prompt)),
                   "--greedy", "--max-new-tokens", 24, "--run-dir", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    got = [x["output_ids"] for x in request_lines(proc.stdout)]
    assert got == LocalRunner(fp8_engines).generate([prompt], SamplingParams(max_new_tokens=24,
                                                                             greedy=True))
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())["requests"]
    assert [s["served_by"] for s in stats.values()] == ["attention rank 0 (MPI rank 1)"]
    links = json.loads(proc.stdout.splitlines()[-1])["summary"]["links"]
    assert links["wire_hidden"] == "float8_e4m3fn"
    cfg = Step3Config.from_dict(RankEngine(fp8_engines / "ffn/rank0").arch)
    H, K, groups = cfg.hidden_size, cfg.moe_top_k, -(-cfg.hidden_size // 128)
    assert links["tokens"] == len(prompt) + 24 - 1
    copy = H + 4 * groups  # e4m3 hidden state and its float32 scales
    shared_rows = links["tokens"] * len(cfg.moe_layers)  # one per token and MoE layer (tp = 1)
    assert links["a2f_bytes"] == links["moe_copies"] * (copy + K * (2 + 4)) \
        + 4 * shared_rows + links["dense_copies"] * copy
    assert links["f2a_bytes"] == (links["moe_copies"] + links["dense_copies"]) * 2 * H
