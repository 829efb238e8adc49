"""The front-end files of the Colab views (pages and their shared JavaScript, kept as package files) and
where their plotly.js comes from."""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["page_template", "plotlyjs_url"]


@functools.cache
def page_template(name: str) -> str:
    """A front-end file of this package (``run.html``, ``sweep.html``, ``common.js``), exactly as stored.

    ``common.js`` is the JavaScript both views share, pasted at ``__COMMON_JS__`` inside a page's IIFE after
    ``cfg`` and ``root`` are defined: loading plotly.js, calling a registered callback, applying series
    payloads to traces, the poll loop (cursor carried over, back-off and a message after repeated
    failures) and the buttons that call the stop callback."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def plotlyjs_url() -> str:
    """plotly.js from its CDN, the version the installed plotly package was built against."""
    try:
        from plotly.offline import get_plotlyjs_version

        version = get_plotlyjs_version()
    except Exception:  # noqa: BLE001
        version = "2.35.2"
    return f"https://cdn.plot.ly/plotly-{version}.min.js"
