"""Checking Spaces without asking them anything: :func:`probe` and :func:`probe_all`.

``qvq spaces`` prints these as a table. A probe connects (reading the Space's config and API,
through the Hub for a Space id), reads its queue status, and times that round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from .errors import QVQError
from .session import Session
from .upstreams.gradio import describe, queue_status, translate_error

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


async def probe_all(spaces: Sequence[str], **session_options: Any) -> list[SpaceCheck]:
    """:func:`probe` every Space at once; results in the order given."""
    results: list[SpaceCheck | None] = [None] * len(spaces)

    async def one(index: int, space: str) -> None:
        results[index] = await probe(space, **session_options)

    async with anyio.create_task_group() as tg:
        for index, space in enumerate(spaces):
            tg.start_soon(one, index, space)
    return [result for result in results if result is not None]
