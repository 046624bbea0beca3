"""Every error qvq-gradio raises, in one tree.

::

    QVQError
    ├── InputError (also ValueError)         bad input, raised before anything is sent
    │   ├── UnknownModelError                 model name not one of Qwen_QVQ_72B.models
    │   ├── MessagesError                     messages of the wrong shape, role or type
    │   ├── SpaceNameError                    a Space that is neither a URL nor ``owner/name``
    │   ├── OptionError                       a per-call option with a bad value (a timeout)
    │   ├── ModelsFileError                   a models file that cannot be read or used
    │   └── MediaError                        an image that cannot be read or used
    │       ├── MediaTypeError (also TypeError) an object that is no kind of image
    │       ├── ImageTooLargeError            over the decoding limit (a decompression bomb)
    │       └── MediaDownloadError            an image URL could not be fetched as an image
    ├── HistoryError                          the answer history's database cannot be used
    └── ResponseError                         the seed's name: anything that came from the Space
        ├── SpaceConnectionError              could not reach the Space, or it went away
        ├── SpaceUnavailableError             the Space is paused, stopped, broken or unknown
        ├── AuthenticationError               the Space refused our credentials
        ├── QuotaExceededError                ZeroGPU quota used up (``retry_after`` seconds)
        ├── GPUUnavailableError               ZeroGPU had no GPU free for us
        ├── RateLimitError                    HTTP 429 or the Space's queue is full
        ├── AppError                          the Space's app raised an error (its message)
        ├── ProtocolError                     the Space answered in a shape we do not know
        └── StreamTimeoutError (also TimeoutError)
            ├── ConnectTimeoutError           the Space did not answer in ``connect_timeout``
            ├── IdleTimeoutError              no new text for ``idle_timeout`` seconds
            └── TotalTimeoutError             the answer took longer than ``total_timeout``

Every :class:`ResponseError` carries ``text``: the answer text that had arrived when it was
raised ("" before the first token), so nothing received is lost.

Messages never contain a token (:mod:`qvq_gradio._secrets` redacts them, and the exceptions
chained to ours). Errors coming from gradio_client, httpx and the Hub client are translated in
exactly one place, :func:`qvq_gradio.upstreams.gradio.translate.translate_error`, always
``raise ... from exc``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._secrets import redact

__all__ = [
    "AppError",
    "AuthenticationError",
    "ConnectTimeoutError",
    "GPUUnavailableError",
    "HistoryError",
    "IdleTimeoutError",
    "ImageTooLargeError",
    "InputError",
    "MediaDownloadError",
    "MediaError",
    "MediaTypeError",
    "MessagesError",
    "ModelsFileError",
    "OptionError",
    "ProtocolError",
    "QVQError",
    "QuotaExceededError",
    "RateLimitError",
    "ResponseError",
    "SpaceConnectionError",
    "SpaceNameError",
    "SpaceUnavailableError",
    "StreamTimeoutError",
    "TotalTimeoutError",
    "UnknownModelError",
]


class QVQError(Exception):
    """Base of every error this package raises.

    Every error survives ``copy``, ``deepcopy`` and ``pickle`` (batch workers, multiprocessing
    and ``datasets.map(num_proc=...)`` pickle exceptions) with all its attributes, whatever
    arguments its class requires: it is rebuilt from its ``args`` and attributes, without
    calling ``__init__`` again.

    What to do about an error is said here, once, by its class (the pool, the batch engine,
    ``qvq serve`` and the command line read it; nothing keeps a table of its own):
    ``exit_code`` (the command line's), ``http_status`` with OpenAI's error ``api_type`` and
    ``api_code`` (``qvq serve``'s answer), ``transient`` (asking again later may work: a batch
    retries it) and ``failover`` (this Space could not take the question: a pool moves it to
    another, before the first token, and cools the Space down).
    """

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 502
    api_type: ClassVar[str] = "upstream_error"
    api_code: ClassVar[str] = "space_error"
    transient: ClassVar[bool] = False
    failover: ClassVar[bool] = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args), dict(vars(self)))


def _rebuild(cls: type[QVQError], args: tuple[Any, ...]) -> QVQError:
    error = cls.__new__(cls)
    error.args = args
    return error


# -- input: raised before any network call ------------------------------------------------------


class InputError(QVQError, ValueError):
    """The caller's input cannot be sent; nothing was sent."""

    exit_code = 2
    http_status = 400
    api_type = "invalid_request_error"
    api_code = "invalid_input"


class UnknownModelError(InputError):
    """The model name is not one this provider serves."""

    http_status = 404
    api_code = "model_not_found"

    def __init__(self, model: str, valid: list[str]) -> None:
        self.model = model
        self.valid = list(valid)
        super().__init__(f"Unknown model {model!r}; valid models are: {', '.join(self.valid)}")


class MessagesError(InputError):
    """``messages`` is not a list of ``{"role", "content"}`` dicts this package can send."""


class SpaceNameError(InputError):
    """A Space given as neither an ``http(s)://`` URL nor a ``owner/name`` Space id."""


class ModelsFileError(InputError):
    """The models file (``models.toml``) cannot be read, or holds what cannot be used."""


class OptionError(InputError):
    """A per-call or session option has a value that cannot be used (e.g. a timeout of
    ``nan``); a misspelt option name is a plain ``TypeError``, as for any Python call."""


class MediaError(InputError):
    """An image given in ``media`` or inside a message cannot be read or used."""


class MediaTypeError(MediaError, TypeError):
    """An image input of a type this package cannot use; the message lists what it accepts."""


class ImageTooLargeError(MediaError):
    """The image has more pixels than may be decoded (``ImageOptions.max_image_pixels``)."""


class MediaDownloadError(MediaError):
    """An image URL failed: HTTP error, too large, too slow, or not an image."""

    exit_code = 3  # the network, not the input
    api_code = "invalid_image"


class HistoryError(QVQError):
    """The answer history's SQLite database cannot be opened or used (damaged, not a database,
    read-only, on a full disk). ``path`` names it; the file is left as it was."""

    http_status = 500
    api_type = "server_error"
    api_code = "history_error"

    def __init__(self, message: str, *, path: str) -> None:
        self.path = path
        super().__init__(message)


# -- response: everything that came from the Space ----------------------------------------------


class ResponseError(QVQError):
    """The Space (or the way to it) failed. The seed's name; base of every Space-side failure.

    ``text`` holds the answer text that had arrived before the failure ("" if none), so a
    caller of ``ask()`` loses nothing; ``space`` names the Space it is about.
    ``cooling_for``: set when a :class:`~qvq_gradio.Pool` raises the error because every one
    of its Spaces is cooling down: the seconds until the first of them is asked again.
    """

    cooling_for: float | None = None

    def __init__(self, message: str, *, text: str = "", space: str | None = None) -> None:
        self.message = redact(message)
        self.space = space
        self.text = text
        super().__init__(self.message)

    @property
    def text(self) -> str:
        """The answer text that had arrived (credentials redacted, like the message)."""
        return self._text

    @text.setter
    def text(self, value: str) -> None:
        self._text = redact(value) if value else value


class SpaceConnectionError(ResponseError):
    """The Space could not be reached, its config could not be read, or it stopped."""

    exit_code = 3
    http_status = 503
    api_type = "service_unavailable"
    api_code = "space_unavailable"
    transient = True
    failover = True


class SpaceUnavailableError(ResponseError):
    """The Space exists but cannot answer (``state``: ``PAUSED``, ``STOPPED``, ``BUILD_ERROR``,
    ``RUNTIME_ERROR``, ``CONFIG_ERROR``, ``NO_APP_FILE``), or there is no such Space
    (``state`` ``NOT_FOUND``). The message says what the state means and what to do."""

    exit_code = 3
    http_status = 503
    api_type = "service_unavailable"
    api_code = "space_unavailable"
    failover = True

    def __init__(
        self, message: str, *, state: str, text: str = "", space: str | None = None
    ) -> None:
        self.state = state
        super().__init__(message, text=text, space=space)


class AuthenticationError(ResponseError):
    """The Space refused our credentials (a missing or wrong Hugging Face token)."""

    exit_code = 4
    api_code = "space_refused_credentials"


class QuotaExceededError(ResponseError):
    """The ZeroGPU quota is used up. ``retry_after`` is in seconds when the Space said so.

    Logged-in requests (pass ``api_key`` / set ``HF_TOKEN``) get a larger quota.
    """

    exit_code = 5
    http_status = 429
    api_type = "rate_limit_error"
    api_code = "quota_exceeded"
    failover = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        text: str = "",
        space: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, text=text, space=space)


class GPUUnavailableError(ResponseError):
    """ZeroGPU had no GPU available for this request; retrying later usually works."""

    exit_code = 5
    http_status = 429
    api_type = "rate_limit_error"
    api_code = "rate_limited"
    transient = True
    failover = True


class RateLimitError(ResponseError):
    """Too many requests (HTTP 429) or the Space's queue is full; retry later."""

    exit_code = 5
    http_status = 429
    api_type = "rate_limit_error"
    api_code = "rate_limited"
    transient = True
    failover = True


class AppError(ResponseError):
    """The Space's own code raised an error; ``message`` is what the Space said."""

    exit_code = 7


class ProtocolError(ResponseError):
    """The Space answered in a shape this package does not understand."""

    exit_code = 7


class StreamTimeoutError(ResponseError, TimeoutError):
    """A time limit ran out; the job was cancelled upstream (``text``: what had arrived)."""

    exit_code = 6
    http_status = 504
    api_type = "timeout"
    api_code = "space_timeout"


class ConnectTimeoutError(StreamTimeoutError):
    """The Space did not answer within ``connect_timeout`` seconds."""

    transient = True
    failover = True


class IdleTimeoutError(StreamTimeoutError):
    """Generation started but no new text came for ``idle_timeout`` seconds."""

    transient = True


class TotalTimeoutError(StreamTimeoutError):
    """The whole answer took longer than ``total_timeout`` seconds."""
