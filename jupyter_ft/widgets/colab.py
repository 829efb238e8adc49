"""Google Colab: the live dashboard as a small JavaScript view that polls the kernel, and widget set-up.

Why a separate path: Colab does not deliver widget (comm) messages sent from a background thread
(googlecolab/colabtools#3373), so the ``FigureWidget`` dashboard would freeze while training runs in
the kernel's background thread. Here the browser asks instead: the view displayed under the cell calls a
Python callback registered with ``google.colab.output.register_callback`` through
``google.colab.kernel.invokeFunction`` about once a second. Colab runs such a callback in the kernel's
main thread, so it can safely apply the buffered run events (``Dashboard.refresh``) and answer with the
points added since the view's cursor; the view appends them with ``Plotly.extendTraces``. The Stop button
calls a second registered callback. Third-party widgets (the config form, ``%ft_eval``'s table) need
``google.colab.output.enable_custom_widget_manager()``; :func:`setup_colab` calls it on
``%load_ext jupyter_ft``.

Everything Colab-specific goes through ``google.colab.output.register_callback`` and the JavaScript,
so the adapter is testable anywhere with a fake ``google.colab`` module (``tests/test_colab.py``).

Limits: callbacks queue behind a running cell, so the view pauses while a cell blocks (``run.wait()``)
and catches up afterwards; Colab has no API to unregister a callback, so each dashboard keeps two small
entries in Colab's callback table until the kernel restarts.
"""

from __future__ import annotations

import html
import importlib.util
import json
import logging
import sys
import uuid
from typing import Any, Mapping

from .dashboard import (
    STATUS_COLORS,
    TERMINAL,
    Dashboard,
    DashboardState,
    Series,
    build_figure,
    ema,
    register_dashboard,
)

__all__ = ["ColabDashboard", "in_colab", "setup_colab", "plotlyjs_url"]

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
    and make the polling dashboard what ``dashboard_for(..., "auto")`` builds. Returns whether it did."""
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


class ColabDashboard(Dashboard):
    """The dashboard for Colab: an HTML+JavaScript view (plotly.js) that polls :meth:`poll`.

    Nothing renders from the training thread (``auto_flush`` is off): events are buffered until the next
    poll, which runs in the main thread. ``poll_callback`` and ``stop_callback`` are the names registered
    with ``google.colab.output.register_callback``; :meth:`poll` and :meth:`stop` are what they call.
    """

    kind = "colab"
    default_interval = 1.0  # seconds between polls

    def _default_auto_flush(self) -> bool:
        return False

    def _build(self) -> None:
        self.uid = uuid.uuid4().hex[:12]
        self.poll_callback = f"{CALLBACK_PREFIX}.poll.{self.uid}"
        self.stop_callback = f"{CALLBACK_PREFIX}.stop.{self.uid}"
        self.polls = 0
        for attr, _trace in SERIES.values():
            setattr(self.state, attr, TrackedSeries(getattr(self.state, attr)))
        from google.colab import output

        output.register_callback(self.poll_callback, self._poll_callback)
        output.register_callback(self.stop_callback, self._stop_callback)

    # ------------------------------------------------------------ callbacks (main thread, from the browser)
    def _poll_callback(self, cursor: Any = None) -> Any:
        from IPython.display import JSON

        return JSON(self.poll(cursor))

    def _stop_callback(self) -> Any:
        from IPython.display import JSON

        return JSON(self.stop())

    def poll(self, cursor: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Apply the buffered events and answer with what the view lacks.

        ``cursor`` is the one the previous answer returned (``None`` at first). Per series the answer has
        ``mode`` ``"extend"`` (only the points after the cursor) or ``"replace"`` (the whole series: first
        poll, or the series was rewound by a resumed run). Status, progress with ETA, warnings added since
        the cursor, probe verdicts and ``done`` (the view stops polling) come with every answer. Plain JSON:
        no NaN or infinity.
        """
        self.refresh()
        cursor = dict(cursor or {})
        with self._flush_lock:
            self.polls += 1
            st = self.state
            series: dict[str, Any] = {}
            new_cursor: dict[str, Any] = {}
            for key, (attr, _trace) in SERIES.items():
                s: TrackedSeries = getattr(st, attr)
                epoch, count = _cursor_pair(cursor.get(key))
                if epoch == s.epoch and count is not None and count <= len(s):
                    start, mode = count, "extend"
                else:
                    start, mode = 0, "replace"
                series[key] = {"mode": mode, "x": list(s.x[start:]), "y": list(s.y[start:])}
                new_cursor[key] = [s.epoch, len(s)]
                if key == "loss":  # EMA is causal: appending points never changes the smoothed ones before
                    smooth = ema(s.y, self.smoothing) if self.smoothing > 0 else []
                    series["loss_smooth"] = {"mode": mode, "x": list(s.x[start:]) if smooth else [],
                                             "y": smooth[start:]}
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

    # ------------------------------------------------------------ the view
    def html(self) -> str:
        """The HTML+JS view; it draws the figure ``build_figure`` makes, then polls."""
        fig = json.loads(build_figure(DashboardState(self.state.run_id, self.state.name),
                                      smoothing=self.smoothing, log_scale=self.log_scale).to_json())
        config = {
            "poll": self.poll_callback,
            "stop": self.stop_callback,
            "plotly": plotlyjs_url(),
            "figure": {"data": fig.get("data", []), "layout": fig.get("layout", {})},
            "traces": {key: trace for key, (_attr, trace) in SERIES.items()}
            | {"loss_smooth": TRACE_LOSS_SMOOTH, "best": TRACE_BEST},
            "interval_ms": int(self.min_interval * 1000),
            "log_scale": self.log_scale,
        }
        root = f"jupyter-ft-{self.uid}"
        payload = json.dumps(config).replace("</", "<\\/")  # never closes the <script> early
        return _TEMPLATE.replace("__ROOT__", root).replace("__NAME__", html.escape(self.state.name)).replace(
            "__CONFIG__", payload)

    def display(self) -> None:
        """Show the view once, from the main thread; it updates itself from then on."""
        from IPython.display import display

        display({"text/html": self.html(), "text/plain": self.state.text_line()}, raw=True)

    def finish(self) -> None:
        self.refresh()


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
  const $ = (role) => root.querySelector('[data-role="' + role + '"]');
  const plot = $("plot"), stopButton = $("stop"), logBox = $("log");
  let cursor = null, failures = 0, shownWarnings = [];
  logBox.checked = !!cfg.log_scale;

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

  function apply(Plotly, p) {
    const extend = {x: [], y: []}, extendIdx = [];
    for (const key of ["loss", "loss_smooth", "eval", "lr", "tps"]) {
      const s = p.series[key], idx = cfg.traces[key];
      if (s.mode === "replace") {
        Plotly.restyle(plot, {x: [s.x], y: [s.y]}, [idx]);
      } else if (s.x.length) {
        extend.x.push(s.x); extend.y.push(s.y); extendIdx.push(idx);
      }
    }
    if (extendIdx.length) Plotly.extendTraces(plot, extend, extendIdx);
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
        message('<div style="color:#b00020">Lost contact with the kernel (' + escapeHtml(err) +
                "). Re-run the cell or use %ft_show to see the run.</div>");
        return;
      }
      next = cfg.interval_ms * (1 + failures);
    }
    setTimeout(function () { tick(Plotly); }, next);
  }

  stopButton.addEventListener("click", async function () {
    stopButton.disabled = true;
    stopButton.textContent = "Stopping\u2026";
    try { await invoke(cfg.stop, []); } catch (err) { message("Stop failed: " + escapeHtml(err)); }
  });
  logBox.addEventListener("change", function () {
    if (window.Plotly) window.Plotly.relayout(plot, {"yaxis.type": logBox.checked ? "log" : "linear"});
  });
  loadPlotly().then(function (Plotly) {
    const layout = Object.assign({}, cfg.figure.layout, {autosize: true});
    delete layout.height;
    return Plotly.newPlot(plot, cfg.figure.data, layout, {displaylogo: false, responsive: true})
      .then(function () { tick(Plotly); });
  }).catch(function (err) { message('<div style="color:#b00020">' + escapeHtml(err) + "</div>"); });
})();
</script>
"""
