"""Our errors as the OpenAI API gives them: an HTTP status and ``{"error": {...}}``.

The one place where a :class:`~qvq_gradio.errors.QVQError` becomes an HTTP answer. The SDKs
retry 429 and 5xx honouring ``Retry-After``, so every 429 carries one (seconds, never more than
the wait the Space asked for).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from .._secrets import redact
from ..errors import (
    AppError,
    AuthenticationError,
    GPUUnavailableError,
    InputError,
    MediaDownloadError,
    ProtocolError,
    QuotaExceededError,
    QVQError,
    RateLimitError,
    SpaceConnectionError,
    SpaceUnavailableError,
    StreamTimeoutError,
    UnknownModelError,
)

__all__ = ["FETCH_FAILED", "APIError", "api_error"]

#: The one message for an image URL that could not be fetched, whatever the reason.
FETCH_FAILED: Final = (
    "An image URL could not be fetched: it must be a public http(s) URL that serves an image "
    "within this server's limits"
)

#: Retry-After when the Space did not say how long to wait (a full queue, no free GPU).
_RETRY_DEFAULT: Final = 10


@dataclass
class APIError(Exception):
    """An error response: status, OpenAI error ``type`` and ``code``, the message."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": redact(self.message),
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


def api_error(exc: QVQError) -> APIError:
    """The HTTP answer for one of our errors."""
    message = f"{type(exc).__name__}: {exc}"
    cooling = getattr(exc, "cooling_for", None)
    if cooling is not None and not isinstance(exc, QuotaExceededError):
        # Every Space of the pool is cooling down: ask again when the first is back.
        return APIError(429, message, "rate_limit_error", "all_spaces_cooling",
                        retry_after=cooling)
    if isinstance(exc, MediaDownloadError):
        # One message for every way a fetch fails (refused, unreachable, a 404, not an image):
        # a client learns nothing of what answers on the server's network.
        return APIError(400, FETCH_FAILED, code="invalid_image", param="messages")
    if isinstance(exc, UnknownModelError):
        return APIError(404, message, code="model_not_found", param="model")
    if isinstance(exc, InputError):
        return APIError(400, message, code="invalid_input", param="messages")
    if isinstance(exc, QuotaExceededError):
        wait = exc.retry_after if exc.retry_after is not None else _RETRY_DEFAULT
        return APIError(429, message, "rate_limit_error", "quota_exceeded", retry_after=wait)
    if isinstance(exc, (RateLimitError, GPUUnavailableError)):
        return APIError(429, message, "rate_limit_error", "rate_limited",
                        retry_after=_RETRY_DEFAULT)
    if isinstance(exc, (SpaceUnavailableError, SpaceConnectionError)):
        return APIError(503, message, "service_unavailable", "space_unavailable")
    if isinstance(exc, StreamTimeoutError):
        return APIError(504, message, "timeout", "space_timeout")
    if isinstance(exc, AuthenticationError):
        return APIError(502, message, "upstream_error", "space_refused_credentials")
    if isinstance(exc, (AppError, ProtocolError)):
        return APIError(502, message, "upstream_error", "space_error")
    return APIError(502, message, "upstream_error", "space_error")
