"""Per-request limits on images: how many, how many encoded bytes, how many decoded pixels."""

from __future__ import annotations

from dataclasses import dataclass

from step3_trt.vision.errors import TooManyImagesError

MiB = 1024 * 1024


@dataclass(frozen=True)
class ImageLimits:
    max_images: int = 8  # per request
    max_bytes: int = 20 * MiB  # encoded size of one image
    max_pixels: int = 64 * 1024 * 1024  # width x height of one decoded image (before scaling)

    def __post_init__(self) -> None:
        for name in ("max_images", "max_bytes", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"image limit `{name}` must be a positive integer, got {value!r}")

    def check_count(self, count: int) -> None:
        if count > self.max_images:
            raise TooManyImagesError(f"{count} images in one request; the limit is "
                                     f"{self.max_images}")
