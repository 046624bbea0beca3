"""Kept-alive connections for the Space's event streams: one ``httpx.AsyncClient`` per loop.

Each question's event stream (``GET queue/data``) is read on the event loop. On a connection
of its own, every question would cost a TCP and a TLS handshake over the internet, and a local
Gradio server ~2.7 ms more CPU per request (``benchmarks/bench.py connections``). A stream that
ends with its job's completion is read to its end instead, and its connection goes back to a
pool for the next question's stream. A stream left early (a cancel) still closes its
connection: that is how Gradio learns to drop the session's events.

An async pool can only be closed on the loop it was made on. :class:`EventStreams` keeps one per
loop for one :class:`~qvq_gradio.Session` (whose clients come and go with redeploys; the pools
stay) and closes each on its own loop:

* when the session closes (:meth:`EventStreams.close`, from any thread): on the loop itself
  when called there, else by scheduling the close on that loop and waiting for it, bounded;
* when the loop ends first (``asyncio.run`` returning with the session still open, a gpt4free
  call on a shared session): each pool is held by an async generator the loop knows of, and
  loops close their async generators before they stop. A pool dropped with its session is
  closed the same way, by the loop's finalizer for async generators.

:func:`pooled` makes a pool, sync or async, with a client's settings: the joins' (a sync pool
per client, see ``JobClient.send_data``) and the streams'.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.cookiejar
import threading
import time
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import anyio.lowlevel
import httpx

__all__ = ["KEEPALIVE", "EventStreams", "pooled", "with_cookies"]

#: How long a pooled connection (a join's, a stream's) stays unused: below the 5 s after which
#: uvicorn (a Gradio server's) closes an idle one, so no request goes out on one being closed.
KEEPALIVE: Final = 4.0

_Pooled = TypeVar("_Pooled", httpx.Client, httpx.AsyncClient)


@dataclass(frozen=True)
class _Pool:
    http: httpx.AsyncClient
    keeper: AsyncGenerator[None, None]


class EventStreams:
    """The kept-alive connections one session's event streams are read on, per event loop."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._pools: dict[Any, _Pool] = {}  # by the loop's native token
        self._closed = False

    def __repr__(self) -> str:
        return f"<EventStreams on {len(self._pools)} loop(s){' closed' if self._closed else ''}>"

    async def client(self, view: Any) -> httpx.AsyncClient:
        """The running loop's pool (made on first use with ``view``'s TLS and proxy settings;
        credentials, cookies and timeouts come with each request). A closed session has none:
        ``httpx.ConnectError``, which ends a stream as a broken one."""
        native = anyio.lowlevel.current_token().native_token
        with self._lock:
            if self._closed:
                raise httpx.ConnectError("the session is closed")
            pool = self._pools.get(native)
            if pool is not None:
                return pool.http
            http = pooled(httpx.AsyncClient, view, self._size)
            pool = _Pool(http, self._keep(native, http))
            self._pools[native] = pool
        await pool.keeper.asend(None)  # now the loop knows of it (see the module's docstring)
        return http

    async def _keep(self, native: Any, http: httpx.AsyncClient) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                if (pool := self._pools.get(native)) is not None and pool.http is http:
                    del self._pools[native]
            await http.aclose()

    def close(self, timeout: float) -> None:
        """Close every loop's pool, each on its loop; wait for them at most ``timeout`` seconds
        (never for the loop of the calling thread, which cannot run while this waits)."""
        with self._lock:
            self._closed = True
            pools = list(self._pools.items())
            self._pools.clear()
        deadline = time.monotonic() + timeout
        for native, pool in pools:
            _close_on(native, pool, deadline)


def pooled(kind: type[_Pooled], client: Any, size: int) -> _Pooled:
    """A pool of up to ``size`` kept-alive connections (``kind``: sync or async) with the
    proxy and TLS settings of ``client`` (a QVQClient). Credentials, cookies and timeouts come
    with each request, as they come with gradio_client's requests; no cookie a response sets is
    kept, so a pool shared by jobs gathers none."""
    limits = httpx.Limits(
        max_connections=None, max_keepalive_connections=size, keepalive_expiry=KEEPALIVE
    )
    pool = kind(
        verify=client.ssl_verify,
        proxy=client.httpx_kwargs.get("proxy"),
        trust_env=client._env_proxies,
        limits=limits,
    )
    pool.cookies.jar.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return pool


def with_cookies(headers: dict[str, str], cookies: dict[str, str]) -> dict[str, str]:
    """``headers`` with ``cookies`` in a ``Cookie`` header, as ``httpx.post(cookies=...)``
    sends them (on a pool, cookies go with the request, not with the client)."""
    if not cookies:
        return headers
    return {**headers, "Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}


async def _closed(pool: _Pool) -> None:
    await pool.keeper.aclose()
    await pool.http.aclose()  # also when its keeper had not started yet (a no-op otherwise)


def _close_on(native: Any, pool: _Pool, deadline: float) -> None:
    """Close ``pool`` on the loop ``native``; wait until ``deadline`` unless that loop is this
    thread's. A loop that has ended has closed it already."""
    if isinstance(native, asyncio.AbstractEventLoop):
        if native.is_closed():
            return
        here = _running_loop() is native
        coroutine: Coroutine[Any, Any, None] = _closed(pool)
        try:
            if here:
                native.create_task(coroutine)
                return
            future = asyncio.run_coroutine_threadsafe(coroutine, native)
        except RuntimeError:  # closed meanwhile: its end closed the pool
            coroutine.close()
            return
        concurrent.futures.wait([future], max(deadline - time.monotonic(), 0.0))
        return
    import trio  # the other loop anyio runs on

    try:
        if trio.lowlevel.current_trio_token() is native:
            trio.lowlevel.spawn_system_task(_closed, pool)
            return
    except RuntimeError:  # this thread runs no trio loop
        pass
    with contextlib.suppress(trio.RunFinishedError):  # the run ended: its end closed the pool
        trio.from_thread.run(_closed, pool, trio_token=native)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
