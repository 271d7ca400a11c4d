"""The reference tower against an independent float64 NumPy computation, on odd view sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from step3_trt.vision.layout import vision_specs
from tests.vision.conftest import random_tower, vision_config
from tests.vision.numpy_reference import resize, tower as numpy_tower


def numpy_weights(tower) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy() for k, v in tower.state_dict().items()}


def fresh_pixels(side: int, seed: int, views: int = 1) -> torch.Tensor:
    """Normalized-pixel-like inputs: roughly unit scale, as CLIP normalization produces."""
    return torch.randn(views, 3, side, side, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


@pytest.mark.parametrize("resample", [(13, 9), (9, 13), (52, 36), (52, 52)])
def test_numpy_bicubic_matches_torch_antialiased_bicubic(resample):
    """The NumPy resize used below is the same function as the release's F.interpolate call."""
    src, dst = resample
    x = np.random.default_rng(src * 100 + dst).standard_normal((5, src, src))
    want = F.interpolate(torch.tensor(x)[None], size=(dst, dst), mode="bicubic",
                         antialias=True, align_corners=False)[0].numpy()
    np.testing.assert_allclose(resize(x, dst, dst, "bicubic"), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("changes, side, embeddings", [
    ({}, 91, 9),  # the trained grid (13 x 13): no position interpolation
    ({}, 63, 4),  # a 9 x 9 grid: positions interpolated down
    ({}, 119, 16),  # a 17 x 17 grid: positions interpolated up
    ({"understand_projector_stride": 1}, 77, 25),  # stride-1 downsampler: 11 -> 10 -> 5
    ({"projector_bias": False, "num_attention_heads": 3}, 49, 4),
])
def test_tower_matches_float64_numpy(changes, side, embeddings):
    cfg = vision_config(**changes)
    tower = random_tower(cfg, seed=side)
    pixels = fresh_pixels(side, seed=side + 1, views=2)
    with torch.no_grad():
        got = tower(pixels).numpy()
    assert got.shape == (2, embeddings, cfg.text_hidden_size)
    assert cfg.embeddings_per_view(side) == embeddings
    w = numpy_weights(tower)
    for view in range(2):
        want = numpy_tower(w, pixels[view].numpy(), cfg.num_attention_heads,
                           cfg.num_hidden_layers, cfg.patch_size, cfg.projector_stride)
        # float64 on both sides: only summation order differs (~1e-15 relative per op)
        np.testing.assert_allclose(got[view], want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype, tolerance", [
    # relative to the largest output; seen (5 seeds): <= 1.1e-6 in float32, <= 1.6e-2 in bf16
    (torch.float32, 1e-5),  # 24-bit mantissa: ~6e-8 per rounding, over ~100-term dot products
    (torch.bfloat16, 6e-2),  # 8-bit mantissa (weights and activations): ~4e-3 per rounding
])
def test_low_precision_tower_stays_near_float64(odd_config, dtype, tolerance):
    exact = random_tower(odd_config, torch.float64, seed=7)
    low = random_tower(odd_config, dtype, seed=7)  # the same draws, rounded to `dtype`
    pixels = fresh_pixels(63, seed=8)
    with torch.no_grad():
        want = exact(pixels)
        got = low(pixels.to(dtype)).double()
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() <= tolerance * scale


def test_state_dict_is_the_released_layout(odd_config):
    tower = random_tower(odd_config)
    assert [(k, tuple(v.shape)) for k, v in tower.state_dict().items()] == \
        [(s.name, s.shape) for s in vision_specs(odd_config)]


def test_embed_image_puts_windows_first_then_the_global_view(odd_config):
    tower = random_tower(odd_config, seed=3)
    global_view, windows = fresh_pixels(91, seed=4)[0], fresh_pixels(63, seed=5, views=3)
    with torch.no_grad():
        got = tower.embed_image(global_view, windows)
        want = torch.cat([tower(windows[i:i + 1])[0] for i in range(3)]
                         + [tower(global_view[None])[0]])
        alone = tower.embed_image(global_view, windows[:0])
    assert got.shape == (3 * 4 + 9, odd_config.text_hidden_size)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alone, tower(global_view[None])[0], rtol=0, atol=0)


@pytest.mark.parametrize("shape, message", [
    ((1, 3, 63, 56), r"\[B, 3, S, S\]"),
    ((3, 63, 63), r"\[B, 3, S, S\]"),
    ((1, 4, 63, 63), r"\[B, 3, S, S\]"),
    ((1, 3, 60, 60), "not a positive multiple of the patch size 7"),
])
def test_bad_pixel_shapes_are_refused(odd_config, shape, message):
    with pytest.raises(ValueError, match=message):
        random_tower(odd_config)(torch.zeros(shape, dtype=torch.float64))
