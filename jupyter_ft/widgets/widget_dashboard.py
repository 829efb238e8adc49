"""The live dashboard as ipywidgets + a plotly ``FigureWidget``, for JupyterLab, Notebook 7 and VS Code.

One of the views of :class:`~jupyter_ft.widgets.dashboard.Dashboard`: it renders the shared
:class:`~jupyter_ft.views.dashboard_state.DashboardState` into widgets (status badge, progress bar, Stop,
log-scale and smoothing controls, the probes' panels), updating only the parts a batch of events made stale.
"""

from __future__ import annotations

import html
from typing import Any

from ..views.dashboard_state import SERIES_PARTS, STATUS_COLORS
from ..views.figures import apply_traces, build_figure
from .dashboard import Dashboard, register_dashboard

__all__ = ["BAR_STYLES", "WidgetDashboard"]

BAR_STYLES = {"finished": "success", "failed": "danger", "stopping": "warning", "stopped": "warning",
              "interrupted": "warning"}


class WidgetDashboard(Dashboard):
    """ipywidgets + plotly ``FigureWidget``, for JupyterLab / Notebook 7 / VS Code.

    Public parts: ``fig`` (FigureWidget), ``progress_bar``, ``progress_label``, ``status_badge``,
    ``message`` (error text and warnings), ``stop_button``, ``log_toggle``, ``smoothing_slider``,
    ``overfitting_panel`` and ``forgetting_panel`` (VBoxes with a title, hidden until
    :meth:`set_panel` fills them), and ``widget``, the whole dashboard.
    """

    kind = "widget"

    def _build(self) -> None:
        import ipywidgets as W
        import plotly.graph_objects as go

        self.fig = go.FigureWidget(build_figure(self.state, smoothing=self.smoothing, log_scale=self.log_scale))
        self.status_badge = W.HTML()
        self.progress_bar = W.IntProgress(min=0, max=1, value=0, layout=W.Layout(width="240px"))
        self.progress_label = W.HTML()
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="danger",
                                    tooltip="Stop after the current step; saves a checkpoint and the adapter",
                                    layout=W.Layout(width="auto"))
        self.stop_button.on_click(self._on_stop)
        self.message = W.HTML()
        self.log_toggle = W.ToggleButton(value=self.log_scale, description="log scale", icon="line-chart",
                                         tooltip="Logarithmic loss axis", layout=W.Layout(width="auto"))
        self.smoothing_slider = W.FloatSlider(value=self.smoothing, min=0.0, max=0.99, step=0.01,
                                              description="smoothing", continuous_update=False,
                                              readout_format=".2f", style={"description_width": "initial"})
        self.log_toggle.observe(self._on_option, names="value")
        self.smoothing_slider.observe(self._on_option, names="value")
        self.overfitting_panel = W.VBox([W.HTML("<b>Overfitting</b>")], layout=W.Layout(display="none", flex="1"))
        self.forgetting_panel = W.VBox([W.HTML("<b>Forgetting</b>")], layout=W.Layout(display="none", flex="1"))
        header = W.HBox([self.status_badge, self.progress_bar, self.progress_label, self.stop_button],
                        layout=W.Layout(align_items="center", flex_flow="row wrap", gap="8px"))
        options = W.HBox([self.log_toggle, self.smoothing_slider], layout=W.Layout(align_items="center", gap="8px"))
        self.widget = W.VBox([header, self.message, options, self.fig,
                              W.HBox([self.overfitting_panel, self.forgetting_panel])])
        # The probes' figures, built by the first probe event that needs them.
        self._over_fig: Any = None
        self._over_html: Any = None
        self._forget_fig: Any = None
        self._forget_html: Any = None

    def set_panel(self, name: str, *children: Any) -> Any:
        """Fill a probe slot (``"overfitting"`` or ``"forgetting"``) below its title and show it."""
        panel = {"overfitting": self.overfitting_panel, "forgetting": self.forgetting_panel}[name]
        panel.children = (panel.children[0], *children)
        panel.layout.display = "flex" if children else "none"
        return panel

    def display(self) -> None:
        from IPython.display import display

        # FigureWidget syncs changes made before its first display only in its own _repr_mimebundle_,
        # which a container does not call; call it so the view starts from the current traces.
        self.fig._repr_mimebundle_()
        bundle = {
            "application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0,
                                                         "model_id": self.widget.model_id},
            # What a frontend without widgets (nbconvert, jupyter execute) keeps instead.
            "text/plain": self.state.text_line(),
        }
        display(bundle, raw=True)

    def finish(self) -> None:
        """Flush what is left and copy the full traces into the widget model's state, so a notebook saved
        with its widget state (``jupyter execute``, nbconvert, "Save Widget State") keeps the final curves
        rather than those at display time; a live view is not redrawn by this."""
        self.refresh()
        with self._flush_lock:
            self.fig._repr_mimebundle_()

    def _render(self, parts: set[str] | frozenset[str]) -> None:
        if parts & (SERIES_PARTS | {"options"}):
            with self.fig.batch_update():
                apply_traces(self.fig, self.state, parts, smoothing=self.smoothing, log_scale=self.log_scale)
        if parts & {"progress", "status"}:
            self._render_progress()
        if parts & {"status", "warnings"}:
            self._render_status()
        if "probes" in parts and self.state.probes:
            self._render_probes()

    def _render_probes(self) -> None:
        """Overfitting and forgetting panels: verdict, suggestion and a small figure (from ``probe`` events)."""
        import ipywidgets as W
        import plotly.graph_objects as go

        recs = self.state.probes
        over = [r for r in recs if r.get("overfitting")]
        forget = [r for r in recs if r.get("forgetting")]
        colors = {"ok": "#198754", "none": "#198754", "suspected": "#b58100", "mild": "#b58100",
                  "overfitting": "#b00020", "severe": "#b00020"}

        def verdict_html(label: str, status: str, message: str, suggestion: str) -> str:
            color = colors.get(status, "#6c757d")
            text = (f'<div><b style="color:{color}">{html.escape(label)}: {html.escape(status)}</b> '
                    f"{html.escape(message)}</div>")
            if suggestion:
                text += f'<div style="color:#555">{html.escape(suggestion)}</div>'
            return text

        if over:
            v = over[-1]["overfitting"]
            if self._over_fig is None:
                self._over_fig = go.FigureWidget(layout={"height": 220, "template": "plotly_white",
                                                         "margin": {"l": 40, "r": 10, "t": 10, "b": 30},
                                                         "legend": {"orientation": "h"}})
                for name in ("train", "eval", "best"):
                    self._over_fig.add_scatter(name=name, mode="markers" if name == "best" else "lines+markers")
                self._over_html = W.HTML()
            steps = [r["step"] for r in over]
            with self._over_fig.batch_update():
                self._over_fig.data[0].update(x=steps, y=[r["overfitting"]["train_loss"] for r in over])
                self._over_fig.data[1].update(x=steps, y=[r["overfitting"]["eval_loss"] for r in over])
                self._over_fig.data[2].update(x=[v["best_step"]], y=[v["best_eval_loss"]],
                                              marker={"size": 12, "symbol": "star"})
            gap = "" if v.get("gap") is None else f" Gap {v['gap']:.3f} (ratio {v['gap_ratio']:.2f})."
            self._over_html.value = verdict_html("Overfitting", v["status"], v["message"] + gap, v["suggestion"])
            self.set_panel("overfitting", self._over_html, self._over_fig)
        if forget:
            v = forget[-1]["forgetting"]
            if self._forget_fig is None:
                self._forget_fig = go.FigureWidget(layout={"height": 220, "template": "plotly_white",
                                                           "margin": {"l": 40, "r": 10, "t": 10, "b": 30},
                                                           "legend": {"orientation": "h"}})
                for name in ("KL from base", "answer log-lik. change", "accuracy change"):
                    self._forget_fig.add_scatter(name=name, mode="lines+markers")
                self._forget_html = W.HTML()
            steps = [r["step"] for r in forget]
            with self._forget_fig.batch_update():
                self._forget_fig.data[0].update(x=steps, y=[r["forgetting"]["kl"] for r in forget])
                self._forget_fig.data[1].update(x=steps, y=[-r["forgetting"]["loglik_drop"] for r in forget])
                self._forget_fig.data[2].update(x=steps, y=[-r["forgetting"]["accuracy_drop"] for r in forget])
            self._forget_html.value = verdict_html("Forgetting", v["verdict"], v["message"], v["suggestion"])
            self.set_panel("forgetting", self._forget_html, self._forget_fig)

    def _render_progress(self) -> None:
        st = self.state
        step, total = st.progress.get("step"), st.progress.get("max_steps")
        with self.progress_bar.hold_sync():
            self.progress_bar.max = max(1, int(total or step or 1))
            self.progress_bar.value = min(int(step or 0), self.progress_bar.max)
            self.progress_bar.bar_style = BAR_STYLES.get(st.status, "")
        self.progress_label.value = html.escape(st.progress_text())

    def _render_status(self) -> None:
        st = self.state
        # The button first: comm messages arrive in order, so a frontend showing the new status badge
        # already has the matching button state.
        button = self.stop_button
        with button.hold_sync():
            if st.status == "stopping":
                button.disabled, button.description = True, "Stopping…"
            else:
                button.disabled = self.run is None or st.status not in ("queued", "running")
                button.description = "Stop"
        color = STATUS_COLORS.get(st.status, "#6c757d")
        self.status_badge.value = (
            f'<span style="background:{color};color:white;border-radius:4px;padding:2px 8px;'
            f'font-weight:600">{html.escape(st.status)}</span>'
        )
        lines = []
        if st.status == "failed" and st.error:
            lines.append('<div style="color:#b00020;white-space:pre-wrap;font-family:monospace">'
                         f"{html.escape(st.error)}</div>")
        for warning in st.warnings:
            lines.append(f'<div style="color:#8a6d00">⚠ {html.escape(warning)}</div>')
        self.message.value = "".join(lines)

    def _on_stop(self, _button: Any = None) -> None:
        if self.run is None:
            return
        self.stop_button.disabled = True
        self.stop_button.description = "Stopping…"
        self.run.stop()

    def _on_option(self, _change: Any = None) -> None:
        with self._flush_lock:
            self.log_scale = bool(self.log_toggle.value)
            self.smoothing = float(self.smoothing_slider.value)
            self._render({"options"})


register_dashboard("widget", WidgetDashboard)
