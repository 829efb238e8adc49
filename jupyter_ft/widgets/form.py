"""The hyperparameter form behind ``%ft_form`` and ``%%finetune --form``.

The form is generated from the config dataclasses, not written by hand: one group per section of
``FineTuneConfig`` (Model / Data / LoRA / Quantization / Training / Output, and any section added later)
and one input per dataclass field, chosen from the field's type and default. A new field or a new section
therefore shows up in the form without editing this module.

Each field's kind (and so its widget: ``Checkbox``, ``Dropdown`` for a fixed choice list, ``IntText``, or
``Text`` read back by the kind's parser) comes from :func:`.form_fields.field_kind`; the table of kinds and
the format/parse pair of each is in :mod:`.form_fields`. An in-memory ``data.source`` (DataFrame, list of
dicts) is shown read-only as ``<in-memory DataFrame>`` and the object itself is kept, with a "use a path"
button to replace it.

Validation runs on every change: the form's values go through ``FineTuneConfig.from_dict`` and every
``Problem`` is shown (``str(problem)``, in red) under the field its dotted path points to, with a summary
line above the buttons and a problem count in the group titles. Text that cannot be read as the field's
type (``abc`` in a number field) is passed through as text, so it is reported with the same message a
``%%finetune`` cell would get (``training.learning_rate: must be a number (got 'abc')...``).

Buttons:

* **Launch** (disabled while the form has problems) calls ``on_launch(config)``; by default that is
  :func:`jupyter_ft.finetune`, which starts the run in the background and returns the ``Run``.
* **Copy as %%finetune** shows ``"%%finetune\\n" + config.to_yaml()`` in a read-only text area under the
  form and puts it on the clipboard, through the browser: the button is a :class:`.clipboard.ClipboardButton`
  whose ``text`` the kernel keeps up to date on every change, so a click copies inside the user's gesture.
  ``form.copy()`` asks for a copy from Python; browsers may refuse that one, and then the text area is there
  to copy by hand. :meth:`ConfigForm.to_cell_text` returns the same text. In JupyterLab with the jupyter-ft
  lab extension the click also writes the text as a new cell below the form.

The round trip form -> YAML -> form gives the same config, except for an in-memory source: YAML can only
say ``<in-memory list>``, so the copied cell has to be given the data again.
"""

from __future__ import annotations

import dataclasses
import html
import os
import typing
from typing import Any, Callable

import ipywidgets as W

from ..config import ConfigError, FineTuneConfig, Problem
from .clipboard import ClipboardButton
from .form_fields import (
    CHOICES,
    field_kind,
    format_mapping,
    format_modules,
    format_number,
    format_yaml,
    parse_mapping,
    parse_modules,
    parse_number,
    parse_yaml,
)

__all__ = ["ConfigForm"]

#: Group titles; a section not listed here is titled from its name ("my_section" -> "My Section").
TITLES = {"lora": "LoRA"}
#: Fields whose value is often several lines long.
MULTILINE = {"data.system_prompt"}

_RED = "#c62828"
_GREEN = "#2e7d32"
_KEEP = object()  # "no in-memory object held"


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
        self._inserted_seen = 0  # the copy button's insert count already reported
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
        kind, optional = field_kind(path, f, hint)
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
        widget.tooltip = f"{path} (default: {format_yaml(default) or 'empty'})"
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
            text = format_number(value)
        elif fld.kind == "mapping":
            text = format_mapping(value)
        elif fld.kind == "modules":
            text = format_modules(value)
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
            text = format_yaml(value)
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
            return None if fld.optional and not value.strip() else parse_number(value)
        if fld.kind == "optional_int":
            return None if not value.strip() else parse_number(value)
        if fld.kind == "mapping":
            return parse_mapping(value)
        if fld.kind == "modules":
            return parse_modules(value)
        if fld.kind == "str":
            return None if fld.optional and not value.strip() else value
        if fld.kind == "object":
            return value.strip() or None
        return parse_yaml(value)

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
            if self._config is not None and not isinstance(self._config.data.source, (str, os.PathLike)):
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
        inserted = self.copy_button.inserted != self._inserted_seen
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
            from ..engine import finetune

            launch = finetune
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
