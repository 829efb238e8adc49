"""IPython magics: ``%%finetune`` and friends. Parsing and display only; the work lives in the modules.

``%load_ext jupyter_ft`` registers them (or list ``jupyter_ft`` in ``c.InteractiveShellApp.extensions``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from .config import ConfigError, FineTuneConfig, Problem

__all__ = ["FineTuneMagics", "load_ipython_extension", "expand_variables", "locate"]

_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PLACEHOLDER = "__jupyter_ft_var_{}__"
_SCALARS = (bool, int, float, str, type(None))


def expand_variables(text: str, namespace: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Expand ``$name`` and ``{name}`` from the notebook namespace before YAML parsing.

    Scalars are written into the text as YAML; objects (a DataFrame, a list of rows, a Dataset) are
    replaced by a placeholder and put back after parsing, so ``source: $df`` hands over the object
    itself. ``{...}`` that is not a plain known name (a YAML flow mapping such as ``{output: answer}``)
    is left alone.
    """
    objects: dict[str, Any] = {}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in namespace:
            if m.group(1):
                raise UsageError(f"${name}: no variable named '{name}' in the notebook")
            return m.group(0)
        value = namespace[name]
        if isinstance(value, _SCALARS):
            dumped = yaml.safe_dump(value, default_flow_style=True).strip()
            return dumped[: -len("...")].strip() if dumped.endswith("...") else dumped
        key = _PLACEHOLDER.format(len(objects))
        objects[key] = value
        return key

    return _VAR.sub(repl, text), objects


def _restore(data: Any, objects: dict[str, Any]) -> Any:
    if isinstance(data, dict):
        return {k: _restore(v, objects) for k, v in data.items()}
    if isinstance(data, list):
        return [_restore(v, objects) for v in data]
    if isinstance(data, str) and data in objects:
        return objects[data]
    return data


def locate(text: str, path: str) -> int | None:
    """1-based line of the deepest key of ``path`` present in the YAML ``text`` (for error messages)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    parts = path.split(".")
    i = 0
    while i < len(parts) and isinstance(node, yaml.MappingNode):
        # the longest dotted key first: a sweep names fields as `training.learning_rate: [...]`
        for j in range(len(parts), i, -1):
            want = ".".join(parts[i:j])
            found = next(((k, v) for k, v in node.value if k.value == want), None)
            if found is not None:
                line, node, i = found[0].start_mark.line + 1, found[1], j
                break
        else:
            break
    return line


def _format_problems(problems: list[Problem], text: str) -> str:
    lines = [f"{len(problems)} problem(s) in the %%finetune cell; nothing was launched."]
    for p in problems:
        where = locate(text, p.path) if p.path != "yaml" else None
        lines.append(f"  {'line ' + str(where) + ': ' if where else ''}{p}")
    return "\n".join(lines)


def _has_sweep(body: str) -> bool:
    """Whether the body has a top-level ``sweep:`` key (checked on the text, before variables expand)."""
    return re.search(r"^sweep\s*:", body, flags=re.MULTILINE) is not None


def _is_data_object(value: Any) -> bool:
    return isinstance(value, list) or type(value).__name__ in ("DataFrame", "Dataset", "DatasetDict")


@magics_class
class FineTuneMagics(Magics):
    """The notebook face of jupyter-ft; keeps the runs launched from this kernel."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.runs: dict[str, Any] = {}
        self.last_run: Any = None
        self.sweeps: dict[str, Any] = {}
        self.last_sweep: Any = None

    # ------------------------------------------------------------ config
    def parse_config(self, body: str, name: str | None = None) -> FineTuneConfig:
        """The cell body as a validated config; problems raise ``UsageError`` naming line and field."""
        data, text = self._parse_body(body, name)
        if "sweep" in data:
            raise UsageError("this cell has a sweep: key; it launches several runs (run it as a %%finetune cell, "
                             "or use jupyter_ft.start_sweep())")
        try:
            return FineTuneConfig.from_dict(data)
        except ConfigError as exc:
            raise UsageError(_format_problems(exc.problems, text)) from None

    def parse_sweep(self, body: str, name: str | None = None) -> Any:
        """A body with a ``sweep:`` key as a :class:`~jupyter_ft.sweep.SweepPlan` (every run validated)."""
        from .sweep import plan_sweep

        data, text = self._parse_body(body, name)
        try:
            return plan_sweep(data, name=name)
        except ConfigError as exc:
            raise UsageError(_format_problems(exc.problems, text)) from None

    def _parse_body(self, body: str, name: str | None = None) -> tuple[dict[str, Any], str]:
        text, objects = expand_variables(body, self.shell.user_ns)
        try:
            data = yaml.load(text, Loader=_loader()) if text.strip() else {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
            raise UsageError(f"invalid YAML in the %%finetune cell at {where}: "
                             f"{getattr(exc, 'problem', exc)}; nothing was launched.") from None
        if not isinstance(data, dict):
            raise UsageError("the %%finetune cell must be a YAML mapping of sections (model:, data:, training:, "
                             "...); nothing was launched. See %ft_help.")
        data = _restore(data, objects)
        section = data.get("data")
        if isinstance(section, dict):
            for key in ("source", "eval_source"):  # `source: df` names a notebook variable
                value = section.get(key)
                if isinstance(value, str) and value.isidentifier() and _is_data_object(self.shell.user_ns.get(value)):
                    section[key] = self.shell.user_ns[value]
        if name:
            data.setdefault("output", {})
            if isinstance(data["output"], dict):
                data["output"]["name"] = name
        return data, text

    def resolve_run(self, ref: str | None) -> Any:
        """A ``Run`` of this kernel by id/name, the last one by default; past runs come from the store."""
        from .store import RunStore

        ref = (ref or "").strip()
        if not ref:
            if self.last_run is None:
                raise UsageError("no run launched in this kernel yet; give a run id (see %ft_runs)")
            sweep = self.last_sweep
            if sweep is not None and self.last_run in sweep.runs and not sweep.done:
                return sweep.current or self.last_run  # the sweep's run training now, not its last queued one
            return self.last_run
        for run in reversed(list(self.runs.values())):
            if ref in (run.id, run.name):
                return run
        root = self.last_run.config.output.root if self.last_run is not None else "ft_runs"
        store = RunStore(root)
        try:
            return store.open(ref)
        except KeyError:
            matches = [r for r in store.list() if r.name == ref]
            if matches:
                return store.open(matches[0].id)
            raise UsageError(f"no run '{ref}' in this kernel or under {store.root}; see %ft_runs") from None

    # ------------------------------------------------------------ %%finetune
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
        if _has_sweep(cell):
            return self._sweep(cell, args)
        config = self.parse_config(cell, args.name)
        if args.form:
            return self._show_form(config)
        if args.dry_run:
            from .preview import dry_run

            report = dry_run(config)
            display(report)
            return None
        self.launch(config, wait=args.wait, out=args.out)
        return None

    def launch(self, config: FineTuneConfig, wait: bool = False, out: str | None = None) -> Any:
        from . import training

        return self._follow(training.finetune(config), wait=wait, out=out)

    def _follow(self, run: Any, wait: bool = False, out: str | None = None) -> Any:
        """Adopt a started run: remember it, bind it, show its dashboard, and block with ``wait``."""
        self.runs[run.id] = run
        self.last_run = run
        if out:
            self.shell.user_ns[out] = run
        # Bound to `_` but not returned: an Out[] line would freeze "running" under a live dashboard.
        self.shell.user_ns["_"] = run
        dashboard = self._dashboard(run)
        if wait:
            try:
                run.wait()
            except KeyboardInterrupt:
                run.stop()
                run.wait()
            if dashboard is not None and hasattr(dashboard, "finish"):
                dashboard.finish()
        return None if dashboard is not None else run

    def _sweep(self, cell: str, args: Any) -> Any:
        """A body with ``sweep:``: list the runs (``--dry-run``) or queue them all with one dashboard."""
        plan = self.parse_sweep(cell, args.name)
        if args.form:
            raise UsageError("--form edits one run's config; remove the sweep: key to open the form")
        if args.dry_run:
            plan.estimate()
            display(plan)
            return None
        from .sweep import Sweep

        sweep = Sweep(plan).start()
        self.sweeps[sweep.id] = sweep
        self.last_sweep = sweep
        for run in sweep.runs:
            self.runs[run.id] = run
        self.last_run = sweep.runs[-1]
        if args.out:
            self.shell.user_ns[args.out] = sweep
        self.shell.user_ns["_"] = sweep
        dashboard = None
        try:
            from .widgets.sweep_dashboard import sweep_dashboard_for

            dashboard = sweep_dashboard_for(sweep)
            dashboard.display()
        except ImportError:
            pass
        if args.wait:
            try:
                if dashboard is not None:
                    dashboard.wait()
                else:
                    sweep.wait()
            except KeyboardInterrupt:
                sweep.stop(cancel_rest=True)
                sweep.wait()
                if dashboard is not None:
                    dashboard.finish()
        return None

    def _dashboard(self, run: Any) -> Any:
        try:
            from .widgets import dashboard_for
        except ImportError:
            return None
        dashboard = dashboard_for(run)
        dashboard.display()
        return dashboard

    def _show_form(self, config: FineTuneConfig | None) -> Any:
        from .widgets.form import ConfigForm

        form = ConfigForm(config, on_launch=lambda cfg: self.launch(cfg))
        display(form.widget)
        return None

    # ------------------------------------------------------------ line magics
    @line_magic
    def ft_form(self, line: str) -> Any:
        """Open the hyperparameter form; "Launch" trains, "Copy as %%finetune" gives the cell text."""
        return self._show_form(None)

    @magic_arguments()
    @argument("run", nargs="?", default=None, help="run id or name (default: the last run)")
    @argument("--sweep", action="store_true",
              help="stop the last sweep: its current run, and cancel the runs still queued")
    @line_magic
    def ft_stop(self, line: str) -> Any:
        """Stop a run after its current optimizer step (it saves a checkpoint and the adapter)."""
        args = parse_argstring(self.ft_stop, line)
        if args.sweep:
            if self.last_sweep is None:
                raise UsageError("no sweep launched in this kernel")
            self.last_sweep.stop(cancel_rest=True)
            print(f"stopping sweep {self.last_sweep.id}: the current run after its step; the queued runs are cancelled")
            return None
        run = self.resolve_run(args.run)
        if not hasattr(run, "stop"):
            raise UsageError(f"run {run.record.id} is not training in this kernel (status: {run.record.status})")
        run.stop()
        print(f"stopping {run.id} after the current step…")
        return None

    @magic_arguments()
    @argument("run", nargs="?", default=None, help="run id or name (default: the last run); past runs too")
    @argument("--wait", "-w", action="store_true", help="block until the run ends")
    @argument("--out", "-o", default=None, help="bind the resumed Run object to this variable")
    @argument("--root", default=None, help="run root directory (default: the last run's, else ./ft_runs)")
    @line_magic
    def ft_resume(self, line: str) -> Any:
        """Continue a stopped, failed or interrupted run from its last checkpoint, in its own directory.

        For a crash, a kernel restart or a Colab disconnect: the run's record and checkpoints are on disk, so
        ``%ft_resume RUN`` (see ``%ft_runs`` for ids; runs a dead kernel left ``running`` read
        ``interrupted``) trains on from the last saved step with the same data split, optimizer state and
        learning-rate schedule, and the dashboard shows the whole curve.
        """
        from . import training

        args = parse_argstring(self.ft_resume, line)
        if args.root:
            from .store import RunStore

            try:
                rd = RunStore(args.root).open(args.run or "")
            except KeyError:
                raise UsageError(f"no run '{args.run}' under {args.root}; see %ft_runs --root {args.root}") from None
        else:
            rd = self.resolve_run(args.run)
        run_id = rd.id if hasattr(rd, "id") else rd.record.id
        if getattr(rd, "done", True) is False:
            raise UsageError(f"run {run_id} is still training in this kernel; %ft_stop it first to resume later")
        root = args.root or (rd.config.output.root if hasattr(rd, "config")
                             else str(Path(rd.path).parent))
        try:
            run = training.resume(run_id, root=root)
        except (RuntimeError, KeyError) as exc:
            raise UsageError(str(exc).strip("'\"")) from None
        step = int(Path(run.resume_from).name.rsplit("-", 1)[-1])
        print(f"resuming {run_id} from its checkpoint at step {step}")
        return self._follow(run, wait=args.wait, out=args.out)

    @magic_arguments()
    @argument("run", nargs="?", default=None, help="run id or name (default: the last run)")
    @line_magic
    def ft_status(self, line: str) -> Any:
        """One line on a run: status, step, loss, ETA, error."""
        args = parse_argstring(self.ft_status, line)
        run = self.resolve_run(args.run)
        print(status_line(run))
        return None

    @magic_arguments()
    @argument("run", nargs="?", default=None, help="run id or name (default: the last run)")
    @line_magic
    def ft_show(self, line: str) -> Any:
        """Show the dashboard of a run again (live or finished, also after a kernel restart)."""
        args = parse_argstring(self.ft_show, line)
        run = self.resolve_run(args.run)
        from .widgets import dashboard_for

        done = getattr(run, "done", True)
        # A finished run gets the static figure: it renders in JupyterLab, VS Code and HTML exports alike.
        dashboard = dashboard_for(run, mode="static" if done else "auto")
        dashboard.display()
        if done:
            dashboard.finish()
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
        from .store import STATUSES, RunStore

        if args.status and args.status not in STATUSES:
            raise UsageError(f"--status {args.status}: choose one of {', '.join(STATUSES)}")
        records = RunStore(self._root(args.root)).select(status=args.status, name=_unquote(args.name),
                                                         tag=_unquote(args.tag), sweep=_unquote(args.sweep))
        table = RunTable(records)
        display(table)
        return None

    def _root(self, root: str | None) -> str:
        if root:
            return _unquote(root) or "ft_runs"
        return self.last_run.config.output.root if self.last_run is not None else "ft_runs"

    @magic_arguments()
    @argument("run", help="run id or name")
    @argument("--yes", "-y", action="store_true", help="delete without asking")
    @argument("--root", default=None, help="run root directory (default: the last run's, else ./ft_runs)")
    @line_magic
    def ft_rm(self, line: str) -> Any:
        """Delete a run's directory (checkpoints, adapter, logs). Asks first unless --yes; refuses a live run and
        anything that is not a run directory directly under the run root."""
        from .store import RunStore

        args = parse_argstring(self.ft_rm, line)
        store = RunStore(self._root(args.root))
        ref = _unquote(args.run)
        try:
            record = store.open(ref).record
        except KeyError:
            named = [r for r in store.list() if r.name == ref]
            if len(named) != 1:
                what = "several runs are" if named else "no run is"
                raise UsageError(f"{what} named '{ref}' under {store.root}; give the run id (see %ft_runs)") from None
            record = named[0]
        if not args.yes:
            answer = input(f"delete run {record.id} ({record.name}, {record.status}) at {store.path_of(record.id)}? "
                           "[y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return None
        try:
            path = store.delete(record.id)
        except (KeyError, RuntimeError) as exc:
            raise UsageError(str(exc).strip("'\"")) from None
        self.runs.pop(record.id, None)
        print(f"deleted {path}")
        return None

    @magic_arguments()
    @argument("run", help="run id or name")
    @argument("tags", nargs="+", help="tags to add (words without spaces)")
    @argument("--remove", "-r", action="store_true", help="remove these tags instead")
    @argument("--root", default=None, help="run root directory (default: the last run's, else ./ft_runs)")
    @line_magic
    def ft_tag(self, line: str) -> Any:
        """Tag a run (``%ft_tag RUN baseline lr-too-high``); filter with ``%ft_runs --tag``."""
        from .store import RunStore

        args = parse_argstring(self.ft_tag, line)
        store = RunStore(self._root(args.root))
        run_id = self._run_id(store, args.run)
        try:
            tags = store.tag(run_id, *[_unquote(t) for t in args.tags], remove=args.remove)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(f"{run_id}: tags {', '.join(tags) or '(none)'}")
        return None

    @magic_arguments()
    @argument("run", help="run id or name")
    @argument("text", nargs="*", help="the note (quotes optional); empty clears it")
    @argument("--append", "-a", action="store_true", help="add a line to the notes instead of replacing them")
    @argument("--root", default=None, help="run root directory (default: the last run's, else ./ft_runs)")
    @line_magic
    def ft_note(self, line: str) -> Any:
        """Attach a free-text note to a run (kept in run.json, shown by %ft_runs)."""
        from .store import RunStore

        args = parse_argstring(self.ft_note, line)
        store = RunStore(self._root(args.root))
        run_id = self._run_id(store, args.run)
        notes = store.note(run_id, _unquote(" ".join(args.text)) or "", append=args.append)
        print(f"{run_id}: note {notes!r}" if notes else f"{run_id}: note cleared")
        return None

    def _run_id(self, store: Any, ref: str) -> str:
        ref = _unquote(ref) or ""
        try:
            return store.open(ref).record.id
        except KeyError:
            named = [r for r in store.list() if r.name == ref]
            if not named:
                raise UsageError(f"no run '{ref}' under {store.root}; see %ft_runs") from None
            return named[0].id

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
        from .compare import compare_runs, select_runs
        from .widgets.dashboard import figure_bundle

        args = parse_argstring(self.ft_compare, line)
        root = self._root(args.root)
        try:
            runs = select_runs(root, [_unquote(r) or "" for r in args.runs], sweep=_unquote(args.sweep),
                               last=args.last)
            comparison = compare_runs(runs, metric=args.metric, x=args.x)
        except (KeyError, ValueError) as exc:
            raise UsageError(str(exc).strip("'\"")) from None
        display({"text/plain": comparison.text(), "text/html": comparison.to_html()}, raw=True)
        display(figure_bundle(comparison.figure(), "<jupyter-ft comparison figure>"), raw=True)
        if args.out:
            self.shell.user_ns[args.out] = comparison
        self.shell.user_ns["_"] = comparison
        return None

    # ------------------------------------------------------------ evaluation, chat, export
    def _eval_run(self, ref: str | None, root: str | None) -> Any:
        """The run to evaluate/chat with/export: ``ref`` under ``root`` when given, else as ``resolve_run``."""
        if root:
            from .evaluation import RunNotFound, open_run

            if not ref:
                raise UsageError("give the run id or name together with --root")
            try:
                return open_run(ref, root)
            except RunNotFound as exc:
                raise UsageError(f"{exc}; see %ft_runs --root {root}") from None
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        return self.resolve_run(ref)

    def _user_value(self, name: str, what: str) -> Any:
        ns = self.shell.user_ns
        if name not in ns:
            raise UsageError(f"{what} {name}: no variable named '{name}' in the notebook")
        return ns[name]

    def _loaded(self, run: Any, root: str | None) -> tuple[Any, Any, Any]:
        from .evaluation import open_run, out_of_memory_advice, run_model

        try:
            rd = open_run(run, root or "ft_runs")
            with out_of_memory_advice(f"loading the model of run {rd.record.id}",
                                      "Free memory first: stop or wait for a training run, or restart the kernel"):
                return (rd, *run_model(rd)[:2])
        except ValueError as exc:
            raise UsageError(str(exc)) from None

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
        from .evaluation import EvalError, evaluate_run

        args = parse_argstring(self.ft_eval, line)
        run = self._eval_run(args.run, args.root)
        data: Any = None
        if args.data is not None:
            value = args.data.strip().strip("'\"")
            data = self.shell.user_ns[value] if value.isidentifier() and value in self.shell.user_ns else value
        prompts = self._user_value(args.prompts, "--prompts") if args.prompts else None
        root = args.root or (self.last_run.config.output.root if self.last_run is not None else "ft_runs")
        try:
            result = evaluate_run(run, root=root, data=data, prompts=prompts, n=args.n, metrics=args.metrics,
                                  max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
                                  batch_size=args.batch_size, namespace=self.shell.user_ns)
        except EvalError as exc:
            raise UsageError(str(exc)) from None
        print(result.summary())
        print(result.table())
        print(f"samples.jsonl and eval.json written to {result.info.get('path')}")
        self._show_eval(result)
        if args.out:
            self.shell.user_ns[args.out] = result
        self.shell.user_ns["_"] = result
        if args.interactive:
            self._chat(run, args.root, max_new_tokens=max(args.max_new_tokens, 64), temperature=args.temperature,
                       seed=args.seed, system=None, prompt=None)
        return None

    @staticmethod
    def _widget_mode() -> bool:
        import os

        from .widgets.dashboard import _widget_frontend

        forced = os.environ.get("JUPYTER_FT_DASHBOARD", "").strip().lower()
        if forced in ("static", "widget"):
            return forced == "widget"
        return _widget_frontend()

    def _show_eval(self, result: Any) -> None:
        static = {"text/html": result.to_html(), "text/plain": result.rows_text(limit=10)}
        if self._widget_mode():
            from .evaluation import EvalWidget

            view = EvalWidget(result)
            view_ref = {"version_major": 2, "version_minor": 0, "model_id": view.widget.model_id}
            display({"application/vnd.jupyter.widget-view+json": view_ref, **static}, raw=True)
        else:
            display(static, raw=True)

    def _chat(self, run: Any, root: str | None, *, max_new_tokens: int, temperature: float, seed: int,
              system: str | None, prompt: str | None) -> Any:
        from .widgets.chat import ChatPanel, ChatSession, answers_html, chat_loop

        rd, model, tokenizer = self._loaded(run, root)
        config = FineTuneConfig.from_dict(rd.record.config)
        session = ChatSession(model, tokenizer, system_prompt=system or config.data.system_prompt,
                              max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                              title=f"{rd.record.name}: base vs tuned")
        if prompt is not None:
            try:
                ex = session.ask(prompt)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            display({"text/html": answers_html(ex), "text/plain": f"base:  {ex.base}\ntuned: {ex.tuned}"}, raw=True)
            return session
        if self._widget_mode():
            panel = ChatPanel(session)
            display(panel)
            return panel
        chat_loop(session)
        return session

    @magic_arguments()
    @argument("run", nargs="?", default=None, help="run id or name (default: the last run); past runs too")
    @argument("--prompt", "-p", default=None, help="answer this one prompt and return (no panel)")
    @argument("--system", default=None, help="system prompt (default: the run's data.system_prompt)")
    @argument("--max-new-tokens", type=int, default=128, help="answer length limit (default 128)")
    @argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples, seeded")
    @argument("--seed", type=int, default=0, help="sampling seed, the same for base and tuned")
    @argument("--root", default=None, help="run root directory (default: the last run's, else ./ft_runs)")
    @line_magic
    def ft_chat(self, line: str) -> Any:
        """Type a prompt and see the base (adapter off) and tuned answers side by side (chat template applied).

        In a notebook this opens a chat panel; without a widget frontend it reads prompts from the terminal
        until an empty line. ``--prompt "..."`` answers one prompt and returns.
        """
        args = parse_argstring(self.ft_chat, line)
        run = self._eval_run(args.run, args.root)
        prompt = args.prompt.strip("'\"") if args.prompt is not None else None
        self._chat(run, args.root, max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
                   system=args.system, prompt=prompt)
        return None

    @magic_arguments()
    @argument("run", nargs="?", default=None, help="run id or name (default: the last run); past runs too")
    @argument("--out", "-o", required=True, help="directory to write (must not exist or be empty)")
    @argument("--merge", action="store_true",
              help="save the base with the adapter merged in (dequantized), loadable without peft")
    @argument("--force", action="store_true", help="replace a non-empty --out directory")
    @argument("--root", default=None, help="run root directory (default: the last run's, else ./ft_runs)")
    @line_magic
    def ft_export(self, line: str) -> Any:
        """Save a run's adapter, or the merged model with --merge, with a model card (config + eval table)."""
        from .export import ExportError, export_run

        args = parse_argstring(self.ft_export, line)
        run = self._eval_run(args.run, args.root)
        out = args.out.strip("'\"")
        try:
            path = export_run(run, out, merge=args.merge, root=args.root or "ft_runs", overwrite=args.force)
        except (ExportError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        what = "merged model" if args.merge else "adapter"
        rid = run.id if hasattr(run, "id") else run.record.id
        print(f"exported the {what} of {rid} to {path} (model card: {path / 'README.md'})")
        return None

    @line_cell_magic
    def ft_help(self, line: str, cell: str | None = None) -> None:
        """The full reference: magics and every config field with its default."""
        print(help_text())


class RunTable:
    """``%ft_runs`` output: HTML in a notebook, aligned text elsewhere."""

    COLUMNS = ("id", "name", "status", "started", "steps", "best eval", "lr", "r", "batch", "sweep", "tags",
               "notes", "overfitting", "forgetting")

    def __init__(self, records: list[Any]) -> None:
        self.rows = [self._row(r) for r in records]

    @staticmethod
    def _row(r: Any) -> tuple[str, ...]:
        cfg = r.config or {}
        t, lora = cfg.get("training", {}), cfg.get("lora", {})
        s = r.summary or {}
        best = s.get("best_eval_loss")
        return (r.id, r.name, r.status, (r.started_at or r.created_at or "")[:19].replace("T", " "),
                f"{s.get('global_step', '')}", f"{best:.4f}" if isinstance(best, float) else "",
                f"{t.get('learning_rate', '')}", f"{lora.get('r', '')}", f"{t.get('batch_size', '')}",
                _sweep_cell(getattr(r, "sweep", None)), " ".join(getattr(r, "tags", None) or []),
                _short(getattr(r, "notes", "") or ""),
                str((s.get("probes") or {}).get("overfitting") or ""), str((s.get("probes") or {}).get("forgetting") or ""))

    def __repr__(self) -> str:
        if not self.rows:
            return "no runs yet"
        widths = [max(len(c), *(len(row[i]) for row in self.rows)) for i, c in enumerate(self.COLUMNS)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        return "\n".join([fmt.format(*self.COLUMNS)] + [fmt.format(*row) for row in self.rows])

    def _repr_html_(self) -> str:
        import html

        if not self.rows:
            return "<p>no runs yet</p>"
        head = "".join(f"<th>{c}</th>" for c in self.COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _sweep_cell(sweep: Any) -> str:
    if not isinstance(sweep, dict) or not sweep.get("id"):
        return ""
    return f"{sweep['id']} {int(sweep.get('index', 0)) + 1}/{sweep.get('total', '?')}"


def _short(text: str, limit: int = 40) -> str:
    line = text.strip().replace("\n", " / ")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _unquote(value: str | None) -> str | None:
    return value.strip().strip("'\"") if isinstance(value, str) else value


def status_line(run: Any) -> str:
    record = run.run_dir.record if hasattr(run, "run_dir") else run.record
    parts = [f"{record.id}: {record.status}"]
    progress = getattr(run, "progress", {}) or {}
    history = getattr(run, "history", None)
    if history is None:
        history = run.metrics()
    if progress.get("step") is not None:
        parts.append(f"step {progress['step']}/{progress.get('max_steps')}")
    elif record.summary.get("global_step") is not None:
        parts.append(f"step {record.summary['global_step']}")
    losses = [h for h in history if "loss" in h]
    evals = [h for h in history if "eval_loss" in h]
    if losses:
        parts.append(f"loss {losses[-1]['loss']:.4f}")
    if evals:
        parts.append(f"eval loss {evals[-1]['eval_loss']:.4f}")
    if progress.get("eta") is not None and record.status == "running":
        parts.append(f"ETA {progress['eta']:.0f}s")
    if record.error:
        parts.append(f"error: {record.error}")
    return ", ".join(parts)


def help_text() -> str:
    import dataclasses

    from .config import SECTIONS

    lines = [
        "jupyter-ft magics",
        "  %%finetune [--name N] [--wait] [--dry-run] [--form] [--out VAR]   train with the YAML body as config",
        "  %ft_form                      the hyperparameter form",
        "  %ft_runs [--status S] [--name TEXT] [--tag T] [--sweep ID]   table of runs (with sweep, tags, notes)",
        "  %ft_compare RUN RUN ... | --sweep [ID] | --last N [--metric NAME] [--x step|tokens]",
        "                                runs side by side: differing config, metrics, verdicts, overlaid curves",
        "  %ft_tag RUN TAG ... [--remove]   label a run;  %ft_note RUN TEXT [--append]   a note on a run",
        "  %ft_rm RUN [--yes]            delete a run's directory (asks first; never a live run)",
        "  %ft_status [RUN]              one line on a run",
        "  %ft_show [RUN]                the dashboard of a run (also after a kernel restart)",
        "  %ft_stop [RUN] [--sweep]      stop after the current step (checkpoint + adapter saved);",
        "                                --sweep: the last sweep's current run, and cancel its queued runs",
        "  %ft_resume [RUN] [--wait] [--out VAR]   continue a stopped, failed or interrupted run from its",
        "                                last checkpoint (after a crash, a kernel restart, a Colab disconnect)",
        "  %ft_eval [RUN] [--data PATH|VAR] [--n N] [--metrics rouge,bleu,exact_match,accuracy,perplexity]",
        "           [--max-new-tokens K] [--temperature T] [--seed S] [--prompts VAR] [--interactive]",
        "                                base vs tuned: metrics, answers side by side (samples.jsonl, eval.json)",
        "  %ft_chat [RUN] [--prompt P]   type a prompt, see base and tuned answers side by side",
        "  %ft_export RUN --out DIR [--merge] [--force]   the adapter, or the merged model, with a model card",
        "  %ft_help                      this reference",
        "",
        "Sweeps: a 'sweep:' key in a %%finetune body trains one run per combination, one after another:",
        "  sweep: {training.learning_rate: [1e-4, 3e-4], lora.r: [8, 16]}           # grid: 4 runs",
        "  sweep: {method: random, n: 6, seed: 0, params: {training.learning_rate: {log_uniform: [1e-5, 1e-3]},",
        "          lora.r: [8, 16, 32]}}                                            # random: 6 runs",
        "  (also uniform: [lo, hi] and int_uniform: [lo, hi]); --dry-run lists the runs and memory estimates.",
        "",
        "Config fields (section.field: default):",
    ]
    for name, cls in SECTIONS.items():
        lines.append(f"  {name}:")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            lines.append(f"    {f.name}: {default!r}")
    return "\n".join(lines)


def _loader() -> Any:
    from .config import _Loader

    return _Loader


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_ft``."""
    ipython.register_magics(FineTuneMagics)


def unload_ipython_extension(ipython: Any) -> None:  # pragma: no cover - IPython has no unregister
    pass
