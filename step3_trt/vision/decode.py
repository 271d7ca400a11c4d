"""Image bytes, base64 data URLs and local files -> RGB `PIL.Image`, within `ImageLimits`.

Only PNG, JPEG and WebP are decoded, and never from the network. Conversion to RGB follows vLLM's
image loading (`convert_image_mode`): RGBA is composited over white, other modes use PIL's
`convert("RGB")`. Every failure is a typed `ImageInputError` with a one-line message.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from step3_trt.vision.errors import ImageDecodeError, ImageSourceError, ImageTooLargeError
from step3_trt.vision.limits import ImageLimits

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
_WHITE = (255, 255, 255)


def decode_image_bytes(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode one encoded image; the pixel limit is checked from the header, before decoding."""
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"image is {len(data):,} bytes; the limit is "
                                 f"{limits.max_bytes:,}")
    if not data:
        raise ImageDecodeError("image data is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise ImageDecodeError("not a PNG, JPEG or WebP image") from None
    except Image.DecompressionBombError:  # PIL's own guard, far above any sane limit
        raise ImageTooLargeError(f"image has too many pixels; the limit is "
                                 f"{limits.max_pixels:,}") from None
    except Exception as e:  # PIL raises many types on malformed headers; all are bad input
        raise ImageDecodeError(_one_line(f"cannot decode the image ({type(e).__name__}: "
                                         f"{e})")) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(f"image is {width}x{height} = {width * height:,} pixels; the "
                                 f"limit is {limits.max_pixels:,}")
    try:
        image.load()
        return to_rgb(image)
    except Exception as e:  # truncated or corrupt data, unconvertible modes
        raise ImageDecodeError(_one_line(f"corrupt or truncated {image.format} image "
                                         f"({type(e).__name__}: {e})")) from None


def decode_data_url(url: str, limits: ImageLimits) -> Image.Image:
    """`data:image/<type>;base64,<payload>`; the format is read from the bytes, not the type."""
    header, comma, payload = url.partition(",")
    if header[:5].lower() != "data:" or not comma:
        raise ImageSourceError("malformed data URL (expected `data:image/...;base64,<data>`)")
    media_type, *params = header[5:].split(";")
    if "base64" not in (p.strip().lower() for p in params):
        raise ImageSourceError("data URLs must be base64-encoded (`;base64,`)")
    if media_type and not media_type.lower().startswith("image/"):
        raise ImageSourceError(f"data URL media type {_quote(media_type)} is not an image type")
    if len(payload) // 4 * 3 > limits.max_bytes + 2:  # decoded size, known before decoding
        raise ImageTooLargeError(f"image is about {len(payload) // 4 * 3:,} bytes; the limit is "
                                 f"{limits.max_bytes:,}")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageSourceError("data URL payload is not valid base64") from None
    return decode_image_bytes(data, limits)


def load_image_file(path: str | Path, limits: ImageLimits) -> Image.Image:
    """A local image file (for callers that chose the path themselves, e.g. a CLI argument)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ImageSourceError(f"{path} is not a file")
        if size > limits.max_bytes:
            raise ImageTooLargeError(f"{path} is {size:,} bytes; the limit is "
                                     f"{limits.max_bytes:,}")
        with open(path, "rb") as f:
            data = f.read(limits.max_bytes + 1)
    except OSError as e:
        raise ImageSourceError(f"cannot read image file {path}: {e.strerror}") from None
    return decode_image_bytes(data, limits)


def load_image_url(url: str, limits: ImageLimits, local_root: Path | None = None) -> Image.Image:
    """An image reference from a request: a base64 data URL, or a `file://` URL inside
    `local_root` (refused when `local_root` is None). Remote URLs are never fetched."""
    if not isinstance(url, str):
        raise ImageSourceError(f"image URL must be a string, got {type(url).__name__}")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return decode_data_url(url, limits)
    if scheme == "file":
        return load_image_file(_local_path(url, local_root), limits)
    if scheme in ("http", "https"):
        raise ImageSourceError("remote image URLs are not fetched; send the image as a base64 "
                               "data URL (data:image/png;base64,...)")
    raise ImageSourceError(f"unsupported image URL {_quote(url)}; use a base64 data URL")


def _local_path(url: str, local_root: Path | None) -> Path:
    if local_root is None:
        raise ImageSourceError("file:// image URLs are not allowed by this server")
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise ImageSourceError(f"file URL host {_quote(parsed.netloc)} is not local")
    path = Path(unquote(parsed.path))
    if not path.is_absolute():
        raise ImageSourceError("file URL path must be absolute")
    root = Path(local_root).resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise ImageSourceError(f"file URL path is outside the allowed directory {root}")
    return resolved


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB as vLLM loads images: RGBA over a white background, other modes by `convert`."""
    if image.mode == "RGB":
        return image
    if image.mode == "RGBA":
        rgb = Image.new("RGB", image.size, _WHITE)
        rgb.paste(image, mask=image.getchannel("A"))
        return rgb
    return image.convert("RGB")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _quote(text: str, limit: int = 48) -> str:
    text = _one_line(text)
    return repr(text if len(text) <= limit else text[:limit] + "...")
