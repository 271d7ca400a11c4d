"""Window grids, sizes and placeholder counts, computed by hand from the released rules."""

from __future__ import annotations

import pytest

from step3_trt.presets import STEP3_VISION, TINY_TEXT, vlm_config
from step3_trt.vision.config import VisionConfig
from step3_trt.vision.errors import ImageShapeError
from step3_trt.vision.processor import ImageProcessor
from step3_trt.vision.windows import plan_views

RELEASED = ImageProcessor(VisionConfig.from_dict(vlm_config(TINY_TEXT, STEP3_VISION)))

# (source size, scaled size, window, crop size, cols, rows, prompt tokens). Tokens: 83 per window
# (<patch_start> + 81 + <patch_end>), one <patch_newline> per row but the last, 171 for the global
# view (<im_start> + 169 + <im_end>).
CASES = [
    # long side <= 728 and aspect <= 1.5: the global view only
    ((500, 400), (500, 400), 0, (500, 400), 0, 0, 171),
    ((300, 200), (300, 200), 0, (300, 200), 0, 0, 171),  # aspect exactly 1.5: not beyond it
    # long side <= 728, aspect 728 / 485 = 1.501 > 1.5: windows of the short side (485); width
    # 728 / 485 = 1.50 windows, 0.50 partial > 0.2 -> 2 windows -> crop 970 x 485
    ((728, 485), (728, 485), 485, (970, 485), 2, 1, 2 * 83 + 171),
    # long side > 728, aspect <= 4: 504 windows; 1000 / 504 = 1.98 -> 2 (1008), 600 / 504 = 1.19,
    # partial 0.19 <= 0.2 -> 1 (504)
    ((1000, 600), (1000, 600), 504, (1008, 504), 2, 1, 2 * 83 + 171),
    # 1600 / 504 = 3.17 -> 3, 1200 / 504 = 2.38 -> 3: a 3 x 3 grid, newlines after rows 1 and 2
    ((1600, 1200), (1600, 1200), 504, (1512, 1512), 3, 3, 9 * 83 + 2 + 171),
    # a side shorter than a window stays (400): one row of windows reaching past the bottom
    ((800, 400), (800, 400), 504, (1008, 400), 2, 1, 2 * 83 + 171),
    # over 3024: scaled by 3024 / 4000 = 0.756 -> 3024 x 2268; 2268 / 504 = 4.5 -> 5 rows of 6
    ((4000, 3000), (3024, 2268), 504, (3024, 2520), 6, 5, 30 * 83 + 4 + 171),
    # 4236 * (3024 / 4236) is 3023.9999... in floating point: the release truncates to 3023;
    # 3023 / 504 = 5.998 -> 6 windows per side
    ((4236, 4236), (3023, 3023), 504, (3024, 3024), 6, 6, 36 * 83 + 5 + 171),
    # thin and long (aspect 60 > 4, long > 728): windows of the short side, 3000 / 50 = 60
    ((3000, 50), (3000, 50), 50, (3000, 50), 60, 1, 60 * 83 + 171),
    # tall, aspect 7 but short side 100 >= 32 (no padding), long 700 <= 728: 100-pixel windows,
    # one column of 7 rows, 6 newlines
    ((100, 700), (100, 700), 100, (100, 700), 1, 7, 7 * 83 + 6 + 171),
]


@pytest.mark.parametrize("source, scaled, window, crop, cols, rows, tokens", CASES)
def test_window_grid(source, scaled, window, crop, cols, rows, tokens):
    plan = plan_views(*source)
    assert (plan.scaled_size, plan.window_size, plan.crop_size, plan.cols, plan.rows) == \
        (scaled, window, crop, cols, rows)
    assert not plan.padded
    assert [(w.x, w.y) for w in plan.windows] == \
        [(x * window, y * window) for y in range(rows) for x in range(cols)]
    assert all(w.size == window for w in plan.windows)
    assert RELEASED.count_tokens(*source) == tokens


def test_newlines_end_every_row_but_the_last():
    plan = plan_views(1600, 1200)  # 3 x 3
    assert plan.newline_after == (False, False, True, False, False, True, False, False, False)
    assert plan_views(3000, 50).newline_after == (False,) * 60  # one row: no newline at all


@pytest.mark.parametrize("source, padded, tokens", [
    # short side < 32 and aspect beyond 1:4 -> padded to a square first; 200 x 200 has aspect 1
    # and a long side <= 728: global view only
    ((20, 200), (200, 200), 171),
    ((200, 20), (200, 200), 171),
    # padded to 1000 x 1000: 504 windows, 1000 / 504 = 1.98 -> 2 x 2, one newline
    ((1000, 31), (1000, 1000), 4 * 83 + 1 + 171),
])
def test_thin_images_are_padded_to_a_square(source, padded, tokens):
    plan = plan_views(*source)
    assert plan.padded and plan.padded_size == padded
    assert RELEASED.count_tokens(*source) == tokens


def test_elongated_image_that_would_lose_its_short_side_is_refused():
    # 100000 x 33: not padded (short side >= 32); 33 * 3024 / 100000 = 0.998 -> 0 pixels
    with pytest.raises(ImageShapeError, match="too elongated"):
        plan_views(100000, 33)
    assert plan_views(100000, 34).scaled_size == (3024, 1)


def test_placeholder_expansion_layout():
    placeholder = RELEASED.placeholder(plan_views(1600, 1200))
    text = placeholder.text
    window = "<patch_start>" + "<im_patch>" * 81 + "<patch_end>"
    row = window * 3
    assert text == row + "<patch_newline>" + row + "<patch_newline>" + row + \
        "<im_start>" + "<im_patch>" * 169 + "<im_end>"
    assert placeholder.num_embeddings == 9 * 81 + 169
    assert placeholder.num_tokens == 9 * 83 + 2 + 171


def test_token_counts_follow_the_tower_config():
    """A stride-1 downsampler gives 26 x 26 = 676 embeddings per 728 view (18 x 18 per 504)."""
    stride1 = {**STEP3_VISION, "understand_projector_stride": 1}
    processor = ImageProcessor(VisionConfig.from_dict(vlm_config(TINY_TEXT, stride1)))
    assert (processor.global_embeddings, processor.window_embeddings) == (676, 324)
    assert (RELEASED.global_embeddings, RELEASED.window_embeddings) == (169, 81)
