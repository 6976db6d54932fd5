"""Figures (matplotlib, Agg, PNG) and dashboards; import the modules directly, e.g. `viz.metrics_figures`."""
