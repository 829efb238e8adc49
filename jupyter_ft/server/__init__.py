"""Jupyter server extension: a REST API over the run store for the lab extension (read-only but for Stop).

Routes (under ``<base_url>jupyter-ft/api/``, ``GET`` unless noted, all require the server's token/cookie):

``status``                       ``{"version", "run_root", "exists"}``
``runs``                         ``{"run_root", "runs": [summary, ...]}`` newest first
``runs/<id>``                    the full ``run.json`` record
``runs/<id>/metrics?since=N``    ``{"run_id", "status", "since", "last_step", "metrics": [...]}`` (steps > N)
``runs/<id>/probes?since=N``     the same shape, ``probes.jsonl``
``runs/<id>/samples``            ``{"run_id", "samples": [...], "eval": eval.json or null}``
``schema``                       ``{"sections": {name: {"doc", "fields": {field: {"type", "default"[, "keys"]}}}},
                                 "sweep": {"reserved", "methods", "distributions", "sweepable"}}`` (``keys``:
                                 a mapping field's fixed keys, e.g. ``data.columns`` roles)
``POST runs/<id>/stop``          202 ``{"run_id", "status", "requested": true}``; 409 if the run is not active

Run summaries and records also carry ``progress`` (progress.json: step, max_steps, eta...), ``verdicts``
(the probes' worst overfitting and forgetting verdicts so far) and ``best_eval_loss`` (so far).

An invalid run id is a 400, an unknown one a 404; both answer JSON ``{"message": ...}``. Ids go
through :meth:`RunStore.path_of`, so no request reads outside the run root. A run directory that is a link
(even to another run of the root) is no run (404, not listed), and a run's file that is a link, a FIFO or a
directory reads as absent. A run.json that cannot be read lists (and answers) as status ``corrupt`` with
the reason in ``error``; one such record never fails the listing nor hides the other runs.

Replies are strict JSON: a NaN or an infinity in a record or a metrics line is sent as ``null`` (the
browser's ``JSON.parse`` rejects them). Besides the token or cookie, every route asks the server's
``Authorizer`` (resource ``jupyter_ft``): the reads for ``read``, Stop for ``write``; a refusal is a 403.
Under cookie auth Stop also needs the XSRF token (jupyter_server's check; the lab's ServerConnection sends it).

The run root is ``JupyterFT.run_root`` (default ``ft_runs``); a relative root is resolved against the
server's ``root_dir``, which is the kernel's working directory for a notebook at the top of the
server's tree -- the place the kernel writes ``./ft_runs``. A server started elsewhere, or notebooks
in sub-folders that train with the default root, need ``--JupyterFT.run_root=/abs/path``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["JupyterFT", "_jupyter_server_extension_points", "_load_jupyter_server_extension"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_ft.server"}]


def __getattr__(name: str) -> Any:  # keep ``import jupyter_ft.server`` free of traitlets at import
    if name == "JupyterFT":
        from .handlers import JupyterFT

        return JupyterFT
    raise AttributeError(f"module 'jupyter_ft.server' has no attribute {name!r}")


def _load_jupyter_server_extension(server_app: Any) -> None:
    from .handlers import setup_handlers

    setup_handlers(server_app)


# the old (notebook < 7 / jupyter_server 1.x) name, harmless to keep
load_jupyter_server_extension = _load_jupyter_server_extension
