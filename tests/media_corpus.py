"""A corpus of bad and odd images, generated here, with what each must become."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from qvq_gradio import ImageTooLargeError, MediaDownloadError, MediaError


@dataclass(frozen=True)
class Expect:
    """Success: the normalised image's size, format and optionally a pixel at a point."""

    size: tuple[int, int] | None = None
    format: str | None = None
    pixel: tuple[tuple[int, int], tuple[int, int, int]] | None = None
    passthrough: bool | None = None
    aspect: float | None = None  #: downscaled: within the pixel budget, this aspect ratio kept


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path, str], Any]  # (tmp_path, base URL of the image server) -> input
    expect: Expect | type[Exception]
    match: str | None = None


def encoded(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def photo(width: int, height: int) -> Image.Image:
    """A smooth, photo-like RGB image (compresses badly as PNG, well as JPEG)."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rng = np.random.default_rng(7)
    noise = rng.normal(0, 12, (height, width)).astype(np.float32)
    r = (x + noise) % 256
    g = (y + noise) % 256
    b = ((x + y) / 2 + noise) % 256
    return Image.fromarray(np.dstack([r, g, b]).clip(0, 255).astype(np.uint8))


def screenshot(width: int, height: int) -> Image.Image:
    """Flat colours and sharp edges, like a UI screenshot (compresses well as PNG)."""
    image = Image.new("RGB", (width, height), (246, 246, 246))
    pixels = np.array(image)
    for i in range(0, height, 40):
        pixels[i : i + 2, :, :] = (200, 200, 210)
    for j in range(0, width, 300):
        pixels[:, j : j + 120, :] = (30, 90, 180)
    return Image.fromarray(pixels)


def corrupt_ihdr_crc(data: bytes) -> bytes:
    """Break the checksum of the PNG header chunk (bytes 29-32)."""
    return data[:29] + bytes(b ^ 0xFF for b in data[29:33]) + data[33:]


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(image, "JPEG", exif=exif.tobytes(), quality=95)


def red_left(width: int, height: int) -> Image.Image:
    """White with a red left quarter: shows where a rotation put things."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, width // 4, height))
    return image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size, with a tiny broken body: a decompression-bomb probe."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def animated(fmt: str) -> bytes:
    frames = [
        Image.new("RGB", (40, 30), colour) for colour in ((0, 200, 0), (200, 0, 0), (0, 0, 200))
    ]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def palette_with_transparency() -> bytes:
    image = Image.new("P", (30, 30), 0)
    image.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    image.paste(1, (15, 0, 30, 30))  # right half red, left half colour 0 = transparent blue
    return encoded(image, "PNG", transparency=0)


def planar_tiff(samples: int) -> bytes:
    """A valid TIFF as tifffile writes multi-sample data: planar, one plane per sample."""
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((samples, 20, 30), np.uint8), planarconfig="separate")
    return buffer.getvalue()


def refused_port() -> int:
    """A loopback port that nothing listens on (bound, never listening)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sixteen_bit() -> bytes:
    gradient = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (32, 1))
    return encoded(Image.fromarray(gradient), "PNG")  # mode I;16


def float_image() -> Image.Image:
    return Image.fromarray(np.tile(np.linspace(-5.0, 5.0, 40, dtype=np.float32), (30, 1)), "F")


WHITE = (255, 255, 255)
RED = (255, 0, 0)

CORPUS: list[Case] = [
    Case("zero-bytes", lambda t, u: b"", MediaError, "empty"),
    Case("truncated-jpeg", lambda t, u: encoded(photo(300, 200), "JPEG")[:400], MediaError),
    Case(
        "corrupt-png-header-crc",
        lambda t, u: corrupt_ihdr_crc(encoded(photo(64, 64), "PNG")),
        MediaError,
        "damaged PNG",
    ),
    Case(
        "truncated-png",
        lambda t, u: (lambda d: d[: len(d) // 2])(encoded(photo(64, 64), "PNG")),
        MediaError,
        "truncated|broken",
    ),
    Case("plain-text", lambda t, u: b"just some words, not a picture", MediaError, "text"),
    Case("pdf", lambda t, u: b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n", MediaError, "PDF"),
    Case(
        "svg",
        lambda t, u: b'<svg xmlns="http://www.w3.org/2000/svg" width="10"/>',
        MediaError,
        "SVG",
    ),
    Case(
        "html-bytes",
        lambda t, u: b"<!DOCTYPE html><html><body>404</body></html>",
        MediaError,
        "HTML",
    ),
    Case(
        "bomb-header-2.5-gigapixels",
        lambda t, u: png_header_only(50_000, 50_000),
        ImageTooLargeError,
    ),
    Case(
        "bomb-header-100-megapixels",
        lambda t, u: png_header_only(10_000, 10_000),
        ImageTooLargeError,
    ),
    Case("missing-file", lambda t, u: str(t / "nope.png"), MediaError, "no such image file"),
    Case("directory", lambda t, u: t, MediaError, "is a folder, not an image file"),
    Case("numpy-float64", lambda t, u: np.zeros((8, 8)), MediaError, "uint8"),
    Case("numpy-two-channels", lambda t, u: np.zeros((8, 8, 2), np.uint8), MediaError, "HxWx3"),
    Case("text-mode-file", lambda t, u: io.StringIO("hello"), MediaError, "text mode"),
    Case("data-uri-text", lambda t, u: "data:text/plain;base64,aGVsbG8=", MediaError, "text/plain"),
    Case("data-uri-broken-base64", lambda t, u: "data:image/png;base64,***", MediaError, "base64"),
    Case("url-404", lambda t, u: f"{u}/missing.png", MediaDownloadError, "HTTP 404"),
    Case("url-html-error-page", lambda t, u: f"{u}/error.html", MediaDownloadError, "text/html"),
    Case(
        "url-wrong-content-type",
        lambda t, u: f"{u}/data.json",
        MediaDownloadError,
        "application/json",
    ),
    Case("url-too-large-declared", lambda t, u: f"{u}/huge-declared", MediaDownloadError, "limit"),
    Case("url-too-large-streamed", lambda t, u: f"{u}/huge-streamed", MediaDownloadError, "limit"),
    Case("url-slow", lambda t, u: f"{u}/slow.png", MediaDownloadError, "longer than"),
    Case(
        "url-refused-names-the-port",
        lambda t, u: f"http://127.0.0.1:{refused_port()}/x.png",
        MediaDownloadError,
        r"cannot fetch http://127\.0\.0\.1:\d+/x\.png",
    ),
    Case(
        "tiff-planar-multi-sample",
        lambda t, u: planar_tiff(5),
        MediaError,
        "a TIFF of a kind Pillow does not support",
    ),
    # -- odd, but usable ------------------------------------------------------------------------
    Case(
        "one-pixel",
        lambda t, u: encoded(Image.new("RGB", (1, 1), RED), "PNG"),
        Expect(size=(28, 28), format="PNG", pixel=((13, 13), RED)),
    ),
    Case(
        "10000x10",
        lambda t, u: encoded(Image.new("RGB", (10_000, 10), RED), "PNG"),
        Expect(size=(10_000, 50), format="PNG", pixel=((5000, 0), WHITE)),
    ),
    Case(
        "10x10000",
        lambda t, u: encoded(Image.new("RGB", (10, 10_000), RED), "PNG"),
        Expect(size=(50, 10_000), format="PNG", pixel=((25, 5000), RED)),
    ),
    Case(
        "16-bit-png",
        lambda t, u: sixteen_bit(),
        Expect(size=(64, 32), format="PNG", pixel=((63, 0), WHITE)),
    ),
    Case(
        "float-image",
        lambda t, u: float_image(),
        Expect(size=(40, 30), format="PNG", pixel=((39, 0), WHITE)),
    ),
    Case(
        "cmyk-jpeg",
        lambda t, u: encoded(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG"),
        Expect(size=(40, 30), format="JPEG"),
    ),
    Case(
        "palette-with-transparency",
        lambda t, u: palette_with_transparency(),
        Expect(size=(30, 30), format="PNG", pixel=((2, 2), WHITE)),
    ),
    Case(
        "rgba-half-transparent",
        lambda t, u: encoded(Image.new("RGBA", (30, 30), (255, 0, 0, 0)), "PNG"),
        Expect(size=(30, 30), format="PNG", pixel=((5, 5), WHITE)),
    ),
    Case(
        "la-grey-alpha",
        lambda t, u: encoded(Image.new("LA", (30, 30), (0, 255)), "PNG"),
        Expect(size=(30, 30), format="PNG", pixel=((5, 5), (0, 0, 0))),
    ),
    Case(
        "one-bit",
        lambda t, u: encoded(Image.new("1", (30, 30), 1), "PNG"),
        Expect(size=(30, 30), format="PNG", pixel=((5, 5), WHITE)),
    ),
    Case(
        "grayscale-jpeg",
        lambda t, u: encoded(Image.new("L", (40, 30), 128), "JPEG"),
        Expect(size=(40, 30), format="JPEG"),
    ),
    Case(
        "animated-gif",
        lambda t, u: animated("GIF"),
        Expect(size=(40, 30), format="PNG", pixel=((5, 5), (0, 200, 0))),
    ),
    Case("animated-webp", lambda t, u: animated("WEBP"), Expect(size=(40, 30), format="JPEG")),
    Case(
        "animated-apng",
        lambda t, u: animated("PNG"),
        Expect(size=(40, 30), format="PNG", pixel=((5, 5), (0, 200, 0))),
    ),
    Case(
        "exif-orientation-6",
        lambda t, u: with_orientation(red_left(80, 40), 6),
        Expect(size=(40, 80), format="JPEG"),
    ),
    Case(
        "exif-orientation-8",
        lambda t, u: with_orientation(red_left(80, 40), 8),
        Expect(size=(40, 80), format="JPEG"),
    ),
    Case(
        "huge-png-screenshot",
        lambda t, u: encoded(screenshot(4000, 3000), "PNG"),
        Expect(aspect=4 / 3, format="PNG"),
    ),
    Case(
        "big-photo-jpeg",
        lambda t, u: encoded(photo(3000, 2000), "JPEG", quality=92),
        Expect(aspect=3 / 2, format="JPEG"),
    ),
    Case(
        "photo-png-over-budget",
        lambda t, u: encoded(photo(1000, 1000), "PNG"),
        Expect(size=(1000, 1000), format="JPEG"),
    ),
    Case(
        "fitting-jpeg-passes-through",
        lambda t, u: encoded(photo(640, 480), "JPEG", quality=90),
        Expect(size=(640, 480), format="JPEG", passthrough=True),
    ),
    Case(
        "fitting-png-path-passes-through",
        lambda t, u: _saved(t, screenshot(300, 200), "PNG"),
        Expect(size=(300, 200), format="PNG", passthrough=True),
    ),
    Case("webp", lambda t, u: encoded(photo(60, 40), "WEBP"), Expect(size=(60, 40), format="JPEG")),
    Case("avif", lambda t, u: encoded(photo(60, 40), "AVIF"), Expect(size=(60, 40), format="JPEG")),
    Case(
        "numpy-gray",
        lambda t, u: np.full((30, 40), 200, np.uint8),
        Expect(size=(40, 30), format="PNG"),
    ),
    Case(
        "numpy-rgb",
        lambda t, u: np.zeros((30, 40, 3), np.uint8),
        Expect(size=(40, 30), format="PNG", pixel=((0, 0), (0, 0, 0))),
    ),
    Case(
        "numpy-rgba",
        lambda t, u: np.zeros((30, 40, 4), np.uint8),
        Expect(size=(40, 30), format="PNG", pixel=((0, 0), WHITE)),
    ),
    Case(
        "binary-file-object",
        lambda t, u: io.BytesIO(encoded(Image.new("RGB", (30, 30), RED), "BMP")),
        Expect(size=(30, 30), format="PNG", pixel=((3, 3), RED)),
    ),
    Case(
        "data-uri-png",
        lambda t, u: (
            "data:image/png;base64,"
            + base64.b64encode(encoded(Image.new("RGB", (30, 30), RED), "PNG")).decode()
        ),
        Expect(size=(30, 30), format="PNG", pixel=((3, 3), RED), passthrough=True),
    ),
    Case(
        "url-image",
        lambda t, u: f"{u}/red.png",
        Expect(size=(30, 30), format="PNG", pixel=((3, 3), RED)),
    ),
    Case(
        "path-tuple",
        lambda t, u: (_saved(t, Image.new("RGB", (30, 30), RED), "BMP"), "my photo.bmp"),
        Expect(size=(30, 30), format="PNG"),
    ),
]


def _saved(tmp: Path, image: Image.Image, fmt: str) -> str:
    path = tmp / f"saved.{fmt.lower()}"
    image.save(path, format=fmt)
    return str(path)
