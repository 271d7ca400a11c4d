"""A request's images: the count is refused before decoding; images come back in order."""

from __future__ import annotations

import pytest

from step3_trt.presets import STEP3_VISION, TINY_TEXT, vlm_config
from step3_trt.vision.config import VisionConfig
from step3_trt.vision.errors import ImageSourceError, TooManyImagesError
from step3_trt.vision.limits import ImageLimits
from step3_trt.vision.processor import ImageProcessor
from step3_trt.vision.request import prepare_images
from tests.vision.test_decode import data_url, encoded

PROCESSOR = ImageProcessor(VisionConfig.from_dict(vlm_config(TINY_TEXT, STEP3_VISION)))


def test_images_are_processed_in_order():
    urls = [data_url(encoded("PNG", size=(64, 64))),
            data_url(encoded("JPEG", size=(1000, 600)), "image/jpeg")]
    out = prepare_images(urls, PROCESSOR, ImageLimits())
    assert [p.windows.shape[0] for p in out] == [0, 2]
    assert [p.plan.source_size for p in out] == [(64, 64), (1000, 600)]


def test_count_is_refused_before_any_decoding():
    with pytest.raises(TooManyImagesError, match="2 images in one request; the limit is 1"):
        prepare_images(["not a url at all", "x"], PROCESSOR, ImageLimits(max_images=1))


def test_first_bad_image_raises_its_error():
    with pytest.raises(ImageSourceError, match="remote image URLs are not fetched"):
        prepare_images([data_url(encoded("PNG")), "https://example.com/x.png"], PROCESSOR,
                       ImageLimits())
