"""What a client may make the server read: the body, its images, and where they come from.

* The request body: at most ``max_body_bytes``. A declared ``Content-Length`` over it is refused
  before the body is read; a chunked body stops being read there. Either way, a 413.
* An image: a ``data:`` URI or an ``http(s)://`` URL, nothing else. A path, ``file://`` or any
  other scheme is a 400 whose message is the same whatever is on the server's disk, and nothing
  is read: the server's files are not its clients'. (The library and the CLI take paths: there
  the user names their own files.)
* A URL is fetched from public addresses only (each redirect checked again), unless the
  operator allows private ones; every failure to fetch one is the same 400 (see
  :func:`~.errors.api_error`), so a client cannot map the server's network by the messages.
* An image decoded from a ``data:`` URI or downloaded is at most ``max_image_bytes``, and at most
  ``max_image_pixels`` (a small file can decode to gigabytes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..imaging import ImageOptions
from ..media import classify
from .errors import APIError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGE_REFUSED",
    "Limits",
    "body_too_large",
    "check_images",
]

MIB: Final = 1 << 20
#: 32 MiB: a 20 MiB image as a base64 data: URI (27 MiB) and its prompt.
DEFAULT_MAX_BODY_BYTES: Final = 32 * MIB
#: 20 MiB: the largest encoded image taken from a data: URI or a URL.
DEFAULT_MAX_IMAGE_BYTES: Final = 20 * MIB
#: 50 megapixels: a large phone photo; 200 MB as RGBA once decoded.
DEFAULT_MAX_IMAGE_PIXELS: Final = 50_000_000
#: The one answer to an image that is not a data: URI or an http(s) URL.
IMAGE_REFUSED: Final = (
    "An image must be a data: URI (data:image/png;base64,...) or an http(s) URL; this server "
    "reads no other kind"
)


@dataclass(frozen=True)
class Limits:
    """The caps on what one request may make the server read (``qvq serve`` options)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    allow_private_urls: bool = False

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_image_bytes", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")

    def image_options(self, base: ImageOptions | None) -> ImageOptions:
        """The session's image options (``base``), within these limits."""
        return dataclasses.replace(
            base or ImageOptions(),
            max_image_bytes=self.max_image_bytes,
            max_download_bytes=self.max_image_bytes,
            max_image_pixels=self.max_image_pixels,
            allow_private_urls=self.allow_private_urls,
            url_mode="download",  # the server checks what it fetches; a Space would not
        )


def body_too_large(cap: int) -> APIError:
    return APIError(413, f"The request body is over this server's limit of {cap:,} bytes",
                    code="request_too_large")


def check_images(images: Sequence[Any]) -> None:
    """A 400 unless every image a request names is a ``data:`` URI or an http(s) URL."""
    for image in images:
        if not isinstance(image, str) or classify(image).kind not in ("data", "url"):
            raise APIError(400, IMAGE_REFUSED, param="messages", code="invalid_image")
