"""Plots (``sccr.pl``); they need matplotlib (``pip install 'sccr[plot]'``), imported when a function is called."""

from ._gene_graph import gene_graph
from ._trust import null_correlations, stability_cells, tune_curves

__all__ = ["gene_graph", "null_correlations", "stability_cells", "tune_curves"]
