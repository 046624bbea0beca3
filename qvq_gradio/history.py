"""The answer history: every question and answer in a local SQLite database.

Only this module speaks SQL. The database is the standard library's ``sqlite3`` in WAL mode
with a busy timeout, so a batch with dozens of streams and several processes write to it at
once without losing a row. The schema is versioned with ``PRAGMA user_version``; migrations are
an ordered list of small functions applied in one transaction at open.

What a row keeps: when, which Space, the prompt as sent, each image as the user gave it (name,
size, sha256: a JSON list), the upload (sha256 of the bytes sent, their size: what the cache
matches; never the pixels unless ``keep_images``), the answer text and its final answer,
timings, and the error if it failed; an answer stopped before it ended is kept with the text
that had come, as :data:`STOPPED`. Never a token: every text is passed through
:func:`~qvq_gradio._secrets.redact` first.

The cache key of a request is a hash of (Space, prompt text, uploaded image bytes): with
``cache=True`` a :class:`~qvq_gradio.Session` answers an identical request from here without
touching the Space.

Where: ``$QVQ_HOME/history.db``, else the user's data directory (``~/.local/share/qvq-gradio``
on Linux, ``~/Library/Application Support/qvq-gradio`` on macOS, ``%LOCALAPPDATA%\\qvq-gradio``
on Windows). ``QVQ_HISTORY=0`` turns the command line's recording off.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._secrets import redact
from .answer import extract_final_answer
from .errors import HistoryError

__all__ = [
    "HISTORY_ENV",
    "HOME_ENV",
    "STOPPED",
    "History",
    "HistoryRow",
    "cache_key",
    "default_path",
    "history_enabled",
    "open_history",
]

#: Environment variable: the directory for qvq-gradio's data (the history database).
HOME_ENV = "QVQ_HOME"
#: Environment variable: ``0`` (or ``false``, ``no``, ``off``) turns the CLI's history off.
HISTORY_ENV = "QVQ_HISTORY"
_BUSY_TIMEOUT_MS = 30_000


def default_path() -> Path:
    """``$QVQ_HOME/history.db``, else ``history.db`` in the user's data directory."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home) / "history.db"
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "qvq-gradio" / "history.db"


def history_enabled() -> bool:
    """False when ``$QVQ_HISTORY`` says off (``0``, ``false``, ``no``, ``off``)."""
    return os.environ.get(HISTORY_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_key(space: str, prompt: str, image: str | None, request: str = "") -> str:
    """The identity of a request: same Space, same prompt text, same image (``image``: the
    uploaded bytes' sha256, or for a URL passed through to the Space a hash of that URL; see
    :attr:`qvq_gradio.media.Upload.identity`), and the rest of what may reach the Space
    (``request``: the sampling parameters and shape asked for, "" when none: the key is then
    the one of a request before those existed)."""
    parts = (space.rstrip("/"), prompt, image or "", *((request,) if request else ()))
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class HistoryRow:
    """One recorded question and its answer (or error)."""

    id: int
    time: str  #: ISO 8601, UTC
    space: str
    prompt: str
    image_sha256: str | None
    image_size: int | None
    image_name: str | None
    text: str
    final_answer: str | None
    elapsed: float | None
    time_to_first_token: float | None
    queue_wait: float | None
    error_type: str | None
    error_message: str | None
    from_cache: bool
    #: each image as the user gave it: ``{"name", "size", "sha256"}`` (the ``image_*`` fields
    #: describe what was uploaded: a resized copy, or several images as one grid)
    images: list[dict[str, Any]]
    #: the thinking the Space showed apart from the answer ("" if none)
    reasoning: str = ""
    #: the Space's shape (``qvq``, ``chat``, ``blocks``; None for rows from before shapes)
    shape: str | None = None
    #: the caller's parameters that reached an input of the Space (system prompt, sampling)
    applied: dict[str, Any] | None = None
    #: which build of the Space's app answered (its app id and Gradio version), if known
    app: str | None = None
    #: the model NAME it was asked under (``NAME=SPEC``; None: unnamed)
    name: str | None = None
    #: the model id the upstream said answered (an endpoint's; None for a Space)
    model_id: str | None = None
    #: the tokens the upstream counted (``prompt_tokens``, ``completion_tokens``,
    #: ``total_tokens``), if it reported them
    usage: dict[str, int] | None = None

    @property
    def ok(self) -> bool:
        return self.error_type is None

    @property
    def stopped(self) -> bool:
        """The answer was stopped before it ended; ``text`` is what had come."""
        return self.error_type == STOPPED


def _v1(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE answers (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            space TEXT NOT NULL,
            prompt TEXT NOT NULL,
            image_sha256 TEXT,
            image_size INTEGER,
            image_name TEXT,
            image BLOB,
            text TEXT NOT NULL,
            final_answer TEXT,
            elapsed REAL,
            time_to_first_token REAL,
            queue_wait REAL,
            error_type TEXT,
            error_message TEXT,
            from_cache INTEGER NOT NULL DEFAULT 0,
            cache_key TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX answers_cache ON answers (cache_key, error_type)")
    db.execute("CREATE INDEX answers_time ON answers (time)")


def _v2(db: sqlite3.Connection) -> None:
    """Each image as the user gave it (a JSON list of ``{name, size, sha256}``); the image_*
    columns keep describing the upload. Rows from before describe their upload as the user's
    image: all that was kept of it."""
    db.execute("ALTER TABLE answers ADD COLUMN images TEXT")
    rows = db.execute(
        "SELECT id, image_name, image_size, image_sha256 FROM answers "
        "WHERE image_sha256 IS NOT NULL OR image_name IS NOT NULL"
    ).fetchall()
    db.executemany(
        "UPDATE answers SET images = ? WHERE id = ?",
        [(json.dumps([{"name": name, "size": size, "sha256": sha256}]), row_id)
         for row_id, name, size, sha256 in rows],
    )


def _v3(db: sqlite3.Connection) -> None:
    """The thinking shown apart, the Space's shape, the parameters that reached it, and the
    build of its app that answered."""
    db.execute("ALTER TABLE answers ADD COLUMN reasoning TEXT")
    db.execute("ALTER TABLE answers ADD COLUMN shape TEXT")
    db.execute("ALTER TABLE answers ADD COLUMN applied TEXT")
    db.execute("ALTER TABLE answers ADD COLUMN app TEXT")
    # The key of the request as asked (cache_key: as it reached the Space; they differ when
    # a parameter asked for had no input there).
    db.execute("ALTER TABLE answers ADD COLUMN request_key TEXT")
    db.execute("CREATE INDEX answers_request ON answers (request_key, error_type)")


def _v4(db: sqlite3.Connection) -> None:
    """The model NAME asked, the model id the upstream said answered, and its token counts."""
    db.execute("ALTER TABLE answers ADD COLUMN name TEXT")
    db.execute("ALTER TABLE answers ADD COLUMN model_id TEXT")
    db.execute("ALTER TABLE answers ADD COLUMN usage TEXT")


#: The schema's migrations, in order; ``PRAGMA user_version`` counts those applied.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3, _v4]
#: ``error_type`` of an answer stopped before it ended (Ctrl-C, a closed pipe, a client that
#: left): kept with the text that had come, never a cache hit (only rows without an error are).
STOPPED = "Stopped"

_COLUMNS = (
    "id, time, space, prompt, image_sha256, image_size, image_name, text, final_answer, "
    "elapsed, time_to_first_token, queue_wait, error_type, error_message, from_cache, images, "
    "reasoning, shape, applied, app, name, model_id, usage"
)


class History:
    """The history database at ``path`` (default :func:`default_path`), opened on first use.

    Blocking; thread-safe (one connection, one lock). The async core calls it from worker
    threads. Use it as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, keep_images: bool = False):
        self.path = Path(path) if path is not None else default_path()
        self.keep_images = keep_images
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<History {self.path}>"

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self._db = self._open()
            except (sqlite3.Error, OSError) as exc:
                raise HistoryError(
                    f"the answer history {self.path} cannot be used ({exc}); it is left as it "
                    f"is: move it aside (mv '{self.path}' '{self.path}.old') to start a new one, "
                    "or run without the history (--no-history, QVQ_HISTORY=0)",
                    path=str(self.path),
                ) from exc
        return self._db

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
            isolation_level=None,
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            db.execute("BEGIN IMMEDIATE")
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                for number, migrate in enumerate(MIGRATIONS[version:], start=version + 1):
                    migrate(db)
                    db.execute(f"PRAGMA user_version={number}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except BaseException:
            db.close()
            raise
        return db

    def record(
        self,
        *,
        space: str,
        prompt: str,
        text: str,
        image_sha256: str | None = None,
        image_size: int | None = None,
        image_name: str | None = None,
        image: bytes | None = None,
        elapsed: float | None = None,
        time_to_first_token: float | None = None,
        queue_wait: float | None = None,
        error: BaseException | None = None,
        from_cache: bool = False,
        image_key: str | None = None,
        images: Sequence[Mapping[str, Any]] = (),
        stopped: bool = False,
        reasoning: str = "",
        shape: str | None = None,
        applied: Mapping[str, Any] | None = None,
        request: str = "",
        app: str | None = None,
        asked: str | None = None,
        name: str | None = None,
        model_id: str | None = None,
        usage: Mapping[str, int] | None = None,
    ) -> int:
        """Add one row; its id. Credentials are redacted from every text. ``image_key`` is the
        image's identity for the cache (default: ``image_sha256``). ``images``: each image as
        the user gave it. ``stopped``: the answer was stopped before it ended (``text`` is what
        had come); such a row is never a cache hit. ``reasoning``: the thinking shown apart;
        ``shape`` and ``applied``: how the Space was asked; ``request``: the part of the
        cache key for what reached the Space, ``asked`` for what the request asked (default:
        the same); see :func:`cache_key`. ``name``, ``model_id``, ``usage``: the model NAME
        asked, the id the upstream said answered, its token counts."""
        error_type: str | None
        error_message: str | None
        if stopped:
            error_type, error_message = STOPPED, "stopped before the answer ended"
        else:
            error_type = None if error is None else type(error).__name__
            error_message = None if error is None else redact(str(error))
        row = (
            datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            space,
            redact(prompt),
            image_sha256,
            image_size,
            image_name,
            image if self.keep_images else None,
            redact(text),
            extract_final_answer(text) if text and error_type is None else None,
            elapsed,
            time_to_first_token,
            queue_wait,
            error_type,
            error_message,
            int(from_cache),
            cache_key(space, prompt, image_key or image_sha256, request),
            json.dumps([dict(image) for image in images]) if images else None,
            redact(reasoning) or None,
            shape,
            redact(json.dumps(dict(applied), sort_keys=True)) if applied else None,
            app,
            cache_key(space, prompt, image_key or image_sha256,
                      request if asked is None else asked),
            name,
            model_id,
            json.dumps(dict(usage)) if usage else None,
        )
        with self._lock:
            cursor = self._connect().execute(
                "INSERT INTO answers (time, space, prompt, image_sha256, image_size, "
                "image_name, image, text, final_answer, elapsed, time_to_first_token, "
                "queue_wait, error_type, error_message, from_cache, cache_key, images, "
                "reasoning, shape, applied, app, request_key, name, model_id, usage) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?)",
                row,
            )
            return int(cursor.lastrowid or 0)

    def cached(self, key: str, *, asked: bool = False) -> HistoryRow | None:
        """The newest successful answer recorded under ``key`` (see :func:`cache_key`): the
        key of what reached the Space, or (``asked``) of what the request asked."""
        column = "request_key" if asked else "cache_key"
        with self._lock:
            found = self._connect().execute(
                f"SELECT {_COLUMNS} FROM answers WHERE {column} = ? AND error_type IS NULL "
                "ORDER BY id DESC LIMIT 1",
                (key,),
            ).fetchone()
        return None if found is None else _row(found)

    def search(self, text: str | None = None, *, limit: int = 20) -> list[HistoryRow]:
        """The newest rows (whose prompt, answer or Space contains ``text``, if given)."""
        query = f"SELECT {_COLUMNS} FROM answers"
        args: tuple[Any, ...] = ()
        if text:
            query += (
                " WHERE prompt LIKE ? ESCAPE '\\' OR text LIKE ? ESCAPE '\\'"
                " OR space LIKE ? ESCAPE '\\'"
            )
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern += "%"
            args = (pattern, pattern, pattern)
        query += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._connect().execute(query, (*args, limit)).fetchall()
        return [_row(row) for row in rows]

    def get(self, row_id: int) -> HistoryRow | None:
        with self._lock:
            found = self._connect().execute(
                f"SELECT {_COLUMNS} FROM answers WHERE id = ?", (row_id,)
            ).fetchone()
        return None if found is None else _row(found)

    def count(self) -> int:
        with self._lock:
            return int(self._connect().execute("SELECT COUNT(*) FROM answers").fetchone()[0])


HistoryOption = bool | str | os.PathLike[str] | History | None


def open_history(value: HistoryOption) -> tuple[History | None, bool]:
    """The :class:`History` a ``history=`` argument names, and whether the caller owns it
    (``True``: the default database; a path: that one; a ``History``: itself, not owned)."""
    if value is None or value is False:
        return None, False
    if isinstance(value, History):
        return value, False
    return History(None if value is True else value), True


def _row(values: tuple[Any, ...]) -> HistoryRow:
    fields: dict[str, Any] = dict(zip(_COLUMNS.split(", "), values, strict=True))
    fields["from_cache"] = bool(fields["from_cache"])
    fields["images"] = json.loads(fields["images"]) if fields["images"] else []
    fields["reasoning"] = fields["reasoning"] or ""
    fields["applied"] = json.loads(fields["applied"]) if fields["applied"] else None
    fields["usage"] = json.loads(fields["usage"]) if fields["usage"] else None
    return HistoryRow(**fields)
