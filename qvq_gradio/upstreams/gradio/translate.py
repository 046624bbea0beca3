"""The one place where errors from gradio_client, httpx and the Hub client become ours.

:func:`translate_error` maps a library error to the most specific error of
:mod:`qvq_gradio.errors`; callers raise the result ``from exc``. ZeroGPU's quota and no-GPU
messages (HTML links and all) are recognised here, and the time a quota message asks to wait
becomes ``retry_after``.
"""

from __future__ import annotations

import concurrent.futures
import html
import json
import re

import httpx
from gradio_client import exceptions as gc_exceptions
from gradio_client import utils as gc_utils

from ..._secrets import scrub
from ...errors import (
    AppError,
    AuthenticationError,
    ConnectTimeoutError,
    GPUUnavailableError,
    IdleTimeoutError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    ResponseError,
    SpaceConnectionError,
)
from .hub import INVALID_STATE, hub_error, unavailable

__all__ = ["clean_message", "parse_retry_after", "translate_error"]


_TAG = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"\s+")
_QUOTA = re.compile(r"GPU quota|exceeded your .*quota", re.IGNORECASE)
_NO_GPU = re.compile(r"No GPU (?:is )?(?:currently )?available", re.IGNORECASE)
_RETRY_CLOCK = re.compile(r"(?:retry|try again) in (?:(\d+):)?(\d{1,2}):(\d{2})\b", re.IGNORECASE)
_RETRY_SECONDS = re.compile(
    r"(?:retry|try again) in (\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|mins?|minutes?)\b",
    re.IGNORECASE,
)


def clean_message(message: str) -> str:
    """Strip HTML (ZeroGPU messages carry links) and fold white space."""
    return _SPACES.sub(" ", html.unescape(_TAG.sub("", message))).strip()


def parse_retry_after(message: str) -> float | None:
    """Seconds to wait, from ``retry in 0:09:48`` / ``retry in 9:48`` / ``try again in 30s``."""
    clock = _RETRY_CLOCK.search(message)
    if clock:
        hours, minutes, seconds = clock.groups()
        return float(int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds))
    amount = _RETRY_SECONDS.search(message)
    if amount:
        value, unit = float(amount.group(1)), amount.group(2).lower()
        return value * 60 if unit.startswith("m") else value
    return None


def _classify_app_error(raw: str | None, space: str) -> ResponseError:
    if not raw:
        # An error with no message is NOT a quota error (docs/design.md, "ZeroGPU").
        return AppError("The Space raised an error without a message", space=space)
    message = clean_message(raw)
    if _QUOTA.search(message):
        return QuotaExceededError(message, retry_after=parse_retry_after(message), space=space)
    if _NO_GPU.search(message):
        return GPUUnavailableError(message, space=space)
    return AppError(message, space=space)


def _from_status(code: int, detail: str, space: str) -> ResponseError:
    if code in (401, 403):
        return AuthenticationError(
            f"{space} refused our credentials (HTTP {code}); check the Hugging Face token",
            space=space,
        )
    if code == 429:
        return RateLimitError(f"Too many requests to {space} (HTTP 429): {detail}", space=space)
    if code == 503:
        return RateLimitError(f"The queue of {space} is full (HTTP 503); retry later", space=space)
    return SpaceConnectionError(f"{space} answered HTTP {code}: {detail}", space=space)


def translate_error(exc: BaseException, *, space: str, connecting: bool = False) -> ResponseError:
    """Map an error raised by gradio_client (or httpx under it) to our tree.

    Callers raise the result ``from exc``. Already-translated errors pass through. ``exc`` and
    every exception chained to it are scrubbed of tokens first: they stay reachable (and keep
    their types) as ``__cause__`` for debugging, without any credential a Space echoed.
    ``connecting``: the error came while reaching the Space and reading its API, where every
    timeout is a connect timeout; elsewhere a read timeout means the Space stopped sending.
    """
    scrub(exc)
    if isinstance(exc, ResponseError):
        return exc
    if isinstance(exc, gc_exceptions.AppError):
        return _classify_app_error(exc.message, space)
    if isinstance(exc, gc_exceptions.AuthenticationError):
        return AuthenticationError(
            f"{space} refused our credentials; check the Hugging Face token", space=space
        )
    if isinstance(exc, gc_exceptions.ValidationError):
        return AppError(f"The Space rejected the input: {clean_message(str(exc))}", space=space)
    if isinstance(exc, gc_utils.QueueError):
        return RateLimitError(f"The queue of {space} is full; retry later", space=space)
    if isinstance(exc, gc_utils.TooManyRequestsError):
        return RateLimitError(f"Too many requests to {space}; retry later", space=space)
    if isinstance(exc, httpx.HTTPStatusError):
        return _from_status(exc.response.status_code, exc.response.reason_phrase, space)
    if isinstance(exc, httpx.TimeoutException):
        if connecting or isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
            return ConnectTimeoutError(f"Timed out reaching {space}: {exc!r}", space=space)
        if isinstance(exc, httpx.ReadTimeout):
            return IdleTimeoutError(f"{space} stopped sending (read timed out): {exc!r}",
                                    space=space)
        return SpaceConnectionError(f"Timed out sending to {space}: {exc!r}", space=space)
    if isinstance(exc, httpx.TransportError):
        return SpaceConnectionError(f"Could not reach {space}: {exc}", space=space)
    hub = hub_error(exc, space)
    if hub is not None:
        return hub
    if isinstance(exc, concurrent.futures.CancelledError):
        return SpaceConnectionError(
            "The job was cancelled by the Space or the connection to it was lost", space=space
        )
    if isinstance(exc, json.JSONDecodeError):
        if re.match(r"\s*<(?:!doctype|html|head|body)", exc.doc[:200], re.IGNORECASE):
            return ProtocolError(
                f"{space} answered with an HTML page: it is not a Gradio app (a login page "
                "or a captive portal?); check the Space URL and any proxy",
                space=space,
            )
        return ProtocolError(f"The Space answered with text that is not JSON: {exc}", space=space)
    text = str(exc)
    invalid = INVALID_STATE.search(text)
    if invalid:  # gradio_client's check of the Space's state on the Hub
        return unavailable(space, invalid.group(1))
    if "Cannot find a function with `api_name`" in text:
        return ProtocolError(f"The Space has no /generate endpoint: {text}", space=space)
    if "Server stopped" in text:
        return SpaceConnectionError("The Space stopped while answering", space=space)
    if "Could not get Gradio config" in text:
        return ProtocolError(
            f"{space} is not a Gradio app: it answered, but with no Gradio config (the wrong "
            "port, a login page?); check the Space URL and any proxy",
            space=space,
        )
    if "Could not fetch config" in text or "Could not find Space" in text:
        return SpaceConnectionError(text, space=space)
    if "Could not fetch api info" in text:
        return SpaceConnectionError(f"Could not read the Space's API: {text}", space=space)
    return ResponseError(f"{type(exc).__name__}: {text}", space=space)
