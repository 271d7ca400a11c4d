"""Fake (meta) impls under FakeTensorMode, and one torch.export + AOTInductor round trip on CPU."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import plugins
from plugins._common import FP8
from plugins.fp8 import fp8_quantize_ref
from tests.plugins.plugin_cases import expert_weights, paged_cache, routing


def test_every_op_is_registered_with_a_version():
    for name, version in plugins.OP_VERSIONS.items():
        assert hasattr(torch.ops.step3, name) and version >= 1


def test_fake_impls_give_shapes_and_dtypes():
    with FakeTensorMode():
        q = torch.empty(6, 64, 256, dtype=torch.bfloat16)
        kc = torch.empty(40, 16, 256, dtype=FP8)
        bt = torch.empty(6, 9, dtype=torch.int32)
        lens = torch.empty(6, dtype=torch.int32)
        sc = torch.empty(1)
        out = torch.ops.step3.mfa_decode(q, kc, kc, bt, lens, sc, sc)
        assert out.shape == (6, 64, 256) and out.dtype == torch.bfloat16
        qp = torch.empty(30, 64, 256, dtype=torch.bfloat16)
        out = torch.ops.step3.mfa_prefill(qp, kc, kc, bt, lens, torch.empty(7, dtype=torch.int32))
        assert out.shape == (30, 64, 256) and out.dtype == torch.bfloat16
        assert torch.ops.step3.kv_append(torch.empty(5, 256), torch.empty(5, 256), kc, kc,
                                         torch.empty(5, dtype=torch.long)) is None
        x = torch.empty(10, 300, dtype=torch.bfloat16)
        for g, shape in (("tensor", (1,)), ("token", (10, 1)), ("group", (10, 3)), ("block", (1, 3))):
            xq, xs = torch.ops.step3.fp8_quantize(x, g)
            assert xq.shape == x.shape and xq.dtype == FP8 and xs.shape == shape and xs.dtype == torch.float32
        y = torch.ops.step3.fp8_linear(torch.empty(10, 300, dtype=FP8), torch.empty(10, 1),
                                       torch.empty(77, 300, dtype=FP8), torch.empty(1))
        assert y.shape == (10, 77) and y.dtype == torch.bfloat16
        w = torch.empty(3, 512, 256, dtype=FP8)
        wd = torch.empty(3, 256, 512, dtype=FP8)
        z = torch.ops.step3.moe_experts(torch.empty(10, 256, dtype=torch.bfloat16),
                                        torch.empty(10, 3, dtype=torch.long), torch.empty(10, 3),
                                        w, w, wd, torch.empty(3, 4, 2), torch.empty(3, 4, 2),
                                        torch.empty(3, 2, 4), 5)
        assert z.shape == (10, 256) and z.dtype == torch.bfloat16


class _Graph(torch.nn.Module):
    """One step touching every op: append K/V, decode + prefill attention, FP8 linear, MoE."""

    def forward(self, q, k, v, kc, vc, slots, bt, lens, qp, cu, x, ids, tw, wg, wu, wd, sg, su, sd, wq, ws):
        torch.ops.step3.kv_append(k, v, kc, vc, slots)
        a = torch.ops.step3.mfa_decode(q, kc, vc, bt, lens)
        p = torch.ops.step3.mfa_prefill(qp, kc, vc, bt, lens, cu)
        xq, xs = torch.ops.step3.fp8_quantize(x, "group")
        y = torch.ops.step3.fp8_linear(xq, xs, wq, ws)
        z = torch.ops.step3.moe_experts(x, ids, tw, wg, wu, wd, sg, su, sd, 1)
        return a.float().sum(-1), p * 2, y, z + x


def _graph_inputs(gen):
    B, H, D, BS = 3, 4, 16, 4
    lens = [5, 1, 9]
    kc, vc, bt, _, _ = paged_cache(lens, BS, D, torch.bfloat16, gen=gen)
    slots = torch.tensor([int(bt[s, (L - 1) // BS]) * BS + (L - 1) % BS for s, L in enumerate(lens)])
    q = torch.randn(B, H, D, generator=gen).bfloat16()
    k, v = torch.randn(B, D, generator=gen).bfloat16(), torch.randn(B, D, generator=gen).bfloat16()
    qp = torch.randn(4, H, D, generator=gen).bfloat16()
    cu = torch.tensor([0, 2, 3, 3], dtype=torch.int32)
    x = torch.randn(6, 256, generator=gen).bfloat16()
    ids, tw = routing(6, 3, 6, gen)
    wg, wu, wd, sg, su, sd = expert_weights(4, 128, 256, FP8, gen, "block")
    wq, ws = fp8_quantize_ref(torch.randn(40, 256, generator=gen), "block")
    return (q, k, v, kc, vc, slots, bt, torch.tensor(lens, dtype=torch.int32), qp, cu, x, ids,
            tw.bfloat16(), wg, wu, wd, sg, su, sd, wq, ws)


@pytest.mark.slow
def test_export_and_aot_inductor_match_eager(tmp_path):
    args = _graph_inputs(torch.Generator().manual_seed(9))
    eager_args = [a.clone() for a in args]
    ref = _Graph()(*eager_args)
    ep = torch.export.export(_Graph(), tuple(a.clone() for a in args))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    for name in plugins.OP_VERSIONS:  # every op stays one opaque node (kv_append functionalized)
        assert any(f"step3.{name}" in t for t in targets), (name, targets)
    path = torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp_path / "plugins.pt2"))
    run = torch._inductor.aoti_load_package(path)
    aoti_args = [a.clone() for a in args]
    outs = run(*aoti_args)
    for o, r in zip(outs, ref):
        torch.testing.assert_close(o, r, rtol=0, atol=0)
    assert torch.equal(aoti_args[3], eager_args[3]) and torch.equal(aoti_args[4], eager_args[4])
    assert not torch.equal(aoti_args[3], args[3])  # the cache was written in place
