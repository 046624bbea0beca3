"""What every Space shape shares: the endpoints an app shows, what a question is to a shape,
and what a shape asks the Space (:class:`Call`).

An app's public endpoints are read from its API info (their parameters, with labels, names and
defaults) joined with its config (the component types of every input and output, the hidden
``state`` ones included, and the function index a job is submitted to).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ....thinking import Said

__all__ = [
    "SILENT",
    "Asked",
    "Call",
    "Endpoint",
    "Shape",
    "Silent",
    "Step",
    "Unreadable",
    "endpoints",
]


class Unreadable(Exception):
    """The Space sent an output its shape cannot read (the job makes it a ProtocolError)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One public endpoint: its name, function index, component types (config: hidden states
    included) and parameters (API info: what a client sends, in order)."""

    api_name: str
    fn_index: Any
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    parameters: tuple[Mapping[str, Any], ...]
    generator: bool

    def __str__(self) -> str:
        shown = ", ".join(p.get("component", "?") for p in self.parameters)
        returns = ", ".join(t for t in self.outputs if t != "state") or "nothing"
        return f"{self.api_name} ({shown or 'no inputs'} -> {returns})"

    def parameter_components(self) -> list[str]:
        return [str(p.get("component", "")).lower() for p in self.parameters]


def endpoints(config: Mapping[str, Any], info: Mapping[str, Any] | None) -> list[Endpoint]:
    """The app's public named endpoints, in function-index order."""
    components = {c.get("id"): str(c.get("type", "")) for c in config.get("components", [])}
    named = dict((info or {}).get("named_endpoints", {}) or {})
    found: list[Endpoint] = []
    for index, dependency in enumerate(config.get("dependencies", [])):
        name = dependency.get("api_name")
        if not name:
            continue
        api_name = f"/{str(name).lstrip('/')}"
        visible = dependency.get("api_visibility", "public" if dependency.get("show_api", True)
                                 else "private")
        if info is not None and api_name not in named:
            continue  # not in the public API
        if info is None and visible != "public":
            continue
        types = dependency.get("types") or {}
        found.append(
            Endpoint(
                api_name=api_name,
                fn_index=dependency.get("id", index),
                inputs=tuple(components.get(i, "") for i in dependency.get("inputs", [])),
                outputs=tuple(components.get(i, "") for i in dependency.get("outputs", [])),
                parameters=tuple(named.get(api_name, {}).get("parameters", []) or []),
                generator=bool(types.get("generator")),
            )
        )
    return found


@dataclass(frozen=True, slots=True)
class Asked:
    """A question as a shape sees it: the prompt flattened (as QVQ's Space takes it), the
    ``(role, text)`` turns it came from, and the sampling parameters the caller gave."""

    text: str
    turns: tuple[tuple[str, str], ...] = ()
    sampling: Mapping[str, Any] = field(default_factory=dict)
    #: A line about the images (several sent as one grid), put before the message.
    note: str | None = None

    @property
    def system(self) -> str | None:
        texts = [text for role, text in self.turns if role == "system"]
        return "\n\n".join(texts) if texts else None


@dataclass(frozen=True, slots=True)
class Step:
    """A call made (and waited for) before the streamed one, on the same Gradio session."""

    api_name: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Call:
    """What a shape asks: ``steps`` first, then the streamed ``api_name(*args)``; ``applied``
    says which of the caller's parameters reached an input (recorded in the history)."""

    api_name: str
    args: tuple[Any, ...]
    steps: tuple[Step, ...] = ()
    applied: Mapping[str, Any] = field(default_factory=dict)


class Shape:
    """How one kind of Space is asked and read. Subclasses: one per shape."""

    name: ClassVar[str]

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        #: Whether the earlier turns reach the Space apart (else they are flattened into the
        #: message, as QVQ's are).
        self.takes_history = False

    @property
    def api_name(self) -> str:
        return self.endpoint.api_name

    @property
    def several_images(self) -> bool:
        """Whether it takes several images, each as its own file (else one: a grid)."""
        return False

    def call(self, asked: Asked, files: Sequence[Any]) -> Call:
        """What to send for ``asked`` with the uploads ``files`` (gradio_client file values)."""
        raise NotImplementedError

    def read(self, value: Any, *, final: bool, text_started: bool) -> Said:
        """What the Space has said so far, from the endpoint's (cumulative) output ``value``."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for ``qvq status``."""
        return f"{self.name}: {self.endpoint}"


class Silent(Shape):
    """How a chain's step is read: its output is not needed (the Space keeps its state)."""

    name = "step"

    def __init__(self) -> None:
        self.takes_history = False

    @property
    def api_name(self) -> str:
        return ""

    def read(self, value: Any, *, final: bool, text_started: bool) -> Said:
        return Said()


#: The one :class:`Silent` shape.
SILENT = Silent()
