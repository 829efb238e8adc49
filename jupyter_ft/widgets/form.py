"""The hyperparameter form behind ``%ft_form`` and ``%%finetune --form``.

The form is generated from the config dataclasses, not written by hand: one group per section of
``FineTuneConfig`` (Model / Data / LoRA / Quantization / Training / Output, and any section added later)
and one input per dataclass field, chosen from the field's type and default. A new field or a new section
therefore shows up in the form without editing this module.

How a field becomes a widget:

=============================  =====================================================================
field                          widget
=============================  =====================================================================
``bool``                       ``Checkbox``
a fixed choice list            ``Dropdown`` (``DATA_FORMATS``, ``QUANT_METHODS``, ``SCHEDULERS``, or
                               ``field(metadata={"choices": (...)})`` on a new field)
``int``                        ``IntText``
``float``                      ``Text`` parsed as a number, so ``2e-4`` is shown and typed as ``2e-4``;
                               a whole number stays an int (``warmup: 10`` means ten steps)
``int | None``                 ``Text``; empty means ``None`` (``training.max_steps``)
``str`` / ``str | None``       ``Text``; for ``str | None`` empty means ``None``
``dict`` (``data.columns``)    ``Text``: ``prompt=question, completion=answer`` (or ``{...}`` JSON/YAML)
``lora.target_modules``        ``Text``: ``all-linear``, or ``q_proj, v_proj`` / ``[q_proj]`` for a list
``Any`` (``data.source``)      ``Text`` holding a path or ``demo:...``; an in-memory source (DataFrame,
                               list of dicts) is shown read-only as ``<in-memory DataFrame>`` and the
                               object itself is kept, with a "use a path" button to replace it
anything else                  ``Text`` holding a YAML value
=============================  =====================================================================

Validation runs on every change: the form's values go through ``FineTuneConfig.from_dict`` and every
``Problem`` is shown (``str(problem)``, in red) under the field its dotted path points to, with a summary
line above the buttons and a problem count in the group titles. Text that cannot be read as the field's
type (``abc`` in a number field) is passed through as text, so it is reported with the same message a
``%%finetune`` cell would get (``training.learning_rate: must be a number (got 'abc')...``).

Buttons:

* **Launch** (disabled while the form has problems) calls ``on_launch(config)``; by default that is
  :func:`jupyter_ft.finetune`, which starts the run in the background and returns the ``Run``.
* **Copy as %%finetune** shows ``"%%finetune\\n" + config.to_yaml()`` in a read-only text area under the
  form and puts it on the clipboard. A kernel cannot insert a notebook cell from a widget callback
  (``set_next_input`` only works while a cell is executing), so the copy goes through the browser: the
  button is a small ``anywidget`` (:class:`ClipboardButton`) whose JavaScript calls
  ``navigator.clipboard.writeText(model.get("text"))``. The kernel keeps ``text`` up to date on every
  change, so a click copies inside the user's gesture, with no round trip through the kernel (Firefox and
  Safari refuse clipboard writes that are not). ``form.copy()`` asks for a copy from Python (the
  ``request`` counter); browsers may refuse that one, and then the text area is there to copy by hand.
  :meth:`ConfigForm.to_cell_text` returns the same text. In JupyterLab with the jupyter-ft lab extension
  the click also writes the text as a new cell below the form (a DOM event the extension answers).

The round trip form -> YAML -> form gives the same config, except for an in-memory source: YAML can only
say ``<in-memory list>``, so the copied cell has to be given the data again.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import re
import types
import typing
from decimal import Decimal
from typing import Any, Callable, Mapping

import anywidget
import ipywidgets as W
import traitlets
import yaml

from .. import config as _cfg
from ..config import ConfigError, FineTuneConfig, Problem

__all__ = ["ClipboardButton", "ConfigForm"]

#: Fixed choice lists of the fields that have one. A new field can declare its own with
#: ``field(default=..., metadata={"choices": (...)})`` instead of being added here.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": _cfg.DATA_FORMATS,
    "quantization.method": _cfg.QUANT_METHODS,
    "training.scheduler": _cfg.SCHEDULERS,
}
#: Group titles; a section not listed here is titled from its name ("my_section" -> "My Section").
TITLES = {"lora": "LoRA"}
#: Fields whose value is often several lines long.
MULTILINE = {"data.system_prompt"}
#: Fields with a syntax of their own (their dataclass type alone does not say enough).
SPECIAL_KINDS = {"data.columns": "mapping", "lora.target_modules": "modules"}

_RED = "#c62828"
_GREEN = "#2e7d32"
_KEEP = object()  # "no in-memory object held"
_INT = re.compile(r"^[-+]?[0-9][0-9_]*$")


# --------------------------------------------------------------------------- clipboard
class ClipboardButton(anywidget.AnyWidget):
    """A button that copies ``text`` to the browser clipboard and, in JupyterLab, writes it as a new cell.

    A click copies in the browser (inside the user's gesture) and then runs the ``on_click`` callbacks in
    the kernel. ``copy()`` asks the browser to copy from Python: it bumps ``request``, which the
    JavaScript watches. The browser reports the outcome in ``status`` ("copied" or "not copied: ...").

    With ``insert_cell`` (the default) a click also dispatches a bubbling DOM ``CustomEvent``
    ``jupyter-ft:insert-cell`` with ``detail.text``; the jupyter-ft JupyterLab extension answers it by
    inserting a code cell with the text below the cell holding the button, and marks the event handled
    (``preventDefault``), which the button reports by bumping ``inserted``. Where nothing listens (Colab,
    VS Code, classic Notebook) the event goes unanswered and the clipboard is the way.
    """

    _esm = r"""
    async function write(model) {
      try {
        await navigator.clipboard.writeText(model.get("text"));
        model.set("status", "copied");
      } catch (err) {
        model.set("status", "not copied: " + err);
      }
      model.save_changes();
    }
    function initialize({ model }) {
      const onRequest = () => write(model);
      model.on("change:request", onRequest);
      return () => model.off("change:request", onRequest);
    }
    function render({ model, el }) {
      const button = document.createElement("button");
      button.className = "jupyter-widgets jupyter-button widget-button jft-copy";
      const sync = () => {
        button.textContent = model.get("description");
        button.disabled = model.get("disabled");
        button.title = model.get("tooltip");
      };
      sync();
      model.on("change:description change:disabled change:tooltip", sync);
      button.addEventListener("click", () => {
        if (button.disabled) return;
        write(model);
        if (model.get("insert_cell")) {
          const ev = new CustomEvent("jupyter-ft:insert-cell", {
            detail: { text: model.get("text") }, bubbles: true, cancelable: true, composed: true,
          });
          el.dispatchEvent(ev);  // synchronous: a listener has answered when it returns
          if (ev.defaultPrevented) {
            model.set("inserted", model.get("inserted") + 1);
            model.save_changes();  // reaches the kernel before the click message below
          }
        }
        model.send({ event: "click" });
      });
      el.appendChild(button);
      return () => model.off("change:description change:disabled change:tooltip", sync);
    }
    export default { initialize, render };
    """
    _css = ".jft-copy { width: auto; padding: 0 12px; }"

    text = traitlets.Unicode("").tag(sync=True)
    description = traitlets.Unicode("Copy").tag(sync=True)
    tooltip = traitlets.Unicode("").tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)
    request = traitlets.Int(0).tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    insert_cell = traitlets.Bool(True).tag(sync=True)
    inserted = traitlets.Int(0).tag(sync=True)  # clicks a JupyterLab extension answered with a new cell

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._click_handlers = W.CallbackDispatcher()
        self.on_msg(self._handle_frontend_msg)

    def on_click(self, callback: Callable[["ClipboardButton"], Any], remove: bool = False) -> None:
        self._click_handlers.register_callback(callback, remove=remove)

    def click(self) -> None:
        """Run the click callbacks, as a click in the browser does after copying."""
        if not self.disabled:
            self._click_handlers(self)

    def copy(self) -> None:
        """Ask the browser to copy ``text`` now."""
        self.request += 1

    def _handle_frontend_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "click":
            self.click()


# --------------------------------------------------------------------------- fields
@dataclasses.dataclass
class _Field:
    path: str
    kind: str  # bool, choice, int, number, optional_int, str, mapping, modules, object, yaml
    optional: bool
    widget: W.Widget
    error: W.HTML
    box: W.VBox
    release: W.Button | None = None  # "use a path" for a kept in-memory object
    held: Any = _KEEP  # an object the text cannot represent (DataFrame, list of dicts, Path)
    held_text: str = ""


def _field_kind(path: str, f: dataclasses.Field, hint: Any) -> tuple[str, bool]:
    """Return (kind, optional) for one dataclass field."""
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else Any
    if path in SPECIAL_KINDS:
        return SPECIAL_KINDS[path], optional
    if f.metadata.get("choices") or path in CHOICES:
        return "choice", optional
    origin = typing.get_origin(hint) or hint
    if hint is bool:
        return "bool", optional
    if hint is int:
        return ("optional_int" if optional else "int"), optional
    if hint is float:
        return "number", optional
    if hint is str:
        return "str", optional
    if isinstance(origin, type) and issubclass(origin, Mapping):
        return "mapping", optional
    if hint is Any:
        return "object", True
    return "yaml", optional


def _format_number(value: Any) -> str:
    """``2e-4`` rather than ``0.0002``; exact (``float(text) == value``), ints stay ints."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    text = repr(value)
    if math.isfinite(value) and value != 0 and ("e" in text or abs(value) < 1e-3):
        short = format(Decimal(text), "e")
        if float(short) == value:
            return short
    return text


def _parse_number(text: str) -> Any:
    s = text.strip()
    if _INT.match(s):
        return int(s)
    try:
        return float(s)
    except ValueError:
        return text  # validation reports "must be a number (got 'abc')"


_PLAIN = re.compile(r"^[^\s,=:{}\[\]'\"]+$")


def _format_mapping(value: Any) -> str:
    if not isinstance(value, Mapping):
        return "" if value is None else str(value)
    if not value:
        return ""
    if all(isinstance(k, str) and isinstance(v, str) and _PLAIN.match(k) and _PLAIN.match(v) for k, v in value.items()):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return json.dumps(dict(value), ensure_ascii=False)


def _parse_mapping(text: str) -> Any:
    s = text.strip()
    if not s:
        return {}
    if s.startswith("{"):
        try:
            loaded = yaml.load(s, Loader=_cfg._Loader)
        except yaml.YAMLError:
            return text
        return loaded if isinstance(loaded, dict) else text
    out: dict[str, str] = {}
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        sep = "=" if "=" in part else ":" if ":" in part else None
        if sep is None:
            return text  # validation reports "must map roles to column names (got 'foo')"
        key, _, val = part.partition(sep)
        if not key.strip():
            return text
        out[key.strip()] = val.strip()
    return out


def _format_modules(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
        return ", ".join(value) if len(value) > 1 else f"[{', '.join(value)}]"
    return "" if value is None else str(value)


def _parse_modules(text: str) -> Any:
    s = text.strip()
    bracketed = s.startswith("[") and s.endswith("]")
    if bracketed or "," in s:
        inner = s[1:-1] if bracketed else s
        return [x.strip().strip("'\"") for x in inner.split(",") if x.strip().strip("'\"")]
    return s


def _format_yaml(value: Any) -> str:
    if value is None:
        return ""
    text = yaml.dump(value, Dumper=_cfg._Dumper, default_flow_style=True, width=10**9).strip()
    return text[: -len("...")].strip() if text.endswith("\n...") else text


def _parse_yaml(text: str) -> Any:
    if not text.strip():
        return None
    try:
        return yaml.load(text, Loader=_cfg._Loader)
    except yaml.YAMLError:
        return text


def _title(section: str) -> str:
    return TITLES.get(section, section.replace("_", " ").title())


# --------------------------------------------------------------------------- the form
class ConfigForm:
    """An ipywidgets form for every field of :class:`~jupyter_ft.config.FineTuneConfig`.

    ``ConfigForm(config=None, on_launch=None)``: ``config`` fills the form (defaults when ``None``);
    ``on_launch(config)`` is called by the Launch button with the validated config (default:
    :func:`jupyter_ft.finetune`). Display the form by leaving it last in a cell (or ``display(form)``);
    ``form.widget`` is the top-level ``VBox``.

    Attributes: ``fields`` (dotted path -> input widget), ``errors_html`` (dotted path -> the red
    ``HTML`` under it), ``sections`` (the ``Accordion``), ``summary``, ``launch_button``, ``copy_button``
    (:class:`ClipboardButton`), ``cell_text`` (the read-only ``Textarea`` with the copied cell),
    ``status``, ``last_result`` (what ``on_launch`` returned).
    """

    def __init__(
        self,
        config: FineTuneConfig | None = None,
        on_launch: Callable[[FineTuneConfig], Any] | None = None,
    ) -> None:
        self.on_launch = on_launch
        self.last_result: Any = None
        self._problems: list[Problem] = []
        self._config: FineTuneConfig | None = None
        self._quiet = True
        self._fields: dict[str, _Field] = {}
        self._section_fields: dict[str, list[str]] = {}

        defaults = FineTuneConfig()
        hints = typing.get_type_hints(FineTuneConfig)
        groups = []
        for section in dataclasses.fields(FineTuneConfig):
            section_cls = hints[section.name]
            section_hints = typing.get_type_hints(section_cls)
            rows = []
            self._section_fields[section.name] = []
            for f in dataclasses.fields(section_cls):
                path = f"{section.name}.{f.name}"
                default = getattr(getattr(defaults, section.name), f.name)
                fld = self._build_field(path, f, section_hints[f.name], default)
                self._fields[path] = fld
                self._section_fields[section.name].append(path)
                rows.append(fld.box)
            groups.append(W.VBox(rows))
        self._section_names = list(self._section_fields)
        self.sections = W.Accordion(children=groups, titles=tuple(_title(s) for s in self._section_names))
        self.sections.selected_index = 0

        self.summary = W.HTML()
        self.launch_button = W.Button(description="Launch", button_style="success", icon="play",
                                      tooltip="Start fine-tuning with this config")
        self.launch_button.on_click(self._on_launch_click)
        self.copy_button = ClipboardButton(description="Copy as %%finetune",
                                           tooltip="Copy the equivalent %%finetune cell to the clipboard")
        self.copy_button.on_click(lambda _b: self._show_cell_text())
        self.copy_button.observe(self._on_copy_status, "status")
        self.status = W.HTML()
        self.cell_text = W.Textarea(disabled=True, layout=W.Layout(width="100%", height="16em",
                                                                    display="none"))
        self.widget = W.VBox(
            [self.sections, self.summary, W.HBox([self.launch_button, self.copy_button]), self.status,
             self.cell_text],
            layout=W.Layout(max_width="760px"),
        )

        self.fields: dict[str, W.Widget] = {p: f.widget for p, f in self._fields.items()}
        self.errors_html: dict[str, W.HTML] = {p: f.error for p, f in self._fields.items()}
        for fld in self._fields.values():
            fld.widget.observe(self._on_change, "value")
        self.set_config(config if config is not None else defaults)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_yaml(cls, text: str, on_launch: Callable[[FineTuneConfig], Any] | None = None) -> "ConfigForm":
        """A form filled from a ``%%finetune`` body; raises ``ConfigError`` if the YAML is not a valid config."""
        return cls(FineTuneConfig.from_yaml(text), on_launch=on_launch)

    def _build_field(self, path: str, f: dataclasses.Field, hint: Any, default: Any) -> _Field:
        kind, optional = _field_kind(path, f, hint)
        name = path.split(".", 1)[1]
        common = dict(layout=W.Layout(width="100%"))
        if kind == "bool":
            widget: W.Widget = W.Checkbox(indent=False, **common)
        elif kind == "choice":
            options = tuple(f.metadata.get("choices") or CHOICES[path])
            widget = W.Dropdown(options=options, **common)
        elif kind == "int":
            widget = W.IntText(**common)
        elif path in MULTILINE:
            widget = W.Textarea(rows=2, **common)
        else:
            widget = W.Text(**common)
        placeholder = {
            "number": "a number, e.g. 2e-4",
            "optional_int": "empty: not set",
            "mapping": "role=column, e.g. prompt=question, completion=answer",
            "modules": "all-linear, or q_proj, v_proj",
            "object": "a file, a datasets directory or demo:support_tickets" if "source" in name else "empty: not set",
            "yaml": "a YAML value",
        }.get(kind, "empty: not set" if optional else "")
        if placeholder and hasattr(widget, "placeholder"):
            widget.placeholder = placeholder
        widget.tooltip = f"{path} (default: {_format_yaml(default) or 'empty'})"
        label = W.Label(name, layout=W.Layout(width="190px", min_width="190px"))
        label.tooltip = path
        parts: list[W.Widget] = [label, widget]
        release = None
        if kind == "object":
            release = W.Button(description="use a path", tooltip="Drop the in-memory data and type a path instead",
                               layout=W.Layout(width="auto", display="none"))
            parts.append(release)
        error = W.HTML(layout=W.Layout(margin="0 0 0 194px", display="none"))
        box = W.VBox([W.HBox(parts, layout=W.Layout(width="100%")), error])
        fld = _Field(path, kind, optional, widget, error, box, release)
        if release is not None:
            release.on_click(lambda _b, fld=fld: self._release(fld))
        return fld

    # ----------------------------------------------------------------- values
    def _set_field(self, fld: _Field, value: Any) -> None:
        fld.held, fld.held_text = _KEEP, ""
        editable = True
        if fld.kind == "bool":
            text: Any = bool(value) if isinstance(value, bool) else False
        elif fld.kind == "choice":
            if value not in fld.widget.options:  # an invalid value set directly: show it, validation flags it
                fld.widget.options = tuple(fld.widget.options) + (value,)
            text = value
        elif fld.kind == "int":
            text = value if isinstance(value, int) and not isinstance(value, bool) else 0
        elif fld.kind in ("number", "optional_int"):
            text = _format_number(value)
        elif fld.kind == "mapping":
            text = _format_mapping(value)
        elif fld.kind == "modules":
            text = _format_modules(value)
        elif fld.kind == "str":
            text = "" if value is None else str(value)
        elif fld.kind == "object":
            if value is None or isinstance(value, str):
                text = value or ""
            elif isinstance(value, os.PathLike):
                text = os.fspath(value)
                fld.held, fld.held_text = value, text
            else:
                text = f"<in-memory {type(value).__name__}>"
                fld.held, fld.held_text = value, text
                editable = False
        else:
            text = _format_yaml(value)
        fld.widget.value = text
        fld.widget.disabled = not editable
        if fld.release is not None:
            fld.release.layout.display = None if not editable else "none"

    def _get_field(self, fld: _Field) -> Any:
        value = fld.widget.value
        if fld.kind in ("bool", "choice", "int"):
            return value
        if fld.held is not _KEEP and value == fld.held_text:
            return fld.held
        if fld.kind == "number":
            return None if fld.optional and not value.strip() else _parse_number(value)
        if fld.kind == "optional_int":
            return None if not value.strip() else _parse_number(value)
        if fld.kind == "mapping":
            return _parse_mapping(value)
        if fld.kind == "modules":
            return _parse_modules(value)
        if fld.kind == "str":
            return None if fld.optional and not value.strip() else value
        if fld.kind == "object":
            return value.strip() or None
        return _parse_yaml(value)

    def values(self) -> dict[str, Any]:
        """The form as nested sections (like ``FineTuneConfig.to_dict()``), keeping in-memory sources.

        Text that could not be read as its field's type is returned as the text itself.
        """
        return {
            section: {p.split(".", 1)[1]: self._get_field(self._fields[p]) for p in paths}
            for section, paths in self._section_fields.items()
        }

    def set_config(self, config: FineTuneConfig) -> None:
        """Fill every widget from ``config`` (which may be invalid: its problems are then shown)."""
        self._quiet = True
        try:
            for section, paths in self._section_fields.items():
                part = getattr(config, section)
                for path in paths:
                    self._set_field(self._fields[path], getattr(part, path.split(".", 1)[1]))
        finally:
            self._quiet = False
        self.cell_text.layout.display = "none"
        self.status.value = ""
        self._validate()

    @property
    def config(self) -> FineTuneConfig:
        """The validated config of the form; raises ``ConfigError`` with every problem."""
        return FineTuneConfig.from_dict(self.values())

    @property
    def problems(self) -> list[Problem]:
        """The problems shown in the form now (empty when it is valid)."""
        return list(self._problems)

    @property
    def valid(self) -> bool:
        return not self._problems

    def errors(self, path: str) -> list[str]:
        """The messages shown under the field ``path`` (``"training.batch_size"``)."""
        return [str(p) for p in self._problems if self._owner(p.path) == path]

    # ----------------------------------------------------------------- validation
    def _owner(self, problem_path: str) -> str | None:
        """The field a problem belongs to: ``data.columns.foo`` -> ``data.columns``."""
        parts = problem_path.split(".")
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if candidate in self._fields:
                return candidate
        return None

    def _on_change(self, _change: Any) -> None:
        if not self._quiet:
            self.cell_text.layout.display = "none"
            self._validate()

    def _validate(self) -> None:
        try:
            self._config = FineTuneConfig.from_dict(self.values())
            self._problems = []
        except ConfigError as exc:
            self._config = None
            self._problems = list(exc.problems)
        by_field: dict[str, list[Problem]] = {}
        loose: list[Problem] = []
        for p in self._problems:
            owner = self._owner(p.path)
            (by_field.setdefault(owner, []) if owner else loose).append(p)
        for path, fld in self._fields.items():
            mine = by_field.get(path, [])
            fld.error.value = "".join(
                f'<div style="color:{_RED}; font-size:90%; line-height:1.3">{html.escape(str(p), quote=False)}</div>'
                for p in mine
            )
            fld.error.layout.display = None if mine else "none"
        titles = []
        for section in self._section_names:
            n = sum(len(by_field.get(p, [])) for p in self._section_fields[section])
            n += sum(1 for p in loose if p.path.split(".")[0] == section)
            titles.append(_title(section) + (f"  ({n} problem{'s' if n != 1 else ''})" if n else ""))
        self.sections.titles = tuple(titles)
        if self._problems:
            n = len(self._problems)
            where = ", ".join(dict.fromkeys(self._owner(p.path) or p.path for p in self._problems))
            extra = "".join(f"<div>{html.escape(str(p), quote=False)}</div>" for p in loose)
            self.summary.value = (f'<div style="color:{_RED}"><b>{n} problem{"s" if n != 1 else ""}</b> '
                                  f"in the config: {html.escape(where, quote=False)}{extra}</div>")
        else:
            note = ""
            if not isinstance(self._config.data.source, (str, os.PathLike)):
                note = (" The data source is in memory: a copied %%finetune cell will need it given again.")
            self.summary.value = f'<div style="color:{_GREEN}">&#10003; The config is valid.{html.escape(note)}</div>'
        self.launch_button.disabled = bool(self._problems)
        self.copy_button.disabled = bool(self._problems)
        self.copy_button.text = self.to_cell_text() if self._config is not None else ""

    # ----------------------------------------------------------------- actions
    def to_cell_text(self) -> str:
        """``"%%finetune\\n" + config.to_yaml()``: the cell equivalent to the form; raises ``ConfigError``."""
        config = self._config if self._config is not None else self.config
        return "%%finetune\n" + config.to_yaml()

    def copy(self) -> str:
        """Show the ``%%finetune`` cell under the form and ask the browser to copy it; returns the text."""
        text = self._show_cell_text()
        self.copy_button.copy()
        return text

    def _show_cell_text(self) -> str:
        text = self.to_cell_text()
        self.copy_button.text = text
        self.cell_text.value = text
        self.cell_text.layout.display = None
        inserted = self.copy_button.inserted != getattr(self, "_inserted_seen", 0)
        self._inserted_seen = self.copy_button.inserted
        self.status.value = ("Wrote the %%finetune cell below this one (and copied it)." if inserted
                             else "Copied the %%finetune cell; paste it into a new cell.")
        return text

    def _on_copy_status(self, change: Any) -> None:
        if str(change["new"]).startswith("not copied"):
            self.status.value = (f'<span style="color:{_RED}">The browser did not allow the copy '
                                 f"({html.escape(change['new'], quote=False)}): select the text below and "
                                 "copy it.</span>")

    def launch(self) -> Any:
        """Validate and call ``on_launch(config)``; returns its result. Raises ``ConfigError`` if invalid."""
        config = self.config
        launch = self.on_launch
        if launch is None:
            from ..training import finetune as launch
        self.last_result = launch(config)
        return self.last_result

    def _on_launch_click(self, _button: Any) -> None:
        try:
            result = self.launch()
        except Exception as exc:  # a widget callback has nowhere to raise to: show it
            self.status.value = (f'<span style="color:{_RED}">Launch failed: '
                                 f"{html.escape(f'{type(exc).__name__}: {exc}', quote=False)}</span>")
            return
        self.status.value = "Launched" + (f": {html.escape(repr(result), quote=False)}" if result is not None else ".")

    def _release(self, fld: _Field) -> None:
        fld.held, fld.held_text = _KEEP, ""
        fld.widget.disabled = False
        if fld.release is not None:
            fld.release.layout.display = "none"
        fld.widget.value = ""  # triggers validation ("data.source: is required")

    # ----------------------------------------------------------------- display
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        state = "valid" if self.valid else f"{len(self._problems)} problem(s)"
        return f"<ConfigForm {state}>"
