"""Pure code: prompt building, error mapping, redaction, the seed's surface, the public API."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest
from gradio_client import exceptions as gc_exceptions
from gradio_client import utils as gc_utils

import qvq_gradio
from qvq_gradio import (
    AppError,
    AuthenticationError,
    ConnectTimeoutError,
    GPUUnavailableError,
    IdleTimeoutError,
    Messages,
    ProtocolError,
    QuotaExceededError,
    Qwen_QVQ_72B,
    RateLimitError,
    ResponseError,
    Session,
    SpaceConnectionError,
)
from qvq_gradio._secrets import redact
from qvq_gradio.prompt import build_prompt
from qvq_gradio.replica import QUOTA_MESSAGE, ReplicaConfig
from qvq_gradio.spaces import SpaceConfig
from qvq_gradio.upstreams.gradio import clean_message, parse_retry_after, translate_error
from qvq_gradio.upstreams.gradio.job import new_text as _new_text

SPACE = "http://127.0.0.1:1"


def test_public_api_is_pinned() -> None:
    assert sorted(qvq_gradio.__all__) == sorted(
        [
            "DEFAULT_SPACE",
            "SPACE_ENV",
            "AppError",
            "AskOptions",
            "AuthenticationError",
            "ConnectTimeoutError",
            "Event",
            "Finished",
            "GPUUnavailableError",
            "HistoryError",
            "IdleTimeoutError",
            "ImageInput",
            "ImageOptions",
            "ImageTooLargeError",
            "InputError",
            "MediaDownloadError",
            "MediaError",
            "MediaTypeError",
            "MediaListType",
            "MultipleImagesWarning",
            "Messages",
            "MessagesError",
            "ModelsFileError",
            "OptionError",
            "Pool",
            "ProtocolError",
            "QVQError",
            "QueueUpdate",
            "ReasoningDelta",
            "ShapeFound",
            "QuotaExceededError",
            "Qwen_QVQ_72B",
            "RateLimitError",
            "ResponseError",
            "Session",
            "SessionLike",
            "SpaceChanged",
            "SpaceConnectionError",
            "SpaceNameError",
            "SpaceStatus",
            "SpaceUnavailableError",
            "SpaceWaking",
            "SyncSession",
            "StreamTimeoutError",
            "TextDelta",
            "TotalTimeoutError",
            "UnknownModelError",
            "__version__",
            "ask",
            "close_shared_sessions",
            "connect",
            "extract_final_answer",
            "shared_session",
            "stream",
        ]
    )
    for name in qvq_gradio.__all__:
        assert hasattr(qvq_gradio, name)


def test_importing_the_package_does_not_import_gradio() -> None:
    import subprocess
    import sys

    code = "import sys, qvq_gradio; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_seed_attributes() -> None:
    p = Qwen_QVQ_72B
    assert p.label == "Qwen QVQ-72B"
    assert p.url == "https://qwen-qvq-72b-preview.hf.space"
    assert p.api_endpoint == "/gradio_api/call/generate"
    assert p.working is True
    assert p.default_model == "qwen-qvq-72b-preview"
    assert p.default_vision_model == "qwen-qvq-72b-preview"
    assert p.model_aliases == {"qvq-72b": "qwen-qvq-72b-preview"}
    assert p.vision_models == ["qvq-72b"]
    assert p.models == ["qvq-72b"]
    assert [base.__name__ for base in p.__mro__[1:3]] == [
        "AsyncGeneratorProvider",
        "ProviderModelMixin",
    ]


@pytest.mark.parametrize(
    ("given", "resolved"),
    [
        (None, "qwen-qvq-72b-preview"),
        ("", "qwen-qvq-72b-preview"),
        ("qvq-72b", "qwen-qvq-72b-preview"),
        ("qwen-qvq-72b-preview", "qwen-qvq-72b-preview"),
    ],
)
def test_get_model(given: str | None, resolved: str) -> None:
    assert Qwen_QVQ_72B.get_model(given) == resolved


def test_messages_type_works_as_in_the_seed() -> None:
    messages = Messages([{"role": "user", "content": "Привет! Как дела?"}])
    assert messages == [{"role": "user", "content": "Привет! Как дела?"}]
    assert build_prompt(messages).text == "Привет! Как дела?"


def test_prompt_with_openai_parts_collects_images() -> None:
    prompt = build_prompt(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image", "image": b"raw"},
                ],
            }
        ]
    )
    assert prompt.text == "What is this?"
    assert prompt.images == ["data:image/png;base64,AAAA", b"raw"]


# -- the one mapping point ----------------------------------------------------------------------


def test_quota_message_with_html() -> None:
    error = translate_error(gc_exceptions.AppError(QUOTA_MESSAGE), space=SPACE)
    assert isinstance(error, QuotaExceededError)
    assert error.retry_after == 588
    assert "<" not in error.message
    assert error.message.startswith(
        "You have exceeded your GPU quota (60s requested vs. 56s left)."
    )


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("retry in 0:09:48", 588),
        ("retry in 9:48", 588),
        ("Try again in 30s", 30),
        ("try again in 2 minutes", 120),
        ("please wait", None),
    ],
)
def test_retry_after_formats(message: str, seconds: float | None) -> None:
    assert parse_retry_after(message) == seconds


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (gc_exceptions.AppError("No GPU is currently available for you"), GPUUnavailableError),
        (gc_exceptions.AppError("ZeroGPU illegal duration"), AppError),
        (gc_exceptions.AppError(None), AppError),  # type: ignore[arg-type]
        (gc_exceptions.AuthenticationError("nope"), AuthenticationError),
        (gc_utils.QueueError("Queue is full! Please try again."), RateLimitError),
        (gc_utils.TooManyRequestsError("slow down"), RateLimitError),
        (httpx.ConnectError("refused"), SpaceConnectionError),
        (httpx.ReadTimeout("slow"), IdleTimeoutError),
        (httpx.ConnectTimeout("slow"), ConnectTimeoutError),
        (httpx.WriteTimeout("slow"), SpaceConnectionError),
        (concurrent.futures.CancelledError(), SpaceConnectionError),
        (ValueError("Cannot find a function with `api_name`: /generate."), ProtocolError),
        (ValueError("Server stopped."), SpaceConnectionError),
        (KeyError("surprise"), ResponseError),
    ],
)
def test_translate_error(exc: BaseException, kind: type[ResponseError]) -> None:
    error = translate_error(exc, space=SPACE)
    assert type(error) is kind
    assert error.space == SPACE


def test_an_error_without_message_is_not_a_quota_error() -> None:
    error = translate_error(gc_exceptions.AppError(""), space=SPACE)
    assert type(error) is AppError


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (401, AuthenticationError),
        (403, AuthenticationError),
        (429, RateLimitError),
        (503, RateLimitError),
        (404, SpaceConnectionError),
    ],
)
def test_http_status_mapping(code: int, kind: type[ResponseError]) -> None:
    request = httpx.Request("GET", SPACE)
    exc = httpx.HTTPStatusError(
        "x", request=request, response=httpx.Response(code, request=request)
    )
    assert type(translate_error(exc, space=SPACE)) is kind


def test_clean_message() -> None:
    assert clean_message("a <b>bold</b>\n  move &amp; more") == "a bold move & more"


# -- secrets ----------------------------------------------------------------------------------


def test_tokens_are_redacted_from_errors_and_reprs() -> None:
    token = "hf_abcdefghijklmnopqrstuvwxyz012345"
    error = ResponseError(f"failed with {token} and Bearer sometoken")
    assert token not in str(error)
    assert "sometoken" not in str(error)
    assert redact(f"x {token} y") == "x *** y"
    session = Session(
        SPACE, token=token, proxy="http://user:pw@proxy:1", headers={"x-ip-token": "s"}
    )
    for shown in (repr(session), repr(session.config), str(session.config)):
        assert token not in shown
        assert "pw@" not in shown
        assert "'s'" not in shown
    session.close()


def test_space_config_is_hashable_and_keyed_by_everything() -> None:
    a = SpaceConfig(SPACE, token="t1")
    b = SpaceConfig(SPACE, token="t2")
    assert a != b
    assert len({a, b, SpaceConfig(SPACE, token="t1")}) == 2


# -- deltas -----------------------------------------------------------------------------------


def test_delta_of_cumulative_text() -> None:
    assert _new_text("Hello", "Hello, world", SPACE) == ", world"
    assert _new_text("", "", SPACE) == ""


def test_rewritten_text_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as caught:
        _new_text("Hello", "Goodbye", SPACE)
    assert caught.value.text == "Hello"  # what had arrived is kept


def test_session_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        Session(SPACE, idle_timeout=0)
    with pytest.raises(ValueError, match="max_workers"):
        Session(SPACE, max_workers=0)


def test_replica_directives() -> None:
    config = ReplicaConfig().with_directives("hi [[replica tokens=7 delay=0 fail=mid after=2]]")
    assert (config.tokens, config.delay, config.fail, config.fail_after) == (7, 0.0, "mid", 2)
    with pytest.raises(ValueError, match="unknown replica directive"):
        ReplicaConfig().with_directives("[[replica colour=red]]")
