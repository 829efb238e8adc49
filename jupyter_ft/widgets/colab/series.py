"""Incremental series for the Colab views: what the browser's copy of a curve lacks since its cursor.

A Colab view polls about once a second; sending every point each time would grow without bound, so each
curve is a :class:`TrackedSeries` that counts its rewinds, and a cursor ``[epoch, count]`` says whether the
browser's copy can be extended with the new points or must be replaced. Shared by the run and the sweep view.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...views.dashboard_state import Series

__all__ = ["TrackedSeries", "as_cursor", "cursor_pair", "series_delta"]


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
    epoch, count = cursor_pair(cursor)
    if epoch == series.epoch and count is not None and count <= len(series):
        start, mode = count, "extend"
    else:
        start, mode = 0, "replace"
    return {"mode": mode, "x": list(series.x[start:]), "y": list(series.y[start:])}, [series.epoch, len(series)]


def as_cursor(cursor: Any) -> dict[str, Any]:
    """The browser sends back what it was given; anything else (first poll, a stale page) means "everything"."""
    return dict(cursor) if isinstance(cursor, Mapping) else {}


def cursor_pair(value: Any) -> tuple[int | None, int | None]:
    """``(epoch, count)`` of one series' cursor, or ``(None, None)`` when it is not two non-negative ints."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return int(value[0]), int(value[1])
    return None, None
