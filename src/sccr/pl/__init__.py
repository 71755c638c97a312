"""Plots (``sccr.pl``); they need matplotlib (``pip install 'sccr[plot]'``)."""

from ._gene_graph import gene_graph

__all__ = ["gene_graph"]
