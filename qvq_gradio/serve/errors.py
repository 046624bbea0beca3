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
    MediaDownloadError,
    QuotaExceededError,
    QVQError,
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
    """The HTTP answer for one of our errors: the status, type and code its class gives
    (``QVQError.http_status``, ``api_type``, ``api_code``)."""
    message = f"{type(exc).__name__}: {exc}"
    cooling = getattr(exc, "cooling_for", None)
    if cooling is not None and not isinstance(exc, QuotaExceededError):
        # Every Space of the pool is cooling down: ask again when the first is back.
        return APIError(429, message, "rate_limit_error", "all_spaces_cooling",
                        retry_after=cooling)
    if isinstance(exc, MediaDownloadError):
        # One message for every way a fetch fails (refused, unreachable, a 404, not an image):
        # a client learns nothing of what answers on the server's network.
        message = FETCH_FAILED
    param = {"model_not_found": "model"}.get(exc.api_code, "messages") if exc.http_status in (
        400, 404) else None
    retry_after: float | None = None
    if exc.http_status == 429:
        given = exc.retry_after if isinstance(exc, QuotaExceededError) else None
        retry_after = given if given is not None else _RETRY_DEFAULT
    return APIError(exc.http_status, message, exc.api_type, exc.api_code, param, retry_after)
    return APIError(502, message, "upstream_error", "space_error")
