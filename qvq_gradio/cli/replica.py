"""``qvq demo`` (an answer from the bundled replica, offline) and ``qvq replica`` (serve it)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from contextlib import aclosing
from typing import Any

import click

from ..provider import Qwen_QVQ_72B, close_shared_sessions
from ..spaces import SPACE_ENV
from .running import Failure, emit, run

__all__ = ["demo", "replica_command"]

_FAIL_CHOICES = (
    "before", "mid", "quota", "hang", "echo-token", "no-quota", "bad-request", "server"
)
_LAYOUTS = ("qvq", "reordered", "text-only", "history")


def need_replica() -> Any:
    try:
        from .. import replica
    except ImportError as exc:  # the replica extra is not installed; the message says which
        raise Failure(str(exc)) from exc
    return replica


@click.command(
    short_help="Stream an answer from the bundled replica (offline).",
    epilog="""\b
Examples:
  qvq demo
  qvq demo --tokens 200 --delay 0.01""",
)
@click.option(
    "--tokens", default=60, show_default=True, type=click.IntRange(0),
    help="Words of reasoning the replica generates.",
)
@click.option(
    "--delay", default=0.02, show_default=True, type=click.FloatRange(0),
    help="Seconds between two words of the answer.",
)
def demo(tokens: int, delay: float) -> None:
    """Stream an answer about a generated image from the bundled replica (works offline)."""
    replica = need_replica()
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 200), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 40, 160, 160), fill=(220, 40, 40))
    draw.rectangle((190, 60, 290, 160), fill=(40, 90, 220))
    config = replica.ReplicaConfig(tokens=tokens, delay=delay)
    with replica.Replica(config) as server:
        click.echo(f"[replica Space on {server.url}]", err=True)
        messages = [{"role": "user", "content": "What shapes are in this picture?"}]

        async def work() -> None:
            stream = Qwen_QVQ_72B.create_async_generator(
                model="qwen-qvq-72b-preview", messages=messages, media=[image], space=server.url
            )
            async with aclosing(stream):  # a closed stdout stops (and cancels) it now
                async for delta in stream:
                    emit(delta)

        run(work)
        emit("\n")
        close_shared_sessions()  # its heartbeat ends now: the replica stops at once


@click.command(
    name="replica",
    short_help="Serve the bundled replica of the QVQ Space.",
    epilog="""\b
Examples:
  qvq replica --port 7860
  qvq replica --port 7860 --fail mid --fail-after 10
  qvq replica --quota-budget 5 --quota-retry 60""",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(0, 65535),
              help="0 takes a free port.")
@click.option(
    "--tokens", default=40, show_default=True, type=click.IntRange(0),
    help="Words of reasoning in every answer.",
)
@click.option("--delay", default=0.01, show_default=True, type=click.FloatRange(0),
              help="Seconds between two words.")
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="Answers generated at once; more requests wait in the queue.",
)
@click.option(
    "--fail",
    type=click.Choice(_FAIL_CHOICES),
    default=None,
    help="Fail every request this way (before the first token, mid-answer, with a quota "
    "error, by hanging, or with an error echoing the credential sent).",
)
@click.option(
    "--fail-after",
    type=click.IntRange(0),
    default=5,
    show_default=True,
    help="Tokens generated before --fail mid or hang strikes.",
)
@click.option(
    "--max-queue",
    type=click.IntRange(0),
    default=None,
    help="Requests the queue holds; joins beyond it get HTTP 503 [default: no limit].",
)
@click.option("--require-token", default=None, help="Refuse requests without this HF token.")
@click.option(
    "--quota-budget",
    type=click.IntRange(0),
    default=None,
    help="Requests served before quota errors start (then --quota-retry seconds of them).",
)
@click.option(
    "--quota-retry",
    type=click.FloatRange(0),
    default=588.0,
    show_default=True,
    help="Seconds a quota error asks to wait.",
)
@click.option(
    "--layout",
    type=click.Choice(_LAYOUTS),
    default="qvq",
    show_default=True,
    help="The app's functions: as the QVQ Space, or changed as by a redeploy.",
)
@click.option(
    "--shape",
    type=click.Choice(["qvq", "chat", "blocks", "openai"]),
    default="qvq",
    show_default=True,
    help="The kind of Space: QVQ's /generate, a multimodal ChatInterface, or Qwen's stateful "
    "Blocks demo (add_file, add_text, predict); or an OpenAI-compatible endpoint (/v1).",
)
@click.option(
    "--think",
    type=click.Choice(["none", "tags", "title", "reasoning_content", "reasoning"]),
    default="none",
    show_default=True,
    help="How a chat shows its thinking: not apart, in <think> tags, or in a titled message; "
    "an endpoint also in a delta field (reasoning_content or reasoning).",
)
@click.option(
    "--served-model",
    default=None,
    help="The model id an endpoint (--shape openai) names in its answers (default: the one "
    "asked for).",
)
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
    quota_budget: int | None,
    quota_retry: float,
    layout: str,
    shape: str,
    think: str,
    served_model: str | None,
) -> None:
    """Serve the bundled replica of the QVQ Space (for offline tests)."""
    replica = need_replica()
    config = _config(
        replica, tokens=tokens, delay=delay, concurrency=concurrency, fail=fail,
        fail_after=fail_after, max_queue=max_queue, require_token=require_token,
        quota_budget=quota_budget, quota_retry=quota_retry, layout=layout,
        shape=shape, think=think, served_model=served_model,
    )

    def ready(url: str) -> None:
        if shape == "openai":
            click.echo(f"OpenAI-compatible replica running on {url}/v1  (Ctrl-C to stop)")
            spec = f"'openai+{url}/v1#{served_model or 'replica'}'"
            click.echo(f"Point qvq-gradio at it with: export {SPACE_ENV}={spec}")
        else:
            click.echo(f"Replica of the QVQ-72B Space running on {url}  (Ctrl-C to stop)")
            click.echo(f"Point qvq-gradio at it with: export {SPACE_ENV}={url}")
        sys.stdout.flush()

    try:
        replica.serve(config, host, port, ready=ready)
    except OSError as exc:  # the port is taken, the address is not this machine's
        raise Failure(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 2) from None


def _config(replica: Any, *, require_token: str | None, **options: Any) -> Any:
    """The ReplicaConfig for the command's options (all but where it listens)."""
    return replica.ReplicaConfig(token=require_token, **options)


def replica_config(args: Sequence[str]) -> Any:
    """The ReplicaConfig that ``qvq replica ARGS`` would serve (checked as the command checks
    them; ``--host`` and ``--port`` are left out): how the pytest plugin starts replicas."""
    replica = need_replica()
    # The group's help names: click keeps the help option the first context made for good.
    with replica_command.make_context(
        "replica", list(args), help_option_names=["-h", "--help"]
    ) as ctx:
        options = {k: v for k, v in ctx.params.items() if k not in ("host", "port")}
    return _config(replica, **options)
