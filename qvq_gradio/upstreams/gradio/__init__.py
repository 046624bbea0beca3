"""A Gradio Space as an upstream, and the adapter to gradio_client: the only code that knows
its internals.

    client.py     QVQClient (no telemetry, elastic daemon pools, a session per job) and
                  JobClient (one job's view of it), StreamWatch (sockets that can be shut down)
    reader.py     the job's event stream, read on the event loop (no polling, no thread hop);
                  JobEndpoint: the job's thread hands the stream over once it has joined
    streams.py    EventStreams: the event streams' kept-alive connections, one pool per loop;
                  pooled(): a pool with a client's settings (the joins' too)
    handover.py   HandOver: the event id to the loop, the completion back to the thread
    freshness.py  when the config must be read again (heartbeat, errors, age), not per job
    description.py  the Space's config and API info kept on disk, for a cold start
    handle.py     JobHandle: submit, Future, event id, upstream cancel
    upstream.py   GradioUpstream: a Space as an upstream (connect, wake, shape, jobs)
    job.py        SpaceJob: one job's life (steps, submit, follow, verify, cancel)
    endpoint.py   an endpoint's signature in a Gradio config (what a redeploy changes)
    shapes/       how a Space is asked and read, found from its API (QVQ, chat, blocks)
    hub.py        a Space's state on the Hub and what each state means
    translate.py  the one place where library errors become ours

What is changed about gradio_client, and why, is in docs/design.md ("What gradio_client does").
"""

from __future__ import annotations

from .client import JobClient, QVQClient, StreamWatch, answers_config, describe, queue_status
from .description import DescriptionCache, app_identity
from .endpoint import endpoint_signature
from .handle import JobHandle, file_arg
from .hub import SPACE_STATES, WAKING, space_state, unavailable
from .reader import Update
from .streams import EventStreams
from .translate import clean_message, parse_retry_after, translate_error

__all__ = [
    "SPACE_STATES",
    "WAKING",
    "DescriptionCache",
    "EventStreams",
    "JobClient",
    "JobHandle",
    "QVQClient",
    "StreamWatch",
    "Update",
    "answers_config",
    "app_identity",
    "clean_message",
    "describe",
    "endpoint_signature",
    "file_arg",
    "parse_retry_after",
    "queue_status",
    "space_state",
    "translate_error",
    "unavailable",
]

from .upstream import GradioUpstream  # last: it builds on everything above

__all__ += ["GradioUpstream"]
