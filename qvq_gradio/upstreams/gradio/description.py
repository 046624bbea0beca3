"""The Space's description (its config and API info) kept on disk, for a cold start.

A new process connecting to a Space reads ``/config`` and the API info before it can submit:
two round trips of the four a cold ``qvq ask`` takes before its first byte. With the
description on disk the client is built without them, and the first job is checked against a
config read *alongside* it (see :mod:`.freshness`; no text is shown before the check agrees).

One JSON file per Space URL under ``$QVQ_HOME/spaces/``, written atomically. An entry is
dropped when the config read again has another ``app_id`` or Gradio version than the one kept
(the Space was rebuilt), when the Space turned out redeployed, or on a protocol error.
Nothing secret is kept: a config and an API description are what the Space serves to anyone
allowed to call it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DescriptionCache", "app_identity", "same_app"]

log = logging.getLogger("qvq_gradio")

_FORMAT = 1


def app_identity(config: Mapping[str, Any]) -> str:
    """Which build of an app a config describes, as one string (what :func:`same_app`
    compares): a Space rebuilt with another app has another."""
    return f"{config.get('app_id')}/{config.get('version')}"


def same_app(kept: Mapping[str, Any], fresh: Mapping[str, Any]) -> bool:
    """Whether two configs come from the same build of the app (``app_id``, Gradio version)."""
    return (kept.get("app_id"), kept.get("version")) == (fresh.get("app_id"), fresh.get("version"))


class DescriptionCache:
    """Config and API info per Space URL, in ``directory`` (created when first written)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, src: str) -> Path:
        return self.directory / (hashlib.sha256(src.encode()).hexdigest()[:32] + ".json")

    def load(self, src: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The kept ``(config, api_info)`` of ``src``, or None (nothing kept, or unreadable)."""
        try:
            entry = json.loads(self._path(src).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        valid = (
            isinstance(entry, dict)
            and entry.get("format") == _FORMAT
            and entry.get("src") == src
            and isinstance(entry.get("config"), dict)
            and isinstance(entry.get("info"), dict)
        )
        return (entry["config"], entry["info"]) if valid else None

    def store(self, src: str, config: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        """Keep the description of ``src`` (atomically; a failure to write is only logged)."""
        entry = {"format": _FORMAT, "src": src, "config": config, "info": info}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".space-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(entry, out)
                os.replace(tmp, self._path(src))
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except (OSError, TypeError, ValueError) as exc:
            log.debug("could not keep the Space's description: %r", exc)

    def forget(self, src: str) -> None:
        """Drop what is kept for ``src`` (it no longer describes the Space)."""
        with contextlib.suppress(OSError):
            self._path(src).unlink()
