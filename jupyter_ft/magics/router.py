"""The ``FineTuneMagics`` class: each magic parses its arguments, calls one ``cmd`` function, and shows.

The argparse decorators and docstrings here are the magics' help (``%ft_eval?`` and docs/magics.md are
generated from them); the work is in :mod:`jupyter_ft.magics.cmd`. Every error jupyter-ft raises on purpose
(:class:`~jupyter_ft.errors.JupyterFTError`) becomes a ``UsageError`` in one place, :func:`one_line_errors`,
so a wrong path or an unknown run reads as one line under the cell instead of a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from ..config import FineTuneConfig
from ..config.sweep_plan import SweepPlan
from ..errors import JupyterFTError
from . import cell as cells
from .cmd.compare import compare, show_comparison
from .cmd.control import resume_run, show_run, stop_run, stop_sweep
from .cmd.eval import chat, eval_run, evaluate, show_eval
from .cmd.export import export
from .cmd.finetune import finetune_cell, launch, show_form
from .cmd.runs import list_runs, note_run, remove_run, status_line, tag_run
from .help import help_text
from .lookup import KernelRuns

__all__ = ["FineTuneMagics", "one_line_errors"]

M = TypeVar("M", bound=type)


def _usage_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)  # keeps the docstring and the argparse ``parser`` the help is made from
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except JupyterFTError as exc:
            raise UsageError(str(exc)) from None

    return wrapper


def one_line_errors(cls: M) -> M:
    """Wrap every magic of a ``@magics_class`` so a :class:`JupyterFTError` is shown as a ``UsageError``
    (IPython prints its message, without a traceback); other exceptions, real bugs, keep their traceback."""
    for attr in {a for table in cls.magics.values() for a in table.values()}:  # type: ignore[attr-defined]
        setattr(cls, attr, _usage_errors(getattr(cls, attr)))
    return cls


@one_line_errors
@magics_class
class FineTuneMagics(Magics):
    """The notebook face of jupyter-ft; keeps the runs launched from this kernel (:class:`KernelRuns`)."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.kernel = KernelRuns()

    # the kernel's runs, as attributes of the magics (tests and users set ``last_run``)
    @property
    def runs(self) -> dict[str, Any]:
        return self.kernel.runs

    @property
    def last_run(self) -> Any:
        return self.kernel.last_run

    @last_run.setter
    def last_run(self, run: Any) -> None:
        self.kernel.last_run = run

    @property
    def sweeps(self) -> dict[str, Any]:
        return self.kernel.sweeps

    @property
    def last_sweep(self) -> Any:
        return self.kernel.last_sweep

    @last_sweep.setter
    def last_sweep(self, sweep: Any) -> None:
        self.kernel.last_sweep = sweep

    @property
    def user_ns(self) -> dict[str, Any]:
        """The notebook's namespace (``--out`` variables, ``$var`` in a cell, ``_``)."""
        if self.shell is None:  # pragma: no cover - IPython always gives a magics class its shell
            raise RuntimeError("FineTuneMagics needs an IPython shell")
        return self.shell.user_ns

    def parse_config(self, body: str, name: str | None = None) -> FineTuneConfig:
        """The cell body as a validated config; problems raise ``UsageError`` naming line and field."""
        return cells.parse_config(body, self.user_ns, name)

    def parse_sweep(self, body: str, name: str | None = None) -> SweepPlan:
        """A body with a ``sweep:`` key as a sweep plan (every run validated)."""
        return cells.parse_sweep(body, self.user_ns, name)

    def resolve_run(self, ref: str | None) -> Any:
        """A ``Run`` of this kernel by id/name, the last one by default; past runs come from the store."""
        try:
            return self.kernel.resolve(ref)
        except JupyterFTError as exc:
            raise UsageError(str(exc)) from None

    def launch(self, config: FineTuneConfig, wait: bool = False, out: str | None = None) -> Any:
        return launch(self.kernel, self.user_ns, config, wait=wait, out=out)

    def bind(self, out: str | None, value: Any) -> None:
        """``--out VAR`` and ``_``: where a magic leaves its result for the next cell."""
        if out:
            self.user_ns[out] = value
        self.user_ns["_"] = value

    @magic_arguments()
    @argument("--name", "-n", default=None, help="a label for the run (the run id stays unique)")
    @argument("--wait", "-w", action="store_true", help="block until the run ends (for scripts and nbconvert)")
    @argument("--dry-run", action="store_true",
              help="show the resolved config, dataset summary, examples and memory estimate; train nothing")
    @argument("--form", action="store_true", help="open the config form pre-filled with this cell")
    @argument("--out", "-o", default=None, help="bind the Run object to this variable")
    @cell_magic
    def finetune(self, line: str, cell: str) -> Any:
        """Fine-tune with QLoRA in a background thread; the cell body is the YAML config.

        Example::

            %%finetune --name lr-3e-4 --out run
            data:
              source: demo:support_tickets     # or a file, or a notebook variable: source: $df
            training:
              learning_rate: 3e-4
              epochs: 1

        The cell returns at once and training continues in the background; the dashboard under the
        cell updates live. ``$var`` and ``{var}`` expand from the notebook. See ``%ft_help`` for every
        config field.
        """
        args = parse_argstring(self.finetune, line)
        finetune_cell(self.kernel, self.user_ns, args, cell)
        return None

    @line_magic
    def ft_form(self, line: str) -> Any:
        """Open the hyperparameter form; "Launch" trains, "Copy as %%finetune" gives the cell text."""
        show_form(self.kernel, self.user_ns, None)
        return None

    @magic_arguments()
    @argument("run", nargs="?", default=None, help="run id or name (default: the last run)")
    @argument("--sweep", action="store_true",
              help="stop the last sweep: its current run, and cancel the runs still queued")
    @argument("--root", default=None, help="run store directory (for a run trained by another process)")
    @line_magic
    def ft_stop(self, line: str) -> Any:
        """Stop a run after its current optimizer step (it saves a checkpoint and the adapter); a run trained by
        another process (a worker, another kernel) is asked through its stop-request file."""
        args = parse_argstring(self.ft_stop, line)
        print(stop_sweep(self.kernel) if args.sweep else stop_run(self.kernel, args.run, root=args.root))
        return None

    @magic_arguments()
    @argument("run", nargs="?", default=None, help="run id or name (default: the last run); past runs too")
    @argument("--wait", "-w", action="store_true", help="block until the run ends")
    @argument("--out", "-o", default=None, help="bind the resumed Run object to this variable")
    @argument("--trust-remote-code", action="store_true",
              help="allow the model repository's own code (never taken from the run's record)")
    @argument("--root", default=None, help="run root directory (default: the last run's, else ./ft_runs)")
    @line_magic
    def ft_resume(self, line: str) -> Any:
        """Continue a stopped, failed or interrupted run from its last checkpoint, in its own directory.

        For a crash, a kernel restart or a Colab disconnect: the run's record and checkpoints are on disk, so
        ``%ft_resume RUN`` (see ``%ft_runs`` for ids; runs a dead kernel left ``running`` read
        ``interrupted``) trains on from the last saved step with the same data split, optimizer state and
        learning-rate schedule, and the dashboard shows the whole curve.
        """
        args = parse_argstring(self.ft_resume, line)
        return resume_run(self.kernel, self.user_ns, args.run, root=args.root, wait=args.wait, out=args.out,
                          trust_remote_code=args.trust_remote_code)

    @magic_arguments()
    @argument("run", nargs="?", default=None, help="run id or name (default: the last run)")
    @line_magic
    def ft_status(self, line: str) -> Any:
        """One line on a run: status, step, loss, ETA, error."""
        args = parse_argstring(self.ft_status, line)
        print(status_line(self.kernel.resolve(args.run)))
        return None

    @magic_arguments()
    @argument("run", nargs="?", default=None, help="run id or name (default: the last run)")
    @line_magic
    def ft_show(self, line: str) -> Any:
        """Show the dashboard of a run again (live or finished, also after a kernel restart)."""
        args = parse_argstring(self.ft_show, line)
        show_run(self.kernel, args.run)
        return None

    @magic_arguments()
    @argument("--root", default=None, help="run root directory (default: the last run's, else ./ft_runs)")
    @argument("--status", default=None, help="only runs with this status")
    @argument("--name", default=None, help="only runs whose name or id contains this text")
    @argument("--tag", default=None, help="only runs with this tag (see %%ft_tag)")
    @argument("--sweep", default=None, help="only the runs of this sweep (id or its start)")
    @line_magic
    def ft_runs(self, line: str) -> Any:
        """Table of runs: name, status, started, steps, best eval loss, key hyperparameters, sweep, tags, notes."""
        args = parse_argstring(self.ft_runs, line)
        display(list_runs(self.kernel.root(args.root), status=args.status, name=args.name, tag=args.tag,
                          sweep=args.sweep))
        return None

    @magic_arguments()
    @argument("run", help="run id or name")
    @argument("--yes", "-y", action="store_true", help="delete without asking")
    @argument("--root", default=None, help="run root directory (default: the last run's, else ./ft_runs)")
    @line_magic
    def ft_rm(self, line: str) -> Any:
        """Delete a run's directory (checkpoints, adapter, logs). Asks first unless --yes; refuses a live run and
        anything that is not a run directory directly under the run root."""
        args = parse_argstring(self.ft_rm, line)
        path = remove_run(self.kernel, self.kernel.root(args.root), args.run, yes=args.yes)
        print("nothing deleted" if path is None else f"deleted {path}")
        return None

    @magic_arguments()
    @argument("run", help="run id or name")
    @argument("tags", nargs="+", help="tags to add (words without spaces)")
    @argument("--remove", "-r", action="store_true", help="remove these tags instead")
    @argument("--root", default=None, help="run root directory (default: the last run's, else ./ft_runs)")
    @line_magic
    def ft_tag(self, line: str) -> Any:
        """Tag a run (``%ft_tag RUN baseline lr-too-high``); filter with ``%ft_runs --tag``."""
        args = parse_argstring(self.ft_tag, line)
        print(tag_run(self.kernel.root(args.root), args.run, args.tags, remove=args.remove))
        return None

    @magic_arguments()
    @argument("run", help="run id or name")
    @argument("text", nargs="*", help="the note (quotes optional); empty clears it")
    @argument("--append", "-a", action="store_true", help="add a line to the notes instead of replacing them")
    @argument("--root", default=None, help="run root directory (default: the last run's, else ./ft_runs)")
    @line_magic
    def ft_note(self, line: str) -> Any:
        """Attach a free-text note to a run (kept in run.json, shown by %ft_runs)."""
        args = parse_argstring(self.ft_note, line)
        print(note_run(self.kernel.root(args.root), args.run, args.text, append=args.append))
        return None

    @magic_arguments()
    @argument("runs", nargs="*", help="run ids or names")
    @argument("--sweep", nargs="?", const="last", default=None,
              help="the runs of this sweep (id or its start; no value: the newest sweep)")
    @argument("--last", type=int, default=None, help="the last N runs")
    @argument("--metric", default="best_eval_loss",
              help="rank by this: best_eval_loss (default), final_eval_loss, final_train_loss, mean_tokens_per_s, "
                   "or an %%ft_eval metric as eval.NAME (eval.rouge)")
    @argument("--x", default="step", choices=("step", "tokens"), help="x axis of the curves")
    @argument("--root", default=None, help="run root directory (default: the last run's, else ./ft_runs)")
    @argument("--out", "-o", default=None, help="bind the Comparison to this variable")
    @line_magic
    def ft_compare(self, line: str) -> Any:
        """Runs side by side: the config fields that differ, final/best metrics, probe verdicts, overlaid loss
        curves; ranked by --metric with the best marked. Reads the run store only (works after a restart).

        Examples::

            %ft_compare --sweep                      # the newest sweep
            %ft_compare RUN_A RUN_B --x tokens
            %ft_compare --last 3 --metric final_eval_loss
        """
        args = parse_argstring(self.ft_compare, line)
        comparison = compare(self.kernel.root(args.root), args.runs, sweep=args.sweep, last=args.last,
                             metric=args.metric, x=args.x)
        show_comparison(comparison)
        self.bind(args.out, comparison)
        return None

    @magic_arguments()
    @argument("run", nargs="?", default=None, help="run id or name (default: the last run); past runs too")
    @argument("--data", default=None,
              help="evaluate on this file, datasets dir or notebook variable (default: the run's held-out split)")
    @argument("--n", type=int, default=None, help="only the first N examples")
    @argument("--metrics", default=None,
              help="comma-separated: exact_match, accuracy, rouge, bleu, perplexity, a notebook variable holding a "
                   "callable or evaluate module, a local evaluate module path, or a hub module when online "
                   "(default: exact_match,rouge,bleu,perplexity)")
    @argument("--max-new-tokens", type=int, default=32, help="answer length limit (default 32)")
    @argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples, seeded")
    @argument("--seed", type=int, default=0, help="sampling seed, the same for base and tuned")
    @argument("--prompts", default=None, help="a notebook variable: prompts (strings) to answer, no references")
    @argument("--batch-size", type=int, default=8, help="generation batch size")
    @argument("--interactive", "-i", action="store_true", help="also open the chat panel (base vs tuned)")
    @argument("--out", "-o", default=None, help="bind the EvalResult to this variable")
    @argument("--trust-remote-code", action="store_true",
              help="allow the model repository's own code (never taken from the run's record)")
    @argument("--root", default=None, help="run root directory (default: the last run's, else ./ft_runs)")
    @line_magic
    def ft_eval(self, line: str) -> Any:
        """Base vs fine-tuned on the same prompts with the same decoding: metrics and answers side by side.

        The base answers come from the same model with the LoRA adapter switched off. Prints the metric table
        (base, tuned, delta) and shows the rows with word differences, a per-row score and a filter for the
        rows where tuned is worse. Writes samples.jsonl and eval.json into the run directory.

        Examples::

            %ft_eval                                   # the last run, its held-out split
            %ft_eval 20261123-1012-quickstart-1a2b --n 50 --metrics rouge,bleu
            %ft_eval --data test.jsonl --max-new-tokens 64 --temperature 0.7 --seed 1
            %ft_eval --prompts my_prompts              # answers only, no references
        """
        args = parse_argstring(self.ft_eval, line)
        run = eval_run(self.kernel, args.run, args.root)
        result = evaluate(self.kernel, self.user_ns, run, data=args.data, prompts=args.prompts,
                          root=args.root, n=args.n, metrics=args.metrics, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, seed=args.seed, batch_size=args.batch_size,
                          trust_remote_code=args.trust_remote_code)
        print(result.summary())
        print(result.table())
        print(f"samples.jsonl and eval.json written to {result.info.get('path')}")
        show_eval(result)
        self.bind(args.out, result)
        if args.interactive:
            chat(run, args.root, max_new_tokens=max(args.max_new_tokens, 64), temperature=args.temperature,
                 seed=args.seed, system=None, prompt=None, trust_remote_code=args.trust_remote_code)
        return None

    @magic_arguments()
    @argument("run", nargs="?", default=None, help="run id or name (default: the last run); past runs too")
    @argument("--prompt", "-p", default=None, help="answer this one prompt and return (no panel)")
    @argument("--system", default=None, help="system prompt (default: the run's data.system_prompt)")
    @argument("--max-new-tokens", type=int, default=128, help="answer length limit (default 128)")
    @argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples, seeded")
    @argument("--seed", type=int, default=0, help="sampling seed, the same for base and tuned")
    @argument("--trust-remote-code", action="store_true",
              help="allow the model repository's own code (never taken from the run's record)")
    @argument("--root", default=None, help="run root directory (default: the last run's, else ./ft_runs)")
    @line_magic
    def ft_chat(self, line: str) -> Any:
        """Type a prompt and see the base (adapter off) and tuned answers side by side (chat template applied).

        In a notebook this opens a chat panel; without a widget frontend it reads prompts from the terminal
        until an empty line. ``--prompt "..."`` answers one prompt and returns.
        """
        args = parse_argstring(self.ft_chat, line)
        run = eval_run(self.kernel, args.run, args.root)
        prompt = args.prompt.strip("'\"") if args.prompt is not None else None
        chat(run, args.root, max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
             system=args.system, prompt=prompt, trust_remote_code=args.trust_remote_code)
        return None

    @magic_arguments()
    @argument("run", nargs="?", default=None, help="run id or name (default: the last run); past runs too")
    @argument("--out", "-o", required=True, help="directory to write (must not exist or be empty)")
    @argument("--merge", action="store_true",
              help="save the base with the adapter merged in (dequantized), loadable without peft")
    @argument("--force", action="store_true", help="replace a non-empty --out directory")
    @argument("--trust-remote-code", action="store_true",
              help="allow the model repository's own code (never taken from the run's record)")
    @argument("--root", default=None, help="run root directory (default: the last run's, else ./ft_runs)")
    @line_magic
    def ft_export(self, line: str) -> Any:
        """Save a run's adapter, or the merged model with --merge, with a model card (config + eval table)."""
        args = parse_argstring(self.ft_export, line)
        run = eval_run(self.kernel, args.run, args.root)
        print(export(run, args.out, merge=args.merge, root=args.root, force=args.force,
                     trust_remote_code=args.trust_remote_code))
        return None

    @line_cell_magic
    def ft_help(self, line: str, cell: str | None = None) -> None:
        """The full reference: magics and every config field with its default."""
        print(help_text())
