"""The history knows what the user had: their own files, every image, answers that were stopped,
and databases of an older schema migrated in place."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from qvq_gradio import Session
from qvq_gradio.history import MIGRATIONS, STOPPED, History
from qvq_gradio.replica import ReplicaProcess

from .test_cli import run as cli

pytestmark = pytest.mark.anyio


def _rows(database: Path, marker: str) -> list[Any]:
    with History(database) as store:
        return store.search(marker)


def _noise(path: Path, size: tuple[int, int]) -> dict[str, Any]:
    """A photo-like PNG (noise: it does not compress) and how the user's file is described."""
    data = random.Random(size[0]).randbytes(size[0] * size[1] * 3)
    Image.frombytes("RGB", size, data).save(path)
    raw = path.read_bytes()
    return {"name": path.name, "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


async def test_the_users_own_files_are_recorded_not_only_the_upload(
    replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    database = tmp_path / "history.db"
    big = await anyio.to_thread.run_sync(_noise, tmp_path / "big.png", (1600, 1200))
    small = await anyio.to_thread.run_sync(_noise, tmp_path / "small.png", (64, 48))
    prompt = f"{marker} [[replica tokens=2 delay=0]]"
    async with Session(replica.url, history=database) as session:
        await session.ask(f"{prompt} one", image=tmp_path / "big.png")
        await session.ask(f"{prompt} two", image=tmp_path / "big.png",
                          media=[tmp_path / "small.png"])
    two, one = await anyio.to_thread.run_sync(_rows, database, marker)
    assert one.images == [big]
    assert one.image_sha256 != big["sha256"] and one.image_size < big["size"]  # resized
    assert two.images == [big, small]
    code, out, _ = await anyio.to_thread.run_sync(
        lambda: cli(["history", "show", str(one.id)], env={"QVQ_HOME": str(tmp_path)})
    )
    assert code == 0
    assert f"Image: big.png ({big['size']:,} bytes, sha256 {big['sha256']})" in out
    assert f"Sent as: {one.image_size:,} bytes, sha256 {one.image_sha256} (resized)" in out


async def test_a_stopped_answer_is_recorded_and_never_a_cache_hit(
    replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    database = tmp_path / "history.db"
    prompt = f"{marker} [[replica tokens=400 delay=0.01]]"
    came = ""
    async with Session(replica.url, history=database, cache=True) as session:
        async with aclosing(session.stream(prompt)) as stream:
            async for delta in stream:
                came += delta
                if len(came) > 40:
                    break  # the consumer leaves: the stream is closed, the job cancelled
        again = await session.ask(f"{marker} [[replica tokens=3 delay=0]]")
        # Asked again: a stopped answer is not an answer, the Space is asked.
        async with aclosing(session.stream(prompt)) as stream:
            async for delta in stream:
                if delta:
                    break
    assert again.endswith("\\boxed{3}")
    rows = await anyio.to_thread.run_sync(_rows, database, marker)
    stopped = [row for row in rows if row.prompt == prompt]
    assert len(stopped) == 2 and all(row.stopped and not row.ok for row in stopped)
    assert stopped[-1].text == came and stopped[-1].error_type == STOPPED
    assert not any(row.from_cache for row in rows)
    asked = [r for r in replica.requests() if r["prompt"] == prompt]
    assert len(asked) == 2


def test_a_database_of_the_first_schema_migrates_in_place(tmp_path: Path) -> None:
    database = tmp_path / "history.db"
    db = sqlite3.connect(database, isolation_level=None)
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version=1")
    db.execute(
        "INSERT INTO answers (time, space, prompt, image_sha256, image_size, image_name, text, "
        "cache_key) VALUES ('2026-12-01T00:00:00Z', 's', 'p', 'ab12', 1234, 'cat.png', 't', 'k')"
    )
    db.execute(
        "INSERT INTO answers (time, space, prompt, text, cache_key) "
        "VALUES ('2026-12-01T00:00:01Z', 's', 'q', 'u', 'k2')"
    )
    db.close()
    with History(database) as store:
        plain, with_image = store.search()
        assert with_image.images == [{"name": "cat.png", "size": 1234, "sha256": "ab12"}]
        assert plain.images == []
        store.record(space="s", prompt="r", text="v", images=[{"name": "x.png", "size": 1,
                                                                "sha256": "ff"}])
        assert store.search("r")[0].images == [{"name": "x.png", "size": 1, "sha256": "ff"}]
        assert (plain.name, plain.model_id, plain.usage) == (None, None, None)
    version = sqlite3.connect(database).execute("PRAGMA user_version").fetchone()[0]
    assert version == len(MIGRATIONS) == 4
