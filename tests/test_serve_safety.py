"""``qvq serve`` reads nothing a client names but what the operator offered, and caps it all.

The server runs in this process (the app ``qvq serve`` builds from its options, served by
uvicorn on a thread, over a real session to the replica) and is asked by real clients: the
openai SDK, httpx, and a raw socket where framing matters.
"""

from __future__ import annotations

import base64
import io
import json
import random
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from qvq_gradio.replica import ReplicaProcess
from qvq_gradio.serve.errors import FETCH_FAILED
from qvq_gradio.serve.limits import IMAGE_REFUSED

from .conftest import Served
from .web import Web

MODEL = "qwen-qvq-72b-preview"


@pytest.fixture
def server(served: Callable[..., Served], replica: ReplicaProcess) -> Served:
    return served(replica.url, "--no-history")


def _png(size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 40)).save(out, "PNG")
    return out.getvalue()


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _chat(server: Served, content: Any, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/chat/completions", timeout=60, json={
        "model": MODEL, "messages": [{"role": "user", "content": content}], **body})


def _asked(replica: ReplicaProcess, marker: str) -> list[dict[str, Any]]:
    return [r for r in replica.requests() if marker in r["prompt"]]


# -- 1. nothing on the server's disk -------------------------------------------------------------


def test_an_image_named_by_path_or_another_scheme_is_one_400_whatever_is_on_disk(
    server: Served, replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    picture = tmp_path / "picture.png"
    picture.write_bytes(_png())
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    named = [str(picture), str(notes), str(tmp_path / "missing.png"), str(tmp_path),
             "/etc/passwd", f"file://{picture}", "ftp://example.com/a.png", "picture.png",
             f" {_data_uri(_png())}"]
    text = {"type": "text", "text": marker}
    answers = []
    for name in named:
        for part in ({"type": "image_url", "image_url": {"url": name}},
                     {"type": "image_url", "image_url": name},
                     {"type": "image", "image": name}):
            response = _chat(server, [text, part])
            answers.append((name, response.status_code, response.json()["error"]["message"]))
        response = httpx.post(f"{server.base_url}/responses", timeout=60, json={
            "model": MODEL, "input": [{"role": "user", "content": [
                {"type": "input_text", "text": marker},
                {"type": "input_image", "image_url": name}]}]})
        answers.append((name, response.status_code, response.json()["error"]["message"]))
    assert {(status, message) for _, status, message in answers} == {(400, IMAGE_REFUSED)}
    assert not _asked(replica, marker)


def _images(path: str) -> tuple[int, dict[str, str], bytes]:
    """``/picture.png``, and ``/to?URL``: a redirect to URL."""
    if path.startswith("/to?"):
        return 302, {"Location": path[4:]}, b""
    return 200, {"Content-Type": "image/png"}, _png()


@pytest.fixture
def images() -> Iterator[Web]:
    with Web(_images) as server:
        yield server


def test_urls_on_the_servers_own_network_are_refused_unfetched(
    server: Served, replica: ReplicaProcess, marker: str, images: Web
) -> None:
    port = images.server_address[1]
    for url in (f"{images.url}/picture.png", f"http://localhost:{port}/picture.png",
                f"http://[::ffff:127.0.0.1]:{port}/picture.png", "http://10.0.0.1/x.png",
                "http://169.254.169.254/latest/meta-data", "http://no-such-host.invalid/a.png"):
        response = _chat(server, [{"type": "text", "text": marker},
                                  {"type": "image_url", "image_url": {"url": url}}])
        assert response.status_code == 400, url
        assert response.json()["error"]["message"] == FETCH_FAILED
    assert images.paths == []
    assert not _asked(replica, marker)


def test_an_operator_may_allow_private_urls(
    served: Callable[..., Served], replica: ReplicaProcess, marker: str,
    images: Web,
) -> None:
    server = served(replica.url, "--no-history", "--allow-private-urls")
    response = _chat(server, [{"type": "text", "text": f"{marker} [[replica tokens=2 delay=0]]"},
                              {"type": "image_url", "image_url": f"{images.url}/picture.png"}])
    assert response.status_code == 200, response.text
    assert images.paths == ["/picture.png"]
    assert replica.wait_ended(marker)["image"]["width"] == 40


@pytest.mark.anyio
async def test_each_redirect_is_checked_again(
    images: Web, mocker: Any
) -> None:
    """A public address (modelled: 127.0.0.1 counts as public here) that redirects to a private
    one (127.0.0.2, loopback too on Linux) is refused at the redirect, before connecting."""
    from qvq_gradio import fetch
    from qvq_gradio.errors import MediaDownloadError
    from qvq_gradio.imaging import ImageOptions

    private = Web(_images, "127.0.0.2")
    try:
        mocker.patch.object(fetch, "is_public", lambda address: address == "127.0.0.1")
        options = ImageOptions(allow_private_urls=False)
        assert await fetch.download(f"{images.url}/picture.png", options) == _png()
        with pytest.raises(MediaDownloadError, match="not a public address"):
            await fetch.download(f"{images.url}/to?{private.url}/picture.png", options)
        assert private.paths == []
        assert images.paths == ["/picture.png", f"/to?{private.url}/picture.png"]
    finally:
        private.close()


# -- 2. every size capped ----------------------------------------------------------------------


def _raw(server: Served, head: bytes, *chunks: bytes) -> tuple[int, dict[str, Any]]:
    """Send ``head`` and ``chunks`` on a socket of our own; the response's status and JSON."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        for chunk in chunks:
            sock.sendall(chunk)
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            response += data
    head_part, _, body = response.partition(b"\r\n\r\n")
    return int(head_part.split()[1]), json.loads(body)


def test_a_body_declared_over_the_cap_is_a_413_before_it_is_sent(
    served: Callable[..., Served], replica: ReplicaProcess
) -> None:
    server = served(replica.url, "--no-history", "--max-body-bytes", "64KiB")
    # Only the headers go out: the answer must come without the body.
    status, body = _raw(server, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Type: application/json\r\n"
                                b"Content-Length: 10000000\r\n\r\n")
    assert status == 413
    assert body["error"]["code"] == "request_too_large" and "65,536" in body["error"]["message"]


def test_a_chunked_body_over_the_cap_is_a_413(
    served: Callable[..., Served], replica: ReplicaProcess, marker: str
) -> None:
    server = served(replica.url, "--no-history", "--max-body-bytes", "64KiB")
    start = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": marker}]})
    payload = start[:-3].encode() + b"x" * 100_000 + b'"}]}'
    chunks = [payload[i:i + 16384] for i in range(0, len(payload), 16384)]
    framed = [f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks] + [b"0\r\n\r\n"]
    status, body = _raw(server, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n", *framed)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    # The SDK, sending a whole body over the cap, gets the same 413.
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client, \
            pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": marker + "y" * 100_000}])
    assert caught.value.status_code == 413
    assert not _asked(replica, marker)


def test_images_are_capped_in_bytes_and_in_pixels(
    served: Callable[..., Served], replica: ReplicaProcess, marker: str
) -> None:
    server = served(replica.url, "--no-history", "--max-image-bytes", "50000",
                    "--max-image-pixels", "1000000")
    noise = Image.frombytes("RGB", (200, 200), random.Random(0).randbytes(200 * 200 * 3))
    out = io.BytesIO()
    noise.save(out, "PNG")
    assert len(out.getvalue()) > 50_000
    bomb = _png((2000, 2000))  # a few kB, 4 megapixels decoded
    assert len(bomb) < 50_000
    for image, says in ((out.getvalue(), "50,000-byte limit"), (bomb, "1,000,000-pixel limit")):
        response = _chat(server, [{"type": "text", "text": marker},
                                  {"type": "image_url", "image_url": {"url": _data_uri(image)}}])
        assert response.status_code == 400
        assert says in response.json()["error"]["message"]
    # Several images (a grid): each is checked before any is decoded.
    response = _chat(server, [{"type": "text", "text": marker},
                              {"type": "image_url", "image_url": {"url": _data_uri(_png())}},
                              {"type": "image_url", "image_url": {"url": _data_uri(bomb)}}])
    assert response.status_code == 400 and "pixel limit" in response.json()["error"]["message"]
    assert not _asked(replica, marker)


# -- 3. the framework's own answers -----------------------------------------------------------


def test_errors_the_framework_answers_are_in_openais_shape(
    served: Callable[..., Served], replica: ReplicaProcess
) -> None:
    server = served(replica.url, "--no-history", "--api-key", "s3cret-key")
    headers = {"Authorization": "Bearer s3cret-key"}
    for method, path, status in (("GET", "/v1/chat/completions", 405),
                                 ("DELETE", "/v1/models", 405),
                                 ("GET", "/v1/nothing-here", 404)):
        response = httpx.request(method, f"{server.url}{path}", headers=headers, timeout=30)
        assert response.status_code == status
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    refused = httpx.get(f"{server.base_url}/models", timeout=30)
    assert refused.status_code == 401
    message = refused.json()["error"]["message"]
    assert "***" not in message and "Authorization" in message


def test_a_bug_of_ours_is_an_openai_shaped_500(
    served: Callable[..., Served], replica: ReplicaProcess, mocker: Any
) -> None:
    """A failure no real component produces: the session raising something that is not ours."""
    server = served(replica.url, "--no-history")
    mocker.patch("qvq_gradio.session.Session.events", side_effect=ZeroDivisionError("boom"))
    response = _chat(server, "hello")
    assert response.status_code == 500
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
