"""``%ft_chat``: type a prompt, see the base answer (adapter switched off) and the tuned answer side by side.

:class:`ChatSession` holds the logic (no widgets): each prompt is rendered with the model's chat template and
answered twice by the one model in memory, with identical decoding. With ``multi_turn`` each side keeps its
own conversation (the base sees its own earlier answers, the tuned model its own). :class:`ChatPanel` is the
ipywidgets face; :func:`chat_loop` the text face for a terminal, and :func:`answers_html` one exchange as HTML.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import EvalError

__all__ = ["ChatPanel", "ChatSession", "Exchange", "answers_html", "chat_loop"]


@dataclass
class Exchange:
    prompt: str
    base: str
    tuned: str


@dataclass
class ChatSession:
    """Base vs tuned answers for prompts typed by the user, from one model (a ``PeftModel``)."""

    model: Any
    tokenizer: Any
    system_prompt: str | None = None
    max_new_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0
    multi_turn: bool = False
    title: str = ""
    exchanges: list[Exchange] = field(default_factory=list)

    def _messages(self, side: str, prompt: str) -> list[dict[str, str]]:
        msgs: list[dict[str, str]] = []
        if self.system_prompt:
            msgs.append({"role": "system", "content": self.system_prompt})
        if self.multi_turn:
            for ex in self.exchanges:
                msgs += [{"role": "user", "content": ex.prompt},
                         {"role": "assistant", "content": getattr(ex, side)}]
        msgs.append({"role": "user", "content": prompt})
        return msgs

    def ask(self, prompt: str) -> Exchange:
        """Answer ``prompt`` with the adapter off (base) and on (tuned); the exchange is kept in ``exchanges``."""
        from ..eval import generation
        from ..runtime.memory import out_of_memory_advice

        prompt = prompt.strip()
        if not prompt:
            raise EvalError("type a prompt first")
        decode: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                                  "seed": self.seed, "batch_size": 1}
        lower = (f"Lower max_new_tokens (%ft_chat --max-new-tokens, now {self.max_new_tokens}), or clear the "
                 "conversation (each turn is sent again)")
        with out_of_memory_advice("answering the prompt", lower):
            with self.model.disable_adapter():
                (base,) = generation.generate(
                    self.model, self.tokenizer,
                    [generation.render_chat_prompt(self._messages("base", prompt), self.tokenizer)], **decode)
            (tuned,) = generation.generate(
                self.model, self.tokenizer,
                [generation.render_chat_prompt(self._messages("tuned", prompt), self.tokenizer)], **decode)
        ex = Exchange(prompt, base, tuned)
        self.exchanges.append(ex)
        return ex

    def clear(self) -> None:
        self.exchanges.clear()

    def transcript_html(self) -> str:
        if not self.exchanges:
            return "<p style='color:#888'>Type a prompt below; the base and the tuned answers appear side by side.</p>"
        return "".join(answers_html(ex) for ex in self.exchanges)

    def transcript_text(self) -> str:
        return "\n\n".join(_text(ex) for ex in self.exchanges)


_CELL = "border:1px solid #ddd;padding:4px 8px;vertical-align:top;white-space:pre-wrap;width:50%;text-align:left"


def answers_html(ex: Exchange) -> str:
    """One prompt with the two answers side by side, word differences marked."""
    from ..views.diff import word_diff
    from ..views.eval_html import eval_style

    base, tuned = word_diff(ex.base, ex.tuned)
    return (f"<div class='jft-eval' style='margin-bottom:8px'><style>{eval_style()}</style>"
            f"<div style='font-weight:600;white-space:pre-wrap'>› {html.escape(ex.prompt)}</div>"
            "<table style='width:100%;table-layout:fixed'><thead><tr>"
            f"<th style='{_CELL}'>base (adapter off)</th><th style='{_CELL}'>tuned</th></tr></thead>"
            f"<tbody><tr><td style='{_CELL}'>{base}</td><td style='{_CELL}'>{tuned}</td></tr></tbody></table></div>")


def _text(ex: Exchange) -> str:
    return f"> {ex.prompt}\n  base:  {ex.base}\n  tuned: {ex.tuned}"


class ChatPanel:
    """The widget: transcript, a prompt box, Send / New chat, a multi-turn switch and the decoding settings.

    Parts: ``transcript`` (HTML), ``prompt`` (Textarea), ``send_button``, ``clear_button``, ``multi_turn``,
    ``max_new_tokens``, ``temperature``, ``status`` and ``widget`` (the whole panel). ``send(text)`` asks from
    Python. Generation runs in the kernel when Send is pressed (a few seconds for a small model on a CPU).
    """

    def __init__(self, session: ChatSession) -> None:
        import ipywidgets as W

        self.session = session
        self.transcript = W.HTML(session.transcript_html())
        self.prompt = W.Textarea(placeholder="Type a prompt (Shift+Enter for a new line), then Send",
                                 layout=W.Layout(width="100%", height="64px"))
        self.send_button = W.Button(description="Send", icon="paper-plane", button_style="primary",
                                    layout=W.Layout(width="auto"))
        self.clear_button = W.Button(description="New chat", icon="eraser", layout=W.Layout(width="auto"))
        self.multi_turn = W.Checkbox(value=session.multi_turn, description="multi-turn", indent=False,
                                     layout=W.Layout(width="auto"))
        self.max_new_tokens = W.BoundedIntText(value=session.max_new_tokens, min=1, max=4096,
                                               description="max new tokens", style={"description_width": "initial"},
                                               layout=W.Layout(width="170px"))
        self.temperature = W.BoundedFloatText(value=session.temperature, min=0.0, max=5.0, step=0.1,
                                              description="temperature", style={"description_width": "initial"},
                                              layout=W.Layout(width="150px"))
        self.status = W.HTML()
        self.send_button.on_click(lambda _b: self.send())
        self.clear_button.on_click(lambda _b: self.clear())
        title = W.HTML(f"<b>{html.escape(session.title or 'base vs tuned')}</b>")
        buttons = W.HBox([self.send_button, self.clear_button, self.multi_turn, self.max_new_tokens,
                          self.temperature, self.status],
                         layout=W.Layout(align_items="center", flex_flow="row wrap", gap="8px"))
        self.widget = W.VBox([title, self.transcript, self.prompt, buttons])

    def send(self, text: str | None = None) -> Exchange | None:
        text = self.prompt.value if text is None else text
        if not text.strip():
            self.status.value = "<span style='color:#8a6d00'>type a prompt first</span>"
            return None
        s = self.session
        s.multi_turn = bool(self.multi_turn.value)
        s.max_new_tokens = int(self.max_new_tokens.value)
        s.temperature = float(self.temperature.value)
        self.send_button.disabled = True
        self.status.value = "<span style='color:#888'>generating…</span>"
        try:
            ex = s.ask(text)
        except Exception as exc:  # noqa: BLE001 - shown in the panel, the kernel keeps going
            self.status.value = f"<span style='color:#b00020'>{html.escape(f'{type(exc).__name__}: {exc}')}</span>"
            return None
        finally:
            self.send_button.disabled = False
        self.prompt.value = ""
        self.status.value = ""
        self.transcript.value = s.transcript_html()
        return ex

    def clear(self) -> None:
        self.session.clear()
        self.transcript.value = self.session.transcript_html()
        self.status.value = ""

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return {"application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0,
                                                             "model_id": self.widget.model_id},
                "text/plain": self.session.transcript_text() or "<jupyter-ft chat: base vs tuned>"}


def chat_loop(session: ChatSession, input_fn: Callable[[str], str] | None = None,
              print_fn: Callable[[str], None] = print) -> list[Exchange]:
    """The text face (a terminal, no widgets): read prompts until an empty line or end of input."""
    if input_fn is None:
        import builtins

        input_fn = builtins.input
    print_fn(f"{session.title or 'base vs tuned'}: type a prompt; an empty line ends the chat.")
    while True:
        try:
            text = input_fn("prompt> ")
        except (EOFError, KeyboardInterrupt):
            break
        except (NotImplementedError, OSError):  # a kernel that does not allow stdin, captured output
            print_fn("no input here (no widget frontend and no terminal); use %ft_chat --prompt \"...\"")
            break
        if not text.strip():
            break
        try:
            print_fn(_text(session.ask(text)))
        except ValueError as exc:  # out of memory included: say what to lower, keep the loop going
            print_fn(str(exc))
    return session.exchanges
