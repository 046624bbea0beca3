"""``qvq serve``: the Space (or a pool of Spaces) as an OpenAI-compatible API.

    shapes.py     request bodies checked (unknown fields ignored) and the model list
    reasoning.py  the answer split as it streams: reasoning, then the final section
    errors.py     our errors as OpenAI error bodies with real HTTP statuses (429 Retry-After)
    writers.py    how each API writes an answer: stream chunks or the whole body
    answer.py     one answer as one coroutine: hold, keep-alives; disconnect cancels upstream
    app.py        the Starlette routes, the API key, CORS, ``app(session)``

``app(session)`` returns the ASGI app (mount it, or test it); ``qvq serve`` runs it with
uvicorn. Needs the ``serve`` extra (Starlette and uvicorn).
"""

from __future__ import annotations

from .app import Reasoning, app

__all__ = ["Reasoning", "app"]
