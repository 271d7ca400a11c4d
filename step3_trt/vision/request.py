"""A request's images, end to end on the host: count limit, decoding, processing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from step3_trt.vision.decode import load_image_url
from step3_trt.vision.limits import ImageLimits
from step3_trt.vision.processor import ImageProcessor, ProcessedImage


def prepare_images(urls: Sequence[str], processor: ImageProcessor, limits: ImageLimits,
                   local_root: Path | None = None) -> list[ProcessedImage]:
    """Image URLs (base64 data URLs; `file://` under `local_root`) -> tower inputs and prompt
    expansions, in order. The count is checked before anything is decoded; the first bad image
    raises its `ImageInputError`."""
    limits.check_count(len(urls))
    return [processor(load_image_url(url, limits, local_root)) for url in urls]
