"""The Colab view of one run, and :class:`ColabView`, the plumbing every Colab polling view shares.

Colab does not deliver widget messages sent from a background thread, so here the browser asks instead:
the page (``run.html`` with ``common.js``, package files next to this module) calls :meth:`ColabView.poll`
through a registered callback about once a second and appends the answer's new points to its plotly.js
figure. See the package docstring for the whole picture.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from ...runtime.imports import settle_imports
from ...store import TERMINAL
from ...views.dashboard_state import STATUS_COLORS, DashboardState
from ...views.figures import TRACE_BEST, TRACE_EVAL, TRACE_LOSS, TRACE_LOSS_SMOOTH, TRACE_LR, TRACE_TPS, build_figure
from ...views.format import ema
from ..dashboard import Dashboard
from .assets import page_template, plotlyjs_url
from .series import TrackedSeries, as_cursor, series_delta

__all__ = ["CALLBACK_PREFIX", "ColabDashboard", "ColabView"]

CALLBACK_PREFIX = "jupyter_ft"
# name in the poll payload -> (attribute of DashboardState, trace index in build_figure's figure)
SERIES = {"loss": ("loss", TRACE_LOSS), "eval": ("eval_loss", TRACE_EVAL), "lr": ("lr", TRACE_LR),
          "tps": ("tokens_per_s", TRACE_TPS)}


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
        """The package file ``template`` with the shared JavaScript, the root id, the escaped ``name`` and
        ``config`` (JSON that can never close the ``<script>`` early) filled in, in one pass so no value is
        read as a placeholder."""
        values = {
            "__COMMON_JS__": page_template("common.js"),
            "__ROOT__": f"jupyter-ft-{self.uid}",
            "__NAME__": html.escape(name),
            "__CONFIG__": json.dumps(dict(config)).replace("</", "<\\/"),
        }
        return re.sub("|".join(values), lambda m: values[m.group(0)], page_template(template))

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
        cursor = as_cursor(cursor)
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
            seen = cursor.get("warnings")
            seen_warnings = seen if isinstance(seen, int) else 0
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
        return self._page("run.html", self.state.name, {
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
