"""An independent float64 NumPy computation of Step-3's vision tower and of the antialiased
resizes the processor and the position embeddings use. Written from the architecture
description (docs/step3-facts.md, "Vision") with explicit loops and einsum, sharing no code with
`step3_trt.model.vision` or `step3_trt.vision.processor`.
"""

from __future__ import annotations

import numpy as np

LAYER_NORM_EPS = 1e-6
LEADING = 4  # the class token is repeated to 4 leading tokens, dropped after the encoder


def cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5, the antialiased bicubic of PIL and torch)."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, 1.0 - np.abs(x))


def resample_matrix(n_in: int, n_out: int, kernel) -> np.ndarray:
    """[n_out, n_in] weights of an antialiased resize along one axis: output sample i sits at
    input coordinate (i + 0.5) * scale; when shrinking, the kernel is stretched by the scale."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    centers = (np.arange(n_out) + 0.5) * scale
    taps = np.arange(n_in) + 0.5
    w = kernel((taps[None, :] - centers[:, None]) / stretch)
    return w / w.sum(axis=1, keepdims=True)


def resize(x: np.ndarray, out_h: int, out_w: int, mode: str) -> np.ndarray:
    """x [C, H, W] -> [C, out_h, out_w], separable, float64."""
    kernel = {"bilinear": triangle, "bicubic": cubic}[mode]
    rows = resample_matrix(x.shape[1], out_h, kernel)
    cols = resample_matrix(x.shape[2], out_w, kernel)
    return np.einsum("oh,chw->cow", rows, x) @ cols.T


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + LAYER_NORM_EPS) * w + b


def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """x [C, H, W], w [O, C, k, k] -> [O, H', W'] by an explicit loop over output positions."""
    k = w.shape[-1]
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    out_h = (x.shape[1] - k) // stride + 1
    out_w = (x.shape[2] - k) // stride + 1
    out = np.empty((w.shape[0], out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            window = x[:, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, i, j] = np.einsum("ocyx,cyx->o", w, window) + b
    return out


def tower(weights: dict[str, np.ndarray], pixels: np.ndarray, heads: int, layers: int,
          patch: int, stride: int) -> np.ndarray:
    """One square view [3, S, S] -> embeddings [E, T]."""
    g = pixels.shape[-1] // patch
    e = "vision_model.embeddings."
    # Patches in row-major order, each flattened as (channel, y, x) like the conv weight.
    patches = pixels.reshape(3, g, patch, g, patch).transpose(1, 3, 0, 2, 4).reshape(g * g, -1)
    w_patch = weights[e + "patch_embedding.weight"].reshape(weights[e + "patch_embedding.weight"]
                                                             .shape[0], -1)
    tokens = patches @ w_patch.T + weights[e + "patch_embedding.bias"]  # [g^2, C]
    table = weights[e + "position_embedding.weight"]
    src = int(round((table.shape[0] - 1) ** 0.5))
    grid_pos = table[1:].T.reshape(-1, src, src)  # [C, src, src]
    if src != g:
        grid_pos = resize(grid_pos, g, g, "bicubic")
    x = np.concatenate([weights[e + "class_embedding"] + table[:1],
                        tokens + grid_pos.reshape(-1, g * g).T])
    x = np.concatenate([np.repeat(x[:1], LEADING - 1, axis=0), x])  # [4 + g^2, C]
    width = x.shape[-1]
    d = width // heads
    for i in range(layers):
        p = f"vision_model.transformer.layers.{i}."
        qkv = x @ weights[p + "self_attn.qkv_proj.weight"].T + weights[p + "self_attn.qkv_proj.bias"]
        q, k, v = qkv[:, :width], qkv[:, width:2 * width], qkv[:, 2 * width:]
        attn = np.empty_like(q)
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            s = q[:, cols] @ k[:, cols].T / np.sqrt(d)
            s = np.exp(s - s.max(-1, keepdims=True))
            attn[:, cols] = (s / s.sum(-1, keepdims=True)) @ v[:, cols]
        attn = attn @ weights[p + "self_attn.out_proj.weight"].T + weights[p + "self_attn.out_proj.bias"]
        x = x + layer_norm(attn, weights[p + "layer_norm1.weight"], weights[p + "layer_norm1.bias"])
        h1 = x @ weights[p + "mlp.fc1.weight"].T + weights[p + "mlp.fc1.bias"]
        h1 = h1 / (1 + np.exp(-1.702 * h1))
        mlp = h1 @ weights[p + "mlp.fc2.weight"].T + weights[p + "mlp.fc2.bias"]
        x = x + layer_norm(mlp, weights[p + "layer_norm2.weight"], weights[p + "layer_norm2.bias"])
    features = x[LEADING:].T.reshape(width, g, g)  # [C, g, g]
    y = conv(features, weights["vit_downsampler.weight"], weights["vit_downsampler.bias"],
             stride, 0)
    y = conv(y, weights["vit_downsampler2.weight"], weights["vit_downsampler2.bias"], 2, 1)
    out = y.reshape(y.shape[0], -1).T @ weights["vit_large_projector.weight"].T
    if "vit_large_projector.bias" in weights:
        out = out + weights["vit_large_projector.bias"]
    return out
