"""Pure rendering: text formatting, dashboard state, plotly figures and HTML, with no widgets.

It sits below the engine and evaluation so that result objects of those layers can render themselves
without an import running up; it imports only config, store and runtime. Importing this package is
cheap: import the submodule you need (plotly loads only when a figure is built).
"""
