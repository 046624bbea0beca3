"""Secrets never leave the process: redaction of texts, exceptions and log records.

* :func:`register_secret` — a credential this process was given (a token, a credential
  header): from then on :func:`redact` removes it from every text, whatever its shape;
* :func:`redact` — a text with every known credential, and anything that looks like a Hugging
  Face token or a bearer credential, as ``***``;
* :func:`scrub` — an exception and every exception chained to it, redacted in place (what a
  traceback or ``log.exception`` would print of them);
* a logging filter on the ``qvq_gradio`` logger, so its records never carry a credential.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading

__all__ = ["redact", "register_secret", "scrub"]

# Hugging Face tokens ("hf_" + letters) and bearer credentials never reach a message.
_SECRET = re.compile(r"\bhf_[A-Za-z0-9]{6,}|(?<=Bearer )\S+", re.IGNORECASE)
# The credentials this process was given (tokens, credential headers), whatever their shape.
_known: set[str] = set()
_known_lock = threading.Lock()
_MIN_SECRET = 6  # shorter values would redact ordinary words


def register_secret(value: str | None) -> None:
    """Treat ``value`` as a credential: :func:`redact` removes it from every text from now on."""
    if value and len(value) >= _MIN_SECRET:
        with _known_lock:
            _known.add(value)


def redact(text: str) -> str:
    """``text`` with every known credential and anything that looks like a token as ``***``."""
    for secret in sorted(_known, key=len, reverse=True):
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
