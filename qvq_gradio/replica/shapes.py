"""The replica in the other shapes a chat Space takes (``--shape chat`` / ``blocks``).

``chat``: a multimodal ``ChatInterface`` (a text-only one with ``--layout text-only``) with
a system prompt, a temperature and a max-tokens input (Gradio 5 names its endpoint ``/chat``,
Gradio 6 ``/respond``). Its answer is the same receipt and words as QVQ's; with
``think=tags`` (or the directive) the words come inside ``<think>...</think>`` and the answer
after them, with ``think=title`` (Gradio 6) in a message titled "Thinking". What reached the
other inputs is logged (``params``).

With ``--layout history``: a hand-made chat whose ``/chat`` endpoint takes the history as a
parameter (a Chatbot), and a system message; what it received is logged.

``blocks``: Qwen's own ``web_demo_mm.py`` demo: a chatbot, a text box, a ``gr.State`` task
history; ``/add_file`` and ``/add_text`` add to the state, a streaming ``/predict`` answers the
last question with the images added (tuples on Gradio 5, messages on Gradio 6).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .app import Answers, gradio

__all__ = ["blocks_demo", "chat_interface"]

_HEADING = "\n\n**Final Answer**\n\n"


def _gradio6() -> bool:
    return int(str(gradio().__version__).split(".")[0]) >= 6


def _path(file: Any) -> str:
    return str(file.get("path") if isinstance(file, dict) else getattr(file, "name", file))


def _shown(out: str, think: str, titled: bool) -> Any:
    """The answer so far as a chat shows it: the words as thinking, the final answer apart."""
    thinking, heading, answer = out.partition(_HEADING)
    if think == "none":
        return out
    if think == "title" and titled:
        messages: list[dict[str, Any]] = [
            {"role": "assistant", "content": thinking, "metadata": {"title": "Thinking"}}
        ]
        if heading:
            messages.append({"role": "assistant", "content": answer})
        return messages
    return f"<think>\n{thinking}" + (f"\n</think>\n\n{answer}" if heading else "")


def chat_interface(answers: Answers) -> Any:
    gr = gradio()
    titled = _gradio6()
    if answers.base.layout == "history":
        return _chat_with_history(answers)

    async def respond(
        message: Any,
        history: list[Any],
        system_prompt: str,
        temperature: float,
        max_tokens: int,
        request: Any,
    ) -> AsyncIterator[Any]:
        given = message if isinstance(message, dict) else {"text": str(message)}
        text = str(given.get("text") or "")
        files = [_path(f) for f in (given.get("files") or [])]
        think = answers.base.with_directives(text).think
        record = answers.start(text, request)
        record.params = {
            "system": system_prompt,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "history": len(history or []),
        }
        async for out in answers.stream(record, text, files, request):
            yield _shown(out, think, titled)

    respond.__annotations__["request"] = gr.Request
    return gr.ChatInterface(
        respond,
        multimodal=answers.base.layout != "text-only",
        title="Chat replica",
        additional_inputs=[
            gr.Textbox("You are a helpful assistant.", label="System prompt"),
            gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="Temperature"),
            gr.Slider(1, 8192, value=1024, step=1, label="Max new tokens"),
        ],
        analytics_enabled=False,
        **({} if titled else {"type": "messages"}),
    )


def blocks_demo(answers: Answers) -> Any:
    gr = gradio()
    messages = _gradio6()

    def add_text(history: list[Any], task_history: list[Any], text: str) -> Any:
        shown = {"role": "user", "content": text} if messages else [text, None]
        return (history or []) + [shown], (task_history or []) + [(text, None)]

    def add_file(history: list[Any], task_history: list[Any], file: Any) -> Any:
        path = _path(file)
        shown = {"role": "user", "content": {"path": path}} if messages else [(path,), None]
        return (history or []) + [shown], (task_history or []) + [((path,), None)]

    async def predict(
        chatbot: list[Any], task_history: list[Any], request: Any
    ) -> AsyncIterator[list[Any]]:
        text = next(
            (q for q, _ in reversed(task_history or []) if isinstance(q, str)), ""
        )
        images = [q[0] for q, _ in (task_history or []) if isinstance(q, tuple)]
        record = answers.start(text, request)
        record.params = {"history": len(task_history or [])}
        chatbot = list(chatbot or [])
        async for out in answers.stream(record, text, images, request):
            if messages:
                if chatbot and chatbot[-1].get("role") == "assistant":
                    chatbot[-1] = {"role": "assistant", "content": out}
                else:
                    chatbot.append({"role": "assistant", "content": out})
            else:
                chatbot[-1] = [chatbot[-1][0], out]
            yield chatbot
        task_history[-1] = (text, record.text)

    predict.__annotations__["request"] = gr.Request
    with gr.Blocks(title="Qwen-VL demo replica", analytics_enabled=False) as demo:
        chatbot = gr.Chatbot(label="Qwen-VL", **({} if messages else {"type": "tuples"}))
        query = gr.Textbox(lines=2, label="Input")
        task_history = gr.State([])
        with gr.Row():
            addfile_btn = gr.UploadButton("Upload", file_types=["image"])
            submit_btn = gr.Button("Submit")
        submit_btn.click(add_text, [chatbot, task_history, query], [chatbot, task_history]).then(
            predict, [chatbot, task_history], [chatbot]
        )
        addfile_btn.upload(add_file, [chatbot, task_history, addfile_btn], [chatbot, task_history])
    return demo


def _chat_with_history(answers: Answers) -> Any:
    """A chat whose endpoint takes the history as a parameter (``/chat(message, history,
    system)``), as older ChatInterfaces and hand-made chat Blocks do."""
    gr = gradio()

    async def chat(
        message: str, history: list[Any], system: str, request: Any
    ) -> AsyncIterator[str]:
        record = answers.start(message, request)
        record.params = {"system": system, "history": [_turn(item) for item in history or []]}
        async for out in answers.stream(record, message, [], request):
            yield out

    chat.__annotations__["request"] = gr.Request
    with gr.Blocks(title="Chat replica (history)", analytics_enabled=False) as demo:
        message = gr.Textbox(label="Message")
        history = gr.Chatbot(label="History", **({} if _gradio6() else {"type": "messages"}))
        system = gr.Textbox("You are a helpful assistant.", label="System message")
        answer = gr.Textbox(label="Answer")
        gr.Button("Send").click(chat, [message, history, system], answer, api_name="chat")
    return demo


def _turn(item: Any) -> list[str]:
    """One history message as ``[role, text]`` (Gradio 6 content blocks read as text)."""
    role = item.get("role") if isinstance(item, dict) else getattr(item, "role", "")
    content = item.get("content") if isinstance(item, dict) else getattr(item, "content", "")
    if isinstance(content, list):
        content = " ".join(
            str(b.get("text", "")) if isinstance(b, dict) else str(getattr(b, "text", b))
            for b in content
        )
    return [str(role), str(content)]
