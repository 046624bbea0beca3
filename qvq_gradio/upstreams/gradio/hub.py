"""Spaces given as ``owner/name``: their state on the Hugging Face Hub, and what it means.

gradio_client asks the Hub for a Space's runtime before connecting and raises a plain
``ValueError`` for a Space that cannot run; :func:`space_state` asks first, so a Space that is
paused, broken or unknown gets an error saying what its state means and what to do
(:func:`unavailable`), and one that is asleep or starting can be waited for.
"""

from __future__ import annotations

import re

from ...errors import (
    AuthenticationError,
    ConnectTimeoutError,
    ResponseError,
    SpaceConnectionError,
    SpaceUnavailableError,
)

__all__ = ["INVALID_STATE", "SPACE_STATES", "WAKING", "hub_error", "space_state", "unavailable"]

#: Hub states of a Space that will answer once it has started.
WAKING = frozenset({"SLEEPING", "BUILDING", "APP_STARTING"})
#: gradio_client's message for a Space in a state it refuses.
INVALID_STATE = re.compile(r"invalid state: (\w+)")


#: What each Hub state that is not "running" means, and what to do about it.
SPACE_STATES = {
    "PAUSED": "is paused by its owner: use another Space, or ask the owner to restart it",
    "STOPPED": "is stopped: use another Space, or ask the owner to restart it",
    "BUILD_ERROR": "failed to build: the owner must fix it; use another Space meanwhile",
    "RUNTIME_ERROR": "crashed (runtime error): the owner must restart it; use another Space",
    "CONFIG_ERROR": "has a broken configuration: the owner must fix it; use another Space",
    "NO_APP_FILE": "has no app file: it is not (yet) an app; check the Space id",
    "DELETING": "is being deleted: use another Space",
}
def unavailable(space: str, state: str) -> SpaceUnavailableError:
    """The error for a Space in ``state`` (one of :data:`SPACE_STATES`)."""
    meaning = SPACE_STATES.get(state, f"is {state.lower()} and cannot answer; use another Space")
    return SpaceUnavailableError(f"{space} {meaning} (state {state})", state=state, space=space)


def _is_named(exc: BaseException, names: tuple[str, ...]) -> bool:
    """``exc`` derives from an httpx-family class named one of ``names`` (the Hub client uses
    httpx2, older versions httpx: their classes share names, not identity)."""
    return any(
        cls.__name__ in names and cls.__module__.split(".")[0].startswith("httpx")
        for cls in type(exc).__mro__
    )


def hub_error(exc: BaseException, space: str) -> ResponseError | None:
    """The Hub client's errors, met when a Space is given as ``owner/name``."""
    try:
        from huggingface_hub import errors as hub_errors
    except ImportError:  # pragma: no cover - gradio_client depends on huggingface_hub
        return None
    if isinstance(exc, hub_errors.RepositoryNotFoundError):
        return SpaceUnavailableError(
            f"There is no Space {space} on the Hub (or it is private: give a token that can "
            "see it)",
            state="NOT_FOUND",
            space=space,
        )
    if isinstance(exc, hub_errors.HfHubHTTPError):
        response = getattr(exc, "response", None)
        code = getattr(response, "status_code", None)
        if code in (401, 403):
            return AuthenticationError(
                f"The Hub refused our credentials for {space} (HTTP {code}); check the token",
                space=space,
            )
        if code == 404:
            return SpaceUnavailableError(
                f"There is no Space {space} on the Hub", state="NOT_FOUND", space=space
            )
        return SpaceConnectionError(f"The Hub answered HTTP {code} about {space}", space=space)
    if _is_named(exc, ("TimeoutException",)):
        return ConnectTimeoutError(
            f"Timed out asking the Hugging Face Hub about {space}: {exc!r}", space=space
        )
    if _is_named(exc, ("TransportError",)):
        return SpaceConnectionError(
            f"Could not reach the Hugging Face Hub to look up {space}: {exc}", space=space
        )
    return None


def space_state(space: str, token: str | None) -> str:
    """The Space's state on the Hub, e.g. ``RUNNING`` (blocking; library errors not mapped)."""
    import huggingface_hub

    runtime = huggingface_hub.get_space_runtime(space, token=token)
    return str(getattr(runtime.stage, "value", runtime.stage))
