"""Notebook views of a run. Importing this package is cheap: no torch, and plotly / ipywidgets load only
when a dashboard is built."""

from __future__ import annotations

from .dashboard import Dashboard, dashboard_for, register_dashboard

# Importing the views registers them with dashboard_for ("widget" first: the order error messages list).
from .widget_dashboard import WidgetDashboard
from .static_dashboard import StaticDashboard

__all__ = ["Dashboard", "StaticDashboard", "WidgetDashboard", "dashboard_for", "register_dashboard"]
