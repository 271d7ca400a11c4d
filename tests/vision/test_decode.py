"""Every malformed or oversized image is refused with its typed, one-line error; good ones decode
to RGB."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from step3_trt.vision.decode import (decode_data_url, decode_image_bytes, load_image_file,
                                     load_image_url)
from step3_trt.vision.errors import (ImageDecodeError, ImageInputError, ImageSourceError,
                                     ImageTooLargeError, TooManyImagesError)
from step3_trt.vision.limits import ImageLimits

LIMITS = ImageLimits()


def encoded(fmt: str, size=(40, 30), mode="RGB", color=(200, 100, 50)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, {"L": 90, "CMYK": (0, 50, 100, 0)}.get(mode, color)).save(buf,
                                                                                  format=fmt)
    return buf.getvalue()


def noise(fmt: str, size=(300, 200)) -> bytes:
    """An incompressible image, so that a cut file is missing real pixel data."""
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format=fmt)
    return buf.getvalue()


def half(data: bytes) -> bytes:
    return data[:len(data) // 2]


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with a one-byte IDAT (no real pixel data)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + \
        chunk(b"IEND", b"")


def refused(error: type[ImageInputError], match: str, call, *args, **kwargs) -> None:
    with pytest.raises(error, match=match) as info:
        call(*args, **kwargs)
    assert isinstance(info.value, ImageInputError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("fmt, mode", [(f, m) for f in ("PNG", "WEBP")
                                        for m in ("RGB", "RGBA", "L", "P")]
                         + [("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK")])
def test_accepted_formats_and_modes_decode_to_rgb(fmt, mode):
    image = decode_image_bytes(encoded(fmt, mode=mode), LIMITS)
    assert image.mode == "RGB" and image.size == (40, 30)


def test_transparent_pixels_become_white():
    image = decode_image_bytes(encoded("PNG", mode="RGBA", color=(10, 20, 30, 0)), LIMITS)
    assert image.getpixel((5, 5)) == (255, 255, 255)
    opaque = decode_image_bytes(encoded("PNG", mode="RGBA", color=(10, 20, 30, 255)), LIMITS)
    assert opaque.getpixel((5, 5)) == (10, 20, 30)


def test_png_round_trips_exactly():
    image = decode_image_bytes(encoded("PNG", color=(1, 2, 3)), LIMITS)
    assert image.getpixel((39, 29)) == (1, 2, 3)


MALFORMED = {
    "empty": (b"", ImageDecodeError, "empty"),
    "text": (b"hello, not an image at all" * 10, ImageDecodeError, "not a PNG, JPEG or WebP"),
    "gif": (encoded("GIF"), ImageDecodeError, "not a PNG, JPEG or WebP"),
    "bmp": (encoded("BMP"), ImageDecodeError, "not a PNG, JPEG or WebP"),
    "png cut in half": (half(noise("PNG")), ImageDecodeError, "corrupt or truncated PNG"),
    "jpeg cut in half": (half(noise("JPEG")), ImageDecodeError, "corrupt or truncated JPEG"),
    "webp cut in half": (half(noise("WEBP")), ImageDecodeError, "cannot decode the image"),
    "png header cut": (encoded("PNG")[:20], ImageDecodeError, "cannot decode the image"),
    "zero width": (png_with_header(0, 10), ImageDecodeError, "not a PNG, JPEG or WebP"),
    "81M pixels": (png_with_header(9000, 9000), ImageTooLargeError,
                   "9000x9000 = 81,000,000 pixels; the limit is 67,108,864"),
    "10G pixels": (png_with_header(100000, 100000), ImageTooLargeError,
                   "too many pixels; the limit is 67,108,864"),
}


@pytest.mark.parametrize("data, error, match", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_bytes_are_refused(data, error, match):
    refused(error, match, decode_image_bytes, data, LIMITS)


def test_corrupt_pixel_data_is_refused():
    data = bytearray(encoded("PNG", size=(64, 64)))
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # breaks the chunk CRC / zlib stream
    refused(ImageDecodeError, "corrupt or truncated PNG", decode_image_bytes, bytes(data), LIMITS)


def test_byte_limit():
    data = encoded("PNG", size=(200, 200))
    small = ImageLimits(max_bytes=len(data) - 1)
    refused(ImageTooLargeError, f"{len(data):,} bytes; the limit is", decode_image_bytes, data,
            small)
    refused(ImageTooLargeError, "the limit is", decode_data_url, data_url(data), small)
    assert decode_image_bytes(data, ImageLimits(max_bytes=len(data))).size == (200, 200)


def test_pixel_limit_is_checked_before_decoding():
    data = encoded("PNG", size=(200, 100))
    refused(ImageTooLargeError, "200x100 = 20,000 pixels", decode_image_bytes, data,
            ImageLimits(max_pixels=19_999))
    assert decode_image_bytes(data, ImageLimits(max_pixels=20_000)).size == (200, 100)


def test_data_urls():
    assert decode_data_url(data_url(encoded("JPEG"), "image/jpeg"), LIMITS).size == (40, 30)
    # the format comes from the bytes, not the declared type
    assert decode_data_url(data_url(encoded("WEBP"), "image/png"), LIMITS).size == (40, 30)


@pytest.mark.parametrize("url, error, match", [
    ("data:image/png,iVBORw0KGgo=", ImageSourceError, "base64"),
    ("data:image/png;base64", ImageSourceError, "malformed data URL"),
    ("data:image/png;base64,@@@@not-base64@@@@", ImageSourceError, "not valid base64"),
    ("data:image/png;base64,iVBORw0KGgo", ImageSourceError, "not valid base64"),
    ("data:text/plain;base64,aGVsbG8=", ImageSourceError, "not an image type"),
    ("data:image/png;base64,aGVsbG8gd29ybGQ=", ImageDecodeError, "not a PNG, JPEG or WebP"),
    ("http://example.com/cat.png", ImageSourceError, "remote image URLs are not fetched"),
    ("https://example.com/cat.png", ImageSourceError, "remote image URLs are not fetched"),
    ("ftp://example.com/cat.png", ImageSourceError, "unsupported image URL"),
    ("cat.png", ImageSourceError, "unsupported image URL"),
    ("file:///etc/passwd", ImageSourceError, "file:// image URLs are not allowed"),
])
def test_bad_urls_are_refused(url, error, match):
    refused(error, match, load_image_url, url, LIMITS)


def test_non_string_url_is_refused():
    refused(ImageSourceError, "must be a string", load_image_url, b"data:...", LIMITS)


def test_file_urls_only_inside_the_allowed_directory(tmp_path):
    root, outside = tmp_path / "images", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    (root / "ok.png").write_bytes(encoded("PNG"))
    (outside / "other.png").write_bytes(encoded("PNG"))
    (root / "link.png").symlink_to(outside / "other.png")
    assert load_image_url(f"file://{root}/ok.png", LIMITS, local_root=root).size == (40, 30)
    assert load_image_url(f"file://localhost{root}/ok.png", LIMITS, local_root=root)
    for url, match in [(f"file://{root}/../secret/other.png", "outside the allowed directory"),
                       (f"file://{root}/link.png", "outside the allowed directory"),
                       (f"file://{root}/missing.png", "cannot read image file"),
                       (f"file://otherhost{root}/ok.png", "is not local"),
                       (f"file://{root}", "is not a file")]:
        refused(ImageSourceError, match, load_image_url, url, LIMITS, local_root=root)


def test_local_files(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(encoded("JPEG", size=(64, 48)))
    assert load_image_file(path, LIMITS).size == (64, 48)
    refused(ImageTooLargeError, "the limit is", load_image_file, path, ImageLimits(max_bytes=10))
    refused(ImageSourceError, "cannot read image file", load_image_file, tmp_path / "nope.png",
            LIMITS)


def test_image_count_limit():
    ImageLimits(max_images=2).check_count(2)
    refused(TooManyImagesError, "3 images in one request; the limit is 2",
            ImageLimits(max_images=2).check_count, 3)


@pytest.mark.parametrize("field", ["max_images", "max_bytes", "max_pixels"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_limits_are_validated(field, value):
    with pytest.raises(ValueError, match=field):
        ImageLimits(**{field: value})

