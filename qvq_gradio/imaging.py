"""Pixel work: one image in, one image the QVQ Space can use out. Pure: no network, no globals.

:func:`normalise` takes an opened source (encoded bytes, a file path or a PIL image) and:

1. opens it lazily and refuses decompression bombs from the header alone (typed error);
2. takes the first frame of an animation (GIF, WebP, APNG): the model sees one still image;
3. applies the EXIF orientation;
4. converts every mode to RGB: transparency is composited on white; CMYK converted; 16-bit and
   32-bit integer images scaled to 8 bits; float images stretched to their range; 1-bit expanded;
5. downscales (never upscales) to ``max_pixels``, decoding large JPEGs at reduced size
   (``Image.draft``) instead of decoding everything and then shrinking;
6. pads (never stretches) to Qwen2-VL's limits: sides of at least 28 px, aspect ratio at most
   200:1 (its image processor rejects anything else);
7. encodes: lossless PNG for sources that were lossless (screenshots, line art, PNG, GIF...)
   while it fits ``byte_budget``; JPEG for photos or when PNG would not fit.

A source that already fits — JPEG or PNG, RGB, no EXIF rotation, one frame, within every limit —
is passed through as it is, never re-encoded.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from .errors import ImageTooLargeError, MediaError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageOptions",
    "Normalised",
    "Source",
    "check_pixels",
    "compose_grid",
    "normalise",
    "open_image",
    "to_rgb",
]

#: Qwen2-VL-family processors see an image as 28x28-pixel patches, one visual token each.
#: 1280 tokens (~1 megapixel) is the budget Qwen's documentation suggests trading detail for
#: speed; more costs GPU seconds of the Space's ZeroGPU quota without much gain for reasoning.
DEFAULT_MAX_PIXELS = 1280 * 28 * 28
_LOSSLESS = frozenset({"PNG", "GIF", "BMP", "TIFF", "PPM", "ICO", "TGA", "QOI", "PCX", None})
_WHITE = (255, 255, 255)

#: What :func:`normalise` reads: encoded bytes, a file path, or an image already in memory.
Source: TypeAlias = "bytes | Path | Image.Image"


@dataclass(frozen=True)
class ImageOptions:
    """How images are prepared before upload; defaults suit QVQ-72B.

    Args:
        max_pixels: downscale larger images to about this many pixels (aspect kept).
        min_side: pad images with a smaller side up to this (Qwen2-VL rejects < 28 px).
        max_aspect: pad images more elongated than this ratio (Qwen2-VL rejects > 200:1).
        byte_budget: the largest upload; PNG that would exceed it becomes JPEG.
        jpeg_quality: quality of the JPEG encoding.
        max_image_pixels: refuse images larger than this before decoding them (None: Pillow's
            own limit, ``PIL.Image.MAX_IMAGE_PIXELS``).
        multi_image: several images in one question: ``"grid"`` (one labelled composite),
            ``"first"`` (use the first, warn) or ``"error"``.
        url_mode: ``"download"`` (fetch and normalise here) or ``"pass"`` (give the URL to the
            Space, which fetches it itself, without normalisation).
        max_download_bytes: the largest image fetched from a URL.
        download_timeout: seconds for fetching one URL.
        allow_private_urls: fetch image URLs from any address (the caller names them); False
            fetches only from public addresses, each redirect checked too: what a server does
            with URLs its clients name (``qvq serve --allow-private-urls`` turns it back on).
        max_image_bytes: the largest encoded image taken from a ``data:`` URI, bytes or a
            file-like object (None: no limit; URLs have ``max_download_bytes``).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = 28
    max_aspect: float = 200.0
    byte_budget: int = 1_500_000
    jpeg_quality: int = 90
    max_image_pixels: int | None = None
    multi_image: Literal["grid", "first", "error"] = "grid"
    url_mode: Literal["download", "pass"] = "download"
    max_download_bytes: int = 20_000_000
    download_timeout: float = 30.0
    allow_private_urls: bool = True
    max_image_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.max_pixels < self.min_side * self.min_side:
            raise ValueError("max_pixels must allow at least one min_side x min_side image")
        if self.multi_image not in ("grid", "first", "error"):
            raise ValueError(f"multi_image must be grid, first or error, not {self.multi_image!r}")
        if self.url_mode not in ("download", "pass"):
            raise ValueError(f"url_mode must be download or pass, not {self.url_mode!r}")


@dataclass(frozen=True)
class Normalised:
    """The result: ``data`` to upload (``None`` when the source file is uploaded unchanged)."""

    data: bytes | None
    format: str  #: "PNG" or "JPEG"
    width: int
    height: int
    passthrough: bool  #: the source is uploaded exactly as given
    source_format: str | None


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
)
_TIFF = (b"II*\x00", b"MM\x00*")


def _describe_non_image(head: bytes) -> str:
    if head.startswith(_TIFF):
        # Pillow identifies a TIFF from its tags: a header it reads but a layout it rejects
        # (planar data with 2 or 4+ samples, as tifffile writes; odd bit depths) is a valid
        # file of a kind Pillow does not support, not a damaged one.
        return (
            "a TIFF of a kind Pillow does not support (for example planar or multi-sample "
            "data, as tifffile writes); save it as PNG or an 8-bit RGB TIFF first"
        )
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return f"a damaged {name} file (its data does not decode)"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a damaged WebP file (its data does not decode)"
    text = head.lstrip()[:64].lower()
    if head.startswith(b"%PDF"):
        return "a PDF document, not an image"
    if text.startswith((b"<svg", b"<?xml")) and b"<svg" in head[:1024].lower():
        return "an SVG drawing; Pillow reads raster images only (render it to PNG first)"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page, not an image"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftyphevc"):
        return "a HEIC/HEIF image: install the 'heif' extra (pip install 'qvq-gradio[heif]')"
    try:
        head.decode("utf-8")
        return "text, not an image"
    except UnicodeDecodeError:
        return "not an image format Pillow can read"


def open_image(source: Source) -> Image.Image:
    """Open ``source`` lazily (header only); typed errors for what is not a usable image."""
    if isinstance(source, Image.Image):
        return source
    try:
        with warnings.catch_warnings():
            # Our own limit is checked right after; Pillow's warning band would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if isinstance(source, bytes):
                if not source:
                    raise MediaError("the image is empty (0 bytes)")
                return Image.open(io.BytesIO(source))
            return Image.open(source)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"refused a possible decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        head = source[:2048] if isinstance(source, bytes) else _head(source)
        if not head:
            raise MediaError("the image is empty (0 bytes)") from exc
        raise MediaError(f"cannot use this image: it is {_describe_non_image(head)}") from exc
    except OSError as exc:
        raise MediaError(f"cannot read the image: {exc}") from exc


def _head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(2048)


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # broken EXIF blocks must not stop an otherwise good image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _scaled(value: float, fit: float) -> int:
    # Floor, not round: rounding both sides up can overshoot the pixel budget.
    return max(1, int(value * fit))


def target_size(width: int, height: int, options: ImageOptions) -> tuple[int, int]:
    """The size to downscale to (never larger), so that the padded result fits max_pixels."""
    fit = min(1.0, math.sqrt(options.max_pixels / (width * height)))
    w, h = _scaled(width, fit), _scaled(height, fit)
    padded_w, padded_h = padded_size(w, h, options)
    if padded_w * padded_h > options.max_pixels:
        # Padding an elongated image adds pixels: shrink until the padded canvas fits.
        shrink = math.sqrt(options.max_pixels / (padded_w * padded_h))
        w, h = _scaled(w, shrink), _scaled(h, shrink)
    return w, h


def padded_size(width: int, height: int, options: ImageOptions) -> tuple[int, int]:
    """The canvas after padding to ``min_side`` and ``max_aspect``."""
    w, h = max(width, options.min_side), max(height, options.min_side)
    if w / h > options.max_aspect:
        h = math.ceil(w / options.max_aspect)
    elif h / w > options.max_aspect:
        w = math.ceil(h / options.max_aspect)
    return w, h


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: transparency on white, deep images scaled to 8 bits."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _deep_to_rgb(image)
    return image.convert("RGB")  # P, L, 1, CMYK, YCbCr, LAB, HSV


def _deep_to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I;16"):
        image = image.convert("I")
    extrema = image.getextrema()  # single-band: (low, high)
    low, high = float(extrema[0]), float(extrema[1])  # type: ignore[arg-type]
    if image.mode == "F":
        # Floats have no fixed range: [0, 1] is a convention, anything else is stretched.
        if low >= 0 and high <= 1:
            scale, offset = 255.0, 0.0
        else:
            scale = 255.0 / (high - low) if high > low else 1.0
            offset = -low * scale
    elif high <= 255 and low >= 0:
        scale, offset = 1.0, 0.0
    elif high <= 65535 and low >= 0:
        scale, offset = 1 / 257, 0.0  # 16-bit: 65535 -> 255
    else:
        scale = 255.0 / (high - low) if high > low else 1.0
        offset = -low * scale
    eight_bit = image.point(lambda value: value * scale + offset)
    return eight_bit.convert("L").convert("RGB")


def _pad(image: Image.Image, options: ImageOptions) -> Image.Image:
    size = padded_size(image.width, image.height, options)
    if size == image.size:
        return image
    canvas = Image.new("RGB", size, _WHITE)
    canvas.paste(image, ((size[0] - image.width) // 2, (size[1] - image.height) // 2))
    return canvas


def _encode(image: Image.Image, lossless: bool, options: ImageOptions) -> tuple[bytes, str]:
    if lossless:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=6)
        if buffer.tell() <= options.byte_budget:
            return buffer.getvalue(), "PNG"
    quality = options.jpeg_quality
    while True:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality, optimize=True)
        if buffer.tell() <= options.byte_budget:
            return buffer.getvalue(), "JPEG"
        if quality > 60:
            quality -= 10
        else:  # pathological noise: shrink until it fits
            image = image.resize((_scaled(image.width, 0.8), _scaled(image.height, 0.8)))


def _fits(image: Image.Image, options: ImageOptions, size_in_bytes: int | None) -> bool:
    w, h = image.size
    return (
        image.format in ("JPEG", "PNG")
        and image.mode == "RGB"
        and "transparency" not in image.info
        and getattr(image, "n_frames", 1) == 1
        and _orientation(image) == 1
        and w * h <= options.max_pixels
        and padded_size(w, h, options) == (w, h)
        and size_in_bytes is not None
        and size_in_bytes <= options.byte_budget
    )


def normalise(source: Source, options: ImageOptions | None = None) -> Normalised:
    """Turn ``source`` into an image the Space accepts (see the module docstring)."""
    options = options or ImageOptions()
    image = open_image(source)
    try:
        return _normalise(image, source, options)
    except (MediaError, TypeError):
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise MediaError(f"the image data is broken: {exc}") from exc
    except MemoryError as exc:
        raise ImageTooLargeError("not enough memory to decode this image") from exc
    finally:
        if image is not source:
            image.close()


def check_pixels(image: Image.Image, options: ImageOptions) -> None:
    """:class:`ImageTooLargeError` for an opened (not yet decoded) image over the pixel limit."""
    limit = options.max_image_pixels or Image.MAX_IMAGE_PIXELS
    if limit and image.width * image.height > limit:
        raise ImageTooLargeError(
            f"the image is {image.width}x{image.height} = {image.width * image.height:,} pixels, "
            f"over the {limit:,}-pixel limit for decoding (a possible decompression bomb)"
        )


def _normalise(image: Image.Image, source: Source, options: ImageOptions) -> Normalised:
    check_pixels(image, options)
    source_format = image.format
    nbytes = (
        len(source)
        if isinstance(source, bytes)
        else (source.stat().st_size if isinstance(source, Path) else None)
    )
    if not isinstance(source, Image.Image) and _fits(image, options, nbytes):
        image.load()  # decode once: a truncated file must fail here, not at the Space
        return Normalised(None, str(image.format), image.width, image.height, True, source_format)

    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    orientation = _orientation(image)
    swapped = orientation in (5, 6, 7, 8)
    upright = (image.height, image.width) if swapped else image.size
    want = target_size(*upright, options)
    if image.format == "JPEG" and want != upright:
        stored_want = (want[1], want[0]) if swapped else want
        image.draft("RGB", stored_want)  # decode at 1/2, 1/4 or 1/8 scale when that suffices
    image.load()
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    image = to_rgb(image)
    if image.size != want and (image.width > want[0] or image.height > want[1]):
        image = image.resize(want, Image.Resampling.LANCZOS, reducing_gap=3.0)
    image = _pad(image, options)
    data, fmt = _encode(image, source_format in _LOSSLESS, options)
    return Normalised(data, fmt, image.width, image.height, False, source_format)


def _label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def compose_grid(images: list[Image.Image], options: ImageOptions | None = None) -> Image.Image:
    """One RGB image with ``images`` as tiles labelled "Image 1", "Image 2", ... in reading order.

    Each tile gets an equal share of ``max_pixels``; the grid is as square as possible.
    """
    options = options or ImageOptions()
    for image in images:
        check_pixels(image, options)  # before any of them is decoded
    count = len(images)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    label_h = 36
    per_tile = options.max_pixels // (cols * rows)
    tiles: list[Image.Image] = []
    for image in images:
        tile = to_rgb(ImageOps.exif_transpose(image))
        fit = min(1.0, math.sqrt(per_tile / (tile.width * tile.height)))
        if fit < 1.0:
            tile = tile.resize(
                (_scaled(tile.width, fit), _scaled(tile.height, fit)), Image.Resampling.LANCZOS
            )
        tiles.append(tile)
    cell_w = max(max(t.width for t in tiles), 120)
    cell_h = max(t.height for t in tiles) + label_h
    grid = Image.new("RGB", (cols * cell_w, rows * cell_h), _WHITE)
    draw = ImageDraw.Draw(grid)
    font = _label_font(24)
    for index, tile in enumerate(tiles):
        x, y = (index % cols) * cell_w, (index // cols) * cell_h
        draw.text((x + 6, y + 4), f"Image {index + 1}", fill=(0, 0, 0), font=font)
        grid.paste(tile, (x + (cell_w - tile.width) // 2, y + label_h))
    return grid
