"""One SSL context per process, shared by every HTTPS request this package makes.

httpx builds a new SSL context (loading the whole CA bundle, ~40 ms of GIL-holding CPU) for
each request unless ``verify`` already is one; gradio_client makes a module-level
``httpx.post`` per request, and image downloads are requests too. Both pass this context.

Loading the CA bundle still takes ~50 ms once per process, between connecting and the first
request. The CLI has it loaded on a thread of its own (:func:`warm_up`) while it imports what
the command needs (OpenSSL releases the GIL while it reads the bundle).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

__all__ = ["shared_ssl_context", "warm_up"]

_lock = threading.Lock()
_context: ssl.SSLContext | None = None


def shared_ssl_context() -> ssl.SSLContext:
    """The SSL context httpx would build by default, built once per process (a caller that
    comes while it is being built waits for it)."""
    global _context
    with _lock:
        if _context is None:
            _context = _build()
        return _context


def warm_up() -> None:
    """Build the shared context now, on a thread that ends once it is built (~50 ms of work).

    Not a daemon: a command that fails at once would otherwise exit while OpenSSL reads the
    bundle on that thread, and a daemon thread running C code as the interpreter finalizes
    can crash it (a segfault, seen here). Exit waits for the thread instead.
    """
    if _context is None:
        threading.Thread(target=shared_ssl_context, name="qvq-tls").start()


def _build() -> ssl.SSLContext:
    import ssl

    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return ssl.create_default_context(cafile=certifi.where())
