"""The media pipeline: the corpus at the pure level and end to end, grids, temp files, extras."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import os
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from qvq_gradio import (
    AppError,
    ImageOptions,
    ImageTooLargeError,
    MediaError,
    MultipleImagesWarning,
    Session,
)
from qvq_gradio.imaging import DEFAULT_MAX_PIXELS, normalise
from qvq_gradio.media import classify, load
from qvq_gradio.replica import ReplicaProcess

from .conftest import ended
from .media_corpus import CORPUS, RED, Case, Expect, encoded, photo

pytestmark = [
    pytest.mark.filterwarnings("error::qvq_gradio.MultipleImagesWarning"),
    pytest.mark.adapter,  # uploads go through gradio_client
]

# -- a local image server for the URL cases --------------------------------------------------------

_RELEASE = threading.Event()


_SERVED: list[str] = []


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, kind: str, body: bytes, length: int | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        _SERVED.append(self.path)
        if self.path == "/red.png":
            self._send(200, "image/png", encoded(Image.new("RGB", (30, 30), RED), "PNG"))
        elif self.path == "/error.html":
            # A captive portal or CDN error page served with 200: only its type gives it away.
            self._send(200, "text/html", b"<html><body>Bad gateway</body></html>")
        elif self.path == "/data.json":
            self._send(200, "application/json", b'{"not": "an image"}')
        elif self.path == "/huge-declared":
            self._send(200, "image/png", b"", length=10**9)
        elif self.path == "/huge-streamed":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            # 30 MB with no length header; the client hangs up once over its limit.
            with contextlib.suppress(ConnectionError):
                for _ in range(30):
                    self.wfile.write(b"\0" * 1_000_000)
        elif self.path == "/slow.png":
            _RELEASE.wait(30)  # until the test run ends: slower than any download timeout
        else:
            self._send(404, "text/plain", b"not found")


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _RELEASE.set()
    server.shutdown()
    server.server_close()


OPTIONS = ImageOptions(download_timeout=1.0, max_download_bytes=5_000_000)


def _pixels_sha(image: Image.Image) -> str:
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def _check(expect: Expect, image: Image.Image, passthrough: bool) -> None:
    if expect.size is not None:
        assert image.size == expect.size
    if expect.aspect is not None:
        assert image.width * image.height <= DEFAULT_MAX_PIXELS
        assert abs(image.width / image.height - expect.aspect) < 0.01
        assert image.width * image.height > DEFAULT_MAX_PIXELS * 0.98  # not shrunk needlessly
    if expect.format is not None:
        assert image.format == expect.format
    if expect.pixel is not None:
        where, colour = expect.pixel
        assert image.convert("RGB").getpixel(where) == colour
    if expect.passthrough is not None:
        assert passthrough is expect.passthrough
    assert image.mode == "RGB"
    assert min(image.size) >= 28
    assert max(image.size) / min(image.size) <= 200


# -- the corpus, pure ----------------------------------------------------------------------------


def test_corpus_is_large_enough() -> None:
    assert len([c for c in CORPUS if not isinstance(c.expect, Expect)]) >= 20
    assert len(CORPUS) >= 45


async def _normalised(case: Case, tmp_path: Path, base_url: str) -> tuple[Image.Image, bool]:
    from qvq_gradio.media import _source_of

    item = classify(case.make(tmp_path, base_url))
    source = await _source_of(item, OPTIONS, None)
    result = await anyio.to_thread.run_sync(normalise, source, OPTIONS)
    if result.passthrough:
        if isinstance(source, bytes):
            raw = source
        else:
            raw = await anyio.to_thread.run_sync(Path(source).read_bytes)  # type: ignore[arg-type]
        return Image.open(io.BytesIO(raw)), True
    assert result.data is not None
    return Image.open(io.BytesIO(result.data)), False


@pytest.mark.anyio
@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
async def test_corpus_pure(case: Case, tmp_path: Path, image_server: str) -> None:
    if isinstance(case.expect, Expect):
        image, passthrough = await _normalised(case, tmp_path, image_server)
        _check(case.expect, image, passthrough)
    else:
        with pytest.raises(case.expect, match=case.match):
            await _normalised(case, tmp_path, image_server)


# -- the corpus, end to end: what the Space receives, or nothing at all ----------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
async def test_corpus_end_to_end(
    case: Case,
    tmp_path: Path,
    image_server: str,
    replica: ReplicaProcess,
    marker: str,
    no_blocking: Any,
) -> None:
    prompt = f"{marker} [[replica tokens=1 delay=0]]"
    async with Session(replica.url, image_options=OPTIONS) as session:
        if not isinstance(case.expect, Expect):
            with pytest.raises(case.expect, match=case.match):
                await session.ask(prompt, image=case.make(tmp_path, image_server))
            records = await anyio.to_thread.run_sync(replica.requests)
            assert [r for r in records if marker in r["prompt"]] == []  # nothing was sent
            return
        await session.ask(prompt, image=case.make(tmp_path, image_server))
    received = (await ended(replica, marker))["image"]
    expected, _ = await _normalised(case, tmp_path, image_server)
    assert (received["width"], received["height"]) == expected.size
    assert received["mode"] == "RGB"
    assert received["format"] == expected.format
    assert received["sha256"] == _pixels_sha(expected)


# -- behaviour beyond single images ----------------------------------------------------------------


def test_unsupported_types_list_what_is_accepted() -> None:
    for bad in (12345, 3.5, None, object(), ["nested"], {"a": 1}):
        with pytest.raises(TypeError, match=r"accepted: bytes, bytearray, memoryview"):
            classify(bad)


def test_the_decoding_limit_is_configurable() -> None:
    data = encoded(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageTooLargeError, match="10,000 pixels"):
        normalise(data, ImageOptions(max_image_pixels=5_000))
    assert normalise(data, ImageOptions(max_image_pixels=20_000)).width == 100


def test_large_jpeg_is_decoded_at_reduced_size(mocker: Any) -> None:
    from PIL import JpegImagePlugin

    real_draft = JpegImagePlugin.JpegImageFile.draft
    decoded: list[tuple[int, int]] = []

    def draft(self: Any, mode: Any, size: Any) -> Any:
        result = real_draft(self, mode, size)
        decoded.append(self.size)  # what will actually be decoded
        return result

    mocker.patch.object(JpegImagePlugin.JpegImageFile, "draft", draft)
    result = normalise(encoded(photo(4000, 3000), "JPEG"))
    # The target is ~1156x867: 1/4 scale (1000x750) would be smaller than that, so the smallest
    # scale that still covers it is 1/2 - a quarter of the pixels of a full decode.
    assert decoded == [(2000, 1500)]
    six_k = normalise(encoded(photo(6000, 4000), "JPEG"))
    assert decoded[-1] == (1500, 1000)  # 24 MP: 1/4 scale covers the ~1226x817 target
    assert result.width * result.height <= DEFAULT_MAX_PIXELS
    assert six_k.width * six_k.height <= DEFAULT_MAX_PIXELS


def test_exif_rotation_puts_pixels_where_they_belong() -> None:
    from .media_corpus import red_left, with_orientation

    six = Image.open(io.BytesIO(normalise(with_orientation(red_left(80, 40), 6)).data or b""))
    eight = Image.open(io.BytesIO(normalise(with_orientation(red_left(80, 40), 8)).data or b""))
    # The red left edge of the stored image ends up on top (6 = rotate 90 clockwise to view)
    # or at the bottom (8 = rotate 90 counter-clockwise).
    assert six.getpixel((20, 3))[0] > 200 > six.getpixel((20, 3))[1]  # type: ignore[index]
    assert eight.getpixel((20, 76))[0] > 200 > eight.getpixel((20, 76))[1]  # type: ignore[index]


def test_heic_is_read_with_the_extra(tmp_path: Path) -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    path = tmp_path / "phone.heic"
    photo(120, 80).save(path, format="HEIF")
    result = normalise(load(classify(str(path))))
    assert (result.width, result.height, result.format) == (120, 80, "JPEG")


def test_heic_without_the_extra_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    path = tmp_path / "phone.heic"
    photo(40, 30).save(path, format="HEIF")
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as if not installed
    with pytest.raises(MediaError, match=r"'heif' extra: pip install 'qvq-gradio\[heif\]'"):
        load(classify(path))


@pytest.mark.anyio
async def test_several_images_become_a_labelled_grid(
    session: Session, replica: ReplicaProcess, marker: str
) -> None:
    images = [
        Image.new("RGB", (200, 100), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))
    ]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": f"Compare them. {marker} [[replica tokens=1 delay=0]]"},
                {
                    "type": "image_url",
                    "image_url": {
                        "url": "data:image/png;base64,"
                        + __import__("base64").b64encode(encoded(images[2], "PNG")).decode()
                    },
                },
            ],
        }
    ]
    await session.ask(messages, media=[images[0], (encoded(images[1], "PNG"), "green.png")])
    record = await ended(replica, marker)
    assert record["prompt"].startswith(
        '[The image is a grid of 3 pictures, labelled "Image 1" to "Image 3" in reading order.]\n'
    )
    assert marker in record["prompt"]
    assert (record["image"]["width"], record["image"]["height"]) == (400, 272)  # 2x2 cells


@pytest.mark.anyio
async def test_multi_image_first_warns_and_error_refuses(
    replica: ReplicaProcess, marker: str
) -> None:
    red, green = Image.new("RGB", (50, 50), (255, 0, 0)), Image.new("RGB", (60, 40), (0, 255, 0))
    async with Session(replica.url, image_options=ImageOptions(multi_image="first")) as session:
        with pytest.warns(MultipleImagesWarning, match="only the first"):
            await session.ask(f"{marker} [[replica tokens=1 delay=0]]", media=[red, green])
    received = (await ended(replica, marker))["image"]
    assert (received["width"], received["height"]) == (50, 50)
    async with Session(replica.url, image_options=ImageOptions(multi_image="error")) as session:
        with pytest.raises(MediaError, match="2 images given"):
            await session.ask(f"{marker}-e", media=[red, green])
    records = await anyio.to_thread.run_sync(replica.requests)
    assert [r for r in records if f"{marker}-e" in r["prompt"]] == []


# -- temporary files ------------------------------------------------------------------------------


def _our_dirs() -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob("qvq-gradio-*"))


@pytest.mark.anyio
async def test_temp_files_are_private_and_removed_on_cancel(
    session: Session, replica: ReplicaProcess, marker: str
) -> None:
    assert _our_dirs() == []
    stream = session.stream(
        f"{marker} [[replica tokens=50 delay=0 fail=hang after=2]]", image=photo(64, 64)
    )
    await stream.__anext__()  # generating: the upload is done, the file still held
    (directory,) = _our_dirs()
    (file,) = list(directory.iterdir())
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    await stream.aclose()
    assert _our_dirs() == []
    assert (await ended(replica, marker))["state"] == "cancelled"


@pytest.mark.anyio
async def test_temp_files_are_removed_on_error(session: Session, marker: str) -> None:
    with pytest.raises(Exception, match="failing before"):
        await session.ask(f"{marker} [[replica fail=before]]", image=photo(64, 64))
    assert _our_dirs() == []


@pytest.mark.anyio
async def test_nothing_left_after_100_runs(session: Session, marker: str) -> None:
    sources: list[Any] = [
        photo(64, 48),
        encoded(photo(64, 48), "PNG"),
        encoded(photo(500, 400), "JPEG"),
    ]
    for i in range(100):
        await session.ask(f"{marker} {i} [[replica tokens=1 delay=0]]", image=sources[i % 3])
    assert _our_dirs() == []


@pytest.mark.anyio
async def test_a_users_file_is_never_touched(session: Session, tmp_path: Path, marker: str) -> None:
    path = tmp_path / "mine.png"
    Image.new("RGBA", (40, 40), (1, 2, 3, 128)).save(path)
    before = (path.read_bytes(), os.stat(path).st_mode)
    await session.ask(f"{marker} [[replica tokens=1 delay=0]]", image=path)
    assert (path.read_bytes(), os.stat(path).st_mode) == before


@pytest.mark.anyio
async def test_url_pass_mode_lets_the_space_fetch(
    replica: ReplicaProcess, image_server: str, marker: str
) -> None:
    options = ImageOptions(url_mode="pass")
    served_before = len(_SERVED)
    async with Session(replica.url, image_options=options) as session:
        # The URL goes to the Space untouched; Gradio refuses to fetch loopback addresses
        # (its SSRF protection), which proves it was the Space, not us, that tried.
        with pytest.raises(AppError, match="failed validation"):
            await session.ask(f"{marker}", image=f"{image_server}/red.png?sig=secret")
    assert len(_SERVED) == served_before  # we downloaded nothing


@pytest.mark.anyio
async def test_provider_takes_image_options(replica: ReplicaProcess, marker: str) -> None:
    from qvq_gradio import Qwen_QVQ_72B

    messages = [{"role": "user", "content": f"{marker} [[replica tokens=1 delay=0]]"}]
    options = ImageOptions(max_pixels=100 * 100)
    chunks = [
        c
        async for c in Qwen_QVQ_72B.create_async_generator(
            "qvq-72b", messages, media=[photo(400, 400)], space=replica.url, image_options=options
        )
    ]
    assert "Image: 100x100 RGB" in "".join(chunks)
