"""One SSL context per process, shared by every HTTPS request this package makes.

httpx builds a new SSL context (loading the whole CA bundle, ~40 ms of GIL-holding CPU) for
each request unless ``verify`` already is one; gradio_client makes a module-level
``httpx.post`` per request, and image downloads are requests too. Both pass this context.
"""

from __future__ import annotations

import functools
import os
import ssl

__all__ = ["shared_ssl_context"]


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The SSL context httpx would build by default, built once per process."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return ssl.create_default_context(cafile=certifi.where())
