"""Step-3's image processing: an RGB image -> CLIP-normalized pixels of the global view and the
windows, plus the prompt expansion that matches the tower's output.

Pixels follow the release's transform order: `ToTensor` (float32 in [0, 1]), CLIP mean/std
`Normalize`, then a bilinear antialiased resize of the tensor (torchvision's `Resize`, which is
`F.interpolate(mode="bilinear", antialias=True, align_corners=False)` and skipped when the size
already matches). Padding, the 3024 cap and the crop resize are PIL operations (BILINEAR), as
released; `windows.py` has the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from step3_trt.vision.config import VisionConfig
from step3_trt.vision.decode import to_rgb
from step3_trt.vision.placeholders import ImagePlaceholder, image_placeholder
from step3_trt.vision.windows import GLOBAL_VIEW, WINDOW_VIEW, ViewPlan, plan_views

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ProcessedImage:
    global_view: torch.Tensor  # [3, 728, 728] float32, normalized
    windows: torch.Tensor  # [N, 3, 504, 504] float32, row-major (N = 0: no windows)
    plan: ViewPlan
    placeholder: ImagePlaceholder


class ImageProcessor:
    """Turns images into tower inputs; embedding counts per view come from the tower's config
    (169 per global view and 81 per window for the released one)."""

    def __init__(self, config: VisionConfig):
        self.config = config
        self.global_embeddings = config.embeddings_per_view(GLOBAL_VIEW)
        self.window_embeddings = config.embeddings_per_view(WINDOW_VIEW)

    def placeholder(self, plan: ViewPlan) -> ImagePlaceholder:
        return image_placeholder(plan.newline_after, self.window_embeddings,
                                 self.global_embeddings)

    def count_tokens(self, width: int, height: int) -> int:
        """Prompt tokens an image of this size expands to, without touching pixels."""
        return self.placeholder(plan_views(width, height)).num_tokens

    def __call__(self, image: Image.Image) -> ProcessedImage:
        image = to_rgb(image)
        plan = plan_views(*image.size)
        if plan.padded:
            square = Image.new(image.mode, plan.padded_size, 0)  # black, image at the top left
            square.paste(image, (0, 0))
            image = square
        image = image.resize(plan.scaled_size, Image.Resampling.BILINEAR)
        global_view = _pixels(image, GLOBAL_VIEW)
        windows = torch.empty(0, 3, WINDOW_VIEW, WINDOW_VIEW)
        if plan.windows:
            crop = image.resize(plan.crop_size, Image.Resampling.BILINEAR)
            windows = torch.stack([_pixels(crop.crop((w.x, w.y, w.x + w.size, w.y + w.size)),
                                           WINDOW_VIEW) for w in plan.windows])
        return ProcessedImage(global_view, windows, plan, self.placeholder(plan))


def _pixels(image: Image.Image, side: int) -> torch.Tensor:
    """RGB image -> [3, side, side] float32: to [0, 1], normalize, then resize."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(CLIP_MEAN)[:, None, None]
    std = torch.tensor(CLIP_STD)[:, None, None]
    x = (x - mean) / std  # [3, H, W]
    if x.shape[1:] == (side, side):
        return x.contiguous()
    return F.interpolate(x[None], size=(side, side), mode="bilinear", align_corners=False,
                         antialias=True)[0]
