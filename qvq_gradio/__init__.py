"""qvq-gradio: Qwen's QVQ-72B vision-reasoning Space as an async generator of text.

Data flows one way: messages and images → :mod:`~qvq_gradio.prompt` and
:mod:`~qvq_gradio.media` → :class:`~qvq_gradio.Session` (gradio_client job) → text deltas.
:class:`Qwen_QVQ_72B` is the seed's provider surface on top.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# What needs no network library is imported now; the rest when first used (``qvq --help``
# and ``qvq history`` then never import httpx or gradio_client).
from .answer import extract_final_answer
from .errors import (
    AppError,
    AuthenticationError,
    ConnectTimeoutError,
    GPUUnavailableError,
    HistoryError,
    IdleTimeoutError,
    ImageTooLargeError,
    InputError,
    MediaDownloadError,
    MediaError,
    MediaTypeError,
    MessagesError,
    ModelsFileError,
    OptionError,
    ProtocolError,
    QuotaExceededError,
    QVQError,
    RateLimitError,
    ResponseError,
    SpaceConnectionError,
    SpaceNameError,
    SpaceUnavailableError,
    StreamTimeoutError,
    TotalTimeoutError,
    UnknownModelError,
)
from .events import (
    Event,
    Finished,
    QueueUpdate,
    ReasoningDelta,
    ShapeFound,
    SpaceChanged,
    SpaceWaking,
    TextDelta,
)

if TYPE_CHECKING:
    from .imaging import ImageOptions
    from .media import ImageInput, MediaListType, MultipleImagesWarning
    from .options import AskOptions
    from .pool import Pool, SpaceStatus, connect
    from .prompt import Messages
    from .protocol import SessionLike
    from .provider import Qwen_QVQ_72B, close_shared_sessions, shared_session
    from .session import Session
    from .spaces import DEFAULT_SPACE, SPACE_ENV
    from .sync import SyncSession, ask, stream

_LAZY: dict[str, str] = {
    "ImageOptions": "imaging",
    "ImageInput": "media",
    "MediaListType": "media",
    "MultipleImagesWarning": "media",
    "AskOptions": "options",
    "Pool": "pool",
    "SpaceStatus": "pool",
    "connect": "pool",
    "Messages": "prompt",
    "SessionLike": "protocol",
    "Qwen_QVQ_72B": "provider",
    "close_shared_sessions": "provider",
    "shared_session": "provider",
    "Session": "session",
    "DEFAULT_SPACE": "spaces",
    "SPACE_ENV": "spaces",
    "SyncSession": "sync",
    "ask": "sync",
    "stream": "sync",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SPACE",
    "SPACE_ENV",
    "AppError",
    "AskOptions",
    "AuthenticationError",
    "ConnectTimeoutError",
    "Event",
    "Finished",
    "GPUUnavailableError",
    "HistoryError",
    "IdleTimeoutError",
    "ImageInput",
    "ImageOptions",
    "ImageTooLargeError",
    "InputError",
    "MediaDownloadError",
    "MediaError",
    "MediaListType",
    "MediaTypeError",
    "Messages",
    "MessagesError",
    "ModelsFileError",
    "MultipleImagesWarning",
    "OptionError",
    "Pool",
    "ProtocolError",
    "QVQError",
    "QueueUpdate",
    "QuotaExceededError",
    "Qwen_QVQ_72B",
    "RateLimitError",
    "ReasoningDelta",
    "ResponseError",
    "Session",
    "SessionLike",
    "ShapeFound",
    "SpaceChanged",
    "SpaceConnectionError",
    "SpaceNameError",
    "SpaceStatus",
    "SpaceUnavailableError",
    "SpaceWaking",
    "StreamTimeoutError",
    "SyncSession",
    "TextDelta",
    "TotalTimeoutError",
    "UnknownModelError",
    "__version__",
    "ask",
    "close_shared_sessions",
    "connect",
    "extract_final_answer",
    "shared_session",
    "stream",
]
