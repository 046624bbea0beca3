"""``qvq serve``: the Space (or a pool) as an OpenAI-compatible API, with uvicorn."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from ..endpoints import is_loopback
from .options import (
    BYTES,
    SECONDS,
    connect_models,
    session_options,
    shape_option,
    space_option,
    token_option,
)
from .running import Failure

if TYPE_CHECKING:
    from ..protocol import SessionLike
    from ..serve.draining import Draining

__all__ = ["build", "serve"]

_EXAMPLES = """\b
Examples:
  qvq serve
  qvq serve --space a/b --space c/d --port 8000
  QVQ_API_KEY=secret qvq serve --host 0.0.0.0
  OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=x python my_eval.py
"""


@click.command("serve", epilog=_EXAMPLES)
@space_option
@token_option
@shape_option
@click.option("--proxy", help="HTTP(S) proxy URL for every request to the Space.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port).")
@click.option("--api-key", envvar="QVQ_API_KEY",
              help="Require 'Authorization: Bearer KEY' [default: $QVQ_API_KEY]; needed to "
              "listen beyond this machine.")
@click.option("--reasoning", type=click.Choice(["split", "inline"]), default="split",
              show_default=True,
              help="split: reasoning in reasoning_content, the final section in content; "
              "inline: the Space's text as is, in content.")
@click.option("--cors-origin", multiple=True, help="Allow browser requests from ORIGIN "
              "(repeatable).")
@click.option("--no-history", is_flag=True, help="Do not record answers in the history.")
@click.option("--cache", is_flag=True, help="Answer a request identical to a recorded one "
              "from the history, without asking the Space (an eval re-run costs no quota).")
@click.option("--connect-timeout", type=SECONDS, default=30.0, show_default=True,
              help="Seconds to reach the Space and read its API.")
@click.option("--idle-timeout", type=SECONDS, default=120.0, show_default=True,
              help="Seconds without new text once generation started.")
@click.option("--max-running", default=64, show_default=True, type=click.IntRange(1),
              help="Answers followed at once.")
@click.option("--max-waiting", default=256, show_default=True, type=click.IntRange(0),
              help="Requests waiting for a free slot; past that, 429 with Retry-After.")
@click.option("--hold", type=SECONDS, default=10.0, show_default=True,
              help="Seconds a stream's headers wait for the first text (an error before "
              "then gets its real HTTP status); keep-alive comments after that.")
@click.option("--keepalive", type=SECONDS, default=10.0, show_default=True,
              help="Seconds between keep-alive comments while the Space queues.")
@click.option("--shutdown-grace", type=SECONDS, default=10.0, show_default=True,
              help="On SIGINT or SIGTERM, seconds the answers in flight get to finish before "
              "they are cancelled (each ends with an error chunk, or a 503).")
@click.option("--max-body-bytes", type=BYTES, show_default="32MiB",
              help="The largest request body, in bytes (or 512KiB, 64MiB...); 413 past it.")
@click.option("--max-image-bytes", type=BYTES, show_default="20MiB",
              help="The largest image, encoded, in a data: URI or downloaded.")
@click.option("--max-image-pixels", type=click.IntRange(1), show_default="50000000",
              help="The largest image, in pixels, that is decoded.")
@click.option("--allow-private-urls", is_flag=True,
              help="Fetch image URLs from loopback and private addresses too (tests, a lab "
              "network); by default only public addresses are fetched.")
def serve(**options: Any) -> None:
    """Serve the Space as an OpenAI-compatible API (/v1/chat/completions)."""
    host, port = options["host"], options["port"]
    application, draining, models = build(options)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise Failure(f"cannot listen on {host}:{port}: {exc.strerror}", 2) from None
    from ..serve.draining import run
    from ..serve.shapes import MODELS

    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    served = "; ".join(
        f"{', '.join(MODELS) if name is None else name} -> {getattr(asking, 'space', '?')}"
        for name, asking in models.items()
    )
    click.echo(f"qvq serve: http://{shown}:{bound}/v1  models: {served}", err=True)
    run(application, sock, draining)


def build(
    options: Mapping[str, Any],
) -> tuple[Any, Draining, dict[str | None, SessionLike]]:
    """What ``qvq serve`` serves, from its options (as click parsed them): the ASGI app, the
    stop it drains by, and the session of each model name (unnamed: ``None``), which the app
    closes at shutdown. Tests serve it in-process."""
    if not is_loopback(options["host"]) and not options["api_key"]:
        raise click.UsageError(
            f"refusing to listen on {options['host']} without an API key: pass --api-key (or "
            "set $QVQ_API_KEY), or listen on 127.0.0.1"
        )
    try:
        import uvicorn  # noqa: F401  (the server runs on it)

        from ..serve import app
        from ..serve.draining import Draining
        from ..serve.limits import Limits
    except ImportError as exc:
        raise Failure(f"qvq serve needs the serve extra: pip install 'qvq-gradio[serve]' "
                      f"({exc.name} is missing)", 2) from None
    models = connect_models(options["space"], session_options(
        options["token"], options["proxy"], options["connect_timeout"], options["idle_timeout"],
        None, options["no_history"], options["cache"], options["shape"],
    ))
    draining = Draining(options["shutdown_grace"])
    caps = ("max_body_bytes", "max_image_bytes", "max_image_pixels")
    limits = Limits(allow_private_urls=options["allow_private_urls"],
                    **{name: options[name] for name in caps if options[name] is not None})
    application = app(
        models, api_key=options["api_key"],
        reasoning="split" if options["reasoning"] == "split" else "inline",
        cors_origins=options["cors_origin"], max_running=options["max_running"],
        max_waiting=options["max_waiting"], hold=options["hold"],
        keepalive=options["keepalive"], close_session=True, limits=limits, draining=draining,
    )
    return application, draining, models
