"""OpenAI-compatible endpoints named as upstreams: ``openai+BASE_URL#MODEL[&key=VAR]``. Pure code.

A spec names where to send chat completions (``BASE_URL``, e.g.
``https://dashscope-intl.aliyuncs.com/compatible-mode/v1``) and which model to ask. The key
never goes where the user did not mean it to:

- ``&key=VAR`` names the environment variable it comes from;
- without it, the host decides: ``api.openai.com`` -> ``$OPENAI_API_KEY``,
  ``router.huggingface.co`` -> ``$HF_TOKEN``, Alibaba's hosts (``*.aliyuncs.com``) ->
  ``$DASHSCOPE_API_KEY``; any other host gets **no key**;
- a key is never sent over plain ``http://`` to a host that is not loopback (refused here,
  before anything is sent).

The key itself is read when the request is made, registered as a secret (never printed, logged,
recorded or put in an error); an error about it names the variable.
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import Final

from ._secrets import register_secret, register_url
from .errors import SpaceNameError

__all__ = ["PREFIX", "Endpoint", "is_endpoint", "is_loopback", "parse_endpoint"]

#: What starts an endpoint spec.
PREFIX: Final = "openai+"
#: Hosts whose key comes from a known variable when the spec names none.
_HOST_KEYS: Final = (
    (re.compile(r"api\.openai\.com"), "OPENAI_API_KEY"),
    (re.compile(r"router\.huggingface\.co"), "HF_TOKEN"),
    (re.compile(r"(.+\.)?aliyuncs\.com"), "DASHSCOPE_API_KEY"),
)
_VARIABLE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_endpoint(spec: str) -> bool:
    """Whether ``spec`` names an OpenAI-compatible endpoint (rather than a Space)."""
    return spec.strip().startswith(PREFIX)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible endpoint and the model asked there; ``key_var``: the environment
    variable the key comes from (None: no key is sent)."""

    base_url: str
    model: str
    key_var: str | None

    @property
    def name(self) -> str:
        """The spec, as given back in errors, events and the history: no key in it, and the
        values of the base URL's query (which may hold a secret) as ``***``."""
        key = f"&key={self.key_var}" if self.key_var else ""
        parts = urllib.parse.urlsplit(self.base_url)
        query = "&".join(
            f"{name}=***" for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        )
        shown = parts._replace(query=query).geturl()
        return f"{PREFIX}{shown}#{self.model}{key}"

    def url(self, path: str) -> str:
        """``path`` (``chat/completions``, ``models``) under the base URL, its query kept."""
        parts = urllib.parse.urlsplit(self.base_url)
        return parts._replace(path=f"{parts.path.rstrip('/')}/{path}").geturl()

    @property
    def host(self) -> str:
        return (urllib.parse.urlsplit(self.base_url).hostname or "").lower().rstrip(".")

    def key(self) -> str | None:
        """The key, read now from its variable (None without one); :class:`SpaceNameError`
        naming the variable when it is unset."""
        if self.key_var is None:
            return None
        value = os.environ.get(self.key_var, "").strip()
        if not value:
            raise SpaceNameError(
                f"{self.name}: ${self.key_var} is not set (the key for {self.host} comes from it)"
            )
        register_secret(value)
        return value


def parse_endpoint(spec: str) -> Endpoint:
    """``openai+BASE_URL#MODEL[&key=VAR]`` checked (:class:`SpaceNameError` saying what is
    wrong, before anything is sent)."""
    text = spec.strip()
    if not text.startswith(PREFIX):
        raise SpaceNameError(f"{spec!r} is not an endpoint spec (openai+BASE_URL#MODEL)")
    rest = text[len(PREFIX) :]
    base_url, hash_, fragment = rest.partition("#")
    model, _, options = fragment.partition("&")
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpaceNameError(f"{spec!r}: the base URL must be http(s)://HOST/..., e.g. "
                             "openai+https://router.huggingface.co/v1#MODEL")
    if parts.username or parts.password:
        raise SpaceNameError(f"{PREFIX}{parts.scheme}://...: no credentials in the URL; name "
                             "the variable holding the key with &key=VAR")
    if not hash_ or not model.strip():
        raise SpaceNameError(f"{spec!r} names no model: add #MODEL (e.g. #qvq-max)")
    key_var: str | None = None
    for option in filter(None, options.split("&")):
        name, _, value = option.partition("=")
        if name != "key" or not _VARIABLE.fullmatch(value):
            raise SpaceNameError(
                f"{spec!r}: after the model only &key=VAR (an environment variable's name) "
                f"may come, not {option!r}"
            )
        key_var = value
    register_url(base_url)  # a query may carry a secret: never in a log line or an error
    cut = parts._replace(path=parts.path.rstrip("/")).geturl()
    endpoint = Endpoint(cut, model.strip(), key_var)
    if key_var is None:
        key_var = next((var for host, var in _HOST_KEYS if host.fullmatch(endpoint.host)), None)
        endpoint = Endpoint(endpoint.base_url, endpoint.model, key_var)
    if key_var is not None and parts.scheme == "http" and not is_loopback(endpoint.host):
        raise SpaceNameError(
            f"{endpoint.name}: a key is never sent over plain http to {endpoint.host}; use "
            "https"
        )
    return endpoint
