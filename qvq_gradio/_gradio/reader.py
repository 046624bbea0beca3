"""One job's event stream, read in the job's own thread: no reader thread, no polling.

gradio_client follows a job with three threads besides the one that submits it: a session-wide
SSE reader that files messages into a deque, a helper that *polls* that deque every 50 ms
(each token waits 0–50 ms and tokens arrive in bursts), and a helper that polls every 50 ms
whether the job was cancelled. A :class:`~.client.JobClient` holds exactly one job on a session
of its own, so the job's thread can read the session's stream itself and hand each message on
the moment it arrives: one thread per stream, no sleep.

:class:`JobEndpoint` is gradio_client's ``Endpoint`` with that one step replaced; what a message
means (statuses, diffs, outputs, the completion) is processed as gradio_client does it. Our own
cancel path covers the cancel poller: it POSTs ``/cancel``, and shutting the job's sockets down
(:meth:`~.client.JobClient.abort`) ends the read at once.
"""

from __future__ import annotations

import concurrent.futures
import json
from datetime import datetime
from typing import Any, Final

import httpx
from gradio_client import utils as gc_utils
from gradio_client.client import Endpoint
from gradio_client.utils import ServerMessage, Status

__all__ = ["INLINE_PROTOCOLS", "JobEndpoint", "read_events"]

#: The protocols whose stream is per session and whose messages carry diffs (Gradio ≥ 4.x).
INLINE_PROTOCOLS: Final = frozenset({"sse_v2", "sse_v2.1", "sse_v3"})


class JobEndpoint(Endpoint):  # type: ignore[misc]  # gradio_client ships no type information
    """``Endpoint`` whose job reads its session's event stream in its own thread."""

    def _sse_fn_v1plus(self, helper: Any, event_id: str, protocol: str) -> Any:
        if protocol not in INLINE_PROTOCOLS:  # pragma: no cover - Gradio 3.x / 4.0 Spaces
            return super()._sse_fn_v1plus(helper, event_id, protocol)
        return read_events(self.client, helper, event_id)


def read_events(client: Any, helper: Any, event_id: str) -> Any:
    """Follow ``event_id`` on ``client``'s session until it completes (blocking).

    Returns the completion's ``output`` as gradio_client's reader does. The stream ending early
    (closed, broken, shut down by a cancel) raises ``CancelledError``, as gradio_client does.
    """
    with (
        httpx.Client(verify=client.ssl_verify, **client.httpx_kwargs) as http,
        http.stream(
            "GET",
            client.sse_url,
            params={"session_hash": client.session_hash},
            headers=client.headers,
            cookies=client.cookies,
        ) as response,
    ):
        seen = _Seen()
        buffer = b""
        try:
            for chunk in response.iter_bytes():
                buffer += chunk
                while (end := buffer.find(b"\n\n")) != -1:
                    block, buffer = buffer[:end], buffer[end + 2 :]
                    message = _message(block)
                    if message is None:
                        continue
                    kind = message.get("msg")
                    if kind == ServerMessage.heartbeat:
                        continue
                    if message.get("message") == ServerMessage.server_stopped:
                        raise ValueError("Server stopped.")
                    if kind == ServerMessage.close_stream:
                        raise concurrent.futures.CancelledError()
                    if message.get("event_id") != event_id:
                        continue
                    _deliver(helper, message, seen)
                    if kind == ServerMessage.process_completed:
                        return message["output"]
        except httpx.RemoteProtocolError:
            pass  # the stream broke or was shut down (see client._QuietEnd)
    raise concurrent.futures.CancelledError()


def _message(block: bytes) -> dict[str, Any] | None:
    """The JSON of one SSE event (``data:`` lines), or None for a comment or empty block."""
    data = b"".join(
        line[5:] for line in block.split(b"\n") if line.startswith(b"data:")
    )
    if not data:
        if block.strip() and not block.lstrip().startswith(b":"):
            raise ValueError(f"Unexpected SSE line: '{block.decode(errors='replace')}'")
        return None
    message = json.loads(data)
    return message if isinstance(message, dict) else None


class _Seen:
    """What the reader has seen of one job: the outputs so far (diffs apply to them) and the
    last status kind handed on (a run of ``process_generating`` is one status)."""

    __slots__ = ("kind", "outputs")

    def __init__(self) -> None:
        self.outputs: list[Any] | None = None
        self.kind: str | None = None


def _apply(value: Any, diff: Any) -> Any:
    """``value`` with one output's diff applied; the common case (text appended to a string)
    without gradio_client's deep copy of the whole value per message."""
    if isinstance(value, str) and isinstance(diff, list):
        for edit in diff:
            if not (isinstance(edit, list) and len(edit) == 3 and edit[1] == []):
                break
            action, _, text = edit
            if action == "append" and isinstance(text, str):
                value += text
            elif action == "replace":
                value = text
            else:
                break
        else:
            return value
    return gc_utils.apply_diff(value, diff)


def _deliver(helper: Any, message: dict[str, Any], seen: _Seen) -> None:
    """Hand one message to the job (its status, its output so far) as gradio_client does."""
    kind = message["msg"]
    with helper.lock:
        output = message.get("output", {}).get("data", [])
        if kind == ServerMessage.process_generating:
            if seen.outputs is None:
                seen.outputs = list(output)
            else:
                for i, value in enumerate(output):
                    if i >= len(seen.outputs):  # an output added by a hot reload mid-stream
                        seen.outputs.append(None)
                    seen.outputs[i] = _apply(seen.outputs[i], value)
                    output[i] = seen.outputs[i]
        if output and kind != ServerMessage.process_completed:
            try:
                result = helper.prediction_processor(*output)
            except Exception as exc:
                result = [exc]
            helper.job.outputs.append(result)
            helper.updates.put_nowait(
                gc_utils.OutputUpdate(outputs=result, success=message.get("success", True))
            )
        # Every generating message carries the same status: only the first of a run is new.
        if not (kind == ServerMessage.process_generating == seen.kind):
            status = _status(message)
            helper.job.latest_status = status
            helper.updates.put_nowait(status)
        seen.kind = kind
        if kind == ServerMessage.process_completed:
            helper.updates.put_nowait(
                gc_utils.OutputUpdate(
                    outputs=message["output"], final=True, success=message.get("success", True)
                )
            )


def _status(message: dict[str, Any]) -> Any:
    kind = message["msg"]
    log_message = None
    if kind == ServerMessage.log and message.get("log") and message.get("level"):
        log_message = (message["log"], message["level"])
    return gc_utils.StatusUpdate(
        code=Status.msg_to_status(kind),
        queue_size=message.get("queue_size"),
        rank=message.get("rank"),
        success=message.get("success"),
        time=datetime.now(),
        eta=message.get("rank_eta"),
        progress_data=(
            gc_utils.ProgressUnit.from_msg(message["progress_data"])
            if "progress_data" in message
            else None
        ),
        log=log_message,
    )
