"""Images as users hold them, in; one file ready for ``gradio_client.handle_file``, out.

Accepted, everywhere an image goes (``media=``, ``image=``, image parts of messages):

* ``bytes``, ``bytearray``, ``memoryview``: an encoded image (PNG, JPEG, WebP, GIF, AVIF...);
* a binary file-like object (anything with ``read()`` returning bytes);
* a path, as ``str`` or ``os.PathLike``;
* a ``PIL.Image.Image``;
* a NumPy array (only if NumPy is installed): ``uint8`` of shape HxW, HxWx3 or HxWx4;
* a ``data:`` URI (``data:image/png;base64,...``);
* an ``http(s)://`` URL: downloaded with httpx (size cap, timeout, content-type check), then
  normalised like any other image; with ``ImageOptions(url_mode="pass")`` a single URL is given
  to the Space as it is, and the Space fetches it (no normalisation then);
* any of these as a ``(media, filename)`` tuple, as in the seed's ``MediaListType``;
* HEIC/HEIF phone photos with the ``heif`` extra (``pip install 'qvq-gradio[heif]'``).

Anything else raises ``TypeError`` listing the above, before anything is sent.

A Space takes one image per question. Several images follow ``ImageOptions.multi_image``:
``"grid"`` (default) composes one image with tiles labelled "Image 1", "Image 2", ... and tells
the model so in the prompt — it sees every image, each at lower resolution; ``"first"`` sends
only the first (with a :class:`MultipleImagesWarning`) at full budget; ``"error"`` refuses.
An upstream that takes several images (a multimodal chat Space, an OpenAI-compatible endpoint)
gets each normalised on its own (``Upload.parts``), no grid; when that is not known yet, or a
pool holds both kinds, both are prepared.

Normalised images go to a private temporary directory (0700, files 0600) that is removed when
the stream ends: on success, error or cancellation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import shutil
import tempfile
import urllib.parse
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import anyio
import anyio.to_thread
from PIL import Image

from ._secrets import register_url
from .errors import ImageTooLargeError, MediaError, MediaTypeError
from .fetch import download, public_url
from .imaging import ImageOptions, Source, compose_grid, normalise, open_image

__all__ = [
    "ImageInput",
    "ImageOptions",
    "Layout",
    "MediaItem",
    "MediaListType",
    "MultipleImagesWarning",
    "Original",
    "Part",
    "Upload",
    "classify",
    "load",
    "prepare_upload",
]

#: One image as a user holds it (see the module docstring for every accepted kind).
ImageInput: TypeAlias = Any
#: The seed's media list: images, or ``(image, filename)`` tuples.
MediaListType: TypeAlias = "list[ImageInput | tuple[ImageInput, str | None]]"

ACCEPTED = (
    "bytes, bytearray, memoryview, a binary file-like object, a path (str or os.PathLike), "
    "a PIL.Image.Image, a NumPy uint8 array (HxW, HxWx3, HxWx4), a data: URI or an "
    "http(s) URL, or a (media, filename) tuple of one of these"
)
_HEIF_BRANDS = (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftyphevc", b"ftyphevx")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class MultipleImagesWarning(UserWarning):
    """Several images were given and only the first is sent (``multi_image="first"``)."""


@dataclass(frozen=True)
class MediaItem:
    """One image input, classified but not yet read."""

    kind: Literal["bytes", "path", "file", "pil", "array", "data", "url"]
    value: Any
    name: str | None = None


def _is_numpy_array(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "__array_interface__")


def classify(item: Any) -> MediaItem:
    """Recognise what ``item`` is, without reading it; :class:`MediaTypeError` (a
    ``TypeError``) for anything unsupported."""
    name: str | None = None
    if isinstance(item, tuple):
        if len(item) != 2 or not (item[1] is None or isinstance(item[1], str)):
            raise MediaTypeError("a media tuple must be (image, filename or None)")
        item, name = item
    if isinstance(item, (bytes, bytearray, memoryview)):
        return MediaItem("bytes", item, name)
    if isinstance(item, str):
        lowered = item[:8].lower()
        if lowered.startswith("data:"):
            return MediaItem("data", item, name)
        if lowered.startswith(("http://", "https://")):
            register_url(item)  # a signed URL's signature never reaches a message or log
            return MediaItem("url", item, name or _url_name(item))
        return MediaItem("path", Path(item), name or Path(item).name)
    if isinstance(item, os.PathLike):
        path = Path(os.fspath(item))
        return MediaItem("path", path, name or path.name)
    if isinstance(item, Image.Image):
        return MediaItem("pil", item, name)
    if _is_numpy_array(item):
        return MediaItem("array", item, name)
    if callable(getattr(item, "read", None)):
        return MediaItem("file", item, name or getattr(item, "name", None))
    raise MediaTypeError(f"cannot use {type(item).__name__} as an image; accepted: {ACCEPTED}")


def _url_name(url: str) -> str:
    return Path(urllib.parse.urlsplit(url).path).name or "image"


# -- reading ------------------------------------------------------------------------------------


def _capped(data: bytes, limit: int | None, what: str) -> bytes:
    if limit is not None and len(data) > limit:
        raise ImageTooLargeError(f"{what} is {len(data):,} bytes, over the {limit:,}-byte limit")
    return data


def _from_data_uri(uri: str, limit: int | None = None) -> bytes:
    header, comma, payload = uri.partition(",")
    if not comma:
        raise MediaError("a data: URI needs a comma before its data")
    meta = header[5:].split(";")
    mime = meta[0].strip().lower()
    if mime and not mime.startswith("image/"):
        raise MediaError(f"the data: URI holds {mime}, not an image")
    base64_data = "base64" in (part.strip().lower() for part in meta[1:])
    # Refused before decoding: the decoded size is at least this (3 bytes per 4 characters).
    least = len(payload) * 3 // 4 - 2 if base64_data else len(payload) // 3
    if limit is not None and least > limit:
        raise ImageTooLargeError(
            f"the data: URI's image is over {least:,} bytes, over the {limit:,}-byte limit"
        )
    try:
        if base64_data:
            data = base64.b64decode(payload, validate=True)
        else:
            data = urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"the data: URI's base64 data is broken: {exc}") from exc
    return _capped(data, limit, "the data: URI's image")


def _from_array(array: Any) -> Image.Image:
    shape = tuple(array.shape)
    if str(array.dtype) != "uint8" or not (
        len(shape) == 2 or (len(shape) == 3 and shape[2] in (3, 4))
    ):
        raise MediaError(
            f"a NumPy image must be uint8 of shape HxW, HxWx3 or HxWx4; got {array.dtype} "
            f"of shape {shape}"
        )
    return Image.fromarray(array)


def _read_file(handle: Any) -> bytes:
    data = handle.read()
    if isinstance(data, str):
        raise MediaError("the file-like object is open in text mode; open it with 'rb'")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MediaError(f"the file-like object's read() gave {type(data).__name__}, not bytes")
    return bytes(data)


def _read_local(item: MediaItem, limit: int | None) -> Source:
    """Read a non-URL item into something :func:`normalise` takes (blocking); ``limit``: the
    largest image held in memory (bytes, a file-like object, a data: URI)."""
    if item.kind == "bytes":
        return _capped(bytes(item.value), limit, "the image")
    if item.kind == "path":
        path: Path = item.value
        if path.is_dir():
            raise MediaError(
                f"{path} is a folder, not an image file (to ask about every image in a "
                "folder, use qvq batch FOLDER --prompt ... or qvq_gradio.batch)"
            )
        if not path.is_file():
            raise MediaError(f"no such image file: {path}")
        return path
    if item.kind == "file":
        return _capped(_read_file(item.value), limit, "the file's image")
    if item.kind == "pil":
        return item.value  # type: ignore[no-any-return]
    if item.kind == "array":
        return _from_array(item.value)
    if item.kind == "data":
        return _from_data_uri(item.value, limit)
    raise AssertionError(item.kind)  # pragma: no cover


def _register_heif(head: bytes) -> bool:
    """Make Pillow read HEIC/HEIF when the source is one; False when it is not HEIF."""
    if head[4:12] not in _HEIF_BRANDS:
        return False
    try:
        import pillow_heif
    except ImportError as exc:
        raise MediaError(
            "this is a HEIC/HEIF image; reading it needs the 'heif' extra: "
            "pip install 'qvq-gradio[heif]'"
        ) from exc
    pillow_heif.register_heif_opener()
    return True


def _prepare_heif(source: Source) -> None:
    if isinstance(source, Image.Image):
        return
    if isinstance(source, bytes):
        head = source[:16]
    else:
        with open(source, "rb") as handle:
            head = handle.read(16)
    _register_heif(head)


def load(item: MediaItem, options: ImageOptions | None = None) -> Source:
    """Read a local item (blocking); URLs are fetched by :func:`download` instead."""
    source = _read_local(item, options.max_image_bytes if options is not None else None)
    _prepare_heif(source)
    return source


# -- the upload ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Original:
    """An image as the user gave it: its name (a file's, or a URL without its query), and for
    what was read as bytes (a file, bytes, a data: URI, a download) their size and sha256."""

    name: str | None
    size: int | None = None
    sha256: str | None = None


def _original(item: MediaItem, source: Source | None) -> Original:
    """What the user gave, described (blocking: a file is hashed)."""
    name = public_url(item.value) if item.kind == "url" else item.name
    if isinstance(source, bytes):
        return Original(name, len(source), hashlib.sha256(source).hexdigest())
    if isinstance(source, Path):
        digest = hashlib.sha256()
        with open(source, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return Original(name, source.stat().st_size, digest.hexdigest())
    return Original(name)


@dataclass(frozen=True)
class Part:
    """One of several images, normalised on its own (for an upstream that takes several)."""

    path: str
    sha256: str
    size: int


#: What an upload is made of when several images come: ``one`` image for a Space (the grid),
#: ``parts`` for upstreams that take several, ``both`` for a pool of the two kinds.
Layout: TypeAlias = Literal["one", "parts", "both"]


@dataclass
class Upload:
    """What is handed to ``handle_file``: a file path or (``url_mode="pass"``) a URL.

    ``note`` is a sentence for the prompt (set when several images became one grid).
    ``sha256``, ``size`` and ``name`` describe the bytes uploaded (the answer history keeps
    them; a passed-through URL has no bytes, and its ``name`` is the URL without its query
    string or user info, which may hold a signature). ``originals`` describe each image as the
    user gave it (a resized photo's upload is not the user's file). :attr:`identity` names the
    image for the request cache in every mode. :meth:`close` removes the private temporary
    directory, if one was made.
    """

    target: str = ""
    note: str | None = None
    directory: Path | None = field(default=None, repr=False)
    sha256: str | None = None
    size: int | None = None
    name: str | None = None
    originals: list[Original] = field(default_factory=list)
    #: Several images each on its own (``layout`` ``parts`` or ``both``); empty otherwise
    parts: list[Part] = field(default_factory=list)

    @property
    def identity(self) -> str | None:
        """What identifies the image sent: its bytes' sha256, or for a URL passed through to
        the Space a hash of the whole URL (the Space fetches what it names)."""
        if self.sha256 is not None:
            return self.sha256
        if self.target:
            return "url:" + hashlib.sha256(self.target.encode()).hexdigest()
        return None

    def close(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def _file_name(name: str | None, fmt: str) -> str:
    stem = _SAFE_NAME.sub("_", Path(name).stem if name else "")[:64].strip("._") or "image"
    return f"{stem}.{'jpg' if fmt == 'JPEG' else fmt.lower()}"


def _save(upload: Upload, data: bytes, name: str) -> str:
    """``data`` into a new file of the upload's private directory; its path."""
    # mkdtemp makes the directory 0700; the file is created 0600. The directory is recorded
    # on the Upload before anything is written, so whoever holds the Upload can remove it.
    if upload.directory is None:
        upload.directory = Path(tempfile.mkdtemp(prefix="qvq-gradio-"))
    path = upload.directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return str(path)


def _placed(
    upload: Upload, source: Source, name: str | None, options: ImageOptions,
    original: Original | None, prefix: str = "",
) -> Part:
    """``source`` normalised into a new file of the upload's private directory — or, sent as
    the user gave it (``original`` describes it, hashed already), their own file, not copied —
    with its sha256 and size."""
    result = normalise(source, options)
    if result.passthrough:
        assert original is not None
        assert original.sha256 is not None
        assert original.size is not None
        if isinstance(source, Path):
            return Part(str(source), original.sha256, original.size)
        assert isinstance(source, bytes)
        data, digest = source, original.sha256
    else:
        assert result.data is not None
        data, digest = result.data, hashlib.sha256(result.data).hexdigest()
    return Part(_save(upload, data, prefix + _file_name(name, result.format)), digest, len(data))


def _parts_to(
    upload: Upload, sources: list[Source], names: list[str | None], options: ImageOptions
) -> None:
    """Each image normalised on its own, as the upload's parts."""
    upload.parts = [
        _placed(upload, source, name, options, original, f"{index}-")
        for index, (source, name, original) in enumerate(
            zip(sources, names, upload.originals, strict=True), 1
        )
    ]


def _normalise_to(upload: Upload, source: Source, name: str | None, options: ImageOptions) -> None:
    """``source`` as the upload's one file (one image, or several as a grid)."""
    one = upload.originals[0] if len(upload.originals) == 1 else None
    placed = _placed(upload, source, name, options, one)
    upload.name = name
    upload.target, upload.sha256, upload.size = placed.path, placed.sha256, placed.size


def _grid_to(upload: Upload, sources: list[Source], options: ImageOptions) -> None:
    images = [open_image(source) for source in sources]
    try:
        for image in images:
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
        grid = compose_grid(images, options)
    finally:
        for image, source in zip(images, sources, strict=True):
            if image is not source:
                image.close()
    _normalise_to(upload, grid, "images-grid", options)


async def _source_of(item: MediaItem, options: ImageOptions, proxy: str | None) -> Source:
    if item.kind == "url":
        data = await download(item.value, options, proxy)
        await anyio.to_thread.run_sync(_prepare_heif, data)
        return data
    return await anyio.to_thread.run_sync(load, item, options)


async def prepare_upload(
    items: Sequence[MediaItem],
    options: ImageOptions,
    *,
    proxy: str | None = None,
    layout: Layout = "one",
) -> Upload | None:
    """Turn classified items into one :class:`Upload` (or ``None`` when there are none).

    ``layout``: what several images become (see :data:`Layout`). On any failure, cancellation
    included, whatever was written is removed before re-raising.
    """
    if not items:
        return None
    chosen = list(items)
    if len(chosen) > 1:
        if options.multi_image == "error" and layout != "parts":
            raise MediaError(
                f"{len(chosen)} images given; the Space takes one per question "
                "(use multi_image='grid' to send them as one labelled grid)"
            )
        if options.multi_image == "first":
            warnings.warn(
                f"{len(chosen)} images given; the Space takes one per question, "
                "so only the first is sent",
                MultipleImagesWarning,
                stacklevel=3,
            )
            chosen = chosen[:1]
    upload = Upload()
    try:
        if len(chosen) == 1 and chosen[0].kind == "url" and options.url_mode == "pass":
            upload.target = chosen[0].value
            upload.name = public_url(chosen[0].value)
            upload.originals = [Original(upload.name)]
            return upload
        sources = [await _source_of(item, options, proxy) for item in chosen]
        upload.originals = [
            await anyio.to_thread.run_sync(_original, item, source)
            for item, source in zip(chosen, sources, strict=True)
        ]
        if len(sources) == 1:
            await anyio.to_thread.run_sync(
                _normalise_to, upload, sources[0], chosen[0].name, options
            )
            return upload
        if layout != "one":
            names = [item.name for item in chosen]
            await anyio.to_thread.run_sync(_parts_to, upload, sources, names, options)
        if layout == "parts":
            digests = ",".join(part.sha256 for part in upload.parts)
            upload.sha256 = hashlib.sha256(f"parts:{digests}".encode()).hexdigest()
            upload.size = sum(part.size for part in upload.parts)
            upload.name = f"{len(upload.parts)}-images"
        else:
            await anyio.to_thread.run_sync(_grid_to, upload, sources, options)
            upload.note = (
                f"[The image is a grid of {len(sources)} pictures, labelled "
                f'"Image 1" to "Image {len(sources)}" in reading order.]'
            )
        return upload
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(upload.close)
        raise
