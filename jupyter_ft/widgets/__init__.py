"""Notebook views of a run. Importing this package is cheap: no torch, and plotly / ipywidgets load only
when a dashboard is built."""

from __future__ import annotations

from .dashboard import Dashboard, StaticDashboard, WidgetDashboard, dashboard_for, register_dashboard

__all__ = ["Dashboard", "StaticDashboard", "WidgetDashboard", "dashboard_for", "register_dashboard"]
