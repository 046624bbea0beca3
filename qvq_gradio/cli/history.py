"""``qvq history``: the answers recorded before, searched, or one shown in full."""

from __future__ import annotations

import dataclasses
import json

import click

from ..history import History, default_path
from .running import Failure, say

__all__ = ["history_command"]


@click.command(
    name="history",
    short_help="List or show the answers recorded before.",
    epilog="""\b
Examples:
  qvq history
  qvq history chart -n 5
  qvq history show 42 --json""",
)
@click.argument("words", metavar="[SEARCH | show ID]", nargs=-1)
@click.option(
    "-n",
    "limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Show at most this many answers.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON: one object per answer.")
def history_command(words: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List recorded answers, newest first (those whose prompt, answer or Space contains
    SEARCH); 'qvq history show ID' prints one in full.

    Recorded by 'qvq ask' and 'qvq batch' unless --no-history or QVQ_HISTORY=0.
    """
    if words[:1] == ("show",):
        if len(words) != 2:
            raise click.UsageError("give one answer id: qvq history show ID")
        if not words[1].isdigit():
            raise click.UsageError(
                f"answer ids are whole numbers (the first column of 'qvq history'), "
                f"not {words[1]!r}"
            )
        _show_row(int(words[1]), as_json)
        return
    search = " ".join(words) or None
    with History() as store:
        rows = store.search(search, limit=limit)
    if not rows:
        what = f"match {search!r}" if search else "are recorded yet"
        click.echo(f"qvq: no answers {what} (in {default_path()})", err=True)
    for row in rows:
        if as_json:
            say(json.dumps(dataclasses.asdict(row), ensure_ascii=False))
            continue
        outcome = row.final_answer or ("" if row.ok else f"{row.error_type}")
        prompt = " ".join(row.prompt.split())
        say(
            f"{row.id:>6}  {row.time[:19].replace('T', ' ')}  {row.space}  "
            f"{prompt[:60]}  -> {outcome[:40]}"
        )


def _show_row(row_id: int, as_json: bool) -> None:
    with History() as store:
        row = store.get(row_id)
    if row is None:
        raise Failure(f"no answer {row_id} in {default_path()}", code=2)
    if as_json:
        say(json.dumps(dataclasses.asdict(row), ensure_ascii=False))
        return
    say(f"# {row.id}  {row.time}  {row.space}" + ("  (from the cache)" * row.from_cache))
    say(f"Prompt: {row.prompt}")
    for image in row.images:  # each as the user gave it
        say(f"Image: {_described(image)}")
    if row.image_sha256 and (len(row.images) != 1 or row.images[0]["sha256"] != row.image_sha256):
        say(f"Sent as: {row.image_size:,} bytes, sha256 {row.image_sha256}"
            + (" (one grid)" if len(row.images) > 1 else " (resized)"))
    if row.error_type:
        say(f"Error: {row.error_type}: {row.error_message}")
    say("")
    say(row.text)


def _described(image: dict[str, object]) -> str:
    name = image.get("name") or "(an image in memory)"
    if image.get("sha256") is None:
        return str(name)
    return f"{name} ({image.get('size'):,} bytes, sha256 {image['sha256']})"
