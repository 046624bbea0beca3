"""The client: ``gradio_client.Client`` with what streaming many answers needs changed.

* telemetry: ``analytics_enabled`` is pinned to False, so no telemetry thread is ever started
  (the constructor argument alone does not do that; it is OR-ed with an environment variable);
* isolation: Gradio's ``/cancel`` cancels every running task of the *session* (session hash +
  endpoint), and gradio_client uses one session per ``Client``. :meth:`QVQClient.for_one_job`
  gives each job its own session (and SSE reader) while sharing the config, API description,
  headers and worker pools: no extra network round trip;
* streams: a :class:`JobClient`'s job hands its event stream to the event loop once it has
  joined the queue (see :mod:`.reader` and :mod:`.handover`), and keeps none of its outputs;
  jobs that users submit through the session's client behave exactly as gradio_client
  documents;
* threads: gradio_client's three ``ThreadPoolExecutor`` pools are replaced by
  :class:`~qvq_gradio._threads.ElasticExecutor` pools, whose idle threads end after a burst and
  whose threads are daemons: a thread stuck reading a dead connection never holds up closing or
  interpreter exit;
* dead connections: every request of a job passes a :class:`StreamWatch` (an ``httpx.Auth``,
  the one hook that both ``httpx.post`` and ``httpx.Client`` accept), which keeps the job's
  sockets so :meth:`JobClient.abort` can shut them down from another thread, and turns a broken
  event stream into a logged, quiet end instead of a traceback gradio_client prints to stderr;
* joins: gradio_client joins the queue with ``httpx.post``, a new connection per question
  (over the internet a TCP and TLS handshake each time; a local Gradio server spends ~2.7 ms
  more CPU on a request over a new connection than over a kept-alive one: see
  ``benchmarks/bench.py connections``). A :class:`JobClient` joins on kept-alive connections
  instead (:meth:`JobClient.send_data`). A question asked alone (the session has no other in
  flight) joins on the event loop that follows it, where its event stream is read too
  (:mod:`.streams`): the stream then takes the connection the join has just used, as a bare
  client would, so a cold question opens one connection, not two (over the internet, a TCP
  and a TLS handshake fewer before the first token). Questions asked together join from their
  threads, on the client's own pool: routed
  through the loop, a burst of 32 joins cost ~20% more CPU and delayed the first tokens (see
  ``benchmarks/bench.py floor``). The watch holds a join's or a stream's socket only while
  that request is in flight, so an abort never reaches a connection another job has taken
  from the pool since.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import socket
import threading
import time
import urllib.parse
import urllib.request
import uuid
import weakref
from collections.abc import Generator, Iterator
from typing import Any, Final

import anyio.from_thread
import anyio.lowlevel
import httpx
from anyio.lowlevel import EventLoopToken
from gradio_client import Client
from gradio_client import utils as gc_utils
from gradio_client.exceptions import ValidationError
from gradio_client.utils import QueueError

from ..._secrets import register_secret
from ..._threads import ElasticExecutor
from .description import DescriptionCache, same_app
from .freshness import HEARTBEAT_READ_TIMEOUT, Freshness
from .handover import Discard, HandOver, KeepLast
from .reader import INLINE_PROTOCOLS, JobEndpoint
from .streams import EventStreams, pooled, with_cookies

__all__ = [
    "CONFIG_CHECK_EVERY",
    "JobClient",
    "QVQClient",
    "StreamWatch",
    "answers_config",
    "describe",
    "queue_status",
]

log = logging.getLogger("qvq_gradio")


class _QuietEnd(httpx.SyncByteStream):
    """An event stream whose transport errors end it quietly (logged at debug level).

    gradio_client prints a traceback to stderr for any error of its event-stream reader except
    ``RemoteProtocolError``, which it takes as the stream closing. The job's outcome is the same
    either way (its waiters are told the stream ended), so the error is logged and re-raised as
    that one.
    """

    def __init__(self, inner: httpx.SyncByteStream) -> None:
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._inner
        except httpx.RemoteProtocolError:
            raise
        except httpx.TransportError as exc:
            log.debug("the Space's event stream broke: %r", exc)
            raise httpx.RemoteProtocolError(f"event stream ended: {exc!r}") from exc

    def close(self) -> None:
        self._inner.close()


class StreamWatch(httpx.Auth):
    """Sees every response of one job (httpx hands each to the auth flow before its body).

    It keeps each response's socket, so that :meth:`abort` can shut them down from any thread:
    a thread blocked reading a frozen connection then wakes at once (closing a socket from
    another thread does not wake a blocked read; shutting it down does).
    """

    def __init__(self) -> None:
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._aborted = False

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        sock = _socket_of(response)
        if sock is not None:
            with self._lock:
                self._sockets.add(sock)
                aborted = self._aborted
            if aborted:
                _shut(sock)
        event_stream = request.method == "GET" and request.url.path.endswith("/queue/data")
        if event_stream and isinstance(response.stream, httpx.SyncByteStream):
            response.stream = _QuietEnd(response.stream)

    @contextlib.contextmanager
    def holding(self, response: httpx.Response) -> Iterator[None]:
        """Watch ``response``'s socket only while the block runs (a pooled connection: it
        goes back to the pool, and to other jobs, after the block)."""
        sock = _socket_of(response)
        if sock is None:
            yield
            return
        with self._lock:
            self._sockets.add(sock)
            if self._aborted:
                _shut(sock)
        try:
            yield
        finally:
            with self._lock:
                self._sockets.discard(sock)

    def abort(self) -> None:
        """Shut down every connection of this job, now and from now on."""
        # Under the lock: a socket let go of (back in a pool) is never shut down after that.
        with self._lock:
            self._aborted = True
            for sock in list(self._sockets):
                _shut(sock)


def _running_loop() -> EventLoopToken | None:
    """The calling thread's running event loop (asyncio or trio, through anyio), if any."""
    try:
        return anyio.lowlevel.current_token()
    except RuntimeError:  # no loop runs in this thread
        return None


def _socket_of(response: httpx.Response) -> socket.socket | None:
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    return sock if isinstance(sock, socket.socket) else None


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_POOLS = ("executor", "helper_executor", "stream_executor", "config_executor")
#: How old a confirmation of the Space's config may get before a job reads it again.
CONFIG_CHECK_EVERY: Final = 30.0
_HEARTBEAT_CONNECT: Final = 10.0


def _elastic_pools(client: Any, max_workers: int) -> None:
    """Replace gradio_client's pools (no thread of theirs has started yet)."""
    sizes = {"executor": max_workers, "helper_executor": 2 * max_workers, "stream_executor": 1}
    for name, size in sizes.items():
        old = getattr(client, name, None)
        if isinstance(old, concurrent.futures.Executor):
            old.shutdown(wait=False)
            setattr(client, name, ElasticExecutor(size, name=f"qvq-{name.split('_')[0]}"))


class QVQClient(Client):  # type: ignore[misc]  # gradio_client ships no type information
    """``gradio_client.Client`` with no telemetry and pools that shrink and never block exit."""

    def __init__(
        self,
        src: str,
        *args: Any,
        max_workers: int = 40,
        httpx_kwargs: dict[str, Any] | None = None,
        descriptions: DescriptionCache | None = None,
        streams: EventStreams | None = None,
        **kwargs: Any,
    ) -> None:
        # ``descriptions``: the Space's config and API info kept on disk (see .description);
        # when they are there, connecting sends no request and the first job is checked.
        self._descriptions = descriptions
        self._kept_info: dict[str, Any] | None = None
        self.described_from_disk = False
        self._connected = False
        # Every request of the client itself (its heartbeat stream, jobs users submit through
        # it) passes a StreamWatch too, so shutting down never waits on a read.
        self.watch = StreamWatch()
        httpx_kwargs = {**(httpx_kwargs or {}), "auth": self.watch}
        # Whether the environment names a proxy, read once: with none, a job's requests skip
        # httpx's scan of every environment variable (two per job, a sixth of its CPU).
        self._env_proxies = bool(urllib.request.getproxies())
        super().__init__(src, *args, max_workers=max_workers, httpx_kwargs=httpx_kwargs, **kwargs)
        _elastic_pools(self, max_workers)
        # The joins' kept-alive connections (see send_data).
        self.joins = pooled(httpx.Client, self, max_workers)
        # The event streams' kept-alive connections (see .streams): a session's, which outlive
        # its clients, else this client's own.
        self._own_streams = streams is None
        self.streams = EventStreams(max_workers) if streams is None else streams
        self._connected = True  # from now on the config and API info come from the Space
        # Redeploy detection without a config read per job (see .freshness): one daemon thread
        # holds the Space's heartbeat stream open and notices the server going away. The
        # re-reads have a pool of their own (gradio_client 2.0 has no helper pool): they never
        # queue behind jobs. One thread is enough; it ends when idle, like the others.
        self.config_executor = ElasticExecutor(1, name="qvq-config")
        self.freshness = Freshness(self._read_config_again, self.config_executor,
                                   CONFIG_CHECK_EVERY)
        if self.described_from_disk:
            self.freshness.suspect()  # the first job is checked against the live config
        self._heartbeat_watch = StreamWatch()
        self._stop_watching = threading.Event()
        self._watcher = threading.Thread(
            target=self.freshness.follow_heartbeat,
            args=(self._open_heartbeat, self._stop_watching),
            name="qvq-heartbeat",
            daemon=True,
        )
        self._watcher.start()
        # gradio_client sends the token (given, $HF_TOKEN or the saved one) in this header: it
        # must never show in an error message, a traceback or a log line.
        credential = self.headers.get("x-hf-authorization", "")
        register_secret(credential.removeprefix("Bearer ").strip())

    @property
    def analytics_enabled(self) -> bool:
        return False

    @analytics_enabled.setter
    def analytics_enabled(self, value: bool) -> None:
        # Client.__init__ assigns this and starts the telemetry thread when it reads True.
        pass

    def _get_config(self) -> Any:
        if self._descriptions is not None and not self._connected:
            kept = self._descriptions.load(self.src)
            if kept is not None:
                self.described_from_disk = True
                config, self._kept_info = kept
                return config
        return super()._get_config()

    def _get_api_info(self) -> Any:
        if self._kept_info is not None:
            info, self._kept_info = self._kept_info, None
            return info
        info = super()._get_api_info()
        if self._descriptions is not None and not self._connected:
            self._descriptions.store(self.src, self.config, info)
        return info

    def _read_config_again(self) -> Any:
        config = super()._get_config()
        if self.described_from_disk and not same_app(self.config, config):
            self.forget_description()  # rebuilt: the next process reads it anew
        return config

    def forget_description(self) -> None:
        """The kept description is wrong (a redeploy, a protocol error): drop it."""
        if self._descriptions is not None:
            self._descriptions.forget(self.src)

    def _open_heartbeat(self) -> Any:
        url = self.heartbeat_url.format(session_hash=self.session_hash)
        kwargs = {**self.httpx_kwargs, "auth": self._heartbeat_watch}
        kwargs["timeout"] = httpx.Timeout(HEARTBEAT_READ_TIMEOUT, connect=_HEARTBEAT_CONNECT)
        return httpx.stream(
            "GET", url, headers=self.headers, cookies=self.cookies, verify=self.ssl_verify,
            **kwargs,
        )

    def close(self) -> None:
        # Client.close() joins the heartbeat thread for up to 1 s, longer than a dead
        # connection deserves; the thread is a daemon and ends at its next read. Our watcher
        # is woken at once (its socket shut down).
        self._kill_heartbeat.set()
        self._stop_watching.set()
        self._heartbeat_watch.abort()

    def shutdown(self, timeout: float) -> None:
        """Stop the heartbeat and every worker thread, waiting at most ``timeout`` seconds in
        all: threads still busy then (stuck reading a dead connection) are abandoned."""
        self.close()
        self.watch.abort()  # the heartbeat's stream: its thread wakes and ends
        deadline = time.monotonic() + timeout
        pools = self._pools()
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        for pool in pools:
            pool.shutdown(timeout=max(deadline - time.monotonic(), 0.0))
        for thread in (self.heartbeat, self._watcher):
            if thread.is_alive():
                thread.join(max(deadline - time.monotonic(), 0.0))
        self.joins.close()
        if self._own_streams:
            self.streams.close(max(deadline - time.monotonic(), 0.0))

    def __del__(self) -> None:
        # gradio_client's __del__ joins the executor's threads: the garbage collector may run
        # it on the event loop. Stop the pools without waiting (their threads are daemons and
        # finish the work already queued).
        for pool in self._pools():
            pool.shutdown(wait=False)
        joins = getattr(self, "joins", None)
        if joins is not None:
            joins.close()  # closes sockets: never waits

    def _pools(self) -> list[ElasticExecutor]:
        """This client's worker pools (a client half-built by a failed __init__ has fewer)."""
        pools = (getattr(self, name, None) for name in _POOLS)
        return [pool for pool in pools if isinstance(pool, ElasticExecutor)]

    def __repr__(self) -> str:
        # The base class renders the whole API description (a network call on some versions).
        return f"<{type(self).__name__} {self.src}>"

    __str__ = __repr__

    def for_one_job(
        self, timeout: httpx.Timeout, join_here: bool = False, session_hash: str | None = None
    ) -> JobClient:
        """A view of this client with a Gradio session of its own, for exactly one job.

        It shares config, API description, headers, cookies and worker pools (so it costs no
        network round trip) but has its own session hash, SSE state and :class:`HandOver`,
        endpoints bound to it, its own httpx settings (``timeout``; a :class:`StreamWatch`),
        and it keeps none of the outputs of its job. Keep a reference while its job runs
        (endpoints hold it weakly) and call :meth:`JobClient.release` afterwards.
        ``join_here``: the job joins the queue on the calling thread's event loop (see the
        module's docstring), not from its own thread. ``session_hash``: the Gradio session
        (default: a new one), for jobs that must share one (a stateful demo's chain).
        """
        view = JobClient.__new__(JobClient)
        view.__dict__.update(self.__dict__)
        # The pools and the joins' connections are this client's: kept open while a view of
        # it runs (a client dropped after a redeploy still finishes the jobs it started).
        view.parent = self
        view.session_hash = session_hash or str(uuid.uuid4())
        view.watch = StreamWatch()
        # Submitted from the loop that will follow it: asked to, it joins there (see above).
        view.loop = _running_loop() if join_here else None
        view.httpx_kwargs = {**self.httpx_kwargs, "timeout": timeout, "auth": view.watch}
        if not self._env_proxies:
            view.httpx_kwargs["trust_env"] = False  # nothing to find there (see __init__)
        # Per-session SSE state, as Client.__init__ sets it up. On the protocols whose stream
        # is per session, the event loop reads it (see .reader): marking it open keeps
        # gradio_client from starting a reader thread.
        view.hand_over = HandOver()
        view.stream_open = view.protocol in INLINE_PROTOCOLS
        view.streaming_future = None
        view.pending_messages_per_event = {}
        view.pending_event_ids = set()
        view.pending_lock = threading.Lock()
        view.stream_epoch = 0
        view.pending_event_epoch = {}
        view.stream_executor = ElasticExecutor(1, name="qvq-sse")
        view.cookies = dict(self.cookies)
        # No heartbeat for a one-job session (the HTTP API needs none); close() stays harmless.
        view._refresh_heartbeat = threading.Event()
        view._kill_heartbeat = threading.Event()
        view.heartbeat = threading.Thread(target=lambda: None)
        view.endpoints = {
            dependency.get("id", index): JobEndpoint(
                view, dependency.get("id", index), dependency, view.protocol
            )
            for index, dependency in enumerate(view.config["dependencies"])
        }
        return view


class JobClient(QVQClient):
    """One job's view of a :class:`QVQClient` (see :meth:`QVQClient.for_one_job`)."""

    parent: QVQClient
    watch: StreamWatch
    httpx_kwargs: dict[str, Any]
    hand_over: HandOver
    #: The event loop that follows the job, if it joins there (see for_one_job).
    loop: EventLoopToken | None

    def new_helper(self, fn_index: int, headers: dict[str, str] | None = None) -> Any:
        helper = super().new_helper(fn_index, headers=headers)
        helper.job.outputs = KeepLast()
        helper.updates = Discard()
        return helper

    def send_data(
        self,
        data: dict[str, Any],
        hash_data: dict[str, Any],
        protocol: str,
        request_headers: dict[str, str] | None,
    ) -> str:
        """Join the queue as gradio_client's ``Client.send_data`` does (the same request, the
        same errors), on a kept-alive connection (see :meth:`_join`). Nothing else is to be
        done here: the event loop reads the job's stream (see :class:`.reader.JobEndpoint`)."""
        if protocol not in INLINE_PROTOCOLS:  # pragma: no cover - Gradio 3.x / 4.0 Spaces
            return str(super().send_data(data, hash_data, protocol, request_headers))
        headers = self.add_zero_gpu_headers(self.headers)
        if request_headers is not None:
            headers = {**request_headers, **headers}
        response = self._join(
            {**data, **hash_data},
            with_cookies(headers, self.cookies),
            self.httpx_kwargs.get("timeout"),
        )
        if response.status_code == 503:
            raise QueueError("Queue is full! Please try again.")
        if (message := gc_utils.extract_validation_message(response)) is not None:
            raise ValidationError(message)
        response.raise_for_status()
        return str(response.json()["event_id"])

    def _join(self, body: dict[str, Any], headers: dict[str, str], limits: Any) -> httpx.Response:
        """POST the join and read its answer (blocking: the job's thread). On the loop that
        follows the job, if there is one: its stream then takes the same connection."""
        if self.loop is not None:
            try:
                return anyio.from_thread.run(
                    self._join_on_loop, body, headers, limits, token=self.loop
                )
            except (RuntimeError, concurrent.futures.CancelledError) as exc:
                # The loop has ended or is ending: nobody follows this job any more.
                raise httpx.ConnectError(f"the event loop asking has ended ({exc!r})") from exc
        request = self.joins.build_request(
            "POST", self.sse_data_url, json=body, headers=headers, timeout=limits
        )
        response = self.joins.send(request, stream=True)
        try:
            with self.watch.holding(response):
                response.read()
        finally:
            response.close()
        return response

    async def _join_on_loop(
        self, body: dict[str, Any], headers: dict[str, str], limits: Any
    ) -> httpx.Response:
        """The join, on the loop's pool (httpx's own timeouts: ``limits``)."""
        http = await self.streams.client(self)
        request = http.build_request(
            "POST", self.sse_data_url, json=body, headers=headers, timeout=limits
        )
        response = await http.send(request, stream=True)
        try:
            with self.watch.holding(response):
                await response.aread()
        finally:
            await response.aclose()
        return response

    def close(self) -> None:
        # The heartbeat watcher belongs to the parent client: a view has nothing to stop.
        self._kill_heartbeat.set()

    def set_timeout(self, timeout: httpx.Timeout) -> None:
        """The timeout of this job's requests from now on (e.g. a short one for its cancel)."""
        self.httpx_kwargs = {**self.httpx_kwargs, "timeout": timeout}

    def abort(self) -> None:
        """Shut down this job's connections: a reader blocked on a dead one wakes now."""
        self.watch.abort()

    def release(self) -> None:
        """Let this view's SSE reader thread (Gradio 3.x / 4.0 only) end once its stream
        closes."""
        self.stream_executor.shutdown(wait=False)

    def __del__(self) -> None:
        # The worker pools belong to the parent client: never shut them down from a view.
        pass


def describe(client: QVQClient) -> tuple[str, str]:
    """The Gradio version and the protocol a connected client found."""
    return str(client.config.get("version") or "?"), str(client.protocol)


def queue_status(client: QVQClient) -> tuple[int | None, float]:
    """The Space's queue size, and the seconds that one request took (blocking)."""
    start = time.perf_counter()
    url = f"{client.src_prefixed}queue/status"
    response = _get(client, url, client.httpx_kwargs.get("timeout"))
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    size = response.json().get("queue_size")
    return (size if isinstance(size, int) else None), elapsed


def answers_config(client: QVQClient, timeout: float) -> bool:
    """Whether the Space behind ``client`` serves its config again (one GET, blocking): the
    cheap sign that a Space which went away is back."""
    try:
        response = _get(client, urllib.parse.urljoin(client.src, gc_utils.CONFIG_URL), timeout)
        return response.status_code == 200
    except httpx.HTTPError:
        return False


def _get(client: QVQClient, url: str, timeout: Any) -> httpx.Response:
    """One GET with the client's credentials, cookies and TLS settings (blocking)."""
    return httpx.get(
        url, headers=client.headers, cookies=client.cookies, verify=client.ssl_verify,
        timeout=timeout,
    )
