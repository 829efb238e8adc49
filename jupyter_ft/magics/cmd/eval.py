"""``%ft_eval`` and ``%ft_chat``: base vs fine-tuned on the same prompts, as a table or a conversation.

The evaluation is ``jupyter_ft.eval.evaluate_run`` and the chat a ``ChatSession``; this module picks
the run, resolves notebook variables given as arguments, and chooses the widget or the static view.
"""

from __future__ import annotations

import os
from typing import Any

from IPython.core.error import UsageError
from IPython.display import display

from ...config import DEFAULT_ROOT, FineTuneConfig
from ...errors import RunNotFound
from ..lookup import KernelRuns

__all__ = ["chat", "eval_run", "evaluate", "show_eval", "user_value", "widget_mode"]


def eval_run(kernel: KernelRuns, ref: str | None, root: str | None) -> Any:
    """The run to evaluate/chat with/export: ``ref`` under ``root`` when given, else as ``KernelRuns.resolve``."""
    if root:
        from ...eval import open_run

        if not ref:
            raise UsageError("give the run id or name together with --root")
        try:
            return open_run(ref, root)
        except RunNotFound as exc:
            raise RunNotFound(f"{exc}; see %ft_runs --root {root}") from None
    return kernel.resolve(ref)


def user_value(ns: dict[str, Any], name: str, what: str) -> Any:
    """The notebook variable ``name`` given to option ``what``."""
    if name not in ns:
        raise UsageError(f"{what} {name}: no variable named '{name}' in the notebook")
    return ns[name]


def evaluate(kernel: KernelRuns, ns: dict[str, Any], run: Any, *, data: str | None = None,
             prompts: str | None = None, root: str | None = None, **options: Any) -> Any:
    """``evaluate_run`` with ``--data`` / ``--prompts`` looked up in the notebook when they name a variable."""
    from ...eval import evaluate_run

    value: Any = None
    if data is not None:
        name = data.strip().strip("'\"")
        value = ns[name] if name.isidentifier() and name in ns else name
    prompt_rows = user_value(ns, prompts, "--prompts") if prompts else None
    return evaluate_run(run, root=root or kernel.root(), data=value, prompts=prompt_rows, namespace=ns, **options)


def widget_mode() -> bool:
    """Whether to show widgets: ``JUPYTER_FT_DASHBOARD=static|widget`` forces it, else the frontend decides."""
    from ...widgets.frontend import widget_frontend

    forced = os.environ.get("JUPYTER_FT_DASHBOARD", "").strip().lower()
    if forced in ("static", "widget"):
        return forced == "widget"
    return widget_frontend()


def show_eval(result: Any) -> None:
    """The rows of an evaluation: the interactive table with a widget frontend, static HTML otherwise."""
    static = {"text/html": result.to_html(), "text/plain": result.rows_text(limit=10)}
    if widget_mode():
        from ...widgets.eval_widget import EvalWidget

        view = EvalWidget(result)
        view_ref = {"version_major": 2, "version_minor": 0, "model_id": view.widget.model_id}
        display({"application/vnd.jupyter.widget-view+json": view_ref, **static}, raw=True)
    else:
        display(static, raw=True)


def _loaded(run: Any, root: str | None, trust_remote_code: bool = False) -> tuple[Any, Any, Any]:
    from ...eval import open_run, run_model
    from ...runtime.memory import out_of_memory_advice

    rd = open_run(run, root or DEFAULT_ROOT)
    with out_of_memory_advice(f"loading the model of run {rd.record.id}",
                              "Free memory first: stop or wait for a training run, or restart the kernel"):
        return (rd, *run_model(rd, trust_remote_code=trust_remote_code)[:2])


def chat(run: Any, root: str | None, *, max_new_tokens: int, temperature: float, seed: int,
         system: str | None, prompt: str | None, trust_remote_code: bool = False) -> Any:
    """Answer ``prompt`` base vs tuned, or open the chat panel (a terminal loop without widgets)."""
    from ...widgets.chat import ChatPanel, ChatSession, answers_html, chat_loop

    rd, model, tokenizer = _loaded(run, root, trust_remote_code)
    config = FineTuneConfig.from_dict(rd.record.config)
    session = ChatSession(model, tokenizer, system_prompt=system or config.data.system_prompt,
                          max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                          title=f"{rd.record.name}: base vs tuned")
    if prompt is not None:
        ex = session.ask(prompt)
        display({"text/html": answers_html(ex), "text/plain": f"base:  {ex.base}\ntuned: {ex.tuned}"}, raw=True)
        return session
    if widget_mode():
        panel = ChatPanel(session)
        display(panel)
        return panel
    chat_loop(session)
    return session
