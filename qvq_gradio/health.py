"""Checking Spaces without asking them anything: :func:`probe` and :func:`probe_all`.

``qvq spaces`` prints these as a table. A probe connects (reading the Space's config and API,
through the Hub for a Space id), reads its queue status, and times that round trip; an
OpenAI-compatible endpoint's lists its models (``GET /models``, with its key), timed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from .endpoints import is_endpoint
from .errors import AppError, AuthenticationError, QVQError
from .session import Session
from .upstreams.gradio import describe, queue_status, translate_error
from .upstreams.openai import OpenAIUpstream

__all__ = ["SpaceCheck", "probe", "probe_all"]


@dataclass(frozen=True)
class SpaceCheck:
    """What a probe of one Space found."""

    space: str
    reachable: bool
    gradio_version: str | None = None
    protocol: str | None = None
    generate_ok: bool | None = None  #: the Space has an endpoint we can ask (a chat shape)
    shape: str | None = None  #: how it is asked (see ``Session.describe_shape``)
    queue_size: int | None = None
    round_trip: float | None = None  #: seconds for one request once connected
    error: str | None = None  #: "ErrorType: message" when something failed

    @property
    def usable(self) -> bool:
        return self.reachable and bool(self.generate_ok)


async def probe(space: str, **session_options: Any) -> SpaceCheck:
    """Connect to ``space`` and report on it; never raises for what the Space does."""
    if is_endpoint(space):
        return await _probe_endpoint(space, **session_options)
    try:
        async with Session(space, **session_options) as session:
            client = await session.client()
            shape: str | None = None
            refused: str | None = None
            try:
                shape = await session.describe_shape()
                generate_ok = True
            except QVQError as exc:
                generate_ok = False
                refused = f"{type(exc).__name__}: {exc}"
            try:
                queue_size, round_trip = await anyio.to_thread.run_sync(queue_status, client)
            except Exception as exc:
                raise translate_error(exc, space=session.space) from exc
            version, protocol = describe(client)
            return SpaceCheck(
                space=session.space,
                reachable=True,
                gradio_version=version,
                protocol=protocol,
                generate_ok=generate_ok,
                shape=shape,
                error=refused,
                queue_size=queue_size,
                round_trip=round_trip,
            )
    except QVQError as exc:
        return SpaceCheck(space=space, reachable=False, error=f"{type(exc).__name__}: {exc}")


async def _probe_endpoint(
    spec: str, *, proxy: str | None = None, connect_timeout: float = 30.0, **_: Any
) -> SpaceCheck:
    """An endpoint's probe: ``GET {base}/models`` with its key, timed."""
    try:
        upstream = OpenAIUpstream(spec, proxy=proxy, connect_timeout=connect_timeout)
    except QVQError as exc:
        return SpaceCheck(space=spec, reachable=False, error=f"{type(exc).__name__}: {exc}")
    try:
        start = anyio.current_time()
        listed = await upstream.models()
        note = None
        if listed and upstream.endpoint.model not in listed:
            note = f"its /models does not list {upstream.endpoint.model!r} (it may still serve it)"
        return SpaceCheck(
            space=upstream.name, reachable=True, protocol="openai", generate_ok=True,
            shape=upstream.describe(), round_trip=anyio.current_time() - start, error=note,
        )
    except (AuthenticationError, AppError) as exc:  # it answered, and refused
        return SpaceCheck(space=upstream.name, reachable=True, protocol="openai",
                          generate_ok=False, error=f"{type(exc).__name__}: {exc}")
    except QVQError as exc:
        return SpaceCheck(space=upstream.name, reachable=False,
                          error=f"{type(exc).__name__}: {exc}")
    finally:
        await upstream.aclose()


async def probe_all(spaces: Sequence[str], **session_options: Any) -> list[SpaceCheck]:
    """:func:`probe` every Space at once; results in the order given."""
    results: list[SpaceCheck | None] = [None] * len(spaces)

    async def one(index: int, space: str) -> None:
        results[index] = await probe(space, **session_options)

    async with anyio.create_task_group() as tg:
        for index, space in enumerate(spaces):
            tg.start_soon(one, index, space)
    return [result for result in results if result is not None]
