"""An image URL fetched: redirects followed one hop at a time, every size and wait capped.

:func:`download` reads an ``http(s)://`` image within ``ImageOptions.max_download_bytes`` and
``download_timeout``: HTTP errors, content that is not an image, oversize and slowness are
:class:`~qvq_gradio.errors.MediaDownloadError`.

With ``ImageOptions(allow_private_urls=False)`` (what ``qvq serve`` uses, since its clients name
the URLs) a URL is fetched only from a public address: every hop's host is resolved here, every
address it resolves to must be public (not loopback, private, link-local, shared, reserved or
multicast), and the connection goes to the address that was checked (the ``Host`` header and
TLS's server name stay the URL's), so a name that resolves differently a moment later cannot
steer the request onto the server's own network. Redirects are checked the same way, each hop.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio
import anyio.to_thread
import httpx

from ._tls import shared_ssl_context
from .errors import MediaDownloadError
from .imaging import ImageOptions

__all__ = ["MAX_REDIRECTS", "download", "is_public", "public_url"]

#: Redirects followed before a fetch gives up (httpx's own default is 20).
MAX_REDIRECTS: Final = 10


def public_url(url: str) -> str:
    """``url`` without user info, query string or fragment: what may be shown, stored or
    logged (a signed URL's signature lives in its query)."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # a port that is not a number: shown as the host alone
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def is_public(address: str) -> bool:
    """Whether ``address`` (an IP address) is reachable on the public internet: not loopback,
    private, link-local, carrier-grade NAT, reserved, unspecified or multicast."""
    ip = ipaddress.ip_address(address.split("%")[0])  # an IPv6 zone index is not part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def _public_address(url: httpx.URL) -> str:
    """The address to connect to for ``url``: its host resolved, every address checked."""
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise MediaDownloadError(f"cannot resolve {host}: {exc.strerror or exc}") from exc
    addresses = [str(info[4][0]) for info in infos]
    refused = [address for address in addresses if not is_public(address)]
    if refused or not addresses:
        raise MediaDownloadError(
            f"{host} resolves to {', '.join(refused) or 'nothing'}: not a public address "
            "(fetching from private networks is turned off)"
        )
    return addresses[0]


async def _request(client: httpx.AsyncClient, url: httpx.URL, pin: bool) -> httpx.Request:
    """The request for one hop: to the checked address when ``pin``, naming the URL's host."""
    if not pin:
        return client.build_request("GET", url)
    address = await _public_address(url)
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    return client.build_request(
        "GET", url.copy_with(host=address), headers={"Host": url.netloc.decode("ascii")},
        extensions=extensions,
    )


@asynccontextmanager
async def _final_response(
    client: httpx.AsyncClient, url: str, options: ImageOptions
) -> AsyncIterator[httpx.Response]:
    """The response at the end of ``url``'s redirects, each hop checked when asked to."""
    target = httpx.URL(url)
    for _ in range(MAX_REDIRECTS + 1):
        if target.scheme not in ("http", "https"):
            raise MediaDownloadError(f"{public_url(url)} redirects to a {target.scheme}: URL")
        request = await _request(client, target, not options.allow_private_urls)
        response = await client.send(request, stream=True)
        try:
            location = response.headers.get("location")
            if response.is_redirect and location:
                target = target.join(location)
                continue
            yield response
            return
        finally:
            await response.aclose()
    raise MediaDownloadError(f"{public_url(url)} redirects more than {MAX_REDIRECTS} times")


async def download(url: str, options: ImageOptions, proxy: str | None = None) -> bytes:
    """Fetch an image URL: HTTP errors, non-image content, oversize and slowness are errors."""
    verify = await anyio.to_thread.run_sync(shared_ssl_context)
    limit = options.max_download_bytes
    shown = public_url(url)
    try:
        with anyio.fail_after(options.download_timeout):
            async with (
                httpx.AsyncClient(
                    verify=verify, proxy=proxy, timeout=options.download_timeout
                ) as client,
                _final_response(client, url, options) as response,
            ):
                if response.status_code >= 400:
                    raise MediaDownloadError(
                        f"fetching {shown} failed: HTTP {response.status_code}"
                    )
                kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if kind and not kind.startswith("image/") and kind != "application/octet-stream":
                    raise MediaDownloadError(f"{shown} is {kind}, not an image")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise MediaDownloadError(
                        f"{shown} is {int(declared):,} bytes, over the {limit:,}-byte limit"
                    )
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise MediaDownloadError(
                            f"{shown} is over the {limit:,}-byte download limit"
                        )
                return bytes(body)
    except TimeoutError as exc:
        raise MediaDownloadError(
            f"fetching {shown} took longer than {options.download_timeout:g} s"
        ) from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise MediaDownloadError(f"cannot fetch {shown}: {exc}") from exc
