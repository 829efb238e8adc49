"""``%ft_export``: a run's adapter, or the merged model, written to a directory with a model card.

The writing is :func:`jupyter_ft.export.export_run`; this picks the run and words the result.
"""

from __future__ import annotations

from typing import Any

from ...config import DEFAULT_ROOT

__all__ = ["export"]


def export(run: Any, out: str, *, merge: bool = False, root: str | None = None, force: bool = False,
           trust_remote_code: bool = False) -> str:
    """Export ``run`` (a ``Run`` or ``RunDir``) to ``out``; the line ``%ft_export`` prints."""
    from ...export import export_run

    path = export_run(run, out.strip("'\""), merge=merge, root=root or DEFAULT_ROOT, overwrite=force,
                      trust_remote_code=trust_remote_code)
    what = "merged model" if merge else "adapter"
    return f"exported the {what} of {run.id} to {path} (model card: {path / 'README.md'})"
