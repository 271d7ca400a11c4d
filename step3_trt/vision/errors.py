"""Typed errors for image input: each is a client error (a server answers 400 with the message)."""

from __future__ import annotations


class ImageInputError(ValueError):
    """An image a request cannot use; the message is one line that says why."""


class ImageSourceError(ImageInputError):
    """The image reference is unusable: malformed data URL, bad base64, a remote URL (never
    fetched), a local file outside the allowed directory or missing."""


class ImageDecodeError(ImageInputError):
    """The bytes are not a decodable PNG, JPEG or WebP image (or are truncated or corrupt)."""


class ImageTooLargeError(ImageInputError):
    """The image exceeds the byte or pixel limit."""


class ImageShapeError(ImageInputError):
    """The image's proportions cannot be processed (a side would shrink to zero pixels)."""


class TooManyImagesError(ImageInputError):
    """More images in one request than the limit allows."""


class PlaceholderCountError(ImageInputError):
    """The prompt's image placeholders do not match the number of images."""
