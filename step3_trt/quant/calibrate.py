"""Per-layer FP8 calibration with NVIDIA ModelOpt.

`mtq.quantize` inserts FP8 (e4m3) input quantizers into the layer's linear layers and runs the
calibration batches through it ("max" algorithm: amax of each input). Standalone ModelOpt
`TensorQuantizer`s observe K (after RoPE, as the cache stores it) and V for the KV-cache scales.
Weight scales need no data and are computed from the weights (`quantize_weight`).
"""

from __future__ import annotations

import contextlib
import io
import warnings

import torch

from plugins._common import FP8_MAX
from plugins.fp8 import fp8_quantize_ref
from step3_trt.model.reference import DecoderLayer, apply_rope, rope_cos_sin

# Input quantizers on every linear layer except the router (kept in high precision).
CALIB_CFG = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": (4, 3), "axis": None}},
        {"quantizer_name": "*moe.gate.*", "enable": False},
    ],
    "algorithm": "max",
}


def _modelopt():
    with warnings.catch_warnings():  # it warns about untested transformers versions on import
        warnings.simplefilter("ignore")
        import modelopt.torch.quantization as mtq
        from modelopt.torch.quantization.config import QuantizerAttributeConfig
        from modelopt.torch.quantization.nn import TensorQuantizer
    return mtq, TensorQuantizer, QuantizerAttributeConfig


def calibrate_layer(layer: DecoderLayer, batches: list[torch.Tensor],
                    kv_cache: bool) -> tuple[dict[str, float], list[torch.Tensor]]:
    """(amax, outputs): activation amax per quantized input, keyed by the linear's name in the
    layer (`self_attn.q_proj`, ...), plus `self_attn.k` / `self_attn.v` with `kv_cache`; and the
    hidden states leaving the layer, from the calibration pass itself (max calibration only
    observes, so they are the full-precision outputs). `batches`: hidden states entering the
    layer, each [B, L, H]. Modifies `layer` in place."""
    mtq, TensorQuantizer, Attr = _modelopt()
    amax: dict[str, float] = {}
    if kv_cache:
        attn = layer.self_attn
        observers = {kv: TensorQuantizer(Attr(num_bits=(4, 3), axis=None)) for kv in "kv"}
        for q in observers.values():
            q.disable_quant()
            q.enable_calib()
        with torch.no_grad():
            for x in batches:
                a = layer.input_layernorm(x)
                cos, sin = rope_cos_sin(_positions(x), attn.head_dim, attn.theta)
                observers["k"](apply_rope(attn.k_proj(a), cos, sin))
                observers["v"](attn.v_proj(a))
        for kv, q in observers.items():
            q.load_calib_amax()
            amax[f"self_attn.{kv}"] = float(q.amax)

    outputs: list[torch.Tensor] = []

    def forward_loop(model):
        outputs[:] = [layer_forward(model, x) for x in batches]

    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # "Inserted N quantizers"
        mtq.quantize(layer, CALIB_CFG, forward_loop)
    for name, module in layer.named_modules():
        if isinstance(module, TensorQuantizer) and module.is_enabled and \
                name.endswith(".input_quantizer"):
            amax[name.removesuffix(".input_quantizer")] = float(module.amax)
    return amax, outputs


def _positions(x: torch.Tensor) -> torch.Tensor:
    return torch.arange(x.shape[1]).expand(x.shape[0], -1)


def layer_forward(layer: DecoderLayer, x: torch.Tensor) -> torch.Tensor:
    """A decoder layer over whole sequences x [B, L, H] (causal, no cache)."""
    return layer(x, _positions(x), None, torch.full((x.shape[0],), x.shape[1]))


def activation_scale(amax: float) -> torch.Tensor:
    """Static dequantization scale [1] float32 for an input with this amax."""
    return torch.tensor([max(amax, 1e-12) / FP8_MAX], dtype=torch.float32)


def quantize_weight(w: torch.Tensor, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 weight and its scale in the layout of `step3_trt.quant.scheme` ([out, in] or stacked
    [E, out, in]); the same rounding as the `step3::fp8_quantize` op."""
    mode = {"per-tensor": "tensor", "per-channel": "token", "block128": "block"}[granularity]
    if w.dim() == 2:
        return fp8_quantize_ref(w.float(), mode)
    qs, scales = [], []
    for e in range(w.shape[0]):
        q, s = fp8_quantize_ref(w[e].float(), mode)
        qs.append(q)
        scales.append(s.reshape(-1) if granularity != "block128" else s)
    scale = torch.stack(scales)
    return torch.stack(qs), scale.reshape(-1) if granularity == "per-tensor" else scale
