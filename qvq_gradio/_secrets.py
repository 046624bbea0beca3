"""Secrets never leave the process: redaction of texts, exceptions and log records.

* :func:`register_secret` — a credential this process was given (a token, a credential
  header): from then on :func:`redact` removes it from every text, whatever its shape;
* :func:`redact` — a text with every known credential, and anything that looks like a Hugging
  Face token or a bearer credential, as ``***``;
* :func:`scrub` — an exception and every exception chained to it, redacted in place (what a
  traceback or ``log.exception`` would print of them);
* the log records of this package and of the libraries under it (gradio_client, httpx,
  huggingface_hub: what ``--debug`` shows) redacted as they are made;
* :func:`register_url` — a URL's query string and password (a signed URL's secret) as
  credentials.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import urllib.parse
from collections import OrderedDict
from typing import Any

__all__ = ["LOGGERS", "redact", "register_secret", "register_url", "scrub"]

# Hugging Face tokens ("hf_" + letters) and bearer credentials never reach a message.
_SECRET = re.compile(r"\bhf_[A-Za-z0-9]{6,}|(?<=Bearer )\S+", re.IGNORECASE)
# The credentials this process was given (tokens, credential headers), whatever their shape.
# Bounded (a server forwarding each user's key registers one per user), least recently
# registered first out; every connection registers its credentials again, so those in use stay.
_known: OrderedDict[str, None] = OrderedDict()
_known_lock = threading.Lock()
_MIN_SECRET = 6  # shorter values would redact ordinary words
MAX_SECRETS = 1024


def register_secret(value: str | None) -> None:
    """Treat ``value`` as a credential: :func:`redact` removes it from every text from now on."""
    if value and len(value) >= _MIN_SECRET:
        with _known_lock:
            _known[value] = None
            _known.move_to_end(value)
            while len(_known) > MAX_SECRETS:
                _known.popitem(last=False)


def redact(text: str) -> str:
    """``text`` with every known credential and anything that looks like a token as ``***``."""
    with _known_lock:
        secrets = sorted(_known, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return _SECRET.sub("***", text)


class _RedactRecords(logging.Filter):
    """Log records of the ``qvq_gradio`` logger never carry a credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


logging.getLogger("qvq_gradio").addFilter(_RedactRecords())

#: Libraries whose log records (shown by ``qvq --debug``) may carry a token, a credential
#: header or a signed URL: their records are redacted as they are made, wherever they go.
LOGGERS = ("qvq_gradio", "gradio_client", "gradio", "httpx", "httpcore", "huggingface_hub")
_make_record = logging.getLogRecordFactory()


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _make_record(*args, **kwargs)
    if record.name.split(".")[0] in LOGGERS:
        _RedactRecords().filter(record)
    return record


logging.setLogRecordFactory(_redacting_factory)


def register_url(url: str) -> None:
    """Treat what a URL may hide a credential in (its query string, its password) as secret."""
    parts = urllib.parse.urlsplit(url)
    register_secret(parts.query)
    register_secret(parts.password)



def scrub(exc: BaseException) -> None:
    """Redact tokens in ``exc`` and every exception chained to it, in place (args, messages,
    notes): what a traceback or ``log.exception`` would print of them."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        with contextlib.suppress(Exception):  # an exception type may refuse new attributes
            current.args = tuple(redact(a) if isinstance(a, str) else a for a in current.args)
            for name, value in list(vars(current).items()):
                if isinstance(value, str):
                    setattr(current, name, redact(value))
                elif name == "__notes__" and isinstance(value, list):
                    value[:] = [redact(v) if isinstance(v, str) else v for v in value]
        pending += [current.__cause__, current.__context__]
