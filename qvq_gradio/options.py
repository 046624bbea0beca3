"""Per-call options: one home for the keywords every surface takes.

``Session.events/stream/ask``, their blocking twins, the module-level ``ask``/``stream``/
``events``, ``notebook.show``/``ashow``, ``Pool`` and the batch engine all take the same
per-call options, typed once as :class:`AskOptions` and spelled ``**options:
Unpack[AskOptions]`` (IDEs still show every keyword). An option left out means "the session's
default". :func:`ask_options` checks them at call time, as a normal signature would: an unknown
keyword is a ``TypeError`` naming the function called, a timeout that is not a positive, finite
number an :class:`~qvq_gradio.errors.OptionError` (an ``InputError``, so a ``ValueError``).
``timeout`` is an alias of ``total_timeout``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypedDict, cast

from .errors import OptionError
from .imaging import ImageOptions

__all__ = ["ASK_OPTIONS", "SAMPLING", "AskOptions", "ask_options", "check_timeout"]


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
    #: Sampling parameters, sent to the Space's input of that meaning when it has one (a
    #: ChatInterface's "Temperature" slider, say) and not sent otherwise; what was applied is
    #: recorded in the history. QVQ's Space has no such inputs.
    temperature: float | None
    max_tokens: int | None
    top_p: float | None


#: The names of :class:`AskOptions`, in declaration order.
ASK_OPTIONS: Final = tuple(AskOptions.__annotations__)
_OPTIONAL_TIMEOUTS: Final = ("idle_timeout", "total_timeout")


#: The sampling parameters among them, as (name, lowest, highest, integer).
SAMPLING: Final = (
    ("temperature", 0.0, 100.0, False),
    ("max_tokens", 1, 10_000_000, True),
    ("top_p", 0.0, 1.0, False),
)

#: Other names accepted for an option (the provider's and gpt4free's spelling).
ALIASES: Final = {"timeout": "total_timeout"}


def check_timeout(name: str, value: Any, *, optional: bool) -> None:
    """:class:`OptionError` unless ``value`` is a positive, finite number of seconds (or None
    if optional)."""
    if value is None and optional:
        return
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if not number or not value > 0 or not math.isfinite(value):
        hint = " (or None for no limit)" if optional else ""
        raise OptionError(
            f"{name} must be a positive, finite number of seconds{hint}, got {value!r}"
        )


def ask_options(given: Mapping[str, Any], *, where: str) -> AskOptions:
    """``given`` checked as :class:`AskOptions` (``where`` names the function for errors)."""
    given = dict(given)
    for alias, name in ALIASES.items():
        if alias in given:
            if name in given:
                raise TypeError(f"{where}() got both {alias!r} and {name!r} (the same option)")
            given[name] = given.pop(alias)
    for name in given:
        if name not in ASK_OPTIONS:
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")
    for name in ("idle_timeout", "total_timeout", "connect_timeout"):
        if name in given:
            check_timeout(name, given[name], optional=name in _OPTIONAL_TIMEOUTS)
    for name, low, high, integer in SAMPLING:
        value = given.get(name)
        if value is None:
            continue
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not (
            low <= value <= high and math.isfinite(value)
        ):
            kind = "a whole number" if integer else "a number"
            raise OptionError(f"{name} must be {kind} from {low} to {high}, got {value!r}")
    image_options = given.get("image_options")
    if image_options is not None and not isinstance(image_options, ImageOptions):
        raise TypeError(
            f"image_options must be an ImageOptions, not {type(image_options).__name__}"
        )
    return cast(AskOptions, dict(given))
