"""A replica of the QVQ-72B Space, for tests, demos and your own offline tests.

Needs the ``replica`` extra (``pip install 'qvq-gradio[replica]'``): it is a real Gradio app
with the Space's API — endpoint ``/generate``, inputs ``[image filepath or None, text]``, a
generator whose every update is the whole answer so far — served by uvicorn on 127.0.0.1.

Its answer proves what it received: the first line carries the prompt (and its sha256), the
second the image's size, mode, format and a sha256 of its RGB pixel bytes. Then come
``tokens`` words of fake reasoning, ``delay`` seconds apart, and a ``**Final Answer**``.

Behaviour is set per replica (:class:`ReplicaConfig`) and can be overridden per request by a
directive anywhere in the prompt, e.g. ``[[replica tokens=200 delay=0.01 fail=mid after=5]]``;
``together=NAME:N`` holds a request before its first token until N of group NAME are generating.
Failure modes: ``before`` (``gr.Error`` before the first token), ``mid`` (``gr.Error`` after
``after`` tokens), ``quota`` (a ZeroGPU quota message), ``hang`` (stop after ``after`` tokens
and never finish), ``echo-token`` (an error that echoes the credential it was sent, as some
Spaces do). ``layout`` changes the app itself: ``reordered`` puts another function with the same
inputs before ``/generate`` (a redeployed Space), ``text-only`` gives ``/generate`` one input.

Every request is logged with how many tokens it really generated and how it ended
(``done``, ``failed``, ``cancelled``), so tests can prove that cancelling stopped the server::

    from qvq_gradio.replica import Replica

    with Replica() as replica:                      # a free port on 127.0.0.1
        ...  # point qvq_gradio at replica.url (space=replica.url or QVQ_SPACE)
        record = replica.wait_ended("my marker")    # blocks until that request ended

From the command line: ``qvq replica`` or ``python -m qvq_gradio replica --port 7860``.

    config.py   ReplicaConfig and the per-request directives
    receipt.py  what it answers: the receipt of what it received, the reasoning words
    quota.py    ZeroGPU's quota message and a request budget
    app.py      the Gradio app, one function per failure mode, and the control routes
    log.py      the request log tests read
    control.py  Replica (a thread), ReplicaProcess (a child process), serve
"""

from __future__ import annotations

import importlib.util
import sys

__all__ = [
    "OTHER_FUNCTION_TEXT",
    "QUOTA_MESSAGE",
    "REASONING_WORDS",
    "STALLED",
    "Replica",
    "ReplicaConfig",
    "ReplicaProcess",
    "RequestRecord",
    "answer_head",
    "build_app",
    "describe_image",
    "quota_message",
    "serve",
]


def _require_extra() -> None:
    """Importing the replica without the ``replica`` extra says which extra to install."""
    missing = []
    for name in ("gradio", "uvicorn"):
        present = sys.modules[name] is not None if name in sys.modules else None
        if present is None:
            present = importlib.util.find_spec(name) is not None
        if not present:
            missing.append(name)
    if missing:
        raise ImportError(
            f"the replica needs the 'replica' extra (missing: {', '.join(missing)}): "
            "pip install 'qvq-gradio[replica]'"
        )


_require_extra()


_require_extra()

from .app import build_app  # noqa: E402  (after the check, so a missing extra says which)
from .config import ReplicaConfig  # noqa: E402
from .control import Replica, ReplicaProcess, serve  # noqa: E402
from .log import STALLED, RequestRecord  # noqa: E402
from .quota import QUOTA_MESSAGE, quota_message  # noqa: E402
from .receipt import OTHER_FUNCTION_TEXT, REASONING_WORDS, answer_head, describe_image  # noqa: E402
