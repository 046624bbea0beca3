"""Images in, one normalised image file out, ready for ``gradio_client.handle_file``.

Accepted here: a path (``str`` / ``os.PathLike``), ``bytes`` / ``bytearray`` / ``memoryview``,
or a ``PIL.Image.Image``; any item may also be a ``(media, filename)`` tuple as in the seed's
``MediaListType``. The image is decoded with Pillow, converted to RGB and written as PNG into a
private temporary directory (0700, file 0600) that :meth:`PreparedImage.close` removes.

Everything here blocks (file and pixel work): the async core runs it in a worker thread.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from PIL import Image, UnidentifiedImageError

from .errors import MediaError

__all__ = ["ImageInput", "MediaListType", "PreparedImage", "normalise", "open_image", "prepare"]

#: One image as a user holds it.
ImageInput: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image"
#: The seed's media list: images, or ``(image, filename)`` tuples.
MediaListType: TypeAlias = "list[ImageInput | tuple[ImageInput, str | None]]"

_ACCEPTED = "a path (str or os.PathLike), bytes, bytearray, memoryview or a PIL.Image.Image"


def _unwrap(item: Any) -> Any:
    if isinstance(item, tuple):
        if len(item) != 2:
            raise TypeError("a media tuple must be (image, filename)")
        return item[0]
    return item


def open_image(item: Any) -> Image.Image:
    """Open one media item as a PIL image (lazily, not yet decoded)."""
    source = _unwrap(item)
    if isinstance(source, Image.Image):
        return source
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            if not len(source):
                raise MediaError("the image is empty (0 bytes)")
            return Image.open(io.BytesIO(bytes(source)))
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise MediaError(f"no such image file: {path}")
            return Image.open(path)
    except UnidentifiedImageError as exc:
        raise MediaError(f"not an image Pillow can read: {exc}") from exc
    except OSError as exc:
        raise MediaError(f"cannot read the image: {exc}") from exc
    raise TypeError(f"cannot use {type(source).__name__} as an image; give {_ACCEPTED}")


def normalise(image: Image.Image) -> Image.Image:
    """Decode ``image`` and return it in RGB (transparency composited on white)."""
    try:
        image.load()
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            return background
        return image.convert("RGB") if image.mode != "RGB" else image
    except OSError as exc:
        raise MediaError(f"the image data is broken: {exc}") from exc


@dataclass(slots=True)
class PreparedImage:
    """A normalised image on disk; remove it with :meth:`close` once the job is over."""

    path: Path
    width: int
    height: int
    sha256: str  #: of the RGB pixel bytes, as the replica Space reports it

    def close(self) -> None:
        shutil.rmtree(self.path.parent, ignore_errors=True)


def prepare(item: Any) -> PreparedImage:
    """Open, normalise and write one media item to a private temporary PNG file."""
    source = open_image(item)
    try:
        image = normalise(source)
        directory = Path(tempfile.mkdtemp(prefix="qvq-gradio-"))  # created 0700
        try:
            fd, name = tempfile.mkstemp(suffix=".png", dir=directory)  # created 0600
            with os.fdopen(fd, "wb") as handle:
                image.save(handle, format="PNG")
            digest = hashlib.sha256(image.tobytes()).hexdigest()
            return PreparedImage(Path(name), image.width, image.height, digest)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
    finally:
        if source is not _unwrap(item):  # we opened it, so we close it (not the caller's image)
            source.close()
