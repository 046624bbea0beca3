"""The ``qvq`` command: a thin shell over the async core.

``qvq demo`` is the README's main job: it starts the bundled replica Space on a free loopback
port, streams an answer through exactly the same client path as a real Space, and stops it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import anyio
import click

from .errors import InputError, QVQError
from .provider import Qwen_QVQ_72B
from .space import SPACE_ENV

__all__ = ["main"]

_FAIL_CHOICES = ("before", "mid", "quota", "hang")


def _need_replica() -> Any:
    try:
        from . import replica
    except ImportError as exc:  # gradio missing
        raise click.ClickException(
            f"the replica needs the 'replica' extra: pip install 'qvq-gradio[replica]' ({exc})"
        ) from exc
    return replica


async def _print_stream(stream: Any) -> str:
    parts: list[str] = []
    async for delta in stream:
        parts.append(delta)
        click.echo(delta, nl=False)
        sys.stdout.flush()
    click.echo()
    return "".join(parts)


@click.group()
@click.option("--debug", is_flag=True, help="Log debug output and show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Ask Qwen's QVQ-72B vision-reasoning Space questions about images."""
    ctx.obj = {"debug": debug}
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)


@cli.command()
@click.option("--tokens", default=60, show_default=True, help="Words the replica generates.")
@click.option("--delay", default=0.02, show_default=True, help="Seconds between two words.")
def demo(tokens: int, delay: float) -> None:
    """Stream an answer about a generated image from the bundled replica (works offline)."""
    replica = _need_replica()
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 200), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 40, 160, 160), fill=(220, 40, 40))
    draw.rectangle((190, 60, 290, 160), fill=(40, 90, 220))
    config = replica.ReplicaConfig(tokens=tokens, delay=delay)
    with replica.Replica(config) as server:
        click.echo(f"[replica Space on {server.url}]", err=True)
        messages = [{"role": "user", "content": "What shapes are in this picture?"}]
        stream = Qwen_QVQ_72B.create_async_generator(
            model="qwen-qvq-72b-preview", messages=messages, media=[image], space=server.url
        )
        anyio.run(_print_stream, stream)


@cli.command(name="replica")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=7860, show_default=True, help="0 takes a free port.")
@click.option("--tokens", default=40, show_default=True)
@click.option("--delay", default=0.01, show_default=True)
@click.option("--concurrency", default=16, show_default=True)
@click.option("--fail", type=click.Choice(_FAIL_CHOICES), default=None)
@click.option("--fail-after", default=5, show_default=True)
@click.option("--max-queue", type=int, default=None)
@click.option("--require-token", default=None, help="Refuse requests without this HF token.")
def replica_command(
    host: str,
    port: int,
    tokens: int,
    delay: float,
    concurrency: int,
    fail: str | None,
    fail_after: int,
    max_queue: int | None,
    require_token: str | None,
) -> None:
    """Serve the bundled replica of the QVQ Space (for offline tests)."""
    replica = _need_replica()
    config = replica.ReplicaConfig(
        tokens=tokens,
        delay=delay,
        concurrency=concurrency,
        fail=fail,
        fail_after=fail_after,
        max_queue=max_queue,
        token=require_token,
    )

    def ready(url: str) -> None:
        click.echo(f"Replica of the QVQ-72B Space running on {url}  (Ctrl-C to stop)")
        click.echo(f"Point qvq-gradio at it with: export {SPACE_ENV}={url}")
        sys.stdout.flush()

    replica.serve(config, host, port, ready=ready)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    try:
        cli.main(
            args=list(argv) if argv is not None else None, prog_name="qvq", standalone_mode=False
        )
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except InputError as exc:
        click.echo(f"qvq: {exc}", err=True)
        return 2
    except QVQError as exc:
        click.echo(f"qvq: {type(exc).__name__}: {exc}", err=True)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
