"""Plotly figures of runs: one run's dashboard figure, several runs' curves overlaid, and a display bundle.

Pure rendering (plotly only, imported on first use; no widgets): the widget dashboard wraps the same figure
in a ``FigureWidget``, the static and Colab views serialise it, a comparison and a sweep overlay their runs'
curves with :func:`overlay_figure`. Trace order is fixed (``TRACE_*``) so a view can update traces by index.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ..runtime.imports import settle_imports
from .dashboard_state import ALL_PARTS, DashboardState
from .format import ema

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

__all__ = ["PALETTE", "RunCurves", "TRACE_BEST", "TRACE_EVAL", "TRACE_LOSS", "TRACE_LOSS_SMOOTH", "TRACE_LR",
           "TRACE_TPS", "apply_traces", "build_figure", "figure_bundle", "overlay_figure"]

# plotly's "D3" qualitative palette: distinct, and the same run keeps its colour in every figure.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")

# Trace order in every dashboard figure (the widget updates traces by index).
TRACE_LOSS, TRACE_LOSS_SMOOTH, TRACE_EVAL, TRACE_BEST, TRACE_LR, TRACE_TPS = range(6)


@dataclass
class RunCurves:
    """One run's curves against ``x`` (steps, or tokens seen)."""

    run_id: str
    label: str
    color: str
    train: tuple[list[float], list[float]]
    eval: tuple[list[float], list[float]]
    kl: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    best: bool = False


# =========================================================================== one run
def build_figure(state: DashboardState, *, smoothing: float = 0.6, log_scale: bool = False,
                 title: str | None = None, height: int = 560) -> "go.Figure":
    """A static figure: loss (train raw + smoothed, eval with markers, best eval starred), learning rate and
    tokens/s, stacked against a shared step axis."""
    settle_imports()
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07, row_heights=[0.5, 0.25, 0.25],
                        subplot_titles=("loss", "learning rate", "tokens/s"))
    train_color, eval_color = "#1f77b4", "#ff7f0e"
    fig.add_trace(go.Scatter(name="train loss", mode="lines", line={"color": train_color, "width": 1.5},
                             legendgroup="train", hovertemplate="step %{x}<br>loss %{y:.4f}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(name="train loss (smoothed)", mode="lines", line={"color": train_color, "width": 2.5},
                             legendgroup="train",
                             hovertemplate="step %{x}<br>smoothed %{y:.4f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(name="eval loss", mode="lines+markers", line={"color": eval_color, "width": 2},
                             marker={"size": 7}, hovertemplate="step %{x}<br>eval loss %{y:.4f}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(name="best eval", mode="markers",
                             marker={"symbol": "star", "size": 15, "color": "#d62728",
                                     "line": {"width": 1, "color": "white"}},
                             hovertemplate="best eval loss %{y:.4f}<br>at step %{x}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(name="learning rate", mode="lines", line={"color": "#2ca02c"}, showlegend=False,
                             hovertemplate="step %{x}<br>lr %{y:.3e}<extra></extra>"), row=2, col=1)
    fig.add_trace(go.Scatter(name="tokens/s", mode="lines", line={"color": "#9467bd"}, showlegend=False,
                             hovertemplate="step %{x}<br>%{y:,.0f} tokens/s<extra></extra>"), row=3, col=1)
    fig.update_layout(height=height, template="plotly_white", hovermode="x unified",
                      margin={"l": 60, "r": 20, "t": 60 if title else 40, "b": 40},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.04, "xanchor": "left", "x": 0},
                      title={"text": title} if title else None, uirevision="jupyter-ft")
    fig.update_xaxes(title_text="step", row=3, col=1)
    fig.update_yaxes(exponentformat="e", row=2, col=1)
    apply_traces(fig, state, ALL_PARTS, smoothing=smoothing, log_scale=log_scale)
    return fig


def apply_traces(fig: Any, state: DashboardState, parts: Iterable[str], *, smoothing: float,
                 log_scale: bool) -> None:
    """Copy the state's series into the traces ``build_figure`` made; only the traces of ``parts``.
    The caller wraps it in ``fig.batch_update()`` for a FigureWidget, so the frontend gets one message."""
    parts = set(parts)
    if parts & {"loss", "options"}:
        smooth = smoothing > 0
        fig.data[TRACE_LOSS].update(x=list(state.loss.x), y=list(state.loss.y), opacity=0.35 if smooth else 1.0)
        fig.data[TRACE_LOSS_SMOOTH].update(x=list(state.loss.x) if smooth else [],
                                           y=ema(state.loss.y, smoothing) if smooth else [], visible=smooth)
    if "eval" in parts:
        fig.data[TRACE_EVAL].update(x=list(state.eval_loss.x), y=list(state.eval_loss.y))
        best = state.best_eval()
        fig.data[TRACE_BEST].update(x=[best[0]] if best else [], y=[best[1]] if best else [])
    if "lr" in parts:
        fig.data[TRACE_LR].update(x=list(state.lr.x), y=list(state.lr.y))
    if "tps" in parts:
        fig.data[TRACE_TPS].update(x=list(state.tokens_per_s.x), y=list(state.tokens_per_s.y))
    if "options" in parts:
        fig.layout.yaxis.type = "log" if log_scale else "linear"


def figure_bundle(fig: "go.Figure", text: str = "") -> dict[str, Any]:
    """A display bundle that works without a widget frontend: the plotly mimetype (JupyterLab, VS Code),
    HTML with plotly.js from its CDN (nbconvert / exported HTML, classic notebook) and plain text (a
    terminal). Built by hand because plotly's default renderer in terminal IPython opens a browser."""
    bundle: dict[str, Any] = {"text/plain": text or "<jupyter-ft training figure>"}
    fig_json = json.loads(fig.to_json())  # plain JSON types, whatever plotly stored (tuples, numpy)
    bundle["application/vnd.plotly.v1+json"] = {"data": fig_json.get("data", []),
                                                "layout": fig_json.get("layout", {}),
                                                "config": {"displaylogo": False}}
    bundle["text/html"] = fig.to_html(full_html=False, include_plotlyjs="cdn", config={"displaylogo": False})
    return bundle


# =========================================================================== several runs
def overlay_figure(curves: Sequence[RunCurves], *, x: str = "step", title: str | None = None,
                   height: int | None = None) -> "go.Figure":
    """Loss curves of several runs on one axis, one colour per run (train solid, eval dashed with markers,
    the best run drawn thicker); a second panel with the forgetting KL when any run measured it."""
    settle_imports()  # a sweep's figure is built while its next run's thread imports pandas
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    with_kl = any(c.kl[0] for c in curves)
    rows = 2 if with_kl else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[0.7, 0.3] if with_kl else None,
                        subplot_titles=("loss", "forgetting: KL from base (nats/token)") if with_kl else ("loss",))
    for c in curves:
        width = 3.0 if c.best else 1.6
        name = ("★ " if c.best else "") + c.label
        fig.add_trace(go.Scatter(x=c.train[0], y=c.train[1], mode="lines", name=name, legendgroup=c.run_id,
                                 line={"color": c.color, "width": width},
                                 hovertemplate=f"{html.escape(c.label)}<br>{x} %{{x}}<br>train loss %{{y:.4f}}"
                                               "<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=c.eval[0], y=c.eval[1], mode="lines+markers", name=f"{c.label} eval",
                                 legendgroup=c.run_id, showlegend=False,
                                 line={"color": c.color, "width": width, "dash": "dash"}, marker={"size": 7},
                                 hovertemplate=f"{html.escape(c.label)}<br>{x} %{{x}}<br>eval loss %{{y:.4f}}"
                                               "<extra></extra>"), row=1, col=1)
        if with_kl:
            fig.add_trace(go.Scatter(x=c.kl[0], y=c.kl[1], mode="lines+markers", name=f"{c.label} KL",
                                     legendgroup=c.run_id, showlegend=False, line={"color": c.color},
                                     hovertemplate=f"{html.escape(c.label)}<br>{x} %{{x}}<br>KL %{{y:.4f}}"
                                                   "<extra></extra>"), row=2, col=1)
    fig.update_layout(height=height or (560 if with_kl else 420), template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 70 if title else 40, "b": 40},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.04, "xanchor": "left", "x": 0},
                      title={"text": title} if title else None, uirevision="jupyter-ft-compare")
    fig.update_xaxes(title_text="tokens seen" if x == "tokens" else "step", row=rows, col=1)
    fig.add_annotation(text="solid: train · dashed: eval", xref="paper", yref="paper", x=1, y=1.0,
                       xanchor="right", yanchor="bottom", showarrow=False, font={"size": 11, "color": "#666"})
    return fig
