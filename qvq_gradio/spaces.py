"""Which Space: names as users give them, checked before any network call.

A Space is an ``http(s)://`` URL or a ``owner/name`` Space id; several are a list or one
comma-separated string (``--space`` repeated, ``$QVQ_SPACE``). :class:`SpaceConfig` is what
identifies one connection, with its secrets kept out of ``repr`` and out of every message.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from ._secrets import register_secret
from .endpoints import is_endpoint, parse_endpoint
from .errors import SpaceNameError

__all__ = [
    "DEFAULT_SPACE",
    "SPACE_ENV",
    "SpaceConfig",
    "check_space",
    "checked_space",
    "on_hugging_face",
    "parse_named",
    "parse_spaces",
    "resolve_space",
    "split_name",
]

#: The seed's Space address.
DEFAULT_SPACE: Final = "https://qwen-qvq-72b-preview.hf.space"
#: Environment variable naming the Space (a URL or a ``owner/name`` Space id).
SPACE_ENV: Final = "QVQ_SPACE"
# Credential-bearing headers whose values are redacted from messages and logs.
_SECRET_HEADERS: Final = ("auth", "token", "key", "cookie", "secret")


def resolve_space(space: str | None = None, *, default: str = DEFAULT_SPACE) -> str:
    """``space`` if given, else ``$QVQ_SPACE``, else ``default`` (the seed's Space)."""
    return space or os.environ.get(SPACE_ENV) or default


_SPACE_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def check_space(space: str) -> str:
    """``space`` if it is an ``http(s)://`` URL, a ``owner/name`` Space id or an endpoint spec
    (``openai+BASE_URL#MODEL``, see :mod:`qvq_gradio.endpoints`), stripped;
    :class:`SpaceNameError` otherwise (before any network call)."""
    name = space.strip()
    if is_endpoint(name):
        return parse_endpoint(name).name
    if "," in name:
        raise SpaceNameError(
            f"{name!r} names several Spaces: a Session asks one; use qvq_gradio.Pool (or "
            "qvq_gradio.connect) for several"
        )
    parts = urllib.parse.urlsplit(name)
    if parts.scheme in ("http", "https") and parts.hostname:
        return name
    if _SPACE_ID.fullmatch(name):
        return name
    raise SpaceNameError(
        f"{name!r} is not a Space: give an http(s):// URL, a Space id like 'owner/name', or "
        "an endpoint as openai+BASE_URL#MODEL"
    )


_NAMED = re.compile(r"([A-Za-z0-9_.-]+)=(.+)", re.DOTALL)


def split_name(spec: str) -> tuple[str | None, str]:
    """``NAME=SPEC`` -> (NAME, SPEC); a spec without a name -> (None, spec). NAME is
    ``[A-Za-z0-9_.-]+`` before the first ``=``, so a URL with ``=`` in its query stays whole."""
    found = _NAMED.fullmatch(spec.strip())
    if found is None:
        return None, spec.strip()
    return found.group(1), found.group(2).strip()


def parse_named(spaces: str | Sequence[str] | None = None) -> list[tuple[str | None, str]]:
    """Each spec as (its NAME or None, the spec checked), in order (see :func:`parse_spaces`)."""
    from_env = spaces is None or spaces == "" or spaces == []
    if from_env:
        spaces = resolve_space(None)
    assert spaces is not None
    items = spaces.split(",") if isinstance(spaces, str) else [
        part for item in spaces for part in item.split(",")
    ]
    named = [split_name(item) for item in items if item.strip()]
    with _naming_the_variable(from_env):
        checked = [(name, check_space(spec)) for name, spec in named]
    if not checked:
        raise SpaceNameError("no Space given")
    return list(dict.fromkeys(checked))


def on_hugging_face(space: str) -> bool:
    """Whether ``space`` is served by Hugging Face (a Space id, ``*.hf.space``,
    ``huggingface.co``): the only hosts a token the user did not pass explicitly (``$HF_TOKEN``,
    the saved login) is sent to."""
    if not space.startswith(("http://", "https://")):
        return True  # an owner/name Space id: on the Hub
    host = (urllib.parse.urlsplit(space).hostname or "").lower().rstrip(".")
    return host == "huggingface.co" or host.endswith((".hf.space", ".huggingface.co"))


def parse_spaces(spaces: str | Sequence[str] | None = None) -> list[str]:
    """The Spaces named by ``spaces`` (a list, or comma-separated), else ``$QVQ_SPACE``, else
    the seed's Space; each checked with :func:`check_space`, duplicates dropped; a
    ``NAME=`` before a spec is a label here (see :func:`parse_named`)."""
    return list(dict.fromkeys(spec for _, spec in parse_named(spaces)))


def checked_space(space: str | None) -> str:
    """``space``, else ``$QVQ_SPACE``, else the seed's Space, checked with
    :func:`check_space`; a bad name from the variable says so."""
    with _naming_the_variable(not space):
        return check_space(resolve_space(space))


@contextlib.contextmanager
def _naming_the_variable(from_env: bool) -> Iterator[None]:
    """A :class:`SpaceNameError` for a value read from ``$QVQ_SPACE`` names the variable."""
    try:
        yield
    except SpaceNameError as exc:
        if from_env and os.environ.get(SPACE_ENV):
            raise SpaceNameError(f"{exc} (the value of ${SPACE_ENV})") from None
        raise


@dataclass(frozen=True)
class SpaceConfig:
    """Everything that identifies one ``gradio_client.Client``. Secrets stay out of ``repr``."""

    space: str
    token: str | None = field(default=None, repr=False)
    proxy: str | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        register_secret(self.token)
        for name, value in self.headers:
            if any(word in name.lower() for word in _SECRET_HEADERS):
                register_secret(value)

    def __repr__(self) -> str:
        parts = [f"space={self.space!r}", f"token={'***' if self.token else None}"]
        if self.proxy:
            parts.append("proxy=***")
        if self.headers:
            parts.append(f"headers=[{', '.join(name for name, _ in self.headers)}]")
        return f"SpaceConfig({', '.join(parts)})"
