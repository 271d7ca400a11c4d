import pytest
import torch

from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.make_checkpoint import make_random_checkpoint
from step3_trt.model.generate import generate
from step3_trt.model.kv_cache import ContiguousKVCache
from step3_trt.model.load import load_reference_model
from step3_trt.model.reference import MoE, apply_rope, rope_cos_sin
from step3_trt.sampling import SamplingParams


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="module", params=["tiny", "odd"])
def model(request, tiny_checkpoint, odd_checkpoint):
    path = tiny_checkpoint if request.param == "tiny" else odd_checkpoint
    return load_reference_model(CheckpointReader(path))


def new_cache(model, batch, max_len):
    cfg = model.config
    return ContiguousKVCache.allocate(cfg.num_hidden_layers, batch, max_len, cfg.head_dim,
                                      torch.float32)


@torch.no_grad()
def test_cached_decode_equals_full_forward(model):
    V = model.config.vocab_size
    ids = torch.randint(0, V, (3, 13))
    full = model(ids)  # no cache: causal over the whole sequence
    cache = new_cache(model, 3, 16)
    pieces = [model(ids[:, :7], cache)] + [model(ids[:, t:t + 1], cache) for t in range(7, 13)]
    # float32 end to end; the only difference is summation order -> ~1e-6 relative.
    assert rel_err(torch.cat(pieces, 1), full) < 1e-5
    assert cache.lengths.tolist() == [13, 13, 13]


@torch.no_grad()
def test_batch_of_unequal_prompts_equals_each_alone(model):
    V = model.config.vocab_size
    prompts = [torch.randint(0, V, (n,)).tolist() for n in (5, 1, 11, 8)]
    greedy = SamplingParams(max_new_tokens=10, greedy=True)
    batched = generate(model, prompts, greedy)
    alone = [generate(model, [p], greedy)[0] for p in prompts]
    assert batched == alone
    # and the prefill logits of each row match its solo prefill
    cache = new_cache(model, 4, 11)
    ids = torch.zeros(4, 11, dtype=torch.int64)
    for b, p in enumerate(prompts):
        ids[b, :len(p)] = torch.tensor(p)
    lengths = torch.tensor([len(p) for p in prompts])
    logits = model(ids, cache, lengths)
    for b, p in enumerate(prompts):
        solo = model(torch.tensor([p]))
        assert rel_err(logits[b, :len(p)], solo[0]) < 1e-5


@torch.no_grad()
def test_bfloat16_matches_float32(tiny_checkpoint, tmp_path):
    bf16_path = make_random_checkpoint(tmp_path / "bf16", seed=1, dtype="bfloat16")
    reader = CheckpointReader(bf16_path)
    m16 = load_reference_model(reader)  # the checkpoint's dtype by default
    assert next(m16.parameters()).dtype == torch.bfloat16
    m32 = load_reference_model(reader, dtype="float32")  # the same (bf16-exact) weights
    mh = load_reference_model(reader, dtype="float16")
    ids = torch.randint(0, 300, (4, 20), generator=torch.Generator().manual_seed(0))
    ref = m32(ids)
    err_bf16, err_fp16 = rel_err(m16(ids), ref), rel_err(mh(ids), ref)
    # bf16 rounds every activation to 8 mantissa bits (unit roundoff 2^-9 = 2e-3); ~10 rounded
    # ops per layer over 4 layers, plus the odd expert flip at a near-tie in routing, gives
    # 1-3e-2 on the logits. float16 (11 bits) must land well below that: rounding, not a bug.
    assert 0 < err_bf16 < 5e-2
    assert err_fp16 < err_bf16 / 2


def test_moe_routing_and_experts_match_per_token_math():
    torch.manual_seed(0)
    from step3_trt.config import Step3Config
    from step3_trt.presets import TINY_TEXT

    for renorm in (False, True):
        cfg = Step3Config.from_dict({**TINY_TEXT, "norm_expert_weight": renorm})
        moe = MoE(cfg)
        for p in moe.parameters():
            torch.nn.init.normal_(p, std=0.2)
        x = torch.randn(9, cfg.hidden_size)
        weights, ids = moe.route(x)
        probs = (x @ moe.gate.weight.T).softmax(-1)
        top = probs.topk(cfg.moe_top_k, -1)
        assert torch.equal(ids, top.indices)
        expected_w = top.values / top.values.sum(-1, keepdim=True) if renorm else top.values
        torch.testing.assert_close(weights, expected_w)
        if not renorm:
            assert (weights.sum(-1) < 1).all()  # Step-3 does not renormalise
        out = moe(x)
        for m in range(9):
            ref = torch.zeros(cfg.hidden_size)
            for k in range(cfg.moe_top_k):
                e = int(ids[m, k])
                h = torch.nn.functional.silu(moe.gate_proj.weight[e] @ x[m]) * \
                    (moe.up_proj.weight[e] @ x[m])
                ref += weights[m, k] * (moe.down_proj.weight[e] @ h)
            torch.testing.assert_close(out[m], ref, rtol=1e-5, atol=1e-5)


def test_rope_is_rotate_half_and_relative():
    D = 10
    q, k = torch.randn(D), torch.randn(D)
    cos, sin = rope_cos_sin(torch.tensor([0, 3, 7, 10]), D, 10000.0)
    rq, rk = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    torch.testing.assert_close(rq[0], q)  # position 0 is the identity
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(4))  # a rotation
    # <rope(q, m), rope(k, n)> depends on m - n only: (7, 3) and (10, 6)... use (3,0) vs (10,7)
    assert torch.allclose(rq[1] @ rk[0], rq[3] @ rk[2], atol=1e-5)
    # rotate-half pairs dimension i with i + D/2
    half = D // 2
    theta1 = 10000.0 ** (-2 * 1 / D) * 3
    expect_i = q[1] * torch.cos(torch.tensor(theta1)) - q[1 + half] * torch.sin(torch.tensor(theta1))
    assert torch.allclose(rq[1, 1], expect_i, atol=1e-6)


@torch.no_grad()
def test_generation_stops_at_eos_and_sampling_is_seeded(model):
    V = model.config.vocab_size
    prompt = torch.randint(0, V, (6,), generator=torch.Generator().manual_seed(1)).tolist()
    first = generate(model, [prompt], SamplingParams(max_new_tokens=5, greedy=True))[0]
    eos = first[1]
    stopped = generate(model, [prompt], SamplingParams(max_new_tokens=5, greedy=True),
                       eos_token_id=eos)[0]
    assert stopped == first[:first.index(eos) + 1]
    sampled = SamplingParams(max_new_tokens=12, temperature=1.3, top_k=50, top_p=0.95, seed=7)
    a = generate(model, [prompt], sampled)
    assert a == generate(model, [prompt], sampled)
    assert a != generate(model, [prompt], SamplingParams(max_new_tokens=12, temperature=1.3,
                                                         top_k=50, top_p=0.95, seed=8))


def test_generate_rejects_bad_prompts(model):
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[]], SamplingParams())
    with pytest.raises(ValueError, match="token ids must be in"):
        generate(model, [[model.config.vocab_size]], SamplingParams())
