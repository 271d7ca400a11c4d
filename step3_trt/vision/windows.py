"""Where Step-3's processor cuts an image: square padding, the 3024-pixel cap, the window size and
grid. Pure integer geometry, no pixels; the rules and their float arithmetic follow the released
processor (vLLM / SGLang `ImagePatcher`), so sizes come out identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from step3_trt.vision.errors import ImageShapeError

MAX_LONG_SIDE = 3024  # longer side after the first downscale
GLOBAL_VIEW = 728  # every image is also seen whole, resized to 728 x 728
WINDOW_VIEW = 504  # each window is resized to 504 x 504
PAD_BELOW_SIDE = 32  # images thinner than this ...
PAD_ASPECT = 4  # ... and more elongated than 1:4 are padded to a square first
WINDOW_ASPECT = 1.5  # images up to 728 get windows only beyond this aspect ratio
THIN_ASPECT = 4  # beyond this aspect ratio, large images use windows of their short side
ROUND_UP_FRACTION = 0.2  # a partial window beyond this fraction adds one more window


@dataclass(frozen=True)
class Window:
    """A window's box in the crop image (it may extend past a side shorter than the window;
    PIL's crop fills that part with black, as the release does)."""
    x: int
    y: int
    size: int


@dataclass(frozen=True)
class ViewPlan:
    source_size: tuple[int, int]  # (width, height) as decoded
    padded_size: tuple[int, int]  # after square padding (the source size when not padded)
    scaled_size: tuple[int, int]  # after the 3024 cap: the global view is resized from this
    window_size: int  # 0: no windows
    crop_size: tuple[int, int]  # the scaled image is resized to this before windows are cut
    cols: int
    rows: int
    windows: tuple[Window, ...]  # row-major

    @property
    def padded(self) -> bool:
        return self.padded_size != self.source_size

    @property
    def newline_after(self) -> tuple[bool, ...]:
        """Per window: a `<patch_newline>` follows it (end of a row, but not the last window)."""
        last = len(self.windows) - 1
        return tuple((i + 1) % self.cols == 0 and i != last for i in range(len(self.windows)))


def plan_views(width: int, height: int) -> ViewPlan:
    if width < 1 or height < 1:
        raise ImageShapeError(f"image has no pixels ({width}x{height})")
    padded = _padded_size(width, height)
    scaled = _capped_size(*padded)
    if min(scaled) < 1:
        raise ImageShapeError(f"a {width}x{height} image is too elongated: its short side would "
                              f"shrink to 0 pixels when the long side is scaled to "
                              f"{MAX_LONG_SIDE}")
    window = _window_size(max(scaled), min(scaled))
    if window == 0:
        return ViewPlan((width, height), padded, scaled, 0, scaled, 0, 0, ())
    crop = (_crop_side(scaled[0], window), _crop_side(scaled[1], window))
    xs, ys = _starts(crop[0], window), _starts(crop[1], window)
    windows = tuple(Window(x, y, window) for y in ys for x in xs)
    return ViewPlan((width, height), padded, scaled, window, crop, len(xs), len(ys), windows)


def _padded_size(width: int, height: int) -> tuple[int, int]:
    ratio = width / height
    if min(width, height) < PAD_BELOW_SIDE and (ratio > PAD_ASPECT or ratio < 1 / PAD_ASPECT):
        side = max(width, height)
        return side, side
    return width, height


def _capped_size(width: int, height: int) -> tuple[int, int]:
    longest = max(width, height)
    if longest <= MAX_LONG_SIDE:
        return width, height
    scale = MAX_LONG_SIDE / longest  # same float expression as the release (it can truncate)
    return int(width * scale), int(height * scale)


def _window_size(long: int, short: int) -> int:
    if long <= GLOBAL_VIEW:
        return short if long / short > WINDOW_ASPECT else 0
    return min(short, WINDOW_VIEW) if long / short > THIN_ASPECT else WINDOW_VIEW


def _crop_side(side: int, window: int) -> int:
    """A side shorter than one window stays; otherwise it becomes a whole number of windows,
    rounded up when the partial window exceeds ROUND_UP_FRACTION of one."""
    ratio = side / window
    if ratio < 1:
        return side
    fraction = ratio - side // window
    count = int(ratio) + 1 if fraction > ROUND_UP_FRACTION else int(ratio)
    return window * count


def _starts(side: int, window: int) -> list[int]:
    """Window offsets along one side: stride = window; the last one is pulled back inside."""
    count = 1 if side <= window else math.ceil((side - window) / window + 1)
    starts = [window * i for i in range(count)]
    if count > 1 and starts[-1] + window > side:
        starts[-1] = side - window
    return starts
