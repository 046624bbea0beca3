"""Per-call options: one home for the keywords every surface takes.

``Session.events/stream/ask``, their blocking twins, the module-level ``ask``/``stream``/
``events``, ``notebook.show``/``ashow``, ``Pool`` and the batch engine all take the same
per-call options, typed once as :class:`AskOptions` and spelled ``**options:
Unpack[AskOptions]`` (IDEs still show every keyword). An option left out means "the session's
default". :func:`ask_options` checks them at call time, as a normal signature would: an unknown
keyword is a ``TypeError``, a timeout that is not a positive number a ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, TypedDict, cast

from .imaging import ImageOptions

__all__ = ["ASK_OPTIONS", "AskOptions", "ask_options", "check_timeout"]


class AskOptions(TypedDict, total=False):
    """Keywords every question takes; a missing one means the session's default."""

    #: More images (anything ``image=`` accepts); several become one grid by default.
    media: Sequence[Any] | None
    #: Seconds without new text once generation started (None: no limit).
    idle_timeout: float | None
    #: Seconds for the whole answer, queue included (None: no limit).
    total_timeout: float | None
    #: Seconds to reach the Space and read its API.
    connect_timeout: float
    #: How images are normalised (:class:`~qvq_gradio.ImageOptions`).
    image_options: ImageOptions | None


#: The names of :class:`AskOptions`, in declaration order.
ASK_OPTIONS: Final = tuple(AskOptions.__annotations__)
_OPTIONAL_TIMEOUTS: Final = ("idle_timeout", "total_timeout")


def check_timeout(name: str, value: Any, *, optional: bool) -> None:
    """``ValueError`` unless ``value`` is a positive number of seconds (or None if optional)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


def ask_options(given: Mapping[str, Any], *, where: str) -> AskOptions:
    """``given`` checked as :class:`AskOptions` (``where`` names the function for errors)."""
    for name in given:
        if name not in ASK_OPTIONS:
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")
    for name in ("idle_timeout", "total_timeout", "connect_timeout"):
        if name in given:
            check_timeout(name, given[name], optional=name in _OPTIONAL_TIMEOUTS)
    image_options = given.get("image_options")
    if image_options is not None and not isinstance(image_options, ImageOptions):
        raise TypeError(
            f"image_options must be an ImageOptions, not {type(image_options).__name__}"
        )
    return cast(AskOptions, dict(given))
