"""One job's event stream, read on the event loop: no reader thread, no polling, no thread hop.

gradio_client follows a job with three threads besides the one that submits it: a session-wide
SSE reader that files messages into a deque, a helper that *polls* that deque every 50 ms
(each token waits 0–50 ms and tokens arrive in bursts), and a helper that polls every 50 ms
whether the job was cancelled. A :class:`~.client.JobClient` holds exactly one job on a Gradio
session of its own, so its stream can be read by whoever follows that job. Here that is the
coroutine following it, on the event loop, as a bare SSE client would read it: the job's thread
uploads and joins the queue, then waits (:mod:`.handover`); every message is parsed where it is
used, with no hop between threads.

:class:`JobEndpoint` is gradio_client's ``Endpoint`` with that one step replaced;
:func:`read_updates` reads the stream and says what each read brought (:class:`Update`): the
place in the queue, the start, the newest output, processed as gradio_client processes it. The
completion goes back to the job's thread, which finishes the job as gradio_client does. Our own
cancel path covers the cancel poller: it POSTs ``/cancel``, and a stream closed by its reader
makes Gradio drop the session's events too.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

import anyio
import httpx
from gradio_client import utils as gc_utils
from gradio_client.client import Endpoint
from gradio_client.utils import ServerMessage

from ..._wakeups import loop_clock
from .streams import with_cookies

__all__ = ["INLINE_PROTOCOLS", "JobEndpoint", "QueuePlace", "Update", "read_updates"]

log = logging.getLogger("qvq_gradio")

#: The protocols whose stream is per session and whose messages carry diffs (Gradio ≥ 4.x).
INLINE_PROTOCOLS: Final = frozenset({"sse_v2", "sse_v2.1", "sse_v3"})
# Gradio sends a heartbeat on the stream every 15 s: a read whose deadline is further away than
# this needs no timeout of its own (the heartbeat ends it first, and the deadline is looked at
# again), which spares a cancel scope per message. httpx's read timeout is the backstop.
_HEARTBEAT_BOUND: Final = 20.0

# How long the end of a completed job's stream may take to come before its connection is
# dropped instead of kept (it comes at once: Gradio closes the stream after the completion).
_END_WAIT: Final = 0.25

#: (position, queue size, eta) of a job waiting in the Space's queue.
QueuePlace = tuple[int | None, int | None, float | None]

_STARTED: Final = frozenset(
    {ServerMessage.process_starts, ServerMessage.process_generating, ServerMessage.progress}
)


class JobEndpoint(Endpoint):  # type: ignore[misc]  # gradio_client ships no type information
    """``Endpoint`` whose job, once it has joined the queue, hands its stream to the loop."""

    def _sse_fn_v1plus(self, helper: Any, event_id: str, protocol: str) -> Any:
        if protocol not in INLINE_PROTOCOLS:  # pragma: no cover - Gradio 3.x / 4.0 Spaces
            return super()._sse_fn_v1plus(helper, event_id, protocol)
        return self.client.hand_over.joined(event_id)


@dataclass(frozen=True, slots=True)
class Update:
    """What one read of the stream brought, at loop time ``at``: the newest of each kind of
    news, in stream order (queued, then started, then output). ``None`` from
    :func:`read_updates` instead means the deadline passed with nothing read."""

    at: float
    queued: QueuePlace | None = None
    started: bool = False
    has_output: bool = False
    output: Any = None


async def read_updates(
    view: Any, processor: Callable[..., Any], wake_by: Callable[[], float]
) -> AsyncGenerator[Update | None, None]:
    """Follow ``view``'s one job on its session's event stream (on the event loop).

    ``processor`` turns the outputs into the job's value, as gradio_client does; ``wake_by``
    gives the loop time by which a read must bring something (``math.inf``: no limit), else
    ``None`` is yielded. The stream's end hands the job's thread its outcome (see
    :class:`~.handover.HandOver`); the generator then returns.
    """
    hand_over = view.hand_over
    messages = _Messages(hand_over, _value_reader(processor))
    clock = loop_clock()
    try:
        http = await view.streams.client(view)
        async with http.stream(
            "GET",
            view.sse_url,
            params={"session_hash": view.session_hash},
            headers=with_cookies(view.headers, view.cookies),
            timeout=view.httpx_kwargs.get("timeout"),
        ) as response:
            if response.is_error:
                await response.aread()
                response.raise_for_status()
            chunks = response.aiter_bytes()
            ended = False  # read to its end: the connection goes back to the pool
            try:
                with view.watch.holding(response):  # an abort shuts it down, until then
                    while True:
                        due = wake_by()
                        if due - clock() > _HEARTBEAT_BOUND:
                            chunk = await anext(chunks, None)  # a heartbeat comes before ``due``
                        else:
                            chunk = None
                            with anyio.CancelScope(deadline=due) as scope:
                                chunk = await anext(chunks, None)
                            if scope.cancelled_caught:
                                yield None  # the deadline passed: the follower decides
                                continue
                        if chunk is None:
                            ended = True
                            break  # the stream ended without the completion
                        update, completion = messages.read(chunk, clock())
                        if update is not None:
                            yield update
                        if completion is _CLOSED:
                            ended = await _read_to_end(chunks)
                            break
                        if completion is not None:
                            hand_over.complete(completion)
                            ended = await _read_to_end(chunks)
                            return
            finally:
                if not ended:
                    await _unwind(response, chunks)
    except httpx.HTTPStatusError as exc:  # the Space refused the stream
        hand_over.fail(exc)
        return
    except (httpx.HTTPError, OSError) as exc:
        if isinstance(exc, httpx.ReadTimeout) and clock() >= wake_by():
            yield None  # a server silent past the deadline, heartbeats and all
        # Broken, reset or shut down (a cancel, a closing session).
        log.debug("the Space's event stream broke: %r", exc)
    except Exception as exc:  # the server stopped, or this is not Gradio's SSE: the job fails
        hand_over.fail(exc)  # with it, translated as any error of gradio_client's
        return
    # The stream ended without the job's completion: the job ends as cancelled, as
    # gradio_client's reader ends it, and its thread says so. (A follower that stops reading
    # leaves the job to the cancel path, which ends the hand-over once it has cancelled.)
    hand_over.end()


#: :meth:`_Messages.read`'s word for a stream the server closed before the job completed.
_CLOSED: Final[dict[str, Any]] = {}


class _Messages:
    """What one job's messages say, read chunk by chunk as they arrive (no I/O here)."""

    def __init__(self, hand_over: Any, value: Callable[[list[Any]], Any]) -> None:
        self._hand_over = hand_over
        self._event_id = hand_over.event_id
        self._value = value
        self._buffer = b""
        self._outputs: list[Any] | None = None  # the job's outputs so far (diffs apply to them)

    def read(self, chunk: bytes, at: float) -> tuple[Update | None, dict[str, Any] | None]:
        """What ``chunk`` (read at loop time ``at``) brings: its news (the newest of each
        kind), and the completion's ``output`` if it came (:data:`_CLOSED` if the server
        closed the stream instead). A stopped server raises."""
        self._buffer += chunk
        queued: QueuePlace | None = None
        started = False
        output: list[Any] | None = None
        completion: dict[str, Any] | None = None
        while completion is None and (end := self._buffer.find(b"\n\n")) != -1:
            message = _message(self._buffer[:end])
            self._buffer = self._buffer[end + 2 :]
            if message is None:
                continue
            kind = message.get("msg")
            if message.get("message") == ServerMessage.server_stopped:
                raise ValueError("Server stopped.")
            if kind == ServerMessage.close_stream:
                completion = _CLOSED
            elif message.get("event_id") != self._event_id:
                continue  # heartbeats, and nothing else on a session of one job
            elif kind == ServerMessage.process_generating:
                started = self._hand_over.generating = True
                output = self._outputs = _applied(self._outputs, message)
            elif kind == ServerMessage.estimation:
                queued = (message.get("rank"), message.get("queue_size"), message.get("rank_eta"))
            elif kind in _STARTED:
                started = self._hand_over.generating = True
            elif kind == ServerMessage.process_completed:
                completion = message["output"]
        if output is not None:
            return Update(at, queued, started, True, self._value(output)), completion
        if started or queued is not None:
            return Update(at, queued, started), completion
        return None, completion


async def _read_to_end(chunks: AsyncIterator[bytes]) -> bool:
    """Whether the rest of a stream whose job has completed came within :data:`_END_WAIT`
    (Gradio ends it right after: a ``close_stream`` message), its connection free again."""
    with anyio.move_on_after(_END_WAIT):
        while await anext(chunks, None) is not None:
            pass
        return True
    return False


async def _unwind(response: httpx.Response, chunks: AsyncIterator[bytes]) -> None:
    """Close the stream under ``chunks`` so that httpx's async generators under it end now.

    Closing ``chunks`` alone leaves each generator beneath it suspended until the garbage
    collector finalizes it (trio warns of every one). With the connection closed first, the
    reads that follow give what was already buffered, then raise inside the innermost
    generator, which ends them all.
    """
    with anyio.CancelScope(shield=True):
        network = response.extensions.get("network_stream")
        if network is not None:
            with contextlib.suppress(Exception):
                await network.aclose()
        with contextlib.suppress(Exception):
            while await anext(chunks, None) is not None:
                pass
        await response.aclose()


def _value_reader(processor: Callable[..., Any]) -> Callable[[list[Any]], Any]:
    """How the job's value is read from its outputs: as gradio_client's ``processor`` reads
    it, which, when no file is downloaded and the endpoint shows one output, is that output
    (taken directly: this runs for every message)."""
    endpoint = getattr(processor, "__self__", None)
    client = getattr(endpoint, "client", None)
    types = getattr(endpoint, "output_component_types", None)
    if client is None or not isinstance(types, list) or getattr(client, "download_files", True):
        return lambda outputs: processor(*outputs)
    skip = getattr(client, "_skip_components", True)
    shown = [i for i, kind in enumerate(types) if not (skip and getattr(kind, "skip", False))]
    if len(shown) != 1:
        return lambda outputs: processor(*outputs)
    index = shown[0]
    return lambda outputs: outputs[index] if index < len(outputs) else processor(*outputs)


def _message(block: bytes) -> dict[str, Any] | None:
    """The JSON of one SSE event (``data:`` lines), or None for a comment or empty block."""
    if block.startswith(b"data:") and b"\n" not in block:
        data = block[5:]  # the usual event: one data line
    else:
        data = b"".join(line[5:] for line in block.split(b"\n") if line.startswith(b"data:"))
    if not data:
        if block.strip() and not block.lstrip().startswith(b":"):
            raise ValueError(f"Unexpected SSE line: '{block.decode(errors='replace')}'")
        return None
    message = json.loads(data.decode())
    return message if isinstance(message, dict) else None


def _applied(outputs: list[Any] | None, message: dict[str, Any]) -> list[Any]:
    """The job's outputs after one ``process_generating`` message: the first carries the
    values, each later one a diff per output."""
    data = message.get("output", {}).get("data", [])
    if outputs is None:
        return list(data)
    for i, diff in enumerate(data):
        if i >= len(outputs):  # an output added by a hot reload mid-stream
            outputs.append(None)
        outputs[i] = _apply(outputs[i], diff)
    return outputs


def _apply(value: Any, diff: Any) -> Any:
    """``value`` with one output's diff applied; the common case (text appended to a string)
    without gradio_client's deep copy of the whole value per message."""
    if isinstance(value, str) and isinstance(diff, list):
        result = value
        for edit in diff:
            if not (isinstance(edit, list) and len(edit) == 3 and edit[1] == []):
                break
            action, _, text = edit
            if action == "append" and isinstance(text, str):
                result += text
            elif action == "replace":
                result = text
            else:
                break
        else:
            return result
    return gc_utils.apply_diff(value, diff)  # from the value as it was: no edit applied twice
