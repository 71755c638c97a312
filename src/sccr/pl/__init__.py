"""Plots of the trust tools (matplotlib, imported when a function is called)."""

from ._trust import null_correlations, stability_cells, tune_curves

__all__ = ["null_correlations", "stability_cells", "tune_curves"]
