"""Google Colab: the live dashboard as a small JavaScript view that polls the kernel, and widget set-up.

Why a separate path: Colab does not deliver widget (comm) messages sent from a background thread
(googlecolab/colabtools#3373), so the ``FigureWidget`` dashboard would freeze while training runs in
the kernel's background thread. Here the browser asks instead: the view displayed under the cell calls a
Python callback registered with ``google.colab.output.register_callback`` through
``google.colab.kernel.invokeFunction`` about once a second. Colab runs such a callback in the kernel's
main thread, so it can safely apply the buffered run events (``Dashboard.refresh``) and answer with the
points added since the view's cursor; the view appends them with ``Plotly.extendTraces``. The Stop button
calls a second registered callback. A sweep gets the same kind of view (:class:`ColabSweepDashboard`: one
loss and eval curve per trial, a table of trials, Stop sweep / Skip run); both are built from the pieces
here (:class:`ColabView`, :func:`series_delta`, the shared JavaScript in ``_COMMON_JS``). Third-party widgets (the config form, ``%ft_eval``'s table) need
``google.colab.output.enable_custom_widget_manager()``; :func:`setup_colab` calls it on
``%load_ext jupyter_ft``.

Everything Colab-specific goes through ``google.colab.output.register_callback`` and the JavaScript,
so the adapter is testable anywhere with a fake ``google.colab`` module (``tests/test_colab.py``).

Limits: callbacks queue behind a running cell, so the view pauses while a cell blocks (``run.wait()``)
and catches up afterwards; Colab has no API to unregister a callback, so each dashboard (run or sweep) keeps
two small entries in Colab's callback table until the kernel restarts.
"""

from __future__ import annotations

import html
import importlib.util
import json
import logging
import re
import sys
import uuid
from typing import TYPE_CHECKING, Any, Mapping

from .dashboard import (
    STATUS_COLORS,
    TERMINAL,
    Dashboard,
    DashboardState,
    Series,
    build_figure,
    ema,
    register_dashboard,
    settle_imports,
)
from .sweep_dashboard import STATUS_COLORS as SWEEP_STATUS_COLORS
from .sweep_dashboard import SweepDashboard, register_sweep_dashboard

if TYPE_CHECKING:  # pragma: no cover
    from ..compare import RunCurves

__all__ = ["ColabDashboard", "ColabSweepDashboard", "ColabView", "in_colab", "setup_colab", "plotlyjs_url"]

log = logging.getLogger(__name__)

CALLBACK_PREFIX = "jupyter_ft"
# name in the poll payload -> (attribute of DashboardState, trace index in build_figure's figure)
SERIES = {"loss": ("loss", 0), "eval": ("eval_loss", 2), "lr": ("lr", 4), "tps": ("tokens_per_s", 5)}
TRACE_LOSS_SMOOTH, TRACE_BEST = 1, 3


def in_colab() -> bool:
    """True in a Google Colab runtime (``google.colab`` imported or importable)."""
    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no ``google`` package at all, or a broken namespace
        return False


def setup_colab(ipython: Any = None) -> bool:
    """Called by ``%load_ext jupyter_ft``: in Colab, enable the custom widget manager (third-party widgets)
    and make the polling views what ``dashboard_for(..., "auto")`` and ``sweep_dashboard_for(..., "auto")``
    build. Returns whether it did."""
    if not in_colab():
        return False
    try:
        from google.colab import output
    except ImportError:
        return False
    try:
        output.enable_custom_widget_manager()
    except Exception as exc:  # noqa: BLE001 - a widget-manager problem must not stop the magics loading
        log.warning("jupyter-ft: could not enable Colab's custom widget manager (%s); the form and the "
                    "evaluation table may not render, the dashboard still does.", exc)
    register_dashboard("colab", ColabDashboard, default=True)
    register_sweep_dashboard("colab", ColabSweepDashboard)  # "auto" follows the single-run claim of "colab"
    return True


def plotlyjs_url() -> str:
    """plotly.js from its CDN, the version the installed plotly package was built against."""
    try:
        from plotly.offline import get_plotlyjs_version

        version = get_plotlyjs_version()
    except Exception:  # noqa: BLE001
        version = "2.35.2"
    return f"https://cdn.plot.ly/plotly-{version}.min.js"


class TrackedSeries(Series):
    """A series that counts the times points were removed (a rewind on resume, or a reload), so a cursor
    ``(epoch, count)`` tells whether the browser's copy can be extended or must be replaced."""

    __slots__ = ("epoch",)

    def __init__(self, source: Series | None = None) -> None:
        super().__init__()
        self.epoch = 0
        if source is not None:
            self.x, self.y = list(source.x), list(source.y)

    def add(self, x: int, y: float) -> None:
        if self.x and x <= self.x[-1]:
            self.epoch += 1
        super().add(x, y)

    def clear(self) -> None:
        if self.x:
            self.epoch += 1
        super().clear()


def series_delta(series: TrackedSeries, cursor: Any) -> tuple[dict[str, Any], list[int]]:
    """What the browser's copy of ``series`` lacks, given the ``[epoch, count]`` it was last sent.

    Returns the payload (``mode`` ``"extend"``: only the points after the cursor; ``"replace"``: the whole
    series, because the view has none yet, the cursor is unusable, or the series was rewound since) and the
    cursor to send back. A rewind bumps the epoch, so an old count can never splice two timelines.
    """
    epoch, count = _cursor_pair(cursor)
    if epoch == series.epoch and count is not None and count <= len(series):
        start, mode = count, "extend"
    else:
        start, mode = 0, "replace"
    return {"mode": mode, "x": list(series.x[start:]), "y": list(series.y[start:])}, [series.epoch, len(series)]


def _as_cursor(cursor: Any) -> dict[str, Any]:
    """The browser sends back what it was given; anything else (first poll, a stale page) means "everything"."""
    return dict(cursor) if isinstance(cursor, Mapping) else {}


class ColabView:
    """The Colab plumbing a polling view needs, mixed in before a run or sweep dashboard class.

    It registers two callbacks under a fresh id (``poll_callback`` answers :meth:`poll`, ``stop_callback``
    calls :meth:`stop` with the arguments the page passes), turns their answers into the JSON display data
    ``invokeFunction`` resolves to, keeps the views from rendering in the training thread (``auto_flush``
    off: the poll, in the main thread, applies the buffered events), and builds the page from a template
    that includes the shared JavaScript.
    """

    min_interval: float
    state: Any

    def _default_auto_flush(self) -> bool:
        return False

    def _register_callbacks(self) -> None:
        self.uid = uuid.uuid4().hex[:12]
        self.poll_callback = f"{CALLBACK_PREFIX}.poll.{self.uid}"
        self.stop_callback = f"{CALLBACK_PREFIX}.stop.{self.uid}"
        self.polls = 0
        from google.colab import output

        output.register_callback(self.poll_callback, self._poll_callback)
        output.register_callback(self.stop_callback, self._stop_callback)

    # ------------------------------------------------------------ callbacks (main thread, from the browser)
    def _poll_callback(self, cursor: Any = None) -> Any:
        from IPython.display import JSON

        return JSON(self.poll(cursor))

    def _stop_callback(self, *args: Any) -> Any:
        from IPython.display import JSON

        return JSON(self.stop(*args))

    def poll(self, cursor: Mapping[str, Any] | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def stop(self, *args: Any) -> dict[str, Any]:
        raise NotImplementedError

    # ------------------------------------------------------------ the view
    def _page(self, template: str, name: str, config: Mapping[str, Any]) -> str:
        """``template`` with the shared JavaScript, the root id, the escaped ``name`` and ``config`` (JSON that
        can never close the ``<script>`` early) filled in, in one pass so no value is read as a placeholder."""
        values = {
            "__COMMON_JS__": _COMMON_JS,
            "__ROOT__": f"jupyter-ft-{self.uid}",
            "__NAME__": html.escape(name),
            "__CONFIG__": json.dumps(dict(config)).replace("</", "<\\/"),
        }
        return re.sub("|".join(values), lambda m: values[m.group(0)], template)

    def html(self) -> str:
        raise NotImplementedError

    def display(self) -> None:
        """Show the view once, from the main thread; it updates itself from then on."""
        from IPython.display import display

        display({"text/html": self.html(), "text/plain": self.state.text_line()}, raw=True)

    def finish(self) -> None:
        self.refresh()  # type: ignore[attr-defined]


class ColabDashboard(ColabView, Dashboard):
    """The dashboard for Colab: an HTML+JavaScript view (plotly.js) that polls :meth:`poll`.

    Nothing renders from the training thread (``auto_flush`` is off): events are buffered until the next
    poll, which runs in the main thread. ``poll_callback`` and ``stop_callback`` are the names registered
    with ``google.colab.output.register_callback``; :meth:`poll` and :meth:`stop` are what they call.
    """

    kind = "colab"
    default_interval = 1.0  # seconds between polls

    def _build(self) -> None:
        for attr, _trace in SERIES.values():
            setattr(self.state, attr, TrackedSeries(getattr(self.state, attr)))
        self._register_callbacks()

    def poll(self, cursor: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Apply the buffered events and answer with what the view lacks.

        ``cursor`` is the one the previous answer returned (``None`` at first). Per series the answer has
        ``mode`` ``"extend"`` (only the points after the cursor) or ``"replace"`` (the whole series: first
        poll, or the series was rewound by a resumed run). Status, progress with ETA, warnings added since
        the cursor, probe verdicts and ``done`` (the view stops polling) come with every answer. Plain JSON:
        no NaN or infinity.
        """
        self.refresh()
        cursor = _as_cursor(cursor)
        with self._flush_lock:
            self.polls += 1
            st = self.state
            series: dict[str, Any] = {}
            new_cursor: dict[str, Any] = {}
            for key, (attr, _trace) in SERIES.items():
                s: TrackedSeries = getattr(st, attr)
                series[key], new_cursor[key] = series_delta(s, cursor.get(key))
                if key == "loss":  # EMA is causal: appending points never changes the smoothed ones before
                    start = len(s) - len(series[key]["x"])
                    smooth = ema(s.y, self.smoothing) if self.smoothing > 0 else []
                    series["loss_smooth"] = {"mode": series[key]["mode"],
                                             "x": list(s.x[start:]) if smooth else [], "y": smooth[start:]}
            best = st.best_eval()
            seen_warnings = cursor.get("warnings") if isinstance(cursor.get("warnings"), int) else 0
            new_cursor["warnings"] = len(st.warnings)
            progress = {k: st.progress.get(k) for k in ("step", "max_steps", "epoch", "elapsed", "eta")}
            step, total = progress["step"], progress["max_steps"]
            done = st.status in TERMINAL and (self.run is None or self.run.done) and not self.has_pending()
            return {
                "run_id": st.run_id,
                "name": st.name,
                "status": st.status,
                "status_color": STATUS_COLORS.get(st.status, "#6c757d"),
                "status_text": st.status_text(),
                "error": st.error,
                "progress": progress,
                "progress_text": st.progress_text(),
                "fraction": (min(1.0, step / total) if step is not None and total else None),
                "series": series,
                "best": {"x": [best[0]] if best else [], "y": [best[1]] if best else []},
                "warnings": list(st.warnings[min(seen_warnings, len(st.warnings)):]),
                "probes": _probe_lines(st),
                "can_stop": self.run is not None and st.status in ("queued", "running"),
                "done": done,
                "interval_ms": int(self.min_interval * 1000),
                "cursor": new_cursor,
            }

    def stop(self) -> dict[str, Any]:
        """The Stop button: stop the live run after its current step (it saves a checkpoint and the adapter)."""
        if self.run is None:
            return {"status": self.state.status, "stopping": False}
        self.run.stop()
        return {"status": self.run.status, "stopping": True}

    def html(self) -> str:
        """The HTML+JS view; it draws the figure ``build_figure`` makes, then polls."""
        settle_imports()
        fig = json.loads(build_figure(DashboardState(self.state.run_id, self.state.name),
                                      smoothing=self.smoothing, log_scale=self.log_scale).to_json())
        return self._page(_TEMPLATE, self.state.name, {
            "poll": self.poll_callback,
            "stop": self.stop_callback,
            "plotly": plotlyjs_url(),
            "figure": {"data": fig.get("data", []), "layout": fig.get("layout", {})},
            "traces": {key: trace for key, (_attr, trace) in SERIES.items()}
            | {"loss_smooth": TRACE_LOSS_SMOOTH, "best": TRACE_BEST},
            "interval_ms": int(self.min_interval * 1000),
            "log_scale": self.log_scale,
            "lost_hint": "Re-run the cell or use %ft_show to see the run.",
        })


class ColabSweepDashboard(ColabView, SweepDashboard):
    """A sweep's dashboard for Colab: the widget sweep view's parts as HTML+JavaScript that polls :meth:`poll`.

    It shows the sweep's status and runs ended, one train and one eval curve per trial (the best one drawn
    thicker, starred), a table of trials with each one's status, step progress, last loss and best eval
    loss, the error of a failed trial, and the "Stop sweep" (stop the current trial, cancel the queued ones)
    and "Skip run" buttons. Only the points after the view's cursor travel, per trial and curve.
    """

    kind = "colab"
    default_interval = 1.0  # seconds between polls

    def _build(self) -> None:
        for rs in self.state.runs:
            rs.loss, rs.eval_loss = TrackedSeries(rs.loss), TrackedSeries(rs.eval_loss)
        self._register_callbacks()

    def poll(self, cursor: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Apply the buffered events and answer with what the view lacks.

        ``series`` has one ``{"loss": ..., "eval": ...}`` per trial, in trial order, each with ``mode``
        ``"extend"`` (the points after the cursor) or ``"replace"`` (the whole curve); ``trials`` describes
        every trial (status, step, the table's cells, its error, whether it is the best); ``best`` names the
        trial with the lowest eval loss so far. ``done`` (the view stops polling) once every trial ended and
        no event is left to apply. Plain JSON: no NaN or infinity.
        """
        self.refresh()
        cursor = _as_cursor(cursor)
        with self._flush_lock:
            self.polls += 1
            st = self.state
            best = st.best()
            rows = st.rows()
            columns = [c for c in rows[0] if not c.startswith("_")] if rows else []
            series: list[dict[str, Any]] = []
            trials: list[dict[str, Any]] = []
            new_cursor: dict[str, Any] = {}
            for rs, row in zip(st.runs, rows):
                curves: dict[str, Any] = {}
                for key, s in (("loss", rs.loss), ("eval", rs.eval_loss)):
                    ckey = f"{key}.{rs.index}"
                    curves[key], new_cursor[ckey] = series_delta(s, cursor.get(ckey))  # type: ignore[arg-type]
                series.append(curves)
                trials.append({
                    "index": rs.index,
                    "run_id": rs.run_id,
                    "name": rs.name,
                    "label": rs.label,
                    "color": rs.color,
                    "status": rs.status,
                    "status_color": SWEEP_STATUS_COLORS.get(rs.status, "#6c757d"),
                    "step": rs.step,
                    "max_steps": rs.max_steps,
                    "fraction": (min(1.0, rs.step / rs.max_steps) if rs.step is not None and rs.max_steps
                                 else (1.0 if rs.status == "finished" else None)),
                    "best_eval": rs.best_eval,
                    "error": rs.error if rs.status == "failed" else None,
                    "best": rs is best,
                    "cells": [str(row[c]) for c in columns],
                })
            done = self.sweep.done and not self.has_pending()
            total = len(st.runs)
            return {
                "sweep_id": self.sweep.id,
                "name": st.name,
                "status": st.status,
                "status_color": SWEEP_STATUS_COLORS.get(st.status, "#1f77b4"),
                "progress_text": st.progress_text(),
                "ended": st.ended,
                "total": total,
                "fraction": st.ended / total if total else None,
                "columns": columns,
                "trials": trials,
                "series": series,
                "best": ({"index": best.index, "name": best.name, "label": best.label, "eval_loss": best.best_eval}
                         if best is not None else None),
                "can_stop": not self.sweep.done and st.status != "stopping",
                "can_skip": not self.sweep.done and st.current() is not None,
                "done": done,
                "interval_ms": int(self.min_interval * 1000),
                "cursor": new_cursor,
            }

    def stop(self, cancel_rest: Any = True) -> dict[str, Any]:
        """The buttons: "Stop sweep" (``cancel_rest``: stop the current trial after its step, with its
        checkpoint and adapter, and cancel the queued ones) or "Skip run" (only the current trial stops)."""
        if self.sweep.done:
            return {"status": self.sweep.status, "stopping": False, "cancelled": []}
        if cancel_rest is not False:
            self.stop_sweep()
        else:
            self.skip_run()
        cancelled = [i for i, run in enumerate(self.sweep.runs) if run.id in self.sweep.cancelled]
        return {"status": self.sweep.status, "stopping": True, "cancelled": cancelled}

    def html(self) -> str:
        """The HTML+JS view; it draws the overlay figure of the trials with no points yet, then polls."""
        from ..compare import overlay_figure

        settle_imports()
        st = self.state
        # no title: the header already names the sweep, and a title would sit under the legend
        fig = json.loads(overlay_figure([_empty_curves(rs) for rs in st.runs]).to_json())
        return self._page(_SWEEP_TEMPLATE, st.name, {
            "poll": self.poll_callback,
            "stop": self.stop_callback,
            "plotly": plotlyjs_url(),
            "figure": {"data": fig.get("data", []), "layout": fig.get("layout", {})},
            # overlay_figure draws two traces per run (train, eval), in run order, with no KL panel here
            "traces": [[2 * rs.index, 2 * rs.index + 1] for rs in st.runs],
            "labels": [rs.label for rs in st.runs],
            "interval_ms": int(self.min_interval * 1000),
            "log_scale": False,
            "lost_hint": f"Re-run the cell or use %ft_compare --sweep {self.sweep.id} to see the trials.",
        })


def _empty_curves(rs: Any) -> RunCurves:
    from ..compare import RunCurves

    return RunCurves(rs.run_id, rs.label, rs.color, ([], []), ([], []))


def _cursor_pair(value: Any) -> tuple[int | None, int | None]:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return int(value[0]), int(value[1])
    return None, None


def _probe_lines(state: DashboardState) -> dict[str, str]:
    """The latest overfitting / forgetting verdicts as one line each (the widget view's panels, in short)."""
    out: dict[str, str] = {}
    for kind, verdict_key in (("overfitting", "status"), ("forgetting", "verdict")):
        records = [r for r in state.probes if r.get(kind)]
        if not records:
            continue
        v = records[-1][kind]
        verdict, message = str(v.get(verdict_key) or ""), str(v.get("message") or "")
        # the probes' messages usually start with the verdict already ("Forgetting: severe. ...")
        head = message if verdict.lower() in message.lower()[:40] else f"{verdict}: {message}".strip(": ")
        out[kind] = " ".join(p for p in (head, str(v.get("suggestion") or "")) if p)
    return out


# The JavaScript both views share, inside their IIFE after ``cfg`` and ``root`` are defined: loading plotly.js,
# calling a registered callback, applying series payloads to traces, the poll loop (cursor carried over,
# back-off and a message after repeated failures) and the buttons that call the stop callback.
_COMMON_JS = r"""
  const $ = (role) => root.querySelector('[data-role="' + role + '"]');

  function loadPlotly() {
    if (window.Plotly) return Promise.resolve(window.Plotly);
    return new Promise(function (resolve, reject) {
      const s = document.createElement("script");
      s.src = cfg.plotly;
      s.onload = function () { resolve(window.Plotly); };
      s.onerror = function () { reject(new Error("could not load plotly.js from " + cfg.plotly)); };
      document.head.appendChild(s);
    });
  }
  async function invoke(name, args) {
    const result = await google.colab.kernel.invokeFunction(name, args, {});
    return result.data["application/json"];
  }
  function message(html) { $("message").innerHTML = html; }
  function escapeHtml(t) { const d = document.createElement("div"); d.textContent = String(t); return d.innerHTML; }

  // pairs: [payload, trace index]; "replace" sets the whole trace, "extend" points go in one extendTraces
  function applySeries(Plotly, plot, pairs) {
    const extend = {x: [], y: []}, extendIdx = [];
    for (const [s, idx] of pairs) {
      if (s.mode === "replace") {
        Plotly.restyle(plot, {x: [s.x], y: [s.y]}, [idx]);
      } else if (s.x.length) {
        extend.x.push(s.x); extend.y.push(s.y); extendIdx.push(idx);
      }
    }
    if (extendIdx.length) Plotly.extendTraces(plot, extend, extendIdx);
  }

  function wireStop(button, busyText, args) {
    button.addEventListener("click", async function () {
      button.disabled = true;
      button.textContent = busyText;
      try { await invoke(cfg.stop, args); } catch (err) { message("Stop failed: " + escapeHtml(err)); }
    });
  }
  function wireLogScale(plot) {
    const box = $("log");
    box.checked = !!cfg.log_scale;
    box.addEventListener("change", function () {
      if (window.Plotly) window.Plotly.relayout(plot, {"yaxis.type": box.checked ? "log" : "linear"});
    });
  }

  // draw cfg.figure, then poll: apply(Plotly, answer) after each answer, until an answer says done
  function start(plot, apply) {
    let cursor = null, failures = 0;
    async function tick(Plotly) {
      let next = cfg.interval_ms;
      try {
        const p = await invoke(cfg.poll, [cursor]);
        apply(Plotly, p);
        cursor = p.cursor;
        failures = 0;
        if (p.done) return;
        next = p.interval_ms || next;
      } catch (err) {
        failures += 1;
        if (failures >= 5) {
          message('<div style="color:#b00020">Lost contact with the kernel (' + escapeHtml(err) + "). " +
                  escapeHtml(cfg.lost_hint) + "</div>");
          return;
        }
        next = cfg.interval_ms * (1 + failures);
      }
      setTimeout(function () { tick(Plotly); }, next);
    }
    loadPlotly().then(function (Plotly) {
      const layout = Object.assign({}, cfg.figure.layout, {autosize: true});
      delete layout.height;
      return Plotly.newPlot(plot, cfg.figure.data, layout, {displaylogo: false, responsive: true})
        .then(function () { tick(Plotly); });
    }).catch(function (err) { message('<div style="color:#b00020">' + escapeHtml(err) + "</div>"); });
  }
"""

_TEMPLATE = r"""
<div id="__ROOT__" class="jupyter-ft-colab" style="font-family:system-ui,sans-serif;font-size:13px">
  <div style="display:flex;flex-wrap:wrap;align-items:center;gap:8px">
    <b>__NAME__</b>
    <span data-role="status" style="background:#6c757d;color:white;border-radius:4px;padding:2px 8px;font-weight:600">queued</span>
    <progress data-role="bar" max="1" value="0" style="width:240px"></progress>
    <span data-role="progress"></span>
    <button data-role="stop" title="Stop after the current step; saves a checkpoint and the adapter"
      style="background:#d9534f;color:white;border:0;border-radius:4px;padding:3px 10px;cursor:pointer">&#9632; Stop</button>
    <label><input type="checkbox" data-role="log"> log scale</label>
  </div>
  <div data-role="message"></div>
  <div data-role="plot" style="width:100%;height:560px"></div>
  <div data-role="probes" style="color:#555"></div>
</div>
<script>
(function () {
  const cfg = __CONFIG__;
  const root = document.getElementById("__ROOT__");
__COMMON_JS__
  const plot = $("plot"), stopButton = $("stop");
  let shownWarnings = [];

  function apply(Plotly, p) {
    applySeries(Plotly, plot, ["loss", "loss_smooth", "eval", "lr", "tps"].map((k) => [p.series[k], cfg.traces[k]]));
    Plotly.restyle(plot, {x: [p.best.x], y: [p.best.y]}, [cfg.traces.best]);
    const status = $("status");
    status.textContent = p.status;
    status.style.background = p.status_color;
    $("progress").textContent = p.progress_text;
    const bar = $("bar");
    if (p.fraction !== null) { bar.max = 1; bar.value = p.fraction; }
    if (p.status === "stopping") { stopButton.disabled = true; stopButton.textContent = "Stopping\u2026"; }
    else { stopButton.disabled = !p.can_stop; stopButton.innerHTML = "&#9632; Stop"; }
    stopButton.style.opacity = stopButton.disabled ? 0.5 : 1;
    shownWarnings = shownWarnings.concat(p.warnings);
    let html = "";
    if (p.status === "failed" && p.error) {
      html += '<div style="color:#b00020;white-space:pre-wrap;font-family:monospace">' + escapeHtml(p.error) + "</div>";
    }
    for (const w of shownWarnings) html += '<div style="color:#8a6d00">\u26a0 ' + escapeHtml(w) + "</div>";
    message(html);
    const probes = [];
    // the probes' messages often begin with their own label ("Forgetting: mild. ..."): show it once
    const unlabel = (label, text) => text.replace(new RegExp("^" + label + ":\\s*", "i"), "");
    if (p.probes.overfitting) probes.push("<div><b>Overfitting</b> " + escapeHtml(unlabel("Overfitting", p.probes.overfitting)) + "</div>");
    if (p.probes.forgetting) probes.push("<div><b>Forgetting</b> " + escapeHtml(unlabel("Forgetting", p.probes.forgetting)) + "</div>");
    $("probes").innerHTML = probes.join("");
  }

  wireStop(stopButton, "Stopping\u2026", []);
  wireLogScale(plot);
  start(plot, apply);
})();
</script>
"""

_SWEEP_TEMPLATE = r"""
<div id="__ROOT__" class="jupyter-ft-colab jupyter-ft-colab-sweep" style="font-family:system-ui,sans-serif;font-size:13px">
  <div style="display:flex;flex-wrap:wrap;align-items:center;gap:8px">
    <b>sweep __NAME__</b>
    <span data-role="status" style="background:#1f77b4;color:white;border-radius:4px;padding:2px 8px;font-weight:600">running</span>
    <progress data-role="bar" max="1" value="0" style="width:200px"></progress>
    <button data-role="stop" title="Stop the current run (checkpoint saved) and cancel the runs still queued"
      style="background:#d9534f;color:white;border:0;border-radius:4px;padding:3px 10px;cursor:pointer">&#9632; Stop sweep</button>
    <button data-role="skip" title="Stop only the current run; the sweep goes on with the next"
      style="background:#f0ad4e;color:white;border:0;border-radius:4px;padding:3px 10px;cursor:pointer">&raquo; Skip run</button>
    <label><input type="checkbox" data-role="log"> log scale</label>
  </div>
  <div data-role="progress"></div>
  <div data-role="best" style="font-weight:600"></div>
  <div data-role="message"></div>
  <div data-role="plot" style="width:100%;height:460px"></div>
  <div data-role="table"></div>
  <div data-role="errors"></div>
</div>
<script>
(function () {
  const cfg = __CONFIG__;
  const root = document.getElementById("__ROOT__");
__COMMON_JS__
  const plot = $("plot"), stopButton = $("stop"), skipButton = $("skip");
  let shownBest = null;
  const cellStyle = "text-align:left;padding:2px 8px";

  function restyleBest(Plotly, best) {
    // the best run's curves thicker and its legend entry starred, as in the widget view
    const names = [], trainIdx = [], widths = [], allIdx = [];
    cfg.traces.forEach(function (pair, i) {
      const w = i === best ? 3.0 : 1.6;
      names.push((i === best ? "\u2605 " : "") + cfg.labels[i]); trainIdx.push(pair[0]);
      widths.push(w, w); allIdx.push(pair[0], pair[1]);
    });
    if (allIdx.length) {
      Plotly.restyle(plot, {"line.width": widths}, allIdx);
      Plotly.restyle(plot, {name: names}, trainIdx);
    }
  }

  function table(p) {
    let head = "";
    for (const c of p.columns) head += '<th style="' + cellStyle + '">' + escapeHtml(c) + "</th>";
    let body = "";
    for (const t of p.trials) {
      let cells = "";
      p.columns.forEach(function (c, j) {
        let v = escapeHtml(t.cells[j]);
        if (c === "#") v = '<span style="color:' + t.color + '">\u25a0</span> ' + v;
        if (c === "status") v = '<span data-role="trial-status" style="color:' + t.status_color + ';font-weight:600">' + v + "</span>";
        if (c === "step") {
          const bar = t.fraction === null ? "" : '<progress max="1" value="' + t.fraction + '" style="width:90px"></progress> ';
          v = bar + v;
        }
        cells += '<td style="' + cellStyle + '">' + v + "</td>";
      });
      body += '<tr data-role="trial" style="' + (t.best ? "font-weight:bold;background:#fff8dc" : "") + '">' + cells + "</tr>";
    }
    return "<table><thead><tr>" + head + "</tr></thead><tbody>" + body + "</tbody></table>";
  }

  function apply(Plotly, p) {
    const pairs = [];
    p.series.forEach(function (s, i) { pairs.push([s.loss, cfg.traces[i][0]], [s.eval, cfg.traces[i][1]]); });
    applySeries(Plotly, plot, pairs);
    const best = p.best ? p.best.index : -1;
    if (best !== shownBest) { restyleBest(Plotly, best); shownBest = best; }
    const status = $("status");
    status.textContent = "sweep " + p.status;
    status.style.background = p.status_color;
    const bar = $("bar");
    if (p.fraction !== null) { bar.max = 1; bar.value = p.fraction; }
    $("progress").textContent = p.progress_text;
    $("best").textContent = p.best ? "\u2605 best: " + p.best.label + ", eval loss " + p.best.eval_loss.toFixed(4) : "";
    if (p.status === "stopping") { stopButton.disabled = true; stopButton.textContent = "Stopping\u2026"; }
    else { stopButton.disabled = !p.can_stop; stopButton.innerHTML = "&#9632; Stop sweep"; }
    skipButton.disabled = !p.can_skip;
    skipButton.innerHTML = "&raquo; Skip run";
    for (const b of [stopButton, skipButton]) b.style.opacity = b.disabled ? 0.5 : 1;
    $("table").innerHTML = table(p);
    let errors = "";
    for (const t of p.trials) {
      if (t.error) {
        errors += '<div data-role="trial-error" style="color:#b00020;white-space:pre-wrap;font-family:monospace">' +
                  escapeHtml(t.name + " failed: " + t.error) + "</div>";
      }
    }
    $("errors").innerHTML = errors;
  }

  wireStop(stopButton, "Stopping\u2026", [true]);
  wireStop(skipButton, "Skipping\u2026", [false]);
  wireLogScale(plot);
  start(plot, apply);
})();
</script>
"""
