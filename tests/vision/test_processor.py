"""Pixels out of the processor: sizes, CLIP normalization, the release's resizes, padding, window
content; and the tiny tower's output matching the placeholder count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from step3_trt.make_checkpoint import random_vision_tensors
from step3_trt.model.vision import Step3VisionTower
from step3_trt.presets import STEP3_VISION, TINY_TEXT, TINY_VISION, vlm_config
from step3_trt.vision.config import VisionConfig
from step3_trt.vision.errors import PlaceholderCountError
from step3_trt.vision.placeholders import IMAGE_TOKEN, expand_prompt
from step3_trt.vision.processor import ImageProcessor
from tests.vision.numpy_reference import resize

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])[:, None, None]
STD = np.array([0.26862954, 0.26130258, 0.27577711])[:, None, None]
PROCESSOR = ImageProcessor(VisionConfig.from_dict(vlm_config(TINY_TEXT, STEP3_VISION)))


def random_image(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def normalized(image: Image.Image) -> np.ndarray:
    """[3, H, W] float64: /255, then (x - mean) / std."""
    return (np.asarray(image, dtype=np.float64).transpose(2, 0, 1) / 255 - MEAN) / STD


@pytest.mark.parametrize("size, windows", [((333, 251), 0), ((1000, 600), 2), ((1600, 1200), 9)])
def test_output_shapes(size, windows):
    out = PROCESSOR(random_image(*size, seed=1))
    assert out.global_view.shape == (3, 728, 728) and out.global_view.dtype == torch.float32
    assert out.windows.shape == (windows, 3, 504, 504) and out.windows.dtype == torch.float32


def test_constant_image_normalizes_exactly():
    out = PROCESSOR(Image.new("RGB", (1000, 600), (200, 30, 60)))
    want = ((np.array([200, 30, 60])[:, None, None] / 255 - MEAN) / STD).astype(np.float32)
    for view in (out.global_view, *out.windows):
        np.testing.assert_allclose(view.numpy(), np.broadcast_to(want, view.shape), atol=1e-6)


@pytest.mark.parametrize("size", [(333, 251), (149, 97)])
def test_global_view_is_a_normalized_antialiased_bilinear_resize(size):
    """No windows, no cap: the global view is the image normalized, then resized to 728 with a
    triangle filter (the release's tensor Resize). float32 vs float64: torch's float32 kernel
    computes sample positions and weights in float32, ~2e-5 relative (4.2e-5 absolute seen on
    these values of magnitude <= 2.2)."""
    image = random_image(*size, seed=2)
    want = resize(normalized(image), 728, 728, "bilinear")
    np.testing.assert_allclose(PROCESSOR(image).global_view.numpy(), want, rtol=0, atol=1e-4)


def test_windows_are_exact_crops_when_no_resize_is_needed():
    """1008 x 504 is already a whole number of windows: no crop resize, no window resize."""
    image = random_image(1008, 504, seed=3)
    out = PROCESSOR(image)
    assert out.windows.shape[0] == 2
    full = normalized(image)
    for i in range(2):
        np.testing.assert_allclose(out.windows[i].numpy(), full[:, :, 504 * i:504 * (i + 1)],
                                   rtol=0, atol=1e-6)


def test_window_past_a_short_side_is_filled_with_black():
    """800 x 400: windows are 504 tall; rows 400-503 lie outside the image (PIL crop: black)."""
    out = PROCESSOR(Image.new("RGB", (800, 400), (255, 255, 255)))
    black = (-MEAN / STD).astype(np.float32)
    bottom = out.windows[:, :, 420:, :].numpy()  # well below the edge after the 504 -> 504 copy
    np.testing.assert_allclose(bottom, np.broadcast_to(black, bottom.shape), atol=1e-6)
    top = out.windows[:, :, :380, :380].numpy()
    np.testing.assert_allclose(top, np.broadcast_to(((1 - MEAN) / STD).astype(np.float32),
                                                    top.shape), atol=1e-6)


def test_thin_image_is_padded_black_on_the_right():
    out = PROCESSOR(Image.new("RGB", (20, 200), (255, 255, 255)))  # padded to 200 x 200
    white, black = ((1 - MEAN) / STD)[:, 0, 0], (-MEAN / STD)[:, 0, 0]
    np.testing.assert_allclose(out.global_view[:, 364, 20].numpy(), white, atol=1e-5)
    np.testing.assert_allclose(out.global_view[:, 364, 400].numpy(), black, atol=1e-5)


def test_non_rgb_inputs_are_converted():
    rgba = Image.new("RGBA", (300, 300), (10, 20, 30, 0))  # fully transparent: white
    white = ((1 - MEAN) / STD).astype(np.float32)
    np.testing.assert_allclose(PROCESSOR(rgba).global_view.numpy(),
                               np.broadcast_to(white, (3, 728, 728)), atol=1e-6)
    gray = PROCESSOR(Image.new("L", (300, 300), 128)).global_view
    want = ((128 / 255 - MEAN) / STD).astype(np.float32)
    np.testing.assert_allclose(gray.numpy(), np.broadcast_to(want, (3, 728, 728)), atol=1e-6)


def test_tiny_tower_output_fills_exactly_the_placeholders():
    cfg = VisionConfig.from_dict(vlm_config(TINY_TEXT, TINY_VISION))
    tower = Step3VisionTower(cfg)
    tower.load_state_dict(dict(random_vision_tensors(cfg, torch.Generator().manual_seed(0),
                                                     torch.float32)))
    processor = ImageProcessor(cfg)
    out = processor(random_image(1000, 600, seed=4))
    with torch.no_grad():
        embeddings = tower.embed_image(out.global_view, out.windows)
    assert embeddings.shape == (out.placeholder.num_embeddings, TINY_TEXT["hidden_size"])
    assert out.placeholder.num_embeddings == 2 * 81 + 169
    assert embeddings.isfinite().all()


def test_prompt_expansion_and_ids():
    small, wide = PROCESSOR(Image.new("RGB", (64, 64))), PROCESSOR(Image.new("RGB", (1000, 600)))
    prompt = f"look: {IMAGE_TOKEN} and {IMAGE_TOKEN}!"
    text = expand_prompt(prompt, [small.placeholder, wide.placeholder])
    assert text == f"look: {small.placeholder.text} and {wide.placeholder.text}!"
    assert text.count(IMAGE_TOKEN) == 169 + 2 * 81 + 169
    vocab = {"<im_patch>": 7, "<im_start>": 1, "<im_end>": 2, "<patch_start>": 3,
             "<patch_end>": 4, "<patch_newline>": 5}
    ids = wide.placeholder.token_ids(vocab)
    assert ids == [3] + [7] * 81 + [4] + [3] + [7] * 81 + [4] + [1] + [7] * 169 + [2]
    with pytest.raises(ValueError, match="no id for image placeholder token"):
        wide.placeholder.token_ids({"<im_patch>": 7})
    with pytest.raises(PlaceholderCountError, match="1 image placeholder"):
        expand_prompt(f"x {IMAGE_TOKEN}", [small.placeholder, wide.placeholder])


def test_crop_resize_is_pil_bilinear_before_the_windows_are_cut():
    """1000 x 600 becomes 1008 x 504 (PIL BILINEAR: an antialiased triangle filter in two 8-bit
    fixed-point passes, each rounded: within 1 / 255 of the exact filter; on this noise image a
    different filter, e.g. bicubic or nearest, is tens of levels off), then two 504 windows."""
    image = random_image(1000, 600, seed=5)
    stretched = resize(np.asarray(image, dtype=np.float64).transpose(2, 0, 1), 504, 1008,
                       "bilinear")
    want = (stretched / 255 - MEAN) / STD
    out = PROCESSOR(image)
    tolerance = 1 / 255 / STD.min() + 1e-5
    for i in range(2):
        np.testing.assert_allclose(out.windows[i].numpy(), want[:, :, 504 * i:504 * (i + 1)],
                                   rtol=0, atol=tolerance)
